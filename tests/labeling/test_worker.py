"""The import task run by a real Celery worker process, on the broker and database the suite uses."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from config.celery import app as celery_app
from labeling import services
from labeling.models import Assignment, ImportJob, Prompt
from tests.conftest import wait_for
from tests.factories import TaskFactory


def test_a_worker_imports_a_large_file(worker, researcher, settings):
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 1
    rows = b"".join(b'{"prompt": "Question %d about tides", "source_user_id": "u%d"}\n' % (i, i % 7)
                    for i in range(300))
    job = services.import_job_create(uploaded_file=SimpleUploadedFile("big.jsonl", rows), created_by=researcher)
    services.import_job_start(job=job)  # queued on commit; this test runs in autocommit
    assert job.state == ImportJob.State.QUEUED

    assert wait_for(lambda: ImportJob.objects.get(pk=job.pk).is_finished), "the worker never finished the job"
    job.refresh_from_db()
    assert job.state == ImportJob.State.SUCCEEDED, job.error
    assert job.accepted == 300
    assert Prompt.objects.filter(import_job=job).count() == 300


def test_a_worker_expires_stale_leases(worker, labeler):
    stale = Assignment.objects.create(
        task=TaskFactory(), labeler=labeler, lease_expires_at=timezone.now() - timezone.timedelta(minutes=1)
    )
    celery_app.send_task("labeling.tasks.expire_leases")
    assert wait_for(lambda: Assignment.objects.get(pk=stale.pk).state == Assignment.State.EXPIRED)
