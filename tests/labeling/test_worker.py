"""The import task run by a real Celery worker process, on the broker and database the suite uses."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from labeling import services
from labeling.models import Assignment, ImportJob, Prompt
from tests.factories import TaskFactory

ROOT = Path(__file__).resolve().parents[2]


def database_url():
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker of the configured kind, private to these tests so that no other worker takes their tasks."""
    if os.environ.get("REDIS_URL"):
        url = os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/15"
    else:
        url = f"sqla+sqlite:///{tmp_path_factory.mktemp('broker') / 'broker.sqlite3'}"
    previous, celery_app.conf.broker_url = celery_app.conf.broker_url, url
    yield url
    celery_app.conf.broker_url = previous


@pytest.fixture
def worker(broker, transactional_db, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker,
        "DATA_DIR": str(tmp_path),
        "SECRET_KEY": "worker-under-test",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--pool", "solo",
             "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        )
        yield process
        process.terminate()
        process.wait(timeout=30)
    print(log_path.read_text()[-3000:])  # shown by pytest when the test fails


def wait_for(condition, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


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
