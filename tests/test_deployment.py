"""docker-compose.yml cannot run here (no Docker engine), so check that it parses and points at real code."""

import importlib
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"base-model", "vllm", "postgres", "redis", "web", "worker", "chat-worker", "sampling-worker", "gpu-worker",
            "beat"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def words(command):
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_it_defines_every_service(compose):
    assert set(compose["services"]) == SERVICES


def test_app_services_use_postgres_and_redis(compose):
    for name in ["web", "worker", "chat-worker", "gpu-worker", "beat"]:
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
    # Streamed chat replies hold a connection each: the server serves them from threads, many at once.
    assert inner[inner.index("--worker-class") + 1] == "gthread" and int(inner[inner.index("--threads") + 1]) >= 16


@pytest.mark.parametrize("service, queue", [("worker", "default"), ("sampling-worker", "sampling"),
                                            ("gpu-worker", "gpu"), ("chat-worker", "chat")])
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


def test_every_queue_has_a_worker_and_every_task_a_queue(compose):
    consumed = {words(service["command"])[words(service["command"]).index("-Q") + 1]
                for service in compose["services"].values() if "worker" in words(service.get("command", ""))}
    assert consumed == {q.name for q in celery_app.conf.task_queues}
    assert {route["queue"] for route in celery_app.conf.task_routes.values()} <= consumed


def test_the_sampling_worker_samples_through_the_vllm_service_which_serves_the_base_policy(compose):
    from labeling.models import ModelVersion

    environment = compose["services"]["sampling-worker"]["environment"]
    vllm = compose["services"]["vllm"]
    arguments = words(vllm["command"])
    assert environment["SAMPLER_URL"] == f"http://vllm:{arguments[arguments.index('--port') + 1]}/v1"
    assert environment["SAMPLER_SERVER"] == "vllm"
    # The base policy version is served under the name the site asks for, from the folder the site names.
    base = ModelVersion(kind="policy", name="base")
    assert arguments[arguments.index("--served-model-name") + 1] == base.served_name
    assert arguments[arguments.index("--model") + 1] == environment["POLICY_MODEL"]
    assert "data:/data:ro" in vllm["volumes"] and "data:/data" in compose["services"]["sampling-worker"]["volumes"]
    # New adapter versions load while it runs (vLLM's runtime LoRA updating).
    assert "--enable-lora" in arguments and vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    prepare = words(compose["services"]["base-model"]["command"])
    assert f"--output {environment['POLICY_MODEL']}" in prepare[-1]


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


def documented_production_environment():
    """The variables README's "Running in production" gives, with a fresh secret key and this machine's database."""
    section = (ROOT / "README.md").read_text().split("## Running in production", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```env\n(.*?)```", section, re.S).group(1)
    documented = dict(line.split("=", 1) for line in block.splitlines() if line.strip())
    documented["SECRET_KEY"] = secrets.token_urlsafe(50)
    del documented["REDIS_URL"]  # no server is needed for the checks; the file cache stands in
    if os.environ.get("DATABASE_URL"):
        documented["DATABASE_URL"] = os.environ["DATABASE_URL"]
    else:
        del documented["DATABASE_URL"]
    return documented


def check_deploy(tmp_path, environment):
    # Only what a server has: the browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process, never in production.
    leave_out = ("DEBUG", "SECRET_KEY", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    clean = {name: value for name, value in os.environ.items() if name not in leave_out}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
        env={**clean, "DATA_DIR": str(tmp_path), **environment}, capture_output=True, text=True, timeout=120,
    )


def test_the_documented_production_environment_passes_the_deployment_checks(tmp_path):
    environment = documented_production_environment()
    assert {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "SECURE_COOKIES", "BEHIND_HTTPS_PROXY"} <= set(environment)
    found = check_deploy(tmp_path, environment)
    assert found.returncode == 0, found.stdout + found.stderr
    assert "System check identified no issues" in found.stdout
    assert "WARNING" not in found.stdout + found.stderr and "security.W" not in found.stderr


def test_without_https_settings_the_deployment_checks_fail(tmp_path):
    environment = {**documented_production_environment(), "SECURE_COOKIES": "false"}
    found = check_deploy(tmp_path, environment)
    assert found.returncode != 0
    for check in ["security.W004", "security.W008", "security.W012", "security.W016"]:  # HSTS, redirect, cookies
        assert check in found.stderr


def test_its_training_options_are_adapters_over_the_model_vllm_serves(compose, settings):
    import json

    from labeling.services.training import training_options

    environment = compose["x-app"]["environment"]
    settings.TRAINING_OPTIONS = json.loads(environment["TRAINING_OPTIONS"])
    for kind in ("sft", "reward", "ppo"):
        assert training_options(kind=kind)["lora_rank"] > 0  # checked as a run request checks them
    vllm = words(compose["services"]["vllm"]["command"])
    assert vllm[vllm.index("--model") + 1] == environment["POLICY_MODEL"] and "--enable-lora" in vllm
    ranks = [options["lora_rank"] for options in settings.TRAINING_OPTIONS.values()]
    assert int(vllm[vllm.index("--max-lora-rank") + 1]) >= max(ranks)
    assert compose["services"]["vllm"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
