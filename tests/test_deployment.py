"""docker-compose.yml cannot run here (no Docker engine), so check that it parses and points at real code."""

import importlib
import shlex
from pathlib import Path

import pytest
import yaml

from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "redis", "web", "worker", "gpu-worker", "beat"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def words(command):
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_it_defines_every_service(compose):
    assert set(compose["services"]) == SERVICES


def test_app_services_use_postgres_and_redis(compose):
    for name in ["web", "worker", "gpu-worker", "beat"]:
        environment = compose["services"][name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert "SECRET_KEY" in environment


def test_the_web_command_points_at_the_wsgi_application(compose):
    command = words(compose["services"]["web"]["command"])
    inner = shlex.split(command[-1]) if command[:2] == ["sh", "-c"] else command
    target = next(word for word in inner if ":" in word and "." in word)
    module, attribute = target.split(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    assert "manage.py" in inner and (ROOT / "manage.py").exists()


@pytest.mark.parametrize("service, queue", [("worker", "default"), ("gpu-worker", "gpu")])
def test_workers_consume_queues_the_celery_app_declares(compose, service, queue):
    command = words(compose["services"][service]["command"])
    assert command[:3] == ["celery", "-A", "config"]
    assert importlib.import_module(command[2]).celery_app is celery_app
    assert command[command.index("-Q") + 1] == queue
    assert queue in {q.name for q in celery_app.conf.task_queues}


def test_the_gpu_worker_reserves_a_gpu_and_runs_one_task_at_a_time(compose):
    service = compose["services"]["gpu-worker"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    command = words(service["command"])
    assert command[command.index("--concurrency") + 1] == "1"


def test_beat_runs_the_schedule_of_the_celery_app(compose):
    command = words(compose["services"]["beat"]["command"])
    assert command[:4] == ["celery", "-A", "config", "beat"]
    celery_app.loader.import_default_modules()
    for entry in celery_app.conf.beat_schedule.values():
        assert entry["task"] in celery_app.tasks


def test_the_image_builds_from_this_tree(compose):
    assert compose["services"]["web"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.txt" in dockerfile and "config.wsgi:application" in dockerfile
    assert "python -m rlhf prepare-model" in dockerfile  # the base policy the GPU worker samples from
