import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.celery import app as celery_app
from labeling import services
from labeling.models import Role
from tests.factories import UserFactory


@pytest.fixture
def labeler(db):
    return UserFactory(username="alice", role=Role.LABELER)


@pytest.fixture
def other_labeler(db):
    return UserFactory(username="bob", role=Role.LABELER)


@pytest.fixture
def researcher(db):
    return UserFactory(username="rita", role=Role.RESEARCHER)


@pytest.fixture
def admin_user(db):
    return UserFactory(username="ada", role=Role.ADMIN)


@pytest.fixture
def no_role_user(db):
    return UserFactory(username="nobody")


@pytest.fixture
def users(labeler, researcher, admin_user, no_role_user):
    return {"labeler": labeler, "researcher": researcher, "admin": admin_user, "none": no_role_user}


@pytest.fixture
def as_researcher(client, researcher):
    client.force_login(researcher)
    return client


def api_client_for(user):
    """A REST client that authenticates with a fresh token of `user`, as programs do."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer GPT-2 with its own tokenizer and chat template, saved once per test session."""
    from rlhf.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(autouse=True)
def seeded_random(request):
    """The same draws on every run of a test (the queue's kinds, gold tasks, shuffles), so a failure replays."""
    random.seed(request.node.nodeid)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


# A real Celery worker, for integration and browser tests.

ROOT = Path(__file__).resolve().parents[1]


def database_url():
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="session", autouse=True)
def broker(tmp_path_factory):
    """A broker of the configured kind, private to these tests so that no other worker takes their tasks.

    Set before any test runs: Celery keeps the connection of its first message, so a test that queues a
    task before this fixture would send every later message to the configured broker instead."""
    if os.environ.get("REDIS_URL"):
        # A database of its own, and another for a run beside it on another REDIS_URL database.
        base, _, number = os.environ["REDIS_URL"].rpartition("/")
        url = f"{base}/{15 - int(number or 0) % 8}"
        redis.Redis.from_url(url).flushdb()  # no stale messages from an interrupted run
    else:
        url = f"sqla+sqlite:///{tmp_path_factory.mktemp('broker') / 'broker.sqlite3'}"
    previous, celery_app.conf.broker_url = celery_app.conf.broker_url, url
    yield url
    celery_app.conf.broker_url = previous


@pytest.fixture
def start_worker(broker, transactional_db, tmp_path):
    """Start worker processes on the test database; uploads and exports reach them through DATA_DIR/media,
    the tests' MEDIA_ROOT. `start_worker(queues, **environment)` returns the process."""
    started = []

    def start(queues="default", **extra):
        celery_app.control.purge()  # what earlier tests queued without a worker is not this test's work
        cache.delete(services.SAMPLING_QUEUED)  # nor is a sampling task an earlier test's flag says is queued
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": broker,
            "DATA_DIR": str(tmp_path),
            "SECRET_KEY": "worker-under-test",
            **{name: str(value) for name, value in extra.items()},
        }
        log_path = tmp_path / f"worker-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "--pool", "solo",
             "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=environment, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        )
        started.append((process, log_path))
        return process

    yield start
    for process, log_path in started:
        process.terminate()
        process.wait(timeout=30)
        print(log_path.read_text()[-3000:])  # shown by pytest when the test fails


@pytest.fixture
def worker_cache(settings, tmp_path):
    """The cache the workers use: Redis when REDIS_URL is set; otherwise the file cache under their DATA_DIR."""
    if "filebased" in settings.CACHES["default"]["BACKEND"]:
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": str(tmp_path / "cache")}}


@pytest.fixture
def worker(start_worker):
    return start_worker()


def wait_for(condition, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


# `python -m rlhf serve` as a real process: the OpenAI-compatible endpoint the site samples through.

class Server:
    def __init__(self, command, port):
        self.command, self.port, self.url = command, port, f"http://127.0.0.1:{port}/v1"
        self.lines, self.process = [], None

    def start(self):
        self.lines = []
        self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        assert wait_for(lambda: any(line.startswith("Serving ") for line in self.lines) or self.process.poll(),
                        timeout=60) and self.process.poll() is None, "".join(self.lines)
        return self

    def _read(self, process):
        for line in process.stdout:
            self.lines.append(line)

    def requests(self, route="/v1/chat/completions"):
        """The log lines of the requests it answered on `route`: `POST <route> <status> <model> <seconds>`."""
        return [line.split() for line in self.lines if f" {route} " in line]

    def stop(self, kill=False):
        if self.process and self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=30)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rlhf_server(tiny_model, tmp_path):
    """`start(models_dir, name="policy-base")`: the tiny model served under `name`, loading more from `models_dir`."""
    servers = []

    def start(models_dir, name="policy-base", *extra):
        command = [sys.executable, "-m", "rlhf", "serve", "--model", str(tiny_model), "--model-version", name,
                   "--port", str(free_port()), "--models-dir", str(models_dir), "--device", "cpu", *extra]
        servers.append(Server(command, int(command[command.index("--port") + 1])).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
