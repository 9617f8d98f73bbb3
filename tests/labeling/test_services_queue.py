"""The queue's mix: which kind of task a lease offers, what is sampled first, and what beat's rules wait for."""

import random
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling import selectors, services
from labeling.models import Assignment, Completion, Export, LabelerProfile, ModelVersion, Task, TrainingRun
from labeling.services.work import kinds_in_turn
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, ranking_task
from tests.labeling.test_training_loop import planted_rankings

pytestmark = pytest.mark.django_db

KINDS = Task.Kind.values


@pytest.fixture
def alice(labeler):
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE)
    return labeler


def leased_kinds(labeler, leases):
    """The kinds of `leases` tasks in a row, each skipped once seen, as a labeler who only looks would."""
    kinds = []
    for _ in range(leases):
        assignment = services.task_lease_next(labeler=labeler)
        if assignment is None:
            break
        kinds.append(assignment.task.kind)
        services.assignment_skip(assignment=assignment, labeler=labeler, reason=Assignment.SkipReason.values[0])
    return kinds


def test_a_kind_comes_first_as_often_as_its_share():
    shares = {"rank_completions": 0.6, "write_demonstration": 0.2, "chat": 0.1, "annotate_prompt": 0.1}
    rng = random.Random(0)
    firsts = Counter(kinds_in_turn(shares=shares, rng=rng)[0] for _ in range(20_000))
    for kind, share in shares.items():
        assert firsts[kind] / 20_000 == pytest.approx(share, abs=0.015), kind
    assert firsts["write_prompt"] == 0  # no share: only after every other kind


def test_every_kind_is_tried_once_and_kinds_without_a_share_come_last():
    shares = {"annotate_prompt": 1, "chat": 0}
    for seed in range(50):
        order = kinds_in_turn(shares=shares, rng=random.Random(seed))
        assert sorted(order) == sorted(KINDS) and order[0] == "annotate_prompt"
    assert kinds_in_turn(["chat", "annotate_prompt"], shares=shares) == ["annotate_prompt", "chat"]


def test_rankings_come_ahead_of_annotations_by_their_shares(alice, settings):
    settings.QUEUE_SHARES = {"rank_completions": 0.75, "annotate_prompt": 0.25}
    settings.GOLD_TASK_RATE = 0
    for _ in range(40):
        ranking_task()
        TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    random.seed(7)
    kinds = Counter(leased_kinds(alice, 40))
    # 40 draws at 0.75: the binomial's mean is 30 and its standard deviation 2.7.
    assert 22 <= kinds["rank_completions"] <= 38 and kinds["annotate_prompt"] == 40 - kinds["rank_completions"]


def test_a_kind_without_a_share_comes_once_nothing_else_waits(alice, settings):
    settings.QUEUE_SHARES = {"rank_completions": 1}
    ranking_task()
    TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    assert leased_kinds(alice, 3) == ["rank_completions", "annotate_prompt"]


def test_a_task_with_a_priority_comes_first_whatever_its_kinds_share(alice, settings):
    settings.QUEUE_SHARES = {"annotate_prompt": 1}
    TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    judged = ranking_task()
    Task.objects.filter(pk=judged.pk).update(priority=settings.EVALUATION_PRIORITY)
    assert services.task_lease_next(labeler=alice).task == judged


def test_a_labeler_enabled_for_some_kinds_gets_only_those(alice, settings):
    settings.QUEUE_SHARES = {"rank_completions": 1}
    LabelerProfile.objects.filter(user=alice).update(task_kinds=["annotate_prompt"])
    ranking_task()
    TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    assert leased_kinds(alice, 3) == ["annotate_prompt"]


# What is sampled first


def demonstration_task(prompt=None):
    prompt = prompt or PromptFactory(needs_completions=True)
    return TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt)


def test_prompts_a_demonstration_waits_on_are_sampled_first(settings):
    earlier = PromptFactory(needs_completions=True)
    demonstration = demonstration_task()
    assert services.prompts_needing_completions(1) == [demonstration.prompt_id]
    assert services.prompts_needing_completions(5) == [demonstration.prompt_id, earlier.pk]


def test_sampling_pauses_while_the_ranking_buffer_is_full_but_not_for_suggestions(settings):
    settings.RANKING_BUFFER = 2
    waiting = PromptFactory(needs_completions=True)
    demonstration = demonstration_task()
    ranking_task()
    assert services.prompts_needing_completions(5) == [demonstration.prompt_id, waiting.pk]
    ranking_task()
    assert services.prompts_needing_completions(5) == [demonstration.prompt_id]
    settings.RANKING_BUFFER = 0
    assert services.prompts_needing_completions(5) == [demonstration.prompt_id, waiting.pk]


def test_a_demonstration_task_waits_for_its_suggestion_when_the_setting_says_so(alice, settings, client):
    settings.DEMONSTRATIONS_WAIT_FOR_SUGGESTION = True
    task = demonstration_task()
    assert services.task_lease_next(labeler=alice) is None
    CompletionFactory(prompt=task.prompt, model_version=ModelVersionFactory(status="retired"), text="Try this one.")
    assignment = services.task_lease_next(labeler=alice)
    assert assignment.task == task
    client.force_login(alice)
    page = client.get(f"/work/tasks/{assignment.pk}/").content.decode()
    assert "Model suggestion" in page and "Try this one." in page


def test_without_the_setting_a_demonstration_task_is_offered_before_its_suggestion(alice, settings):
    settings.DEMONSTRATIONS_WAIT_FOR_SUGGESTION = False
    task = demonstration_task()
    assert services.task_lease_next(labeler=alice).task == task


def test_the_suggestion_is_the_active_models_reply_first():
    prompt = PromptFactory()
    retired = CompletionFactory(prompt=prompt, model_version=ModelVersionFactory(status="retired"))
    assert selectors.model_suggestion(prompt) == retired
    sft = CompletionFactory(prompt=prompt, model_version=ModelVersionFactory(kind="sft", status="active"))
    assert selectors.model_suggestion(prompt) == sft
    policy = CompletionFactory(prompt=prompt, model_version=ModelVersionFactory(status="active"))
    assert selectors.model_suggestion(prompt) == policy
    for never_active in (ModelVersionFactory(status="ready"), ModelVersionFactory(status="failed"),
                         ModelVersionFactory(kind="reward", status="active")):
        CompletionFactory(prompt=prompt, model_version=never_active)
        assert selectors.model_suggestion(prompt) == policy
    assert Completion.objects.count() == 6


# Beat's rules, on the Training page


def trained_version(kind, name, data_at):
    export = Export.objects.create(kind="rankings" if kind == "reward" else "sft")
    Export.objects.filter(pk=export.pk).update(created_at=data_at)
    run = TrainingRun.objects.create(kind=kind, state="succeeded", export=export)
    return ModelVersionFactory(kind=kind, name=name, status="active", training_run=run)


def test_the_training_page_shows_each_rules_progress(as_researcher, labeler, settings):
    settings.TRAIN_RM_AFTER_COMPARISONS, settings.TRAIN_SFT_AFTER_DEMONSTRATIONS = 24, 10
    planted_rankings(5, "train", labeler)
    trained_version("reward", "reward-2", timezone.now())
    planted_rankings(17, "train", labeler, start=5)
    page = as_researcher.get("/research/training/").content.decode()
    assert "17 of 24 new rankings since reward-2" in page
    assert "0 of 10 new demonstrations so far" in page
    rules = {rule.kind: rule for rule in selectors.training_rules()}
    assert not rules["reward"].due and not rules["sft"].due
    assert rules["ppo"].due and "reward-2" in rules["ppo"].progress

    planted_rankings(7, "train", labeler, start=22)
    assert "24 of 24 new rankings since reward-2" in as_researcher.get("/research/training/").content.decode()
    assert {rule.kind for rule in selectors.training_rules() if rule.due} == {"reward", "ppo"}


def test_beat_starts_the_runs_its_rules_find_due(labeler, settings):
    settings.TRAIN_RM_AFTER_COMPARISONS = 3
    planted_rankings(3, "train", labeler)
    report = services.training_check_due()
    run = TrainingRun.objects.get(kind="reward")
    assert report["started"] == [run.pk] and run.trigger == "3+ new rankings"
    rule = next(rule for rule in selectors.training_rules() if rule.kind == "reward")
    assert rule.live == run and not rule.due
    assert services.training_check_due()["started"] == []


def test_the_training_page_says_why_a_run_waits(as_researcher):
    running = TrainingRun.objects.create(kind="sft", state="running", started_at=timezone.now())
    queued = TrainingRun.objects.create(kind="reward")
    page = as_researcher.get("/research/training/").content.decode()
    assert f"Waits for run #{running.pk} (supervised fine-tuning), which the gpu worker is training" in page
    TrainingRun.objects.filter(pk=running.pk).update(state="succeeded")
    TrainingRun.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    page = as_researcher.get("/research/training/").content.decode()
    assert "No gpu worker has taken it for 5 minutes" in page
