"""Celery tasks: ids in, one service call, safe to run twice."""

from celery import shared_task

from . import services


@shared_task(acks_late=True)
def import_prompts(job_id):
    job = services.import_job_run(job_id=job_id)
    return {"job": job.pk, "state": job.state, "accepted": job.accepted}


@shared_task
def expire_leases():
    return services.assignments_expire()
