"""Sampling, training runs, gates and activation, run in this process on the tiny model."""

import json
import random
import re
import threading
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from labeling import samplers, services
from labeling.services import training
from labeling.models import Completion, Demonstration, ModelVersion, Prompt, Ranking, Task, TrainingRun
from tests.factories import CompletionFactory, PromptFactory, TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def loop_settings(settings, tiny_model, tmp_path):
    settings.POLICY_MODEL = str(tiny_model)
    settings.MODELS_DIR = tmp_path / "models"
    settings.SAMPLE_MAX_NEW_TOKENS = 8
    settings.OVERLAP_SHARE = 0
    settings.TRAINING_HEARTBEAT_SECONDS = 0.5
    settings.TRAINING_OPTIONS = {
        "reward": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "device": "cpu"},
        "sft": {"epochs": 1, "batch_size": 2, "device": "cpu"},
        "ppo": {"steps": 4, "rollout_batch_size": 4, "minibatch_size": 2, "max_new_tokens": 8, "device": "cpu"},
    }
    return settings


def test_sampling_opens_a_ranking_task_of_k_completions_and_a_retry_stores_nothing_twice(loop_settings):
    prompts = [PromptFactory(needs_completions=True) for _ in range(3)]
    ids = [p.pk for p in prompts]
    assert services.completions_sample(prompt_ids=ids) == 3
    base = ModelVersion.objects.get(kind="policy", status="active")
    assert base.name == "base" and base.artifact_path == loop_settings.POLICY_MODEL
    for prompt in prompts:
        task = Task.objects.get(prompt=prompt, kind="rank_completions")
        assert task.completions.count() == 4
        assert set(task.completions.values_list("model_version", flat=True)) == {base.pk}
    assert not Prompt.objects.filter(pk__in=ids, needs_completions=True).exists()

    assert services.completions_sample(prompt_ids=ids) == 0  # a retried task
    assert Completion.objects.count() == 12 and Task.objects.count() == 3


def test_a_share_of_completions_comes_from_an_older_policy(loop_settings):
    loop_settings.SAMPLE_OLDER_SHARE = 0.5
    services.model_version_active("policy")
    older = ModelVersion.objects.create(kind="policy", name="older", status="retired",
                                        artifact_path=loop_settings.POLICY_MODEL)
    prompt = PromptFactory(needs_completions=True)
    services.completions_sample(prompt_ids=[prompt.pk])
    versions = sorted(prompt.completions.values_list("model_version__name", flat=True))
    assert versions == ["base", "base", "older", "older"]
    assert older.completions.count() == 2


def planted_rankings(count, split, labeler, start=0, reverse=False):
    """Rankings where the completion saying "excellent" is best and the rest tie: a signal the tiny model learns.

    Every completion ends in a few filler words drawn at random, so that length says nothing of the ranking and
    the first reward model's floor (chance and the length baselines) can be met. `reverse`: the worst instead.
    """
    for i in range(start, start + count):
        prompt = PromptFactory(split=split, text=f"Tell me about item {i}.")
        filler = random.Random(i)
        texts = [f"answer {j} about item {i}" + (" excellent" if j == i % 4 else " fine")
                 + " so" * filler.randrange(4) for j in range(4)]
        completions = [CompletionFactory(prompt=prompt, text=text) for text in texts]
        task = TaskFactory(kind="rank_completions", prompt=prompt, state="completed")
        task.completions.set(completions)
        best = completions[i % 4].pk
        groups = [[best], [c.pk for c in completions if c.pk != best]]
        services.ranking_save(task=task, labeler=labeler, groups=groups[::-1] if reverse else groups,
                              ratings={c.pk: {"rating": 4} for c in completions})


def run_now(kind, **options):
    run = services.training_run_start(kind=kind, options=options)
    return services.training_run_execute(run_id=run.pk)


def test_a_reward_run_exports_trains_passes_the_gate_and_starts_policy_training(
    loop_settings, labeler, django_capture_on_commit_callbacks
):
    planted_rankings(96, "train", labeler)
    planted_rankings(16, "valid", labeler, start=1000)
    with django_capture_on_commit_callbacks() as queued:
        run = run_now("reward", max_length=128)
    assert run.state == "succeeded", run.error
    version = run.model_version
    assert version.status == "active" and version.kind == "reward" and run.gate["passed"], run.gate
    assert run.metrics["accuracy"] >= 0.75 and version.metrics["accuracy"] == run.metrics["accuracy"]
    assert "baselines chance 0.500, longer-wins" in run.gate["reason"]
    # The gate judged the validation metrics of the training process itself, with the run's options.
    trained = json.loads((Path(run.output_path) / "run.json").read_text())
    assert trained["config"]["max_length"] == 128 and version.metrics["valid"]["accuracy"] == run.metrics["accuracy"]
    assert (run.export.kind, run.export.filters, run.valid_export.filters) == (
        "rankings", {"split": ["train"]}, {"split": ["valid"]})
    assert run.step == run.total_steps == 36 and run.progress == 1
    assert [p["step"] for p in run.history if p.get("split") != "valid"] == list(range(1, 37))
    assert "train-rm" in run.log  # the progress bar's lines
    policy_run = TrainingRun.objects.get(kind="ppo")
    assert policy_run.state == "queued" and "became active" in policy_run.trigger
    assert len(queued) == 2  # the policy run's task is handed to a worker (after the ... commit)


def test_a_worse_reward_model_is_refused_and_the_active_one_stays(loop_settings, labeler):
    planted_rankings(96, "train", labeler)
    planted_rankings(16, "valid", labeler, start=1000)
    good = run_now("reward").model_version
    TrainingRun.objects.filter(kind="ppo").delete()
    for ranking in Ranking.objects.filter(task__prompt__split="train"):  # bad labels: every order reversed
        ranking.groups = ranking.groups[::-1]
        ranking.save()
    worse = run_now("reward", max_length=160)
    assert worse.state == "succeeded" and not worse.gate["passed"]
    # The active model was evaluated with the new run's options, not eval-rm's defaults.
    evaluated = yaml.safe_load((Path(worse.output_path) / "evaluate.yaml").read_text())
    assert evaluated == {"max_length": 160, "batch_size": 8, "dtype": "float32", "device": "cpu"}
    assert "against the active reward-" in worse.gate["reason"]
    assert worse.model_version.status == "rejected" and worse.model_version.status_reason == worse.gate["reason"]
    assert ModelVersion.objects.get(kind="reward", status="active") == good


def test_a_first_reward_model_no_better_than_chance_or_length_is_refused(loop_settings, labeler):
    planted_rankings(48, "train", labeler, reverse=True)  # trained on reversed labels
    planted_rankings(16, "valid", labeler, start=1000)
    run = run_now("reward")
    assert run.state == "succeeded" and not run.gate["passed"]
    assert run.metrics["accuracy"] < 0.5 and {"longer_wins_accuracy", "shorter_wins_accuracy"} <= set(run.metrics)
    reason = run.gate["reason"]
    assert reason.startswith(f"First reward model: validation accuracy {run.metrics['accuracy']:.3f} on 48 pairs; "
                             "baselines chance 0.500, longer-wins ") and "plus a margin of 0.02" in reason
    assert run.model_version.status == "rejected"
    assert not ModelVersion.objects.filter(kind="reward", status="active").exists()
    assert not TrainingRun.objects.filter(kind="ppo").exists()


@pytest.mark.parametrize("baselines, accuracy, passed", [
    (["chance", "longer_wins", "shorter_wins"], 0.93, False),  # no better than "the longer wins"
    (["chance", "longer_wins", "shorter_wins"], 0.97, True),
    (["chance", "shorter_wins"], 0.60, True),  # longer is what the labelers were asked for
    (["chance", "shorter_wins"], 0.51, False),  # but it must still beat chance by the margin
])
def test_the_first_reward_model_must_beat_the_chosen_baselines_by_the_margin(settings, baselines, accuracy, passed):
    settings.RM_FIRST_BASELINES, settings.RM_FIRST_MIN_MARGIN = baselines, 0.02
    verdict, reason = training._first_reward_model_verdict(accuracy, 30, {"longer_wins": 0.94, "shorter_wins": 0.06})
    assert verdict is passed
    assert reason.startswith(f"First reward model: validation accuracy {accuracy:.3f} on 30 pairs; baselines chance "
                             "0.500, longer-wins 0.940, shorter-wins 0.060; it needs ")


def test_a_run_without_data_fails_and_says_why(loop_settings):
    run = run_now("reward")
    assert run.state == "failed" and "No training data" in run.error
    assert not ModelVersion.objects.filter(kind="reward").exists()


def test_a_policy_run_needs_an_active_reward_model(loop_settings):
    PromptFactory(split="train")
    run = run_now("ppo")
    assert run.state == "failed" and "No reward model is active yet" in run.error


def test_a_second_run_of_a_kind_is_refused_while_one_is_live(loop_settings, researcher):
    first = services.training_run_start(kind="reward", created_by=researcher)
    with pytest.raises(ValidationError, match=rf"already queued or running \(#{first.pk}, queued\)"):
        services.training_run_start(kind="reward")
    assert services.training_run_start(kind="sft")  # another kind is fine
    services.training_run_cancel(run=first)
    assert services.training_run_start(kind="reward")


@pytest.mark.django_db(transaction=True)
def test_two_starts_at_the_same_moment_make_one_run(loop_settings):
    barrier, results = threading.Barrier(4), []

    def start():
        barrier.wait()
        try:
            results.append(services.training_run_start(kind="reward", trigger="beat").pk)
        except ValidationError as exc:
            results.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert TrainingRun.objects.count() == 1
    assert sum(isinstance(r, int) for r in results) == 1


def test_beat_starts_reward_training_after_enough_new_rankings(loop_settings, labeler):
    loop_settings.TRAIN_RM_AFTER_COMPARISONS = 5
    planted_rankings(4, "train", labeler)
    assert services.training_check_due()["started"] == []
    planted_rankings(1, "train", labeler, start=50)
    report = services.training_check_due()
    (run,) = TrainingRun.objects.all()
    assert report["started"] == [run.pk] and run.kind == "reward" and run.trigger == "5+ new rankings"
    assert services.training_check_due()["started"] == []  # it is live: nothing more starts
    assert Ranking.objects.count() == 5


def test_the_watchdog_fails_a_run_whose_worker_stopped_beating(loop_settings):
    from django.utils import timezone

    run = services.training_run_start(kind="reward")
    stale = timezone.now() - timezone.timedelta(seconds=loop_settings.TRAINING_STALE_AFTER_SECONDS + 1)
    TrainingRun.objects.filter(pk=run.pk).update(state="running", heartbeat_at=stale)
    version = ModelVersion.objects.create(kind="reward", name="half-done", status="ready", training_run=run)
    assert services.training_runs_reap() == [run.pk]
    run.refresh_from_db()
    version.refresh_from_db()
    assert run.state == "failed" and "stopped" in run.error and version.status == "failed"


@pytest.mark.parametrize("options, message", [
    ({"colour": "blue"}, "Options: unknown option 'colour'"),
    ({"epoch": 2}, "Options: unknown option 'epoch'; did you mean 'epochs'?"),
    ({"epochs": "two"}, "Options: option 'epochs' must be a whole number, not 'two'"),
    ({"output": "/tmp/elsewhere"}, "Options: option 'output' is set for each run and cannot be given"),
])
def test_a_bad_training_option_is_refused_when_the_run_is_asked_for(loop_settings, options, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        services.training_run_start(kind="reward", options=options)
    assert not TrainingRun.objects.exists()


def test_a_bad_training_options_setting_is_refused_naming_the_setting(loop_settings):
    loop_settings.TRAINING_OPTIONS = {"reward": {"lr": "fast"}}
    with pytest.raises(ValidationError, match=re.escape("TRAINING_OPTIONS['reward']: option 'lr' must be a number")):
        services.training_run_start(kind="reward")
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_samplers_see_the_old_or_the_new_version_never_none(loop_settings):
    first = ModelVersion.objects.create(kind="policy", name="one", status="active")
    second = ModelVersion.objects.create(kind="policy", name="two", status="ready")
    seen, done = [], threading.Event()

    def read():
        try:
            while not done.is_set():
                seen.append(ModelVersion.objects.filter(kind="policy", status="active").values_list("name", flat=True)
                            .first())
        finally:
            connection.close()

    reader = threading.Thread(target=read)
    reader.start()
    for n in range(20):
        services.model_version_activate(version=second if n % 2 == 0 else first, reason="swap")
    done.set()
    reader.join()
    assert len(seen) > 20 and None not in seen and set(seen) <= {"one", "two"}
    assert ModelVersion.objects.filter(kind="policy", status="active").count() == 1


def demonstrations(count, split, labeler):
    for i in range(count):
        prompt = PromptFactory(split=split, text=f"Name colour {i}.")
        Demonstration.objects.create(prompt=prompt, author=labeler, messages=[
            {"role": "user", "content": prompt.text}, {"role": "assistant", "content": f"Colour {i} is teal."}])


def test_an_sft_run_is_activated_when_its_validation_loss_beats_the_active_models(loop_settings, labeler):
    demonstrations(12, "train", labeler)
    demonstrations(4, "valid", labeler)
    reward = ModelVersion.objects.create(kind="reward", name="rm-1", status="active")
    run = run_now("sft", epochs=3, lr=1e-3, max_length=96)
    assert run.state == "succeeded" and run.gate["passed"], run.gate
    assert run.metrics["valid_loss"] < run.metrics["active_valid_loss"]
    assert ModelVersion.objects.get(kind="sft", status="active") == run.model_version
    assert run.model_version.parent.name == "base"
    evaluated = yaml.safe_load((Path(run.output_path) / "evaluate.yaml").read_text())
    assert evaluated == {"max_length": 96, "batch_size": 2, "dtype": "float32", "device": "cpu"}
    # A new SFT model starts a policy round, with it as the reference.
    policy_run = TrainingRun.objects.get(kind="ppo")
    assert policy_run.trigger == f"SFT model {run.model_version.name} became active"
    assert (policy_run.reference_model, policy_run.reward_model) == (run.model_version, reward)


@pytest.fixture
def launched(monkeypatch):
    """The command lines of the run's child processes, none of which is started: the run stops at the first."""
    commands = []

    def follow(run, command, log_path, on_tick=None):
        commands.append(command)
        raise training.RunStopped("stopped by the test")

    monkeypatch.setattr(training, "_follow", follow)
    return commands


def option_of(command, name):
    return command[command.index(name) + 1] if name in command else None


def policy_run_with(reward_path="reward-folder"):
    reward = ModelVersion.objects.create(kind="reward", name="rm-1", status="active", artifact_path=reward_path)
    PromptFactory(split="train")
    return services.training_run_execute(run_id=services.training_run_start(kind="ppo").pk), reward


def test_a_policy_round_can_continue_from_the_active_policy_keeping_the_sft_reference(loop_settings, launched):
    loop_settings.POLICY_START = "active"
    sft = ModelVersion.objects.create(kind="sft", name="sft-4", status="active", artifact_path="sft-folder")
    policy = ModelVersion.objects.create(kind="policy", name="ppo-7", status="active", artifact_path="policy-folder")
    run, reward = policy_run_with()
    (command,) = launched
    assert (run.base_model, run.reference_model, run.reward_model) == (policy, sft, reward)
    assert [option_of(command, name) for name in ("--policy", "--reference", "--reward-model")] == [
        "policy-folder", "sft-folder", "reward-folder"]
    assert option_of(command, "--ptx-data") is None and run.ptx_export is None  # no demonstrations yet


def test_a_configured_pretraining_corpus_is_the_ptx_data(loop_settings, launched, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"text": "Plain text."}) + "\n")
    loop_settings.PTX_DATA = str(corpus)
    run, _ = policy_run_with()
    assert (run.ptx_path, run.ptx_export, option_of(launched[0], "--ptx-data")) == (str(corpus), None, str(corpus))


def test_an_sft_run_with_feedme_trains_on_top_rated_completions_and_validates_on_demonstrations(
    loop_settings, launched, labeler
):
    demonstrations(2, "train", labeler)
    demonstrations(1, "valid", labeler)
    for split in ("train", "valid"):
        task = TaskFactory(kind="rank_completions", prompt=PromptFactory(split=split))
        task.completions.set(CompletionFactory.create_batch(4, prompt=task.prompt))
        best, *rest = task.completions.values_list("pk", flat=True)
        services.ranking_save(task=task, labeler=labeler, groups=[[best], rest],
                              ratings={best: {"rating": 7}} | {pk: {"rating": 3} for pk in rest})
    run = services.training_run_execute(run_id=services.training_run_start(kind="sft", options={"feedme": True}).pk)
    (command,) = launched
    assert run.config["feedme"] is True
    assert run.export.manifest["counts"] == {"rows": 3, "demonstrations": 2, "top_rated_completions": 1}
    assert run.valid_export.manifest["counts"] == {"rows": 1, "demonstrations": 1}
    trained = [json.loads(line) for line in Path(option_of(command, "--data")).read_text().splitlines()]
    assert [row["source"] for row in trained] == ["demonstration", "demonstration", "top_rated_completion"]
    # rlhf refuses options it does not have: the site's own choice of data stays with the site.
    assert "feedme" not in yaml.safe_load(Path(option_of(command, "--config")).read_text())
    with pytest.raises(ValidationError, match="option 'feedme' must be true or false"):
        services.training_run_start(kind="sft", options={"feedme": "sometimes"})


def test_the_in_process_sampler_frees_its_model_before_a_training_run(loop_settings, launched, labeler):
    samplers.sampler_release()  # what earlier tests left loaded
    prompt = PromptFactory(needs_completions=True)
    assert services.completions_sample(prompt_ids=[prompt.pk]) == 1
    assert samplers._load.cache_info().currsize == 1  # kept loaded between sampling tasks
    demonstrations(2, "train", labeler)
    services.training_run_execute(run_id=services.training_run_start(kind="sft").pk)
    assert launched and samplers._load.cache_info().currsize == 0


def test_a_missing_pretraining_corpus_stops_the_policy_run_saying_so(loop_settings, labeler):
    loop_settings.PTX_DATA = "/nowhere/corpus.jsonl"
    ModelVersion.objects.create(kind="reward", name="rm-1", status="active")
    PromptFactory(split="train")
    run = run_now("ppo")
    assert run.state == "failed"
    assert run.error == "PTX_DATA names /nowhere/corpus.jsonl, which is not a file on this worker."


def test_manage_check_names_bad_training_options(loop_settings):
    loop_settings.TRAINING_OPTIONS = {"reward": {"epoch": 1}, "eval_policy": {"max_new_tokens": 8}}
    with pytest.raises(SystemCheckError) as caught:
        call_command("check")
    assert "TRAINING_OPTIONS['reward']: unknown option 'epoch'; did you mean 'epochs'?" in str(caught.value)
    assert "TRAINING_OPTIONS has options for 'eval_policy', which is not a kind of run." in str(caught.value)


def test_training_runs_under_torchrun_when_several_processes_are_set(loop_settings, labeler):
    loop_settings.TRAINING_PROCESSES = 2
    planted_rankings(16, "train", labeler)
    run = run_now("reward", epochs=1)
    assert run.state == "succeeded", run.error
    record = json.loads((Path(run.output_path) / "run.json").read_text())
    assert record["world_size"] == 2


def test_beat_starts_a_policy_for_a_new_reward_model_and_sft_after_enough_demonstrations(loop_settings, labeler):
    loop_settings.TRAIN_SFT_AFTER_DEMONSTRATIONS = 3
    ModelVersion.objects.create(kind="reward", name="rm-1", status="active")
    demonstrations(3, "train", labeler)
    services.training_check_due()
    assert sorted(TrainingRun.objects.values_list("kind", "trigger")) == [
        ("ppo", "reward model rm-1 and SFT model base are active"), ("sft", "3+ new demonstrations")]
    TrainingRun.objects.update(state="failed")
    services.training_check_due()  # the policy for rm-1 was tried once; only SFT starts again
    assert TrainingRun.objects.filter(kind="ppo").count() == 1 and TrainingRun.objects.filter(kind="sft").count() == 2


def test_a_policy_round_starts_from_the_sft_model_its_reference_with_the_ptx_term_and_its_own_eval_options(
    loop_settings, labeler
):
    planted_rankings(64, "train", labeler)
    planted_rankings(16, "valid", labeler, start=1000)
    demonstrations(6, "train", labeler)
    reward = run_now("reward", max_length=192).model_version
    sft = ModelVersion.objects.get(kind="sft", status="active")
    policy_run = TrainingRun.objects.get(kind="ppo")
    assert (policy_run.reward_model, policy_run.reference_model) == (reward, sft)
    TrainingRun.objects.filter(pk=policy_run.pk).update(config={**policy_run.config, "lr": 1e-2})  # KL well above 0
    loop_settings.POLICY_GATE_MAX_KL = 0.0  # any drift at all is too far
    policy_run = services.training_run_execute(run_id=policy_run.pk)
    assert policy_run.state == "succeeded" and not policy_run.gate["passed"]
    assert "(limit 0)" in policy_run.gate["reason"] and policy_run.model_version.status == "rejected"
    assert ModelVersion.objects.get(kind="policy", status="active").name == "base"
    # InstructGPT's lineage: SFT -> reward model -> policy, with the ptx term on the SFT demonstrations.
    assert policy_run.base_model == policy_run.reference_model == sft and policy_run.model_version.parent == sft
    assert policy_run.ptx_export.kind == "sft" and policy_run.ptx_export.row_count == 6
    trained = json.loads((Path(policy_run.output_path) / "run.json").read_text())["config"]
    assert (trained["policy"], trained["reference"], trained["value_model"]) == (
        sft.artifact_path, sft.artifact_path, "")  # the value model starts from the reward model
    assert trained["ptx_data"] == policy_run.ptx_export.file.path and trained["reward_max_length"] == 192
    # Its evaluation took the run's own options.
    evaluated = yaml.safe_load((Path(policy_run.output_path) / "evaluate.yaml").read_text())
    assert evaluated == {"max_new_tokens": 8, "temperature": 1.0, "batch_size": 4, "reward_max_length": 192,
                         "seed": 1234, "device": "cpu"}


@pytest.mark.slow
def test_a_loop_of_lora_runs_registers_adapters_over_the_base_and_the_registry_shows_both(
        loop_settings, labeler, client, researcher):
    lora = {"lora_rank": 4, "lora_alpha": 8.0}
    for kind in ("reward", "sft", "ppo"):
        loop_settings.TRAINING_OPTIONS[kind] |= lora
    planted_rankings(96, "train", labeler)
    planted_rankings(16, "valid", labeler, start=1000)
    demonstrations(12, "train", labeler)
    demonstrations(4, "valid", labeler)
    base = Path(loop_settings.POLICY_MODEL).resolve()
    sft = run_now("sft", epochs=3, lr=1e-2, max_length=96)
    reward = run_now("reward", max_length=128)  # which starts a policy round from the active SFT model
    for run in (reward, sft):
        assert run.state == "succeeded" and run.gate["passed"], (run.error, run.gate)
        version = run.model_version
        assert version.status == "active" and version.base_path == str(base)
        assert version.adapter == {"rank": 4, "alpha": 8.0, "target_modules": [
            "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc",
            "transformer.h.0.mlp.c_proj", "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj",
            "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]}
        assert (Path(version.artifact_path) / "adapter_config.json").is_file()
    # The policy round starts from the SFT adapter (its reference) and optimises against the reward adapter.
    policy = services.training_run_execute(run_id=TrainingRun.objects.get(kind="ppo", state="queued").pk)
    assert policy.state == "succeeded", policy.error
    assert (policy.base_model, policy.reference_model, policy.reward_model) == (
        sft.model_version, sft.model_version, reward.model_version)
    version = policy.model_version
    assert version.base_path == str(base) and version.adapter["rank"] == 4 and version.parent == sft.model_version
    assert "win_rate" in version.metrics  # the gate's eval-policy read the adapter over its base

    client.force_login(researcher)
    page = client.get(f"/research/models/{version.pk}/").content.decode()
    first = ModelVersion.objects.get(kind="sft", name="base")
    assert "LoRA adapter (rank 4, alpha 8)" in page and f'href="/research/models/{first.pk}/"' in page
    assert str(base) in client.get("/research/models/").content.decode()
    found = client.get(f"/api/model-versions/{version.pk}/").json()
    assert found["base_path"] == str(base) and found["adapter"]["rank"] == 4
