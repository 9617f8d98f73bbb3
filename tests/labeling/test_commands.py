import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from labeling import selectors, services
from labeling.models import (
    Export,
    Guidelines,
    ImportJob,
    Invitation,
    LabelerProfile,
    Prompt,
    Role,
    ScreeningItem,
    Task,
    TrainingRun,
)
from labeling.permissions import roles_of
from tests.factories import ranking_task

pytestmark = pytest.mark.django_db


def run(*args, **options):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue() + err.getvalue()


def test_import_prompts_reports_what_happened(tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [
        {"prompt": "List five uses for a paperclip.", "use_case": "brainstorming"},
        {"prompt": "list five uses for a PAPERCLIP."},
        {"prompt": "Mail x@example.com", "language": "zz"},
    ]))
    output = run("import_prompts", str(path))
    assert "Imported 1 of 3 rows: 1 duplicates, 0 over the per-user cap, 1 rejected." in output
    assert "line 2: duplicate of line 1" in output
    assert "line 3: unknown language 'zz'" in output
    assert Prompt.objects.get().use_case == "brainstorming"


def test_import_prompts_refuses_a_broken_file_and_says_why(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text("title\nhello\n")
    with pytest.raises(CommandError, match="no 'prompt' column"):
        run("import_prompts", str(path))
    assert ImportJob.objects.get().state == ImportJob.State.FAILED


def test_import_prompts_names_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="is not a file"):
        run("import_prompts", str(tmp_path / "nope.jsonl"))


def test_import_prompts_can_queue_for_a_worker(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi"}\n')
    output = run("import_prompts", str(path), "--queue", "--no-wait")
    assert "Queued import job" in output
    assert ImportJob.objects.get().state == ImportJob.State.QUEUED


def test_seed_demo_creates_the_accounts_and_about_sixty_prompts(settings):
    settings.DEBUG = True
    output = run("seed_demo")
    User = get_user_model()
    assert {name: roles_of(User.objects.get(username=name)) for name in ["admin", "researcher", "labeler1"]} == {
        "admin": {Role.ADMIN}, "researcher": {Role.RESEARCHER}, "labeler1": {Role.LABELER}
    }
    assert User.objects.get(username="admin").is_staff
    assert LabelerProfile.objects.filter(status=LabelerProfile.Status.ACTIVE).count() == 3
    assert "labeler1 / labeler-demo" in output
    assert User.objects.get(username="labeler1").check_password("labeler-demo")
    prompts = Prompt.objects.all()
    assert 55 <= prompts.count() <= 70
    assert set(prompts.values_list("use_case", flat=True)) == {
        "generation", "open_qa", "closed_qa", "brainstorming", "chat", "rewrite", "summarization",
        "classification", "extract", "other",
    }
    assert Task.objects.filter(kind="annotate_prompt").count() == prompts.count()
    assert Task.objects.filter(kind="write_prompt").count() == 3
    again = run("seed_demo")
    assert "0 loaded" in again and Prompt.objects.count() == prompts.count()
    assert Task.objects.filter(kind="write_prompt").count() == 3
    assert sorted(ScreeningItem.objects.values_list("part", flat=True)) == sorted(
        ["sensitive_flags"] * 3 + ["ranking"] * 2 + ["demonstration"] * 2)
    link = again.split("Try the way in for a new labeler: ")[1].split()[0]
    assert link.startswith("http://127.0.0.1:8000/join/")
    assert Invitation.objects.get(token=link.split("/")[4]).used_at is None


def test_seed_demo_queues_the_first_sampling_before_any_worker_starts(settings, monkeypatch,
                                                                       django_capture_on_commit_callbacks):
    from django.core.cache import cache

    from labeling import tasks

    settings.DEBUG, settings.SAMPLE_PROMPTS_PER_TASK = True, 6
    cache.delete(services.SAMPLING_QUEUED)
    sent = []
    monkeypatch.setattr(tasks.sample_completions, "apply_async", lambda args, queue: sent.append((args, queue)))
    with django_capture_on_commit_callbacks(execute=True):
        run("seed_demo")
    cache.delete(services.SAMPLING_QUEUED)  # no sampling task was really queued
    [((prompt_ids,), queue)] = sent
    assert queue == "sampling" and len(prompt_ids) == 6
    # Prompts a demonstration task waits on come first: their pages show the model's reply as a suggestion.
    waiting_on = set(Task.objects.filter(kind="write_demonstration").values_list("prompt_id", flat=True))
    assert set(prompt_ids) <= waiting_on


def test_seed_demo_publishes_guidelines_once_and_its_labelers_have_read_them(settings, client):
    settings.DEBUG = True
    run("seed_demo")
    run("seed_demo")
    guidelines = Guidelines.objects.get()
    assert guidelines.version == 1
    for part in ("## Helpful", "## Truthful", "## Harmless", "## When these conflict", "## What each flag means",
                 "## Worked examples", "Hallucination", "Rank **B above A**"):
        assert part in guidelines.body
    labeler = get_user_model().objects.get(username="labeler1")
    assert LabelerProfile.objects.filter(guidelines_acknowledged=guidelines).count() == 3
    assignment = services.task_lease_next(labeler=labeler)
    assert assignment is not None

    client.force_login(labeler)
    task_page = client.get(reverse("assignment", args=[assignment.pk])).content.decode()
    assert 'class="card guidelines"' in task_page
    assert "No guidelines have been published yet" not in task_page
    assert "<h2>Helpful</h2>" in task_page and "<table>" in task_page  # the Markdown, rendered


def test_seed_demo_leaves_newer_guidelines_for_its_labelers_to_read(settings):
    settings.DEBUG = True
    run("seed_demo")
    newer = services.guidelines_publish(title="Now with chats", body="Talk as a person with a real need would.")
    run("seed_demo")
    assert Guidelines.objects.count() == 2
    labeler = LabelerProfile.objects.get(user__username="labeler1")
    assert selectors.guidelines_pending(labeler) == newer
    with pytest.raises(ValidationError, match="acknowledge the guidelines"):
        services.task_lease_next(labeler=labeler.user)


def test_a_labeler_invited_into_the_demo_reads_its_guidelines_first(settings):
    settings.DEBUG = True
    output = run("seed_demo")
    token = output.split("Try the way in for a new labeler: ")[1].split()[0].split("/")[4]
    newcomer = services.account_create(token=token, username="newcomer", password="a long pass phrase 42")
    assert selectors.guidelines_pending(LabelerProfile.objects.get(user=newcomer)) == Guidelines.objects.get()


def test_seed_demo_refuses_to_create_known_passwords_outside_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="known passwords"):
        run("seed_demo")


def test_no_model_change_lacks_a_migration():
    run("makemigrations", "--check", "--dry-run")


def test_the_export_command_builds_a_snapshot_with_filters_and_copies_it(researcher, labeler, tmp_path):
    task = ranking_task(k=4)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[[ids[0]], ids[1:3], [ids[3]]],
                          ratings={i: {"rating": 5} for i in ids})
    target = tmp_path / "pairs.jsonl"
    out = run("export", "preference_pairs", "--filter", "split=train,valid", "--filter", "style=standard",
              "--output", str(target), "--user", "rita")
    export = Export.objects.get()
    assert export.filters == {"split": ["train", "valid"], "style": "standard"}
    assert export.manifest["created_by"] == "rita"
    assert len(target.read_text().splitlines()) == 5
    assert json.loads((tmp_path / "pairs.jsonl.manifest.json").read_text())["sha256"] == export.sha256
    assert f"sha256 {export.sha256}" in out and "5 pairs" in out


def test_the_export_command_names_a_bad_filter(db):
    with pytest.raises(CommandError, match="Filter `split`: unknown value 'holdout'"):
        call_command("export", "rankings", "--filter", "split=holdout")
    with pytest.raises(CommandError, match="NAME=VALUE"):
        call_command("export", "rankings", "--filter", "split")


def test_the_train_command_queues_lists_and_cancels_runs(db):
    out = run("train", "reward", "--option", "epochs=2", "--option", "lr=1e-5", "--option", "device=cpu", "--no-wait")
    run_ = TrainingRun.objects.get()
    assert f"Queued Reward model run #{run_.pk}" in out and run_.config == {"epochs": 2, "lr": 1e-5, "device": "cpu"}
    assert f"#{run_.pk} reward queued" in run("train", "--list")
    assert "cancelled" in run("train", "--cancel", str(run_.pk))
    with pytest.raises(CommandError, match="write it as NAME=VALUE"):
        run("train", "sft", "--option", "epochs")


@pytest.mark.parametrize("option, message", [
    ("epoch=2", "Options: unknown option 'epoch'; did you mean 'epochs'?"),
    ("epochs=two", "Options: option 'epochs' must be a whole number, not 'two'"),
    ("output=/tmp/x", "Options: option 'output' is set for each run and cannot be given"),
    ("pooling=max", "Options: option 'pooling' must be one of mean, last, not 'max'"),
])
def test_the_train_command_refuses_a_bad_option_naming_it(db, option, message):
    with pytest.raises(CommandError) as caught:
        run("train", "reward", "--option", option, "--no-wait")
    assert str(caught.value) == message
    assert not TrainingRun.objects.exists()
