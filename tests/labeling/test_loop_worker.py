"""The whole loop with a real Celery worker process on the tiny model: sample, rank, train, gate, activate."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from django.core.cache import cache

from labeling import services
from labeling.models import Completion, LabelerProfile, ModelVersion, Prompt, Ranking, Role, Task, TrainingRun
from tests.conftest import api_client_for, wait_for
from tests.factories import UserFactory
from tests.labeling.test_training_loop import demonstrations, planted_rankings

OPTIONS = {
    "reward": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "device": "cpu"},
    "ppo": {"steps": 10, "rollout_batch_size": 8, "minibatch_size": 4, "lr": 1e-3, "max_new_tokens": 8,
            "no_eos_penalty": 0, "device": "cpu"},
}


@pytest.fixture
def loop(settings, tiny_model, tmp_path, start_worker):
    """Settings shared by this process and a worker on both queues."""
    values = {
        "POLICY_MODEL": str(tiny_model), "MODELS_DIR": tmp_path / "models", "SAMPLE_MAX_NEW_TOKENS": 8,
        "SAMPLE_PROMPTS_PER_TASK": 100, "OVERLAP_SHARE": 0, "TRAINING_HEARTBEAT_SECONDS": 0.5,
        "TRAINING_OPTIONS": OPTIONS,
        # Ten PPO steps on a random tiny model against a reward model learned from 60 rankings move the win rate
        # on a handful of validation prompts anywhere from 0 to 100%: this test is about the loop, so its policy
        # gate lets any policy through. The gate's verdicts are tested in test_training_loop.py, and PPO's
        # learning on a planted reward in tests/rlhf.
        "POLICY_GATE_MIN_WIN_RATE": 0, "POLICY_GATE_MAX_KL": 1000,
        # Likewise the first reward model's floor: the labeler here ranks the tiny model's random text by length,
        # which a reward model learns from 60 rankings only now and then (0.47 to 0.60 on 30 validation pairs).
        # The floor is tested in test_training_loop.py.
        "RM_FIRST_BASELINES": "chance", "RM_FIRST_MIN_MARGIN": -1,
    }
    for name, value in values.items():
        setattr(settings, name, value.split(",") if name == "RM_FIRST_BASELINES" else value)
    settings.INTAKE_ANNOTATE, settings.INTAKE_DEMONSTRATION_SHARE = False, 0
    cache.delete(services.SAMPLING_QUEUED)
    environment = {name: json.dumps(value) if isinstance(value, dict) else value for name, value in values.items()}
    return lambda queues="default,sampling,gpu", **extra: start_worker(queues, **(environment | extra))


def import_prompts(n, start=0):
    rows = ((i, {"prompt": f"Write one line about the colour number {i}.", "source_user_id": f"user-{i}"}, 0)
            for i in range(start, start + n))
    report = services.prompts_create(rows=rows, created_by=None)
    assert report.accepted == n
    services.sampling_queue()


def rank_everything(client):
    """Lease and rank until nothing waits; the shortest completion is best, as a stand-in for a preference."""
    ranked = 0
    while (response := client.post("/api/work/next/")).status_code == 200:
        lease = response.json()
        ordered = sorted(lease["completions"], key=lambda c: (len(c["text"]), c["id"]))
        answer = {"groups": [[c["id"]] for c in ordered],
                  "ratings": {str(c["id"]): {"rating": 4} for c in ordered}, "time_spent_seconds": 2}
        assert client.post(f"/api/work/assignments/{lease['id']}/submit/", answer, format="json").status_code == 200
        ranked += 1
    return ranked


def test_the_loop_samples_ranks_retrains_and_samples_from_the_new_policy(loop, settings):
    loop()
    labeler = UserFactory(username="lena", role=Role.LABELER)
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    client = api_client_for(labeler)

    import_prompts(60)
    assert wait_for(lambda: Task.objects.filter(kind="rank_completions").count() == 60), "no ranking tasks"
    base = ModelVersion.objects.get(kind="policy", status="active")
    assert set(Completion.objects.values_list("model_version", flat=True)) == {base.pk}
    assert rank_everything(client) == 60
    demonstrations(6, "train", labeler)  # the ptx term's data

    settings.TRAIN_RM_AFTER_COMPARISONS = 60
    report = services.training_check_due()
    reward_run = TrainingRun.objects.get(kind="reward")
    assert report["started"] == [reward_run.pk] and reward_run.trigger == "60+ new rankings"

    def active(kind):
        return ModelVersion.objects.filter(kind=kind, status="active").exclude(name="base").first()

    assert wait_for(lambda: TrainingRun.objects.get(pk=reward_run.pk).is_finished, timeout=240)
    reward_run.refresh_from_db()
    assert reward_run.state == "succeeded" and reward_run.gate["passed"], (reward_run.error, reward_run.log)
    assert active("reward") == reward_run.model_version

    assert wait_for(lambda: TrainingRun.objects.filter(kind="ppo").exists(), timeout=30)
    policy_run = TrainingRun.objects.get(kind="ppo")
    assert policy_run.reward_model == reward_run.model_version
    assert wait_for(lambda: TrainingRun.objects.get(pk=policy_run.pk).is_finished, timeout=300)
    policy_run.refresh_from_db()
    assert policy_run.state == "succeeded", (policy_run.error, policy_run.log)
    assert policy_run.gate["passed"], policy_run.gate["reason"]
    assert {"win_rate", "kl", "reward", "active_reward"} <= set(policy_run.metrics)
    # InstructGPT's lineage: the policy started from the active SFT model, its KL reference, with the ptx term on
    # the SFT demonstrations; its evaluation ran with the run's own options.
    sft = ModelVersion.objects.get(kind="sft", status="active")
    assert policy_run.base_model == policy_run.reference_model == sft
    assert policy_run.ptx_export.row_count == 6
    trained = json.loads((Path(policy_run.output_path) / "run.json").read_text())["config"]
    assert (trained["policy"], trained["reference"], trained["ptx_data"]) == (
        sft.artifact_path, sft.artifact_path, policy_run.ptx_export.file.path)
    evaluated = yaml.safe_load((Path(policy_run.output_path) / "evaluate.yaml").read_text())
    assert evaluated == {"max_new_tokens": 8, "temperature": 1.0, "batch_size": 8, "reward_max_length": 512,
                         "seed": 1234, "device": "cpu"}
    policy = active("policy")
    assert policy == policy_run.model_version and policy.parent == sft
    assert ModelVersion.objects.get(pk=base.pk).status == "retired"

    cache.delete(services.SAMPLING_QUEUED)  # the worker cleared it in its own cache, apart from this process's
    import_prompts(4, start=1000)
    fresh = Prompt.objects.filter(text__contains="number 100")
    assert wait_for(lambda: not fresh.filter(needs_completions=True).exists()), "the new prompts were not sampled"
    assert set(Completion.objects.filter(prompt__in=fresh).values_list("model_version", flat=True)) == {policy.pk}


def test_a_worker_killed_mid_run_leaves_the_active_model_in_place(loop, settings, labeler, tmp_path):
    worker = loop()
    planted_rankings(96, "train", labeler)
    planted_rankings(8, "valid", labeler, start=1000)
    run = services.training_run_start(kind="reward", options={"epochs": 500})
    assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).step > 0, timeout=120), "training never started"

    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    metrics = tmp_path / "models" / f"reward-{run.pk}" / "metrics.jsonl"
    size = metrics.stat().st_size
    time.sleep(2)
    assert metrics.stat().st_size == size, "training went on after its worker died"

    settings.TRAINING_STALE_AFTER_SECONDS = 1
    assert services.training_runs_reap() == [run.pk]
    run.refresh_from_db()
    assert run.state == "failed" and "stopped" in run.error
    assert not ModelVersion.objects.filter(kind="reward", status="active").exists()
    assert not ModelVersion.objects.filter(training_run=run).exclude(status="failed").exists()
    assert Ranking.objects.count() == 104


def test_a_worker_sampling_through_rlhf_serve_retries_when_the_server_stops_mid_task(loop, settings, rlhf_server,
                                                                                     tmp_path):
    server = rlhf_server(tmp_path)
    # Sixteen prompts of longer replies: seconds of requests, in which the server is stopped.
    sampler = {"SAMPLER_URL": server.url, "SAMPLER_SERVER": "rlhf", "SAMPLER_RETRY_SECONDS": 1,
               "SAMPLER_RETRY_MAX_SECONDS": 2, "SAMPLE_MAX_NEW_TOKENS": 32}
    for name, value in sampler.items():
        setattr(settings, name, value)
    loop(**sampler)
    import_prompts(16)
    assert wait_for(lambda: server.requests()), "".join(server.lines) + (tmp_path / "worker-0.log").read_text()[-2000:]
    server.stop(kill=True)  # while the task has prompts left to ask for
    log = tmp_path / "worker-0.log"
    assert wait_for(lambda: "Retry in" in log.read_text()), log.read_text()[-3000:]
    assert Prompt.objects.filter(needs_completions=True).exists()
    server.start()
    assert wait_for(lambda: not Prompt.objects.filter(needs_completions=True).exists()), log.read_text()[-3000:]
    tasks = Task.objects.filter(kind="rank_completions")
    assert sorted(tasks.values_list("prompt_id", flat=True)) == sorted(Prompt.objects.values_list("pk", flat=True))
    assert all(task.completions.count() == 4 for task in tasks) and Completion.objects.count() == 64
    base = ModelVersion.objects.get(kind="policy", status="active")
    assert set(Completion.objects.values_list("model_version", flat=True)) == {base.pk}


@pytest.mark.slow
def test_labelers_get_samples_while_a_training_run_holds_the_gpu_worker(loop, labeler):
    """Sampling has a worker of its own: a long SFT run on the gpu worker never holds up the ranking tasks."""
    loop("gpu")
    loop("default,sampling")
    demonstrations(12, "train", labeler)
    demonstrations(4, "valid", labeler)
    run = services.training_run_start(kind="sft", options={"epochs": 5000, "max_length": 64, "device": "cpu"})
    assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).step > 0, timeout=120), "the run never trained"

    import_prompts(6)
    assert wait_for(lambda: Task.objects.filter(kind="rank_completions").count() == 6), "no ranking tasks"
    run.refresh_from_db()
    assert run.state == "running" and run.step < run.total_steps
    services.training_run_cancel(run=run)
    assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).is_finished)
