"""Celery tasks: ids in, one service call, safe to run twice."""

from celery import shared_task
from django.core.cache import cache

from . import services
from .evaluations import evaluation_results_compute, leaderboard_compute
from .models import Evaluation
from .samplers import SamplerUnavailable, sampler_retry_in


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


@shared_task(bind=True, acks_late=True, max_retries=None)
def sample_completions(self, prompt_ids):
    try:
        opened = services.completions_sample(prompt_ids=prompt_ids)
    except SamplerUnavailable as exc:
        # The prompts not stored keep waiting; this task, still the one queued, tries them again later.
        delay = sampler_retry_in(self.request.retries)
        cache.set(services.SAMPLING_QUEUED, True, timeout=delay + 600)
        raise self.retry(countdown=delay, exc=exc) from None
    except BaseException:
        cache.delete(services.SAMPLING_QUEUED)
        raise
    cache.delete(services.SAMPLING_QUEUED)
    # Until none wait; a round that opened nothing (only empty completions) leaves the next to beat.
    return {"ranking_tasks_opened": opened, "queued_next": services.sampling_queue() if opened else 0}


@shared_task(acks_late=True)
def chat_reply(message_id):
    message = services.chat_reply_write(message_id=message_id)
    return {"message": message_id, "state": message.state if message else "taken"}


@shared_task
def reap_chat_replies():
    return services.chat_replies_reap()


@shared_task(acks_late=True)
def suggest(suggestion_id):
    suggestion = services.suggestion_write(suggestion_id=suggestion_id)
    return {"suggestion": suggestion_id, "state": suggestion.state if suggestion else "taken"}


@shared_task(bind=True, acks_late=True, max_retries=None)
def sample_evaluation(self, evaluation_id):
    try:
        evaluation = services.evaluation_sample(evaluation_id=evaluation_id)
    except SamplerUnavailable as exc:  # what was sampled is stored; the rest is tried again later
        raise self.retry(countdown=sampler_retry_in(self.request.retries), exc=exc) from None
    return {"evaluation": evaluation.pk, "state": evaluation.state, "tasks": evaluation.tasks.count()}


@shared_task
def refresh_leaderboard():
    return {"versions": len(leaderboard_compute()["versions"])}


@shared_task
def refresh_evaluation(evaluation_id):
    evaluation = Evaluation.objects.filter(pk=evaluation_id).select_related("candidate").first()
    return evaluation and {"judgments": evaluation_results_compute(evaluation)["judgments"]}


@shared_task(acks_late=True)
def train(run_id):
    run = services.training_run_execute(run_id=run_id)
    return {"run": run.pk, "state": run.state, "gate": run.gate}


@shared_task
def check_training_due():
    return services.training_check_due()
