"""Celery tasks: ids in, one service call, safe to run twice."""

from celery import shared_task
from django.core.cache import cache

from . import services


@shared_task(acks_late=True)
def import_prompts(job_id):
    job = services.import_job_run(job_id=job_id)
    return {"job": job.pk, "state": job.state, "accepted": job.accepted, "error": job.error}


@shared_task
def expire_leases():
    return services.assignments_expire()


@shared_task(acks_late=True)
def build_export(export_id):
    export = services.export_run(export_id=export_id)
    return {"export": export.pk, "state": export.state, "rows": export.row_count}


@shared_task(acks_late=True)
def sample_completions(prompt_ids):
    try:
        opened = services.completions_sample(prompt_ids=prompt_ids)
    finally:
        cache.delete(services.SAMPLING_QUEUED)
    return {"ranking_tasks_opened": opened, "queued_next": services.sampling_queue()}  # until none wait


@shared_task(acks_late=True)
def train(run_id):
    run = services.training_run_execute(run_id=run_id)
    return {"run": run.pk, "state": run.state, "gate": run.gate}


@shared_task
def check_training_due():
    return services.training_check_due()
