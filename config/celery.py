"""Celery application.

Four queues: `default` for web-side work (imports, exports, lease expiry); `sampling` for the
completions labelers rank and evaluations judge; `gpu` for training, which a GPU node consumes
with concurrency 1; and `chat` for the model's replies in labelers' chats, streamed as they are
written, which a worker with threads consumes. Sampling and chats have workers of their own, so
that labelers never wait behind a training run. Tasks are
acknowledged after they finish, so a worker that dies mid-task hands it to another;
every task is written to be safe to run twice.
"""

import os

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("rlhf_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=[Queue("default"), Queue("sampling"), Queue("gpu"), Queue("chat")],
    task_default_queue="default",
    task_routes={"labeling.tasks.sample_completions": {"queue": "sampling"}, "labeling.tasks.train": {"queue": "gpu"},
                 "labeling.tasks.sample_evaluation": {"queue": "sampling"},
                 "labeling.tasks.chat_reply": {"queue": "chat"}, "labeling.tasks.suggest": {"queue": "chat"}},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    beat_schedule={
        "expire-leases": {"task": "labeling.tasks.expire_leases", "schedule": crontab(minute="*")},
        "check-training-due": {"task": "labeling.tasks.check_training_due", "schedule": 60.0},
        "reap-chat-replies": {"task": "labeling.tasks.reap_chat_replies", "schedule": crontab(minute="*")},
    },
)
app.autodiscover_tasks()
