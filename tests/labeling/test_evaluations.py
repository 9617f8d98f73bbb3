"""Human evaluations: a candidate against baselines on test-split prompts, one sample per model, judged as
ranking tasks that come first, by whom they may, and kept out of training data."""

import math
import re
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from labeling import services
from labeling.evaluations import evaluation_results, leaderboard
from labeling.models import Evaluation, LabelerProfile, ModelVersion, Prompt, Ranking, Task, TrainingRun
from tests.conftest import api_client_for
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, ranking_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(settings, tiny_model):
    settings.POLICY_MODEL = str(tiny_model)
    settings.SAMPLE_MAX_NEW_TOKENS = 8
    settings.OVERLAP_SHARE = 0
    base = services.model_version_active(ModelVersion.Kind.POLICY)
    run = TrainingRun.objects.create(kind=TrainingRun.Kind.PPO, state=TrainingRun.State.SUCCEEDED)
    candidate = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, name="ppo-1", status=ModelVersion.Status.READY,
                                    artifact_path=str(tiny_model), training_run=run)
    return candidate, base


@pytest.fixture
def test_prompts(db):
    return [PromptFactory(split=Prompt.Split.TEST, text=f"Test prompt {n}: name a colour.") for n in range(5)]


def start(candidate, baselines, prompt_count=3, **options):
    return services.evaluation_start(candidate=candidate, baselines=baselines, prompt_count=prompt_count, **options)


def test_an_evaluation_samples_each_model_once_per_test_prompt_and_opens_ranking_tasks(versions, test_prompts):
    candidate, base = versions
    PromptFactory(split=Prompt.Split.TRAIN)  # never evaluated on
    evaluation = start(candidate, [base])
    assert len(evaluation.prompt_ids) == 3 and set(evaluation.prompt_ids) <= {p.pk for p in test_prompts}
    evaluation = services.evaluation_sample(evaluation_id=evaluation.pk)
    assert evaluation.state == Evaluation.State.OPEN and evaluation.opened_at
    tasks = list(evaluation.tasks.order_by("prompt_id"))
    assert [task.prompt_id for task in tasks] == evaluation.prompt_ids
    for task in tasks:
        assert task.kind == Task.Kind.RANK_COMPLETIONS and task.priority == 10
        completions = list(task.completions.order_by("model_version_id"))
        assert [c.model_version for c in completions] == [base, candidate]
        assert completions[0].seed == completions[1].seed  # the same seed and settings: only the model differs
        assert completions[0].sampling_params == {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 8}
        assert all(c.text for c in completions)
    # Sampling again opens nothing more.
    Evaluation.objects.filter(pk=evaluation.pk).update(state=Evaluation.State.SAMPLING)
    services.evaluation_sample(evaluation_id=evaluation.pk)
    assert evaluation.tasks.count() == 3


def test_an_evaluation_takes_every_test_prompt_when_asked_for_more(versions, test_prompts):
    candidate, base = versions
    assert len(start(candidate, [base], prompt_count=50).prompt_ids) == 5


@pytest.mark.parametrize(("change", "said"), [
    ({"baselines": []}, "at least one baseline"),
    ({"baselines": ["candidate"]}, "must be different model versions"),
    ({"prompt_count": 0}, "1 to 2,000 prompts"),
    ({"prompt_count": "3"}, "1 to 2,000 prompts"),
    ({"held_out_labelers": "yes"}, "true or false"),
])
def test_a_bad_evaluation_is_refused_with_the_reason(versions, test_prompts, change, said):
    candidate, base = versions
    options = {"baselines": [base], "prompt_count": 3, **change}
    options["baselines"] = [candidate if b == "candidate" else b for b in options["baselines"]]
    with pytest.raises(ValidationError, match=said):
        services.evaluation_start(candidate=candidate, **options)
    assert not Evaluation.objects.exists()


def test_only_models_that_write_replies_are_evaluated(versions, test_prompts):
    candidate, base = versions
    reward = ModelVersionFactory(kind=ModelVersion.Kind.REWARD, artifact_path="x", status="ready")
    with pytest.raises(ValidationError, match="writes no replies"):
        start(candidate, [reward])
    training = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status="training")
    with pytest.raises(ValidationError, match="no model to sample from"):
        start(training, [base])


def test_there_must_be_test_prompts(versions):
    candidate, base = versions
    with pytest.raises(ValidationError, match="no prompts in the test split"):
        start(candidate, [base])


@pytest.fixture
def judges(labeler, other_labeler):
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    return labeler, other_labeler


def test_evaluation_tasks_come_first_and_never_to_the_prompts_writer(versions, test_prompts, judges):
    candidate, base = versions
    alice, bob = judges
    older = ranking_task(k=4)  # older work in the queue
    Prompt.objects.filter(split=Prompt.Split.TEST).update(created_by=alice)  # she wrote the test prompts
    evaluation = services.evaluation_sample(evaluation_id=start(candidate, [base], prompt_count=1).pk)
    assert services.task_lease_next(labeler=bob).task == evaluation.tasks.get()
    assert services.task_lease_next(labeler=alice).task == older


def test_held_out_labelers_are_those_with_no_training_data_before_the_candidate(versions, test_prompts, judges):
    candidate, base = versions
    alice, bob = judges
    earlier = ranking_task(k=4)
    ids = list(earlier.completions.values_list("id", flat=True))
    services.ranking_save(task=earlier, labeler=alice, groups=[ids], ratings={i: {"rating": 4} for i in ids})
    Task.objects.filter(pk=earlier.pk).update(state=Task.State.COMPLETED)
    ModelVersion.objects.filter(pk=candidate.pk).update(created_at=candidate.created_at.replace(year=2999))
    evaluation = services.evaluation_sample(
        evaluation_id=start(candidate, [base], prompt_count=1, held_out_labelers=True).pk)
    assert services.task_lease_next(labeler=alice) is None  # her ranking may be in the candidate's data
    assert services.task_lease_next(labeler=bob).task.evaluation == evaluation


def test_judgments_are_no_training_data_unless_asked_for(versions, test_prompts, judges, researcher, settings):
    candidate, base = versions
    alice, _ = judges
    settings.TRAIN_RM_AFTER_COMPARISONS = 1
    evaluation = services.evaluation_sample(evaluation_id=start(candidate, [base], prompt_count=1).pk)
    assignment = services.task_lease_next(labeler=alice)
    ids = list(assignment.task.completions.values_list("id", flat=True))
    services.ranking_submit(assignment=assignment, labeler=alice, groups=[[ids[0]], [ids[1]]],
                            ratings={i: {"rating": 5} for i in ids})
    assert Ranking.objects.filter(task__evaluation=evaluation).count() == 1
    assert services.training_check_due()["started"] == []  # a judgment is not a new comparison to train on

    def rows(**filters):
        export = services.export_create(kind="preference_pairs", fmt="jsonl", filters=filters, created_by=researcher,
                                        queue=False)
        return services.export_run(export_id=export.pk).row_count

    assert rows() == 0 and rows(include_evaluations=True) == 1


def judged(evaluation, prompt, outputs, judgments, labelers):
    """A task of the evaluation on `prompt` with one output per version, and each labeler's judgment: `outputs`
    maps a version to its text, a judgment is (groups of versions, {version: rating or (rating, flag)})."""
    task = TaskFactory(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt, evaluation=evaluation,
                       required_annotations=len(judgments))
    completions = {version: CompletionFactory(prompt=prompt, model_version=version, text=text)
                   for version, text in outputs.items()}
    task.completions.set(completions.values())
    for labeler, (groups, ratings) in zip(labelers, judgments, strict=False):
        services.ranking_save(
            task=task, labeler=labeler, groups=[[completions[v].pk for v in group] for group in groups],
            ratings={completions[v].pk: {"rating": r[0], "hallucination": True} if isinstance(r, tuple)
                     else {"rating": r} for v, r in ratings.items()})
    return task


def test_results_worked_by_hand(versions, test_prompts, judges):
    candidate, base = versions
    alice, bob = judges
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN)
    evaluation.baselines.set([base])
    first, second = test_prompts[:2]
    Prompt.objects.filter(pk=second.pk).update(use_case="brainstorming")
    second.refresh_from_db()
    judged(evaluation, first, {candidate: "A", base: "B"}, [
        ([[candidate], [base]], {candidate: 5, base: 2}),
        ([[base], [candidate]], {candidate: (3, "hallucination"), base: 6}),
    ], [alice, bob])
    judged(evaluation, second, {candidate: "C", base: "D"}, [([[candidate, base]], {candidate: 4, base: 4})], [alice])
    results = evaluation_results(evaluation)
    assert (results["judgments"], results["prompts_judged"], results["tasks"]) == (3, 2, 2)
    [win] = results["win_rates"]
    assert win["baseline"] == "base" and win["value"] == pytest.approx(0.5) and win["prompts"] == 2
    assert 0 <= win["low"] <= 0.5 <= win["high"] <= 1
    by_use_case = {row["use_case"]: row["value"] for row in results["by_use_case"]}
    assert by_use_case == {"unspecified": 0.5, "brainstorming": 0.5}
    models = {row["version"]: row for row in results["models"]}
    assert models["ppo-1"]["rating"]["value"] == pytest.approx(4.0) and models["base"]["rating"]["value"] == 4.0
    assert models["ppo-1"]["flag_rates"]["hallucination"] == pytest.approx(1 / 3)
    assert models["base"]["flag_rates"]["hallucination"] == 0
    assert results["agreement"] == {"value": 0.0, "tasks": 1}  # the two judges of the first prompt disagree


def test_the_leaderboard_orders_every_judged_version_with_intervals(versions, test_prompts, judges):
    candidate, base = versions
    alice, _ = judges
    weak = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, name="weak", status="ready", artifact_path="x")
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN)
    evaluation.baselines.set([base, weak])
    for n in range(12):
        prompt = PromptFactory(split=Prompt.Split.TEST)
        order = [[candidate], [base], [weak]] if n % 4 else [[base], [candidate], [weak]]
        judged(evaluation, prompt, {candidate: "a", base: "b", weak: "c"},
               [(order, {candidate: 4, base: 4, weak: 2})], [alice])
    board = leaderboard()["versions"]
    assert [entry["version"] for entry in board] == ["ppo-1", "base", "weak"]  # weak never won: still ranked
    assert all(entry["low"] <= entry["strength"] <= entry["high"] for entry in board)
    assert board[0]["comparisons"] == 24 and all(math.isfinite(entry["low"]) for entry in board)


def test_a_researcher_starts_an_evaluation_and_reads_its_results_through_the_api(versions, test_prompts, researcher,
                                                                                 labeler):
    candidate, base = versions
    api = api_client_for(researcher)
    body = {"candidate": candidate.pk, "baselines": [base.pk], "prompts": 2}
    response = api.post("/api/evaluations/", body, format="json")
    assert response.status_code == 202, response.json()
    started = response.json()
    assert (started["candidate"], started["baselines"], started["prompts"], started["state"]) == (
        "ppo-1", ["base"], 2, "sampling")
    services.evaluation_sample(evaluation_id=started["id"])
    detail = api.get(f"/api/evaluations/{started['id']}/").json()
    assert detail["state"] == "open" and detail["results"]["tasks"] == 2 and detail["results"]["judgments"] == 0
    [win] = detail["results"]["win_rates"]
    assert {name: win[name] for name in ("baseline", "baseline_kind", "value", "low", "high", "n", "prompts")} == {
        "baseline": "base", "baseline_kind": "policy", "value": None, "low": None, "high": None, "n": 0, "prompts": 0}
    board = api.get("/api/evaluations/leaderboard/").json()
    assert (board["versions"], board["judgments"], board["stale"]) == ([], 0, False)
    # Bad input is a 400 naming it; labelers may not start one.
    for bad, said in (({**body, "baselines": [candidate.pk]}, "must be different"),
                      ({**body, "prompts": 0}, "1 to 2,000 prompts"),
                      ({**body, "candidate": 99999}, "candidate")):
        refused = api.post("/api/evaluations/", bad, format="json")
        assert refused.status_code == 400 and said in str(refused.json())
    assert api_client_for(labeler).post("/api/evaluations/", body, format="json").status_code == 403


def test_the_evaluate_command_starts_one_and_shows_its_results(versions, test_prompts):
    candidate, base = versions
    out = StringIO()
    call_command("evaluate", "ppo-1", "--against", "base", "--prompts", "2", stdout=out)
    evaluation = Evaluation.objects.get()
    assert f"Evaluation #{evaluation.pk}: 2 prompts queued" in out.getvalue()
    call_command("evaluate", "--show", str(evaluation.pk), stdout=out)
    assert "against base: wins no judgments yet" in out.getvalue()
    with pytest.raises(CommandError, match="no policy, SFT or external version named 'nope'"):
        call_command("evaluate", "ppo-1", "--against", "nope")
    with pytest.raises(CommandError, match="must be different"):
        call_command("evaluate", "ppo-1", "--against", "ppo-1")


@pytest.fixture
def gated(versions, test_prompts, settings):
    """A policy that passed the reward-model gate, held for humans to judge against the active one."""
    settings.HUMAN_GATE_MIN_JUDGMENTS = 4
    settings.HUMAN_GATE_PROMPTS = 5
    settings.OVERLAP_SHARE, settings.OVERLAP_ANNOTATIONS = 1, 2  # each output judged twice
    candidate, base = versions
    evaluation = services.human_gate_start(version=candidate, reason="Win rate 60% under reward-1.")
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.AWAITING and "Awaiting human evaluation" in candidate.status_reason
    assert evaluation.gates and list(evaluation.baselines.all()) == [base]
    return services.evaluation_sample(evaluation_id=evaluation.pk)


def judge_all(evaluation, labelers, candidate_wins):
    """Each labeler judges each open task of the evaluation: the candidate first when `candidate_wins`."""
    for labeler in labelers:
        while (assignment := services.task_lease_next(labeler=labeler)) is not None:
            completions = {c.model_version_id: c.pk for c in assignment.task.completions.all()}
            mine = completions.pop(evaluation.candidate_id)
            groups = [[mine], list(completions.values())] if candidate_wins else [list(completions.values()), [mine]]
            services.ranking_submit(assignment=assignment, labeler=labeler, groups=groups,
                                    ratings={pk: {"rating": 4} for pk in [mine, *completions.values()]})


def test_the_human_gate_waits_for_enough_judgments_then_activates_a_clear_win(gated, judges, settings):
    settings.HUMAN_GATE_MIN_JUDGMENTS = 6
    alice, bob = judges
    judge_all(gated, [alice], candidate_wins=True)  # five judgments, the tasks still open: not enough yet
    assert services.human_gates_decide() == []
    assert ModelVersion.objects.get(pk=gated.candidate_id).status == ModelVersion.Status.AWAITING
    settings.HUMAN_GATE_MIN_JUDGMENTS = 5
    assert services.training_check_due()["human_gates"] == [("ppo-1", "activated")]
    candidate = ModelVersion.objects.get(pk=gated.candidate_id)
    assert candidate.status == ModelVersion.Status.ACTIVE and "win rate against base 100%" in candidate.status_reason
    gated.refresh_from_db()
    assert gated.state == Evaluation.State.COMPLETED


def test_the_human_gate_refuses_a_clear_loss_and_says_why(gated, judges):
    alice, _ = judges
    judge_all(gated, [alice], candidate_wins=False)
    assert services.human_gate_decide(evaluation=gated) == "refused"
    candidate = ModelVersion.objects.get(pk=gated.candidate_id)
    assert candidate.status == ModelVersion.Status.REJECTED
    assert "win rate against base 0% [0%, 0%] over 5 judgments" in candidate.status_reason
    assert ModelVersion.objects.get(kind="policy", status="active").name == "base"


def test_a_policy_that_passes_the_reward_model_gate_waits_for_humans_when_the_gate_is_on(versions, settings):
    candidate, _ = versions
    settings.HUMAN_GATE = True
    refused = services.human_gate_start(version=candidate, reason="Win rate 60%.")  # no test prompts to judge on
    candidate.refresh_from_db()
    assert refused is None and candidate.status == ModelVersion.Status.REJECTED
    assert "could not start an evaluation: There are no prompts in the test split" in candidate.status_reason


def test_a_gate_whose_tasks_are_all_judged_without_a_clear_verdict_refuses(gated, judges, settings):
    settings.HUMAN_GATE_MIN_JUDGMENTS = 100
    alice, bob = judges
    judge_all(gated, [alice], candidate_wins=True)
    judge_all(gated, [bob], candidate_wins=False)
    assert services.human_gate_decide(evaluation=gated) == "refused"
    assert "win rate against base 50%" in ModelVersion.objects.get(pk=gated.candidate_id).status_reason


@pytest.fixture
def judge_passing_policy(versions, researcher, monkeypatch):
    """`judge()`: the training gate's verdict on the candidate's PPO run, with an evaluation that passes it."""
    from labeling.services import training

    candidate, _ = versions
    run = candidate.training_run
    run.reward_model = ModelVersionFactory(kind=ModelVersion.Kind.REWARD, name="reward-1", artifact_path="x")
    run.valid_export = services.export_create(kind="ppo_prompts", fmt="jsonl", filters={}, created_by=researcher,
                                              queue=False)
    run.save()
    services.export_run(export_id=run.valid_export.pk)
    run.valid_export.refresh_from_db()
    monkeypatch.setattr(training, "_evaluate", lambda *args: {"win_rate": 0.7, "kl": 1.0, "reward_policy": 0.4,
                                                              "reward_reference": 0.1})
    return lambda: training._judge(run, {"note": ""}, candidate)


def test_with_the_gate_on_a_policy_that_passes_the_reward_model_gate_waits_for_humans(
        versions, test_prompts, settings, judge_passing_policy):
    settings.HUMAN_GATE = True
    candidate, base = versions
    judge_passing_policy()
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.AWAITING
    assert "Win rate 70.0% over the active base" in candidate.status_reason
    evaluation = Evaluation.objects.get(candidate=candidate)
    assert evaluation.gates and list(evaluation.baselines.all()) == [base] and len(evaluation.prompt_ids) == 5
    assert ModelVersion.objects.get(kind="policy", status="active") == base
    assert TrainingRun.objects.get(pk=candidate.training_run_id).gate["passed"]


def test_an_evaluations_outputs_never_join_the_prompts_ranking_task(versions, test_prompts, settings):
    candidate, base = versions
    settings.SAMPLE_K = 4
    evaluation = services.evaluation_sample(evaluation_id=start(candidate, [base], prompt_count=5).pk)
    prompt = test_prompts[0]
    Prompt.objects.filter(pk=prompt.pk).update(needs_completions=True)  # it waits for a ranking task too
    assert services.completions_sample(prompt_ids=[prompt.pk]) == 1
    ranking = Task.objects.get(prompt=prompt, evaluation__isnull=True)
    assert ranking.completions.count() == 4 and not ranking.completions.filter(
        pk__in=evaluation.tasks.get(prompt=prompt).completions.all()).exists()


@pytest.mark.parametrize("prompts", [0, 3])
def test_a_policy_the_reward_model_gate_activates_is_evaluated_against_the_one_it_replaced_when_asked(
        versions, test_prompts, settings, judge_passing_policy, prompts):
    settings.EVALUATE_NEW_POLICIES = prompts
    candidate, base = versions
    judge_passing_policy()
    assert ModelVersion.objects.get(kind="policy", status="active") == candidate
    evaluations = list(Evaluation.objects.filter(candidate=candidate))
    assert len(evaluations) == (1 if prompts else 0)
    if prompts:
        assert list(evaluations[0].baselines.all()) == [base] and len(evaluations[0].prompt_ids) == 3
        assert not evaluations[0].gates


def test_an_evaluation_task_is_the_ranking_page_saying_what_it_judges(versions, test_prompts, judges, client):
    candidate, base = versions
    alice, _ = judges
    services.evaluation_sample(evaluation_id=start(candidate, [base], prompt_count=1).pk)
    assignment = services.task_lease_next(labeler=alice)
    client.force_login(alice)
    page = client.get(f"/work/tasks/{assignment.pk}/").content.decode()
    assert "Each output comes from a different model." in page and page.count('class="card output"') == 2
    assert not re.search(r"\b(ppo-1|base)\b", page.split("<main")[1])  # blind: no model is named


def test_a_judgment_ranks_at_most_nine_outputs(versions, test_prompts):
    candidate, base = versions
    others = [ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status="ready", artifact_path="x") for _ in range(8)]
    with pytest.raises(ValidationError, match="At most 8 baselines: a judgment ranks at most 9 outputs, not 10"):
        start(candidate, [base, *others])
    assert start(candidate, others).baselines.count() == 8


# External endpoints, the reward model beside the humans, cancelling, and the caches

def test_a_model_served_elsewhere_is_a_baseline_sampled_through_its_own_endpoint_and_key(
        versions, test_prompts, rlhf_server, tmp_path, monkeypatch):
    candidate, _ = versions
    server = rlhf_server(tmp_path, "their-model", "--api-key", "s3cret")
    monkeypatch.setenv("THEIR_KEY", "s3cret")
    theirs = services.external_model_register(name="theirs", url=server.url + "/", model="their-model",
                                              api_key_env="THEIR_KEY")
    assert (theirs.kind, theirs.status, theirs.endpoint_url) == ("external", "ready", server.url)
    evaluation = services.evaluation_sample(evaluation_id=start(candidate, [theirs], prompt_count=2).pk)
    assert evaluation.state == Evaluation.State.OPEN and evaluation.tasks.count() == 2
    for task in evaluation.tasks.all():
        assert {c.model_version for c in task.completions.all()} == {candidate, theirs}
    asked = server.requests()
    assert len(asked) == 2 and all(line[3] == "their-model" for line in asked)


def test_an_external_endpoint_that_refuses_its_key_leaves_the_evaluation_waiting_with_the_reason(
        versions, test_prompts, rlhf_server, tmp_path, monkeypatch):
    candidate, _ = versions
    server = rlhf_server(tmp_path, "their-model", "--api-key", "s3cret")
    monkeypatch.setenv("THEIR_KEY", "wrong")
    theirs = services.external_model_register(name="theirs", url=server.url, model="their-model",
                                              api_key_env="THEIR_KEY")
    evaluation = start(candidate, [theirs], prompt_count=2)
    with pytest.raises(services.evaluations.SamplerUnavailable, match="theirs: .*401"):
        services.evaluation_sample(evaluation_id=evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.state == Evaluation.State.SAMPLING and "401" in evaluation.error
    assert not evaluation.tasks.exists()


@pytest.mark.parametrize(("options", "said"), [
    ({"name": "bad name"}, "The name must be"),
    ({"url": "ftp://example.com/v1"}, "http(s) base URL"),
    ({"url": "http://exa mple.com"}, "http(s) base URL"),
    ({"url": "http://example.com/v1\x00"}, "http(s) base URL"),
    ({"url": "http://example.com/\ud800"}, "http(s) base URL"),
    ({"model": " "}, "Name the model"),
    ({"model": "a\x00b"}, "Name the model"),
    ({"api_key_env": "sk-live-123"}, "environment variable name"),
])
def test_a_bad_endpoint_is_refused_with_the_reason(db, options, said):
    with pytest.raises(ValidationError, match=re.escape(said)):
        services.external_model_register(**{"name": "theirs", "url": "https://api.example.com/v1",
                                             "model": "their-model", **options})
    assert not ModelVersion.objects.filter(kind=ModelVersion.Kind.EXTERNAL).exists()


def test_an_external_endpoint_is_only_ever_a_baseline_and_its_name_is_taken_once(versions, test_prompts):
    candidate, base = versions
    theirs = services.external_model_register(name="theirs", url="https://api.example.com/v1", model="m")
    with pytest.raises(ValidationError, match="can only be a baseline"):
        start(theirs, [base])
    with pytest.raises(ValidationError, match="already an external endpoint named 'theirs'"):
        services.external_model_register(name="theirs", url="https://api.example.com/v1", model="m")


def test_researchers_register_endpoints_through_the_api_and_the_command(db, researcher, labeler):
    api = api_client_for(researcher)
    body = {"name": "theirs", "url": "https://api.example.com/v1", "model": "their-model", "api_key_env": "THEIR_KEY"}
    created = api.post("/api/evaluations/endpoints/", body, format="json")
    assert created.status_code == 201 and created.json()["kind"] == "external"
    assert created.json()["endpoint_url"] == "https://api.example.com/v1"
    again = api.post("/api/evaluations/endpoints/", body, format="json")
    assert again.status_code == 400 and "already an external endpoint" in str(again.json())
    assert api.post("/api/evaluations/endpoints/", {**body, "name": "x", "url": "file:///etc/passwd"},
                    format="json").status_code == 400
    assert api_client_for(labeler).post("/api/evaluations/endpoints/", {**body, "name": "y"},
                                        format="json").status_code == 403
    out = StringIO()
    call_command("evaluate", "--register-endpoint", "other", "http://127.0.0.1:9/v1", "m", stdout=out)
    assert "Registered other: m at http://127.0.0.1:9/v1" in out.getvalue()
    with pytest.raises(CommandError, match="http"):
        call_command("evaluate", "--register-endpoint", "third", "nope", "m")


def test_the_active_reward_model_scores_every_output_it_samples(versions, test_prompts, tiny_model):
    candidate, base = versions
    reward = ModelVersionFactory(kind=ModelVersion.Kind.REWARD, name="rm-1", status="active",
                                 artifact_path=str(tiny_model))
    evaluation = services.evaluation_sample(evaluation_id=start(candidate, [base], prompt_count=2).pk)
    outputs = set(Task.completions.through.objects.filter(task__evaluation=evaluation).values_list(
        "completion_id", flat=True))
    assert evaluation.reward_model == reward and len(outputs) == 4
    assert {int(pk) for pk in evaluation.reward_scores} == outputs
    assert all(math.isfinite(score) for score in evaluation.reward_scores.values())


def test_the_reward_models_win_rate_stands_beside_the_humans_on_the_same_outputs(versions, test_prompts, judges):
    candidate, base = versions
    alice, bob = judges
    reward = ModelVersionFactory(kind=ModelVersion.Kind.REWARD, name="rm-1", status="ready", artifact_path="x")
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN, reward_model=reward)
    evaluation.baselines.set([base])
    won = ([[candidate], [base]], {candidate: 5, base: 2})
    tasks = [judged(evaluation, test_prompts[0], {candidate: "A", base: "B"}, [won, won], [alice, bob]),
             judged(evaluation, test_prompts[1], {candidate: "C", base: "D"},
                    [([[base], [candidate]], {candidate: 2, base: 5})], [alice]),
             judged(evaluation, test_prompts[2], {candidate: "E", base: "F"},
                    [([[candidate, base]], {candidate: 4, base: 4})], [alice])]
    # The reward model prefers the candidate on every prompt: it agrees with the humans on the first prompt's two
    # judgments, not on the second's; the tie on the third is no evidence either way.
    scores = {}
    for task in tasks:
        for completion in task.completions.all():
            scores[str(completion.pk)] = 1.0 if completion.model_version == candidate else 0.0
    Evaluation.objects.filter(pk=evaluation.pk).update(reward_scores=scores)
    evaluation.refresh_from_db()
    [win] = evaluation_results(evaluation)["win_rates"]
    assert win["value"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    machine = win["reward_model"]
    assert (machine["value"], machine["prompts"], machine["agreement"], machine["pairs"]) == (1.0, 3, 2 / 3, 3)
    assert evaluation_results(evaluation)["reward_model"] == "rm-1"


def test_results_follow_each_new_judgment_and_pages_serve_the_last_numbers_while_a_worker_counts(
        versions, test_prompts, judges, monkeypatch, as_researcher):
    candidate, base = versions
    alice, bob = judges
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN)
    evaluation.baselines.set([base])
    ratings = {candidate: 4, base: 4}
    judged(evaluation, test_prompts[0], {candidate: "A", base: "B"}, [([[candidate], [base]], ratings)], [alice])
    assert evaluation_results(evaluation)["judgments"] == 1
    assert leaderboard()["judgments"] == 1
    judged(evaluation, test_prompts[1], {candidate: "C", base: "D"}, [([[base], [candidate]], ratings)], [bob])
    recounts = []
    monkeypatch.setattr("labeling.tasks.refresh_evaluation.delay", recounts.append)
    page = as_researcher.get(f"/research/evaluations/{evaluation.pk}/").content.decode()
    assert "1 judgment on 1 prompt" in page and "a worker is counting them" in page
    assert '<meta http-equiv="refresh"' in page
    shown = evaluation_results(evaluation, stale_ok=True)  # a page: the last numbers while a worker counts
    assert (shown["judgments"], shown["stale"], recounts) == (1, True, [evaluation.pk])
    assert evaluation_results(evaluation)["judgments"] == 2  # the API, the gate: what is new is counted first
    assert evaluation_results(evaluation, stale_ok=True)["stale"] is False
    refits = []
    monkeypatch.setattr("labeling.tasks.refresh_leaderboard.delay", lambda: refits.append(1))
    shown = leaderboard(stale_ok=True)
    assert (shown["judgments"], shown["stale"], refits) == (1, True, [1])
    assert leaderboard(stale_ok=True)["stale"] and refits == [1]  # one refit at a time
    from labeling.tasks import refresh_leaderboard

    refresh_leaderboard()
    assert leaderboard(stale_ok=True) | {"computed_at": None} == {
        "versions": leaderboard()["versions"], "judgments": 2, "stale": False, "computed_at": None}


def test_cancelling_an_evaluation_closes_its_tasks_keeps_its_judgments_and_refuses_a_gated_candidate(
        gated, judges):
    evaluation, candidate = gated, gated.candidate
    alice, _ = judges
    judge_all(evaluation, [alice], candidate_wins=True)
    judged_tasks = Ranking.objects.filter(task__evaluation=evaluation).count()
    services.evaluation_cancel(evaluation=evaluation)
    evaluation.refresh_from_db()
    candidate.refresh_from_db()
    assert evaluation.state == Evaluation.State.CANCELLED
    assert not evaluation.tasks.filter(state=Task.State.OPEN).exists()
    assert Ranking.objects.filter(task__evaluation=evaluation).count() == judged_tasks
    assert candidate.status == ModelVersion.Status.REJECTED and "cancelled" in candidate.status_reason
    with pytest.raises(ValidationError, match="cancelled already"):
        services.evaluation_cancel(evaluation=evaluation)
