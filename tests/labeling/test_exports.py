import csv
import gzip
import json

import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError

from labeling import exports, services
from labeling.models import Export, LabelerProfile, ModelVersion, Prompt, Role
from tests.factories import (
    ModelVersionFactory,
    PromptFactory,
    TaskFactory,
    UserFactory,
    ranking_task,
)

pytestmark = pytest.mark.django_db


def ids(task):
    return list(task.completions.order_by("id").values_list("id", flat=True))


def rank(task, labeler, order):
    """Rank the task's completions by `order`: groups of positions into ids(task), best first."""
    completion_ids = ids(task)
    groups = [[completion_ids[i] for i in group] for group in order]
    ratings = {cid: {"rating": 7 - min(n, 6), "hallucination": n > 1}
               for n, group in enumerate(groups) for cid in group}
    return services.ranking_save(task=task, labeler=labeler, groups=groups, ratings=ratings)


def build(researcher, kind, fmt="jsonl", **filters):
    export = services.export_create(kind=kind, fmt=fmt, filters=filters, created_by=researcher, queue=False)
    return services.export_run(export_id=export.pk)


def read(export):
    path = export.file.path
    if export.format == "parquet":
        return pq.read_table(path).to_pylist()
    opener = gzip.open if export.format == "jsonl.gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def texts(task):
    return dict(task.completions.values_list("id", "text"))


def test_preference_pairs_leave_ties_out_and_carry_the_rank_distance_as_margin(researcher, labeler):
    task = ranking_task(k=4)
    a, b, c, d = ids(task)
    rank(task, labeler, [[0], [1, 2], [3]])
    export = build(researcher, "preference_pairs", style="standard", margin=True)
    text = texts(task)
    pairs = {(row["chosen"], row["rejected"]): row["margin"] for row in read(export)}
    assert pairs == {
        (text[a], text[b]): 1, (text[a], text[c]): 1, (text[a], text[d]): 2,
        (text[b], text[d]): 1, (text[c], text[d]): 1,
    }
    assert {row["prompt"] for row in read(export)} == {task.prompt.text}
    assert export.row_count == 5 and export.manifest["counts"]["pairs"] == 5


def test_conversational_pairs_are_chat_messages(researcher, labeler):
    task = ranking_task(k=4)
    rank(task, labeler, [[0], [1], [2], [3]])
    row = read(build(researcher, "preference_pairs"))[0]
    assert row["prompt"] == [{"role": "user", "content": task.prompt.text}]
    assert row["chosen"] == [{"role": "assistant", "content": texts(task)[ids(task)[0]]}]
    assert set(row) == {"prompt", "chosen", "rejected"}


def overlap_task(labelers, orders):
    task = ranking_task(k=4)
    for labeler, order in zip(labelers, orders):
        rank(task, labeler, order)
    return task


@pytest.fixture
def three_labelers(db):
    return [UserFactory(username=name, role=Role.LABELER) for name in ("l1", "l2", "l3")]


def test_consensus_ranks_an_overlap_task_once_by_ranked_pairs(researcher, three_labelers):
    task = overlap_task(three_labelers, [[[0], [1], [2], [3]], [[0], [2], [1], [3]], [[1], [0], [2], [3]]])
    a, b, c, d = ids(task)
    rows = read(build(researcher, "rankings", overlap="consensus"))
    assert len(rows) == 1
    (row,) = rows
    order = [row["completions"][group[0]]["id"] for group in row["ranks"]]
    assert order == [a, b, c, d]
    assert row["labeler"] is None and row["labelers"] == 3 and row["ratings"] is None


def test_unanimous_keeps_only_the_pairs_every_labeler_ordered_the_same_way(researcher, three_labelers):
    task = overlap_task(three_labelers, [[[0], [1], [2], [3]], [[0], [2], [1], [3]], [[1], [0], [2], [3]]])
    text = texts(task)
    a, b, c, d = ids(task)
    rows = read(build(researcher, "preference_pairs", style="standard", overlap="unanimous", margin=True))
    agreed = {(a, c), (a, d), (b, d), (c, d)}  # not a-b (third labeler) nor b-c (second)
    assert {(r["chosen"], r["rejected"]) for r in rows} == {(text[x], text[y]) for x, y in agreed}
    margins = {(r["chosen"], r["rejected"]): r["margin"] for r in rows}
    assert margins[(text[a], text[d])] == pytest.approx((3 + 3 + 2) / 3)  # the mean distance over the three


def test_every_keeps_each_labelers_pairs(researcher, three_labelers):
    overlap_task(three_labelers, [[[0], [1], [2], [3]]] * 3)
    assert build(researcher, "preference_pairs").row_count == 18


def test_min_agreement_keeps_overlap_tasks_whose_labelers_agree(researcher, three_labelers, labeler):
    agreed = overlap_task(three_labelers, [[[0], [1], [2], [3]]] * 3)
    overlap_task(three_labelers, [[[0], [1], [2], [3]], [[3], [2], [1], [0]], [[0], [1], [2], [3]]])
    rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])  # one labeler: no agreement to measure
    export = build(researcher, "rankings", min_agreement=0.8)
    assert [row["task_id"] for row in read(export)] == [agreed.pk] * 3
    assert {row["agreement"] for row in read(export)} == {1.0}
    assert export.manifest["counts"]["tasks_below_min_agreement"] == 2


def test_rankings_hold_completions_ratings_ranks_and_the_labelers_time(researcher, labeler):
    version = ModelVersionFactory(name="policy-3")
    task = ranking_task(k=4)
    task.completions.update(model_version=version, sampling_params={"temperature": 0.7}, seed=11)
    a, b, c, d = ids(task)
    rank(task, labeler, [[3], [0, 1], [2]])
    (row,) = read(build(researcher, "rankings", style="standard"))
    assert [c["id"] for c in row["completions"]] == [d, a, b, c]
    assert row["ranks"] == [[0], [1, 2], [3]]
    assert [r["rating"] for r in row["ratings"]] == [7, 6, 6, 5]
    assert row["ratings"][3]["flags"] == ["hallucination"]
    completion = row["completions"][0]
    assert (completion["model_version"], json.loads(completion["sampling_params"]), completion["seed"]) == (
        "policy-3", {"temperature": 0.7}, 11
    )
    assert row["prompt"] == task.prompt.text and row["labeler"] == exports.pseudonym(labeler.pk)


def test_filters_pick_split_language_model_version_labeler_status_and_gold(researcher, labeler, other_labeler):
    LabelerProfile.objects.update_or_create(user=other_labeler, defaults={"status": "paused"})
    LabelerProfile.objects.update_or_create(user=labeler, defaults={"status": "active"})
    version = ModelVersionFactory()
    kept = ranking_task(k=4)
    kept.completions.update(model_version=version)
    other_split = ranking_task(k=4)
    Prompt.objects.filter(pk=other_split.prompt_id).update(split="test", language="fr")
    gold = ranking_task(k=4)
    gold.is_gold, gold.gold_answer = True, {"groups": []}
    gold.save()
    for task in (kept, other_split, gold):
        rank(task, labeler, [[0], [1], [2], [3]])
    rank(kept, other_labeler, [[0], [1], [2], [3]])

    def tasks(**filters):
        return {row["task_id"] for row in read(build(researcher, "rankings", **filters))}

    assert tasks() == {kept.pk, other_split.pk}
    assert tasks(include_gold=True) == {kept.pk, other_split.pk, gold.pk}
    assert tasks(split=["test"]) == tasks(language="fr") == {other_split.pk}
    assert tasks(model_version=[version.pk]) == {kept.pk}
    rows = read(build(researcher, "rankings", labeler_status=["active"]))
    assert {row["labeler"] for row in rows} == {exports.pseudonym(labeler.pk)}


def test_date_filters_use_when_the_annotation_was_made(researcher, labeler):
    ranking = rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])
    day = ranking.created_at.date().isoformat()
    assert build(researcher, "rankings", since=day, until=day).row_count == 1
    assert build(researcher, "rankings", since="2999-01-01").row_count == 0


def test_sft_exports_messages_ending_with_the_assistant(researcher, labeler):
    prompt = PromptFactory()
    task = TaskFactory(kind="write_demonstration", prompt=prompt)
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    assignment = services.task_lease_next(labeler=labeler)
    assert assignment.task == task
    services.demonstration_write(assignment=assignment, labeler=labeler,
                                 turns=[{"role": "assistant", "content": "A fine reply."}])
    (row,) = read(build(researcher, "sft"))
    assert row["messages"] == [{"role": "user", "content": prompt.text},
                               {"role": "assistant", "content": "A fine reply."}]
    assert row["labeler"] == exports.pseudonym(labeler.pk)


def test_feedme_adds_completions_every_rater_gave_7_of_7_as_demonstrations(researcher, labeler, other_labeler):
    top, *_ = ids(plain := ranking_task(k=4))
    plain.completions.update(model_version=ModelVersionFactory(name="policy-3"))
    rank(plain, labeler, [[0], [1], [2], [3]])  # top: a 7, nothing flagged
    task = ranking_task(k=4)
    disputed, *rest = ids(task)
    rank(task, labeler, [[0], [1], [2], [3]])
    services.ranking_save(task=task, labeler=other_labeler, groups=[[c] for c in ids(task)],
                          ratings={c: {"rating": 5 if c == disputed else 4} for c in ids(task)})
    flagged = ranking_task(k=4)
    services.ranking_save(task=flagged, labeler=labeler, groups=[[c] for c in ids(flagged)],
                          ratings={c: {"rating": 7, "hallucination": c == ids(flagged)[0]} for c in ids(flagged)})
    hopeless = ranking_task(k=4)
    services.ranking_save(task=hopeless, labeler=labeler, groups=[[c] for c in ids(hopeless)], none_acceptable=True,
                          ratings={c: {"rating": 7} for c in ids(hopeless)})
    gold = ranking_task(k=4)
    gold.is_gold, gold.gold_answer = True, {"groups": []}
    gold.save()
    rank(gold, labeler, [[0], [1], [2], [3]])

    assert read(build(researcher, "sft")) == []
    export = build(researcher, "sft", feedme=True)
    rows = read(export)
    expected = {top, *ids(flagged)[1:]}
    assert {row["completion_id"] for row in rows} == expected
    row = next(row for row in rows if row["completion_id"] == top)
    completion = plain.completions.get(pk=top)
    assert row["messages"] == [{"role": "user", "content": plain.prompt.text},
                               {"role": "assistant", "content": completion.text}]
    assert (row["source"], row["demonstration_id"], row["labeler"]) == (
        "top_rated_completion", None, exports.pseudonym(labeler.pk))
    assert row["completion_model_version"] == "policy-3"
    assert export.manifest["counts"] == {"rows": 4, "demonstrations": 0, "top_rated_completions": 4}
    assert {row["completion_id"] for row in read(build(researcher, "sft", feedme=True, include_gold=True))} == {
        *expected, ids(gold)[0]}


def test_feedme_rows_follow_the_demonstrations_in_every_format(researcher, labeler):
    prompt = PromptFactory()
    TaskFactory(kind="write_demonstration", prompt=prompt)
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    assignment = services.task_lease_next(labeler=labeler)
    services.demonstration_write(assignment=assignment, labeler=labeler,
                                 turns=[{"role": "assistant", "content": "A fine reply."}])
    rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])
    rows = read(build(researcher, "sft", "parquet", feedme="true"))
    assert [row["source"] for row in rows] == ["demonstration", "top_rated_completion"]
    assert rows == read(build(researcher, "sft", "jsonl", feedme=True))
    with pytest.raises(ValidationError, match="Filter `feedme` does not apply to K-way rankings"):
        build(researcher, "rankings", feedme=True)


def test_ppo_prompts_are_prompts_only(researcher):
    chat = PromptFactory(turns=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                {"role": "user", "content": "Tell me a joke."}])
    plain = PromptFactory(split="valid")
    rows = read(build(researcher, "ppo_prompts"))
    assert {row["prompt_id"]: row["prompt"][-1]["content"] for row in rows} == {
        chat.pk: "Tell me a joke.", plain.pk: plain.text
    }
    assert [row["prompt"] for row in read(build(researcher, "ppo_prompts", style="standard", split="valid"))] == [
        plain.text
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_every_format_holds_the_same_rows(researcher, labeler, fmt):
    for _ in range(3):
        rank(ranking_task(k=5), labeler, [[0], [1, 2], [3], [4]])
    expected = read(build(researcher, "rankings"))
    assert read(build(researcher, "rankings", fmt)) == expected


def test_the_manifest_describes_the_file_and_its_checksum_matches(researcher, labeler):
    rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])
    export = build(researcher, "preference_pairs", "jsonl.gz", split=["train"])
    manifest = export.manifest
    assert manifest["sha256"] == exports.sha256_of(export.file.path) == export.sha256
    assert manifest["bytes"] == export.file.size
    assert manifest["filters"] == {"split": ["train"]}
    assert (manifest["kind"], manifest["format"], manifest["created_by"]) == ("preference_pairs", "jsonl.gz", "rita")
    assert manifest["counts"] == {"rows": 6, "tasks": 1, "annotations": 1, "pairs": 6}
    assert manifest["schema_version"] == exports.SCHEMA_VERSION and manifest["code_version"]
    beside = json.loads(open(export.file.path + ".manifest.json").read())
    assert beside == manifest


def test_a_finished_export_is_never_rebuilt(researcher, labeler):
    task = ranking_task(k=4)
    rank(task, labeler, [[0], [1], [2], [3]])
    export = build(researcher, "rankings")
    before = open(export.file.path, "rb").read()
    rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])
    again = services.export_run(export_id=export.pk)
    assert open(again.file.path, "rb").read() == before and again.sha256 == export.sha256


def test_the_same_data_gives_the_same_checksum(researcher, labeler):
    rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])
    assert build(researcher, "preference_pairs", "jsonl.gz").sha256 == build(
        researcher, "preference_pairs", "jsonl.gz").sha256


def test_pseudonyms_are_stable_and_reveal_no_name_or_email(researcher, settings):
    person = UserFactory(username="jane.doe", role=Role.LABELER)
    person.email, person.first_name, person.last_name = "jane.doe@example.com", "Jane", "Doe"
    person.save()
    rank(ranking_task(k=4), person, [[0], [1], [2], [3]])
    first, second = build(researcher, "rankings"), build(researcher, "rankings")
    content = open(first.file.path).read().lower()
    assert "jane" not in content and "doe" not in content and "example.com" not in content
    assert read(first)[0]["labeler"] == read(second)[0]["labeler"] == exports.pseudonym(person.pk)
    assert exports.pseudonym(person.pk) != exports.pseudonym(researcher.pk)


def test_only_an_admin_may_export_usernames(researcher, admin_user, labeler):
    rank(ranking_task(k=4), labeler, [[0], [1], [2], [3]])
    with pytest.raises(ValidationError, match="Only an admin"):
        services.export_create(kind="rankings", fmt="jsonl", created_by=researcher, with_identities=True)
    export = services.export_create(kind="rankings", fmt="jsonl", created_by=admin_user, with_identities=True,
                                    queue=False)
    export = services.export_run(export_id=export.pk)
    assert read(export)[0]["labeler"] == "alice" and export.manifest["labelers"] == "usernames"


@pytest.mark.parametrize(
    "kind, filters, named",
    [
        ("rankings", {"splits": ["train"]}, "Unknown filter `splits`"),
        ("rankings", {"split": ["training"]}, "Filter `split`: unknown value 'training'"),
        ("rankings", {"since": "last tuesday"}, "Filter `since` must be a date"),
        ("rankings", {"min_agreement": 1.5}, "Filter `min_agreement` must be a number from 0 to 1"),
        ("rankings", {"model_version": ["x"]}, "Filter `model_version` must be a list of model version ids"),
        ("rankings", {"model_version": [999999]}, "Filter `model_version`: no model version with id 999999"),
        ("rankings", {"overlap": "unanimous"}, "Filter `overlap`: unanimous"),
        ("rankings", {"include_gold": "maybe"}, "Filter `include_gold` must be true or false"),
        ("ppo_prompts", {"labeler_status": ["active"]}, "Filter `labeler_status` does not apply to PPO prompts"),
        ("rankings", {"since": "2026-02-01", "until": "2026-01-01"}, "Filter `since` is after `until`"),
        ("rankings", ["split"], "Filters must be an object"),
    ],
)
def test_a_malformed_filter_is_refused_by_name(researcher, kind, filters, named):
    with pytest.raises(ValidationError) as caught:
        services.export_create(kind=kind, fmt="jsonl", filters=filters, created_by=researcher)
    assert named in " ".join(caught.value.messages)
    assert not Export.objects.exists()


def test_csv_is_refused_for_rows_with_lists(researcher):
    with pytest.raises(ValidationError, match="CSV cannot"):
        services.export_create(kind="rankings", fmt="csv", created_by=researcher)


def test_a_failed_export_says_why_and_leaves_no_file(researcher, monkeypatch, settings):
    export = services.export_create(kind="rankings", fmt="jsonl", created_by=researcher, queue=False)
    monkeypatch.setattr(exports.sources.Rankings, "rows", lambda self: iter([{"task_id": object()}]))
    monkeypatch.setattr(exports.writers.JsonlWriter, "write", lambda self, row: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        services.export_run(export_id=export.pk)
    export.refresh_from_db()
    assert export.state == "failed" and "division by zero" in export.error
    assert not list((settings.MEDIA_ROOT / "exports").iterdir())


def test_a_model_version_filter_accepts_ids_as_text(researcher):
    version = ModelVersion.objects.create(kind="policy", name="p1")
    export = services.export_create(kind="rankings", fmt="jsonl", filters={"model_version": str(version.pk)},
                                    created_by=researcher, queue=False)
    assert export.filters == {"model_version": [version.pk]}


def test_oasst_trees_rank_completions_under_the_prompt_and_keep_demonstrations(researcher, three_labelers):
    task = overlap_task(three_labelers, [[[0], [1], [2], [3]], [[0], [2], [1], [3]], [[1], [0], [2], [3]]])
    a, b, c, d = ids(task)
    LabelerProfile.objects.filter(user=three_labelers[0]).update(status="active")
    task.state = "completed"
    task.save()
    demo_task = TaskFactory(kind="write_demonstration", prompt=task.prompt)
    assignment = services.task_lease_next(labeler=three_labelers[0])
    assert assignment.task == demo_task
    services.demonstration_write(assignment=assignment, labeler=three_labelers[0],
                                 turns=[{"role": "assistant", "content": "Mine."}])
    (tree,) = read(build(researcher, "oasst"))
    assert tree["message_tree_id"] == f"prompt-{task.prompt_id}" and tree["tree_state"] == "ready_for_export"
    root = tree["prompt"]
    assert (root["role"], root["text"], root["parent_id"]) == ("prompter", task.prompt.text, None)
    replies = root["replies"]
    assert [r["message_id"] for r in replies] == [f"completion-{cid}" for cid in (a, b, c, d)] + [
        f"demonstration-{task.prompt.demonstrations.get().pk}"]
    assert [r["rank"] for r in replies] == [0, 1, 2, 3, None]
    assert [r["synthetic"] for r in replies] == [True] * 4 + [False]
    assert replies[-1]["user_id"] == exports.pseudonym(three_labelers[0].pk) and replies[-1]["text"] == "Mine."
    assert all(r["parent_id"] == root["message_id"] and r["role"] == "assistant" for r in replies)
    assert replies[3]["labels"]["hallucination"] == {"value": 1.0, "count": 3}
    # a was rated 7, 7 and 6 (second for the third labeler): mean 6.67 on 1-7 is 0.94 on 0-1
    assert replies[0]["labels"]["quality"] == {"value": pytest.approx((20 / 3 - 1) / 6), "count": 3}


def test_oasst_parquet_holds_the_messages_flat(researcher, labeler):
    task = ranking_task(k=4)
    rank(task, labeler, [[0], [1], [2], [3]])
    rows = read(build(researcher, "oasst", "parquet"))
    assert len(rows) == 5
    assert [row["parent_id"] for row in rows[1:]] == [f"prompt-{task.prompt_id}"] * 4
    assert {row["message_tree_id"] for row in rows} == {f"prompt-{task.prompt_id}"}


def test_labeler_stats_count_work_and_agreement_under_pseudonyms(researcher, three_labelers):
    overlap_task(three_labelers, [[[0], [1], [2], [3]], [[0], [1], [2], [3]], [[3], [2], [1], [0]]])
    for user in three_labelers:
        LabelerProfile.objects.filter(user=user).update(status="active")
    export = build(researcher, "labeler_stats", "csv")
    rows = {row["labeler"]: row for row in csv.DictReader(open(export.file.path))}
    first, third = (rows[exports.pseudonym(user.pk)] for user in (three_labelers[0], three_labelers[2]))
    assert float(first["agreement_with_peers"]) == 0.5 and float(third["agreement_with_peers"]) == 0.0
    assert first["status"] == "active" and first["overlap_rankings"] == "1"
    assert (first["gold_tasks"], first["gold_accuracy"]) == ("0", "")
    assert "l1" not in open(export.file.path).read()


def test_annotations_export_flat_rows_as_csv(researcher, labeler):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    prompt = PromptFactory()
    TaskFactory(kind="annotate_prompt", prompt=prompt)
    assignment = services.task_lease_next(labeler=labeler)
    services.annotation_submit(assignment=assignment, labeler=labeler, flags={"ambiguous": True},
                               use_case="brainstorming", language="en")
    export = build(researcher, "annotations", "csv")
    (row,) = list(csv.DictReader(open(export.file.path)))
    assert (row["prompt_id"], row["use_case"], row["ambiguous"], row["closed_domain"]) == (
        str(prompt.pk), "brainstorming", "True", "False")


def test_a_consensus_export_uses_the_consensus_stored_with_the_task(researcher, three_labelers):
    task = overlap_task(three_labelers, [[[0], [1], [2], [3]]] * 3)
    a, b, c, d = ids(task)
    task.required_annotations, task.consensus = 3, [[d], [c], [b], [a]]  # stored when the task completed
    task.save()
    (row,) = read(build(researcher, "rankings", overlap="consensus"))
    assert [row["completions"][group[0]]["id"] for group in row["ranks"]] == [d, c, b, a]
    LabelerProfile.objects.filter(user=three_labelers[0]).update(status="paused")
    LabelerProfile.objects.filter(user__in=three_labelers[1:]).update(status="active")
    (row,) = read(build(researcher, "rankings", overlap="consensus", labeler_status=["active"]))
    assert [row["completions"][group[0]]["id"] for group in row["ranks"]] == [a, b, c, d]  # two of three: computed


def test_labeler_stats_carry_gold_accuracy(researcher, labeler, settings):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    settings.GOLD_TASK_RATE = 1.0
    TaskFactory(is_gold=True, gold_answer={"flags": ["ambiguous"], "use_case": "chat"})
    assignment = services.task_lease_next(labeler=labeler)
    services.annotation_submit(assignment=assignment, labeler=labeler, flags={}, use_case="chat", language="en")
    (row,) = [r for r in read(build(researcher, "labeler_stats")) if r["labeler"] == exports.pseudonym(labeler.pk)]
    assert (row["gold_tasks"], row["gold_accuracy"]) == (1, pytest.approx(11 / 12))  # missed the one flag


@pytest.mark.parametrize("kind", ["rankings", "preference_pairs"])
def test_the_manifest_says_how_to_reproduce_each_model_version_whose_outputs_it_holds(researcher, labeler, kind):
    from labeling.models import Completion, TrainingRun

    data = services.export_create(kind="ppo_prompts", fmt="jsonl", filters={}, created_by=researcher, queue=False)
    sft = ModelVersionFactory(kind="sft", name="sft-2", artifact_path="/models/sft-2")
    run = TrainingRun.objects.create(kind="ppo", state="succeeded", config={"lora_rank": 16, "steps": 40},
                                     export=data, base_model=sft, reference_model=sft)
    adapter = ModelVersionFactory(name="ppo-7", artifact_path="/models/ppo-7", base_path="/models/base",
                                  adapter={"rank": 16, "alpha": 32.0, "target_modules": ["q_proj", "v_proj"]},
                                  parent=sft, training_run=run)
    full = ModelVersionFactory(name="base", artifact_path="/models/base")
    ModelVersionFactory(name="never-sampled")
    task = ranking_task(k=4)
    first, *rest = task.completions.order_by("id")
    Completion.objects.filter(pk=first.pk).update(model_version=adapter)
    Completion.objects.filter(pk__in=[c.pk for c in rest]).update(model_version=full)
    rank(task, labeler, [[0], [1], [2], [3]])
    described = {v["name"]: v for v in build(researcher, kind).manifest["model_versions"]}
    assert set(described) == {"ppo-7", "base"}
    assert described["ppo-7"] == {
        "name": "ppo-7", "kind": "policy", "served_name": "policy-ppo-7", "weights": "adapter",
        "artifact_path": "/models/ppo-7", "base_path": "/models/base",
        "adapter": {"rank": 16, "alpha": 32.0, "target_modules": ["q_proj", "v_proj"]}, "endpoint": None,
        "trained_from": {"kind": "sft", "name": "sft-2"},
        "training_run": {"id": run.pk, "kind": "ppo", "options": {"lora_rank": 16, "steps": 40}, "export": data.pk,
                         "valid_export": None, "ptx_export": None, "ptx_path": "",
                         "base_model": {"kind": "sft", "name": "sft-2"},
                         "reference_model": {"kind": "sft", "name": "sft-2"}, "reward_model": None},
    }
    assert (described["base"]["weights"], described["base"]["training_run"]) == ("full", None)
