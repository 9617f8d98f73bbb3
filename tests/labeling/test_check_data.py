"""Stored rows that break today's rules for answers: `check_data` reports them, and exports leave them out
with their count in the manifest, while clean rows stay."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from labeling import services
from labeling.models import CompletionRating, Demonstration, LabelerProfile, PromptAnnotation, Ranking, Task
from tests.factories import PromptFactory, TaskFactory, ranking_task
from tests.labeling.test_exports import build, ids, rank, read

pytestmark = pytest.mark.django_db

USER, REPLY = {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Teal."}


@pytest.fixture(autouse=True)
def limits(settings):
    settings.ANSWER_MAX_TURN_CHARS = 20_000
    settings.ANSWER_MAX_CONVERSATION_CHARS = 100_000
    settings.ANSWER_MAX_TURNS = 40
    settings.ANSWER_MAX_NOTES_CHARS = 2_000
    settings.PROMPT_MAX_CHARS = 8_000
    return settings


def check_data(*args):
    """(exit status, what it printed)."""
    out = StringIO()
    try:
        call_command("check_data", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def written(labeler, prompt=None):
    """A demonstration written through the service, as the site stores one."""
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt or PromptFactory(text=USER["content"]))
    assignment = services.task_lease_next(labeler=labeler)
    return services.demonstration_write(assignment=assignment, labeler=labeler, turns=[REPLY]).demonstration


def stored(labeler, messages):
    """A demonstration written straight to the database, as older code or a script could."""
    return Demonstration.objects.create(prompt=PromptFactory(), author=labeler, messages=messages)


def test_it_reports_broken_demonstrations_with_their_ids_and_reasons(labeler):
    clean = written(labeler)
    twice = stored(labeler, [USER, USER, REPLY])
    number = stored(labeler, [USER, {"role": "assistant", "content": 42}])
    no_role = stored(labeler, [USER, {"content": "Teal."}])
    status, output = check_data("--kind", "demonstrations")
    assert status == 1
    assert "demonstrations: 3 of 4 break the rules (alternation 1, content 1, shape 1)" in output
    assert f"#{twice.pk}: Turn 2: two user turns in a row; turns alternate between user and assistant." in output
    assert f"#{number.pk}: Turn 2 (assistant): content must be text, not a number." in output
    assert f"#{no_role.pk}: Turn 2 has no role; a turn holds a role and its content." in output
    assert f"#{clean.pk}:" not in output
    assert "3 stored rows break today's rules" in output


def test_it_counts_each_rule_and_shows_only_the_first_rows(labeler):
    first, second = stored(labeler, [USER, USER, REPLY]), stored(labeler, [USER, USER, REPLY])
    stored(labeler, [USER, {"role": "assistant", "content": "x" * 20_001}])
    status, output = check_data("--kind", "demonstrations", "--show", "1")
    assert status == 1
    assert "demonstrations: 3 of 3 break the rules (alternation 2, turn_length 1)" in output
    assert f"#{first.pk}:" in output and f"#{second.pk}:" not in output


def test_it_reports_rankings_prompts_and_annotations_that_break_the_rules(labeler, other_labeler):
    clean_task = ranking_task(k=4)
    clean = rank(clean_task, labeler, [[0], [1], [2], [3]])
    task = ranking_task(k=4)
    chatty = rank(task, other_labeler, [[0], [1], [2], [3]])
    CompletionRating.objects.filter(ranking=chatty, completion_id=ids(task)[2]).update(notes="n" * 3_000)
    partial = Ranking.objects.create(task=task, labeler=labeler, groups=[[ids(task)[0]], [ids(task)[1]]])
    long_prompt = PromptFactory(text="p" * 8_001)
    lopsided = PromptFactory(text="User: Hi\n\nUser: Hello?", turns=[{"role": "user", "content": "Hi"}, USER])
    odd = PromptAnnotation.objects.create(prompt=clean_task.prompt, labeler=labeler, use_case="poetry",
                                          language="en")
    status, output = check_data()
    assert status == 1
    assert "rankings: 2 of 3 break the rules" in output
    assert (f"#{chatty.pk}: The notes on completion {ids(task)[2]} must be at most 2,000 characters long, "
            "not 3,000.") in output
    assert f"#{partial.pk}: Rank every completion before submitting; not ranked yet: {ids(task)[2:]}." in output
    assert f"#{clean.pk}:" not in output.split("rankings:")[1].split("prompts:")[0]
    assert f"#{long_prompt.pk}: The prompt is 8,001 characters; at most 8,000." in output
    assert f"#{lopsided.pk}: Turn 2: two user turns in a row" in output
    assert "annotations: 1 of 1 break the rules (use_case 1)" in output
    assert f"#{odd.pk}: Unknown use case 'poetry'." in output


def test_a_clean_database_passes_with_status_zero(labeler):
    written(labeler)
    rank(ranking_task(k=4), labeler, [[0], [1, 2], [3]])
    status, output = check_data()
    assert status == 0
    assert "demonstrations: 0 of 1 break the rules" in output and "rankings: 0 of 1 break the rules" in output


def test_a_limit_lowered_in_the_settings_makes_stored_rows_break_it(labeler, limits):
    written(labeler)
    limits.ANSWER_MAX_TURN_CHARS = 4
    assert check_data("--kind", "demonstrations")[0] == 1


# Exports

def test_an_sft_export_leaves_broken_demonstrations_out_and_the_manifest_counts_them(researcher, labeler):
    clean = written(labeler)
    stored(labeler, [USER, USER, REPLY])
    stored(labeler, [USER, USER, REPLY])
    stored(labeler, [USER, {"role": "assistant", "content": "Teal.", "mood": "calm"}])
    export = build(researcher, "sft")
    assert [row["demonstration_id"] for row in read(export)] == [clean.pk]
    assert export.row_count == 1 and export.manifest["counts"]["demonstrations"] == 1
    assert export.manifest["left_out"] == {"demonstration: alternation": 2, "demonstration: fields": 1}
    assert export.manifest["counts"]["invalid_rows_left_out"] == 3


def test_a_clean_export_says_nothing_was_left_out(researcher, labeler):
    written(labeler)
    export = build(researcher, "sft")
    assert export.manifest["left_out"] == {} and "invalid_rows_left_out" not in export.manifest["counts"]


def test_preference_pairs_leave_out_a_ranking_with_overlong_notes_and_keep_the_clean_one(
        researcher, labeler, other_labeler):
    clean_task, bad_task = ranking_task(k=4), ranking_task(k=4)
    rank(clean_task, labeler, [[0], [1], [2], [3]])
    chatty = rank(bad_task, other_labeler, [[0], [1], [2], [3]])
    CompletionRating.objects.filter(ranking=chatty).update(notes="n" * 2_001)
    export = build(researcher, "preference_pairs", style="standard")
    assert {row["prompt"] for row in read(export)} == {clean_task.prompt.text}
    assert export.row_count == 6
    assert export.manifest["left_out"] == {"ranking: notes_length": 1}
    rankings = build(researcher, "rankings")
    assert [row["task_id"] for row in read(rankings)] == [clean_task.pk]
    assert rankings.manifest["left_out"] == {"ranking: notes_length": 1}


def test_ppo_prompts_annotations_and_trees_leave_out_rows_that_break_the_rules(researcher, labeler):
    clean = PromptFactory()
    too_long = PromptFactory(text="p" * 8_001)
    prompts = build(researcher, "ppo_prompts")
    assert [row["prompt_id"] for row in read(prompts)] == [clean.pk]
    assert prompts.manifest["left_out"] == {"prompt: prompt_length": 1}

    PromptAnnotation.objects.create(prompt=clean, labeler=labeler, use_case="chat", language="en")
    PromptAnnotation.objects.create(prompt=too_long, labeler=labeler, use_case="chat", language="en")
    annotations = build(researcher, "annotations")
    assert [row["prompt_id"] for row in read(annotations)] == [clean.pk]
    assert annotations.manifest["left_out"] == {"annotation: prompt_length": 1}

    kept = written(labeler, prompt=clean)
    Demonstration.objects.create(prompt=clean, author=labeler, messages=[{"role": "user", "content": clean.text}])
    Demonstration.objects.create(prompt=too_long, author=labeler, messages=[
        {"role": "user", "content": too_long.text}, REPLY])
    trees = build(researcher, "oasst")
    (tree,) = read(trees)
    assert tree["message_tree_id"] == f"prompt-{clean.pk}"
    assert [reply["message_id"] for reply in tree["prompt"]["replies"]] == [f"demonstration-{kept.pk}"]
    assert trees.manifest["left_out"] == {"demonstration: ending": 1, "tree: prompt_length": 1}


def test_the_export_page_shows_how_many_rows_were_left_out(client, researcher, labeler):
    written(labeler)
    stored(labeler, [USER, USER, REPLY])
    export = build(researcher, "sft")
    client.force_login(researcher)
    page = client.get(reverse("export-detail", args=[export.pk])).content.decode()
    assert "Invalid_rows_left_out" in page and "demonstration: alternation" in page
