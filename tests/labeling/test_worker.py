"""Import and export tasks run by a real Celery worker process, on the broker and database the suite uses."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from config.celery import app as celery_app
from labeling import exports, services
from labeling.models import Assignment, Export, ImportJob, Prompt
from tests.conftest import wait_for
from tests.factories import TaskFactory, ranking_task


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


def test_a_worker_builds_an_export_snapshot(worker, researcher, labeler):
    task = ranking_task(k=5)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[[cid] for cid in ids],
                          ratings={cid: {"rating": 4} for cid in ids})
    export = services.export_create(kind="preference_pairs", fmt="parquet", created_by=researcher)
    assert export.state == Export.State.QUEUED

    assert wait_for(lambda: Export.objects.get(pk=export.pk).is_finished), "the worker never built the export"
    export.refresh_from_db()
    assert export.state == Export.State.SUCCEEDED, export.error
    assert (export.row_count, export.progress) == (10, 1.0)
    assert exports.sha256_of(export.file.path) == export.sha256
