"""Prompt intake, one rule at a time, on hand-made files."""

import csv
import importlib
import json
import os
import sys
import threading
import unicodedata
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from labeling import intake, near_duplicates, pii, services
from labeling.models import ImportJob, Prompt, Task
from labeling.services import prompts as prompt_services
from tests.conftest import api_client_for
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


def jsonl(*rows):
    return "\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows).encode()


def run_import(content, name="prompts.jsonl"):
    job = services.import_job_create(uploaded_file=SimpleUploadedFile(name, content), created_by=None)
    return services.import_job_run(job_id=job.pk)


def reasons(job):
    return {error["line"]: error["reason"] for error in job.row_errors}


# Deduplication

def test_it_drops_duplicates_within_the_file_after_normalising_whitespace_and_case():
    job = run_import(jsonl(
        {"prompt": "Explain photosynthesis to a child."},
        {"prompt": "  explain   PHOTOSYNTHESIS to a child. "},
        {"prompt": "Explain gravity to a child."},
    ))
    assert (job.accepted, job.duplicates) == (2, 1)
    assert reasons(job) == {2: "duplicate of line 1"}
    assert sorted(Prompt.objects.values_list("text", flat=True)) == [
        "Explain gravity to a child.", "Explain photosynthesis to a child."
    ]


def test_prompts_sharing_a_long_prefix_are_duplicates(settings):
    settings.PROMPT_DEDUP_PREFIX_CHARS = 40
    shared = "Summarize the following meeting notes in "  # 41 characters
    job = run_import(jsonl(
        {"prompt": shared + "three bullet points: ..."},
        {"prompt": shared + "one sentence: ..."},
        {"prompt": "Summarize the following meeting notes: ..."},
    ))
    assert (job.accepted, job.duplicates) == (2, 1)


def test_it_drops_duplicates_of_stored_prompts():
    first = run_import(jsonl({"prompt": "Write a limerick about a cat."}))
    stored = Prompt.objects.get()
    second = run_import(jsonl({"prompt": "write a limerick about a CAT."}, {"prompt": "Write a haiku."}))
    assert first.accepted == 1
    assert (second.accepted, second.duplicates) == (1, 1)
    assert reasons(second) == {1: f"duplicate of stored prompt #{stored.pk}"}


def test_duplicates_are_found_across_chunks_of_a_large_file(monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 2)
    job = run_import(jsonl(*[{"prompt": f"Prompt {i}"} for i in range(5)], {"prompt": "prompt 1"}))
    assert (job.accepted, job.duplicates) == (5, 1)


def test_dedup_can_be_turned_off(settings):
    settings.PROMPT_DEDUP_PREFIX_CHARS = 0
    settings.PROMPT_NEAR_DUPLICATE_THRESHOLD = 0
    job = run_import(jsonl({"prompt": "Same"}, {"prompt": "Same"}))
    assert job.accepted == 2


# Cap per source user

def test_it_caps_prompts_per_source_user_counting_stored_ones(settings):
    settings.PROMPT_CAP_PER_USER = 3
    PromptFactory(source_user_id="u1")
    job = run_import(jsonl(
        *[{"prompt": f"Question {i}", "source_user_id": "u1"} for i in range(4)],
        {"prompt": "From another user", "source_user_id": "u2"},
        {"prompt": "From nobody in particular"},
    ))
    assert (job.accepted, job.over_cap) == (4, 2)
    assert Prompt.objects.filter(source_user_id="u1").count() == 3
    assert reasons(job)[3] == "source user 'u1' already has 3 prompts, the cap per user"


# Splits

PINNED_SPLITS = ["train", "train", "test", "train", "train", "train", "train", "train"]

def test_a_users_prompts_never_straddle_splits():
    rows = [{"prompt": f"Prompt {u}-{i}", "source_user_id": f"user-{u}"} for u in range(60) for i in range(3)]
    job = run_import(jsonl(*rows))
    assert job.accepted == 180
    splits_per_user = {}
    for user, split in Prompt.objects.values_list("source_user_id", "split"):
        splits_per_user.setdefault(user, set()).add(split)
    assert all(len(splits) == 1 for splits in splits_per_user.values())
    assert set(job.split_counts) == {"train", "valid", "test"}


def test_the_split_is_stable_and_follows_the_configured_ratios():
    ratios = (0.8, 0.1, 0.1)
    splits = Counter(intake.split_for(f"user-{i}", ratios) for i in range(10_000))
    # Pinned: a user's split must never change between releases, or test prompts leak into training.
    assert [intake.split_for(f"user-{i}", ratios) for i in range(8)] == PINNED_SPLITS
    assert 0.78 < splits["train"] / 10_000 < 0.82
    assert 0.08 < splits["valid"] / 10_000 < 0.12
    assert {intake.split_for(f"user-{i}", (0, 0, 1)) for i in range(100)} == {"test"}


def test_split_ratios_come_from_settings(settings):
    settings.PROMPT_SPLIT_RATIOS = (0.0, 1.0, 0.0)
    job = run_import(jsonl(*[{"prompt": f"P{i}", "source_user_id": f"u{i}"} for i in range(10)]))
    assert job.split_counts == {"valid": 10}


# PII

def test_it_redacts_personal_data_and_counts_it():
    job = run_import(jsonl(
        {"prompt": "Email jane.roe@example.com or call +1 415-555-0132 about card 4111 1111 1111 1111."},
        {"prompt": "My server at 203.0.113.7 and SSN 123-45-6789 are in the notes."},
        {"messages": [{"role": "user", "content": "Reach me at x.y@example.org please"}]},
        {"prompt": "Nothing personal here, just 2019-2020 sales figures of 3.5 million."},
    ))
    assert job.redactions == {"email": 2, "phone": 1, "card": 1, "ip": 1, "ssn": 1}
    texts = list(Prompt.objects.order_by("id").values_list("text", flat=True))
    assert texts[0] == "Email [EMAIL] or call [PHONE] about card [CARD]."
    assert texts[1] == "My server at [IP] and SSN [SSN] are in the notes."
    assert Prompt.objects.get(turns__isnull=False).turns == [{"role": "user", "content": "Reach me at [EMAIL] please"}]
    assert texts[3].endswith("2019-2020 sales figures of 3.5 million.")


def test_redaction_can_be_turned_off(settings):
    settings.PROMPT_REDACT_PII = False
    job = run_import(jsonl({"prompt": "Write to jane@example.com"}))
    assert job.redactions == {}
    assert Prompt.objects.get().text == "Write to jane@example.com"


# Bad rows

def test_bad_rows_are_reported_with_their_line_and_the_good_ones_imported(settings):
    settings.PROMPT_MAX_CHARS = 50
    job = run_import(jsonl(
        {"prompt": "A good prompt"},
        {"prompt": "   "},
        {"prompt": "x" * 51},
        {"prompt": "Bonjour", "language": "xx"},
        {"prompt": "Hi", "source": "twitter"},
        "",
        {"text": "Another good one", "language": "FR"},
        [1, 2],
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"prompt": "Fine", "use_case": "poetry"},
    ))
    assert (job.rows_read, job.accepted, job.rejected) == (9, 2, 7)
    assert reasons(job) == {
        2: "the prompt is empty",
        3: "the prompt is 51 characters long; the limit is 50",
        4: "unknown language 'xx'; accepted: " + ", ".join(settings.PROMPT_LANGUAGES),
        5: "unknown source 'twitter'; use one of: plain, few_shot, user_based, customer, imported",
        8: "expected a JSON object, got list",
        9: "the last message must be the user's, since the model replies to it",
        10: "unknown use case 'poetry'; use one of: generation, open_qa, closed_qa, brainstorming, chat, rewrite, "
            "summarization, classification, extract, other",
    }
    assert Prompt.objects.get(text="Another good one").language == "fr"


def test_chat_prompts_follow_the_rules_of_every_stored_conversation():
    job = run_import(jsonl(
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Still there?"}]},
        {"messages": [{"role": "user", "content": "Hi", "name": "x"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                      {"role": "user", "content": "Tell me a joke"}]},
    ))
    assert job.accepted == 1
    found = reasons(job)
    assert "two user turns in a row" in found[1] and "unknown fields" in found[2]
    call_command("check_data", "--kind", "prompts")  # exits with 1 when a stored prompt breaks a rule


def test_csv_rows_with_chat_turns_and_extra_columns():
    content = (
        'prompt,source_user_id,language,use_case,messages,team\n'
        '"Rewrite this, please: ""hello""",u1,en,rewrite,,support\n'
        ',u2,en,chat,"[{""role"": ""user"", ""content"": ""Hi there""}]",\n'
        'Too many,u3,en,,,x,extra\n'
    ).encode()
    job = run_import(content, name="prompts.csv")
    assert (job.accepted, job.rejected) == (2, 1)
    assert reasons(job) == {4: "the row has 7 fields where the header has 6"}
    rewrite = Prompt.objects.get(use_case="rewrite")
    assert rewrite.text == 'Rewrite this, please: "hello"'
    assert rewrite.metadata == {"team": "support"}
    chat = Prompt.objects.get(use_case="chat")
    assert chat.turns == [{"role": "user", "content": "Hi there"}]
    assert chat.text == "User: Hi there"


# Files refused whole

@pytest.mark.parametrize(
    "name, content, message",
    [
        ("p.jsonl", jsonl({"prompt": "ok"}) + b'\n{"prompt": "caf\xe9"}', "Line 2 is not valid UTF-8"),
        ("p.csv", b"prompt\nok\n\xff\xfe\n", "Line 3 is not valid UTF-8"),
        ("p.jsonl", '{"prompt": "A prompt saved as UTF-16"}'.encode("utf-16"), "Line 1 is not valid UTF-8"),
        ("p.jsonl", b"not json at all\nnor this\n", "Line 1 is not valid JSON (Expecting value at column 1), and "
                                                    "neither is any other line, so this is not a JSONL file."),
        ("p.jsonl", b"\n  \n\n", "The file holds no rows to import"),
        ("p.csv", b"question,answer\nWhat?,That\n", "The CSV header has no 'prompt' column; it has: question, answer"),
        ("p.csv", b"prompt,source_user_id\r\n", "The file holds no rows to import"),
        ("p.csv", b'"prompt\n', "The CSV header (line 1) cannot be read"),
    ],
)
def test_a_file_that_is_not_valid_is_refused_whole(name, content, message):
    job = run_import(content, name=name)
    assert job.state == ImportJob.State.FAILED
    assert message in job.error
    assert job.error.endswith("Nothing was imported.")
    assert not Prompt.objects.exists()


def test_a_bad_byte_is_reported_on_its_own_line():
    rows = [json.dumps({"prompt": f"Prompt number {i}"}).encode() for i in range(600)]
    rows[499] = b'{"prompt": "caf\xe9"}'
    job = run_import(b"\n".join(rows))
    assert job.error.startswith("Line 500 is not valid UTF-8 (byte b'\\xe9' at position 16).")


def test_byte_order_marks_crlf_endings_and_header_case_are_understood():
    content = "\ufeffPrompt,Source_User_ID\r\nFirst prompt,u1\r\nSecond prompt,u2\r\n".encode()
    job = run_import(content, name="p.csv")
    assert (job.accepted, job.rejected) == (2, 0)
    assert sorted(Prompt.objects.values_list("text", "source_user_id")) == [
        ("First prompt", "u1"), ("Second prompt", "u2")
    ]
    jsonl_job = run_import(b'\xef\xbb\xbf{"prompt": "With a BOM"}\r\n{"prompt": "After CRLF"}\r\n')
    assert jsonl_job.accepted == 2


def test_a_csv_of_chats_needs_no_prompt_column():
    content = b'messages\n"[{""role"": ""user"", ""content"": ""Hello""}]"\n'
    assert run_import(content, name="chats.csv").accepted == 1


def test_an_enormous_csv_field_is_a_row_error_not_a_refused_file(settings):
    content = b"prompt\n" + b"x" * 200_000 + b"\nshort one\n"
    job = run_import(content, name="p.csv")
    assert (job.state, job.accepted, job.rejected) == ("succeeded", 1, 1)
    assert reasons(job)[2].startswith("the prompt is 200,000 characters long")


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"prompt": "x", "metadata": {"score": NaN}}', "NaN is not a number JSON allows"),
        ('{"prompt": "x", "metadata": {"n": ' + "9" * 5000 + "}}", "cannot be stored"),
        ('{"prompt": "a\\u0000b"}', "NUL character"),
        ('{"prompt": "\\ud800"}', "not valid Unicode"),
    ],
)
def test_values_a_database_cannot_store_are_row_errors(line, reason):
    job = run_import(jsonl({"prompt": "A fine prompt"}, line))
    assert (job.state, job.accepted, job.rejected) == ("succeeded", 1, 1)
    assert reason in reasons(job)[2]


def test_personal_data_in_metadata_is_redacted_too():
    job = run_import(b"prompt,author_email\nHello there,ann@example.com\n", name="p.csv")
    assert Prompt.objects.get().metadata == {"author_email": "[EMAIL]"}
    assert job.redactions == {"email": 1}


def test_an_unknown_file_type_is_refused():
    with pytest.raises(ValidationError, match="neither JSONL"):
        services.import_job_create(uploaded_file=SimpleUploadedFile("p.xlsx", b"x"), created_by=None)


def test_a_crash_midway_leaves_nothing_half_imported(monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 2)
    real_store = prompt_services._store_chunk
    calls = []

    def store_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(prompt_services, "_store_chunk", store_then_crash)
    job = run_import(jsonl(*[{"prompt": f"Prompt {i}"} for i in range(6)]))
    assert job.state == ImportJob.State.FAILED
    assert "disk full" in job.error
    assert not Prompt.objects.exists()
    assert not Task.objects.exists()


def children():
    """This process's child processes, zombies included."""
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()


@pytest.fixture
def parse_in_child(settings):
    """Every file is large enough to be read and parsed in a forked process, as a worker does with large files."""
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 0


def test_a_large_file_is_parsed_in_a_child_process_that_is_gone_afterwards(parse_in_child, monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 2)
    forked = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forked.append(1) or real_fork())
    job = run_import(jsonl(*[{"prompt": f"Prompt number {i} about {'x' * i}"} for i in range(7)], "not json"))
    assert forked == [1] and (job.state, job.accepted, job.rejected) == ("succeeded", 7, 1)
    assert reasons(job)[8].startswith("the line is not valid JSON")
    assert not children()


def test_a_crash_while_parsing_fails_the_job_with_its_message(parse_in_child, monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 2)
    real_parse = intake.parse_row

    def parse_then_crash(row, *args, **kwargs):
        if row.get("prompt") == "Prompt 4":
            raise RuntimeError("parser crashed")
        return real_parse(row, *args, **kwargs)

    monkeypatch.setattr(intake, "parse_row", parse_then_crash)
    job = run_import(jsonl(*[{"prompt": f"Prompt {i}"} for i in range(8)]))
    assert (job.state, job.error) == (ImportJob.State.FAILED, "The import failed and nothing was imported: parser "
                                                              "crashed")
    assert not Prompt.objects.exists()
    assert not children()


def test_a_file_refused_in_the_child_process_is_refused_whole(parse_in_child):
    job = run_import(jsonl({"prompt": "Fine"}, {"prompt": "Also fine"}) + b"\n{\"prompt\": \"caf\xe9\"}")
    assert job.state == ImportJob.State.FAILED and job.error.startswith("Line 3 is not valid UTF-8")
    assert not Prompt.objects.exists() and not children()


def test_a_crash_while_storing_stops_and_reaps_the_child_process(parse_in_child, monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 1)
    monkeypatch.setattr(prompt_services, "_store_chunk", lambda *args, **kwargs: 1 / 0)
    job = run_import(jsonl(*[{"prompt": f"Prompt {i}"} for i in range(3000)]))
    assert job.state == ImportJob.State.FAILED and "division by zero" in job.error
    assert not children()


AWKWARD_TEXT = 'Quote " comma , semicolon ; tab \t newline \n carriage \r\n backslash \\ \\N emoji 🙂 ünïcode'


@pytest.mark.parametrize("where", ["here", "in a child process"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_stored_prompts_hold_exactly_what_the_file_said(fmt, where, settings):
    if where != "here":
        settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 0
    metadata = {"note": AWKWARD_TEXT, "nested": {"list": ["", None, 3, '\\"']}}
    if fmt == "jsonl":
        content = jsonl(
            {"prompt": AWKWARD_TEXT, "metadata": metadata, "use_case": "brainstorming"},
            {"messages": [{"role": "user", "content": "Hi,\tthere \"you\""}, {"role": "assistant", "content": "\\N"},
                          {"role": "user", "content": "again"}], "source_user_id": "u,1"},
        )
    else:
        buffer = StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["prompt", "note", "source_user_id"])
        writer.writerow([AWKWARD_TEXT, AWKWARD_TEXT, ""])
        content = buffer.getvalue().encode()
    job = run_import(content, name=f"prompts.{fmt}")
    assert job.state == ImportJob.State.SUCCEEDED, job.row_errors
    first = Prompt.objects.order_by("id").first()
    assert first.text == AWKWARD_TEXT
    assert (first.source_user_id, first.turns, first.created_by_id, first.import_job_id) == ("", None, None, job.pk)
    if fmt == "jsonl":
        assert (first.metadata, first.use_case) == (metadata, "brainstorming")
        chat = Prompt.objects.order_by("id").last()
        assert chat.turns[:2] == [{"role": "user", "content": "Hi,\tthere \"you\""},
                                  {"role": "assistant", "content": "\\N"}]
        assert chat.source_user_id == "u,1"
    else:
        assert (first.metadata, first.use_case) == ({"note": AWKWARD_TEXT}, "")


def test_prompts_are_stored_in_file_order():
    job = run_import(jsonl(*[{"prompt": f"Distinct prompt number {i} about {'x' * i}"} for i in range(30)]))
    texts = list(Prompt.objects.filter(import_job=job).order_by("id").values_list("text", flat=True))
    assert texts == [f"Distinct prompt number {i} about {'x' * i}" for i in range(30)]


def test_running_a_job_twice_imports_once():
    job = run_import(jsonl({"prompt": "Once"}))
    again = services.import_job_run(job_id=job.pk)
    assert (again.state, again.accepted, again.duplicates) == (ImportJob.State.SUCCEEDED, 1, 0)
    assert again.finished_at == job.finished_at
    assert Prompt.objects.count() == 1


def test_a_late_failure_does_not_overwrite_a_recorded_outcome():
    job = run_import(jsonl({"prompt": "Once"}))
    prompt_services._finish_job(job, ImportJob.State.FAILED, error="timed out waiting for a lock")
    assert (job.state, job.accepted, job.error) == (ImportJob.State.SUCCEEDED, 1, "")


# Tasks opened

def test_each_prompt_opens_its_first_tasks_and_needs_completions(settings):
    settings.INTAKE_DEMONSTRATION_SHARE = 1.0
    settings.PROMPT_SPLIT_RATIOS = (0.5, 0.25, 0.25)
    job = run_import(jsonl(*[{"prompt": f"P{i}", "source_user_id": f"u{i}"} for i in range(40)]))
    train = Prompt.objects.filter(split="train")
    assert 0 < train.count() < 40
    assert Task.objects.filter(kind=Task.Kind.ANNOTATE_PROMPT).count() == 40
    assert set(Task.objects.filter(kind=Task.Kind.WRITE_DEMONSTRATION).values_list("prompt__split", flat=True)) == {
        "train"
    }
    assert Task.objects.filter(kind=Task.Kind.WRITE_DEMONSTRATION).count() == train.count()
    assert job.tasks_opened == {"annotate_prompt": 40, "write_demonstration": train.count()}
    assert not Prompt.objects.filter(needs_completions=False).exists()


def test_the_task_policy_is_configurable(settings):
    settings.INTAKE_ANNOTATE = False
    settings.INTAKE_DEMONSTRATION_SHARE = 0.0
    run_import(jsonl(*[{"prompt": f"P{i}"} for i in range(10)]))
    assert not Task.objects.exists()


def test_a_share_of_train_prompts_gets_demonstration_tasks(settings):
    settings.INTAKE_DEMONSTRATION_SHARE = 0.25
    settings.PROMPT_SPLIT_RATIOS = (1.0, 0.0, 0.0)
    run_import(jsonl(*[{"prompt": f"Prompt number {i}"} for i in range(400)]))
    share = Task.objects.filter(kind=Task.Kind.WRITE_DEMONSTRATION).count() / 400
    assert 0.18 < share < 0.32


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no row locks; it serialises writers instead")
def test_a_second_delivery_of_a_running_import_leaves_it_to_the_first(transactional_db):
    job = services.import_job_create(uploaded_file=SimpleUploadedFile("p.jsonl", b'{"prompt": "x"}'), created_by=None)
    ImportJob.objects.filter(pk=job.pk).update(state=ImportJob.State.RUNNING)  # as the first worker does
    holding, release = threading.Event(), threading.Event()

    def first_worker():
        with transaction.atomic():
            ImportJob.objects.select_for_update().get(pk=job.pk)
            holding.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=first_worker)
    thread.start()
    holding.wait(10)
    second = services.import_job_run(job_id=job.pk)
    release.set()
    thread.join()
    assert second.state == ImportJob.State.RUNNING
    assert not Prompt.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no row locks; it serialises writers instead")
def test_two_imports_of_the_same_prompt_at_once_store_it_once(transactional_db):
    results = []

    def import_in_thread():
        try:
            job = run_import(jsonl({"prompt": "Same prompt from two uploads"}))
            results.append((job.state, job.accepted, job.duplicates))
        finally:
            connection.close()

    threads = [threading.Thread(target=import_in_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [("failed", 0, 1), ("succeeded", 1, 0)]
    assert Prompt.objects.count() == 1


# Short prompts and near-duplicates

def csv_of(*prompts):
    lines = ["prompt"] + ['"' + prompt.replace('"', '""') + '"' for prompt in prompts]
    return "\n".join(lines).encode()


FORMATS = {"jsonl": lambda *prompts: jsonl(*[{"prompt": p} for p in prompts]), "csv": csv_of}


@pytest.mark.parametrize("fmt", FORMATS)
def test_short_prompts_differing_in_case_spacing_or_punctuation_are_duplicates(fmt):
    job = run_import(FORMATS[fmt](
        "What is the capital of France?",
        "what is the capital of france",
        "What is the capital of France??  ",
        "WHAT — is the capital of France!",
        "Ｗｈａｔ ｉｓ ｔｈｅ ｃａｐｉｔａｌ ｏｆ Ｆｒａｎｃｅ？",  # fullwidth forms, folded by NFKC
        "What is the capital of Spain?",
    ), name=f"p.{fmt}")
    first = 1 if fmt == "jsonl" else 2  # CSV rows start below the header
    assert (job.accepted, job.duplicates) == (2, 4)
    assert reasons(job) == {first + n: f"duplicate of line {first}" for n in range(1, 5)}


def test_the_normalisation_folds_case_and_compatibility_forms_and_strips_punctuation_and_symbols():
    assert intake.normalise("  Straße,\tSTRASSE!  ﬁle…  «quoted» 💡 ") == "strasse strasse file quoted"
    assert intake.normalise("What is 2+2?") == "what is 2 2"
    assert intake.normalise("???") == "???"  # nothing but punctuation keeps it, so such prompts are not all alike
    assert intake.dedup_key("Hello, World!", 100) == intake.dedup_key("hello world", 100)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_few_added_words_make_a_near_duplicate_that_names_its_original(fmt):
    job = run_import(FORMATS[fmt](
        "Explain photosynthesis to a child in simple words and with one example",
        "Please explain photosynthesis to a child in simple words and with one example",
        "Explain photosynthesis to a child in simple words and with one example, thanks",
        "Explain gravity to a child in simple words and with one example",
    ), name=f"p.{fmt}")
    first = 1 if fmt == "jsonl" else 2
    assert (job.accepted, job.duplicates) == (2, 2)
    assert reasons(job) == {
        first + 1: f"near-duplicate of line {first} (similarity 0.92)",
        first + 2: f"near-duplicate of line {first} (similarity 0.92)",
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_near_duplicates_of_stored_prompts_are_dropped(fmt):
    run_import(jsonl({"prompt": "Give me three ideas for a birthday party on a small budget"}))
    stored = Prompt.objects.get()
    job = run_import(FORMATS[fmt](
        "Give me three ideas for a birthday party on a small budget please",
        "Give me three ideas for a retirement party at the office",
    ), name=f"p.{fmt}")
    first = 1 if fmt == "jsonl" else 2
    assert (job.accepted, job.duplicates) == (1, 1)
    assert reasons(job) == {first: f"near-duplicate of stored prompt #{stored.pk} (similarity 0.92)"}


def test_near_duplicates_are_found_across_chunks(monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 2)
    job = run_import(jsonl(
        {"prompt": "Describe the water cycle for a class of nine year olds"},
        {"prompt": "Name the planets"},
        {"prompt": "Name a colour"},
        {"prompt": "Describe the water cycle for a class of nine year olds, briefly"},
    ))
    first = Prompt.objects.order_by("id").first()
    assert reasons(job) == {4: f"near-duplicate of stored prompt #{first.pk} (similarity 0.91)"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_distinct_short_prompts_are_not_flagged(fmt):
    prompts = [
        "What is 2+2?", "What is 3+3?", "What is 2+3?", "What is 3+2?",  # digits are kept, and their order counts
        "Write a poem about cats", "Write a poem about dogs", "Write a poem about cats and dogs",
        "Prompt 1", "Prompt 2", "Prompt 10", "🙂", "🎉", "Hi", "Hello",
        "Summarise chapter 3 of the attached report for the board, keeping the figures, the named risks and the "
        "recommendations, in plain English and on one page.",
        "Summarise chapter 4 of the attached report for the board, keeping the figures, the named risks and the "
        "recommendations, in plain English and on one page.",
    ]
    job = run_import(FORMATS[fmt](*prompts), name=f"p.{fmt}")
    assert (job.accepted, job.duplicates, job.row_errors) == (len(prompts), 0, [])


def test_the_near_duplicate_threshold_is_a_setting_and_zero_turns_it_off(settings):
    pair = ("Draft an email to my landlord about the broken heating in the flat",
            "Draft an email to my landlord about the broken heating in the flat today")
    settings.PROMPT_NEAR_DUPLICATE_THRESHOLD = 0.95
    assert run_import(FORMATS["jsonl"](*pair)).accepted == 2  # their similarity is 0.92
    Prompt.objects.all().delete()
    settings.PROMPT_NEAR_DUPLICATE_THRESHOLD = 0
    assert run_import(FORMATS["jsonl"](*pair)).accepted == 2
    Prompt.objects.all().delete()
    settings.PROMPT_NEAR_DUPLICATE_THRESHOLD = 0.9
    assert run_import(FORMATS["jsonl"](*pair)).accepted == 1


def test_stored_near_duplicates_are_found_with_one_band_query_per_chunk(monkeypatch):
    monkeypatch.setattr(prompt_services, "INGEST_CHUNK", 50)
    run_import(jsonl(*[{"prompt": f"Write a haiku about the number {i} and the sea"} for i in range(200)]))
    with CaptureQueriesContext(connection) as queries:
        job = run_import(jsonl(*[{"prompt": f"Please write a haiku about the number {i} and the sea"}
                                 for i in range(0, 400, 4)]))
    assert (job.accepted, job.duplicates) == (50, 50)
    band_lookups = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and "lsh_band_0" in q["sql"]]
    assert len(band_lookups) == 2  # one per chunk of 50 rows, whatever the number of stored prompts


def test_prompts_store_their_band_keys():
    run_import(jsonl({"prompt": "Explain tides"}))
    prompt = Prompt.objects.get()
    expected = near_duplicates.lsh_bands([intake.normalise("Explain tides")])[0]
    assert (prompt.lsh_band_0, prompt.lsh_band_1, prompt.lsh_band_2, prompt.lsh_band_3) == expected


def test_signatures_are_datasketchs_minhash_of_the_bigrams():
    from datasketch import MinHash

    texts = [intake.normalise(t) for t in [
        "What is the capital of France?", "Hello", "🙂", "Write a short story about a lighthouse keeper, please.",
    ]]
    signatures = near_duplicates.minhash_signatures(texts)
    for text, signature in zip(texts, signatures):
        reference = MinHash(num_perm=near_duplicates.LSH_BANDS * near_duplicates.LSH_ROWS, seed=near_duplicates.MINHASH_SEED,
                            hashfunc=near_duplicates.shingle_hash)
        reference.update_batch(near_duplicates.shingles(text))
        assert signature.tolist() == reference.hashvalues.tolist()
    first, second = MinHash(num_perm=16, seed=1).permutations, near_duplicates._permutations()
    assert first[0].tolist() == second[0].tolist() and first[1].tolist() == second[1].tolist()


def test_every_punctuation_and_symbol_character_is_in_the_translated_planes():
    beyond = [code for code in range(intake.PUNCTUATION_PLANES_END, sys.maxunicode + 1)
              if unicodedata.category(chr(code))[0] in "PS"]
    assert beyond == []


def test_the_migration_rekeys_stored_prompts_and_keeps_the_older_of_two_that_now_match():
    older = PromptFactory(text="Hello, world! How are you today, my friend?", dedup_key="a" * 64)
    newer = PromptFactory(text="hello world how are you today my friend", dedup_key="b" * 64)
    other = PromptFactory(text="Explain tides", dedup_key="")
    migration = importlib.import_module("labeling.migrations.0009_prompt_lsh_bands")
    migration.key_and_band_stored_prompts(django_apps, None)
    older.refresh_from_db(), newer.refresh_from_db(), other.refresh_from_db()
    assert older.dedup_key == intake.dedup_key("hello world how are you today my friend", 100)
    assert newer.dedup_key == ""
    assert other.dedup_key == intake.dedup_key("explain tides", 100)
    assert older.lsh_band_0 == newer.lsh_band_0 is not None
    again = run_import(jsonl({"prompt": "Hello world, how are you today, my friend? Thanks"}))
    assert reasons(again)[1] in {f"near-duplicate of stored prompt #{pk} (similarity 0.88)"
                                 for pk in (older.pk, newer.pk)}


# PII beside punctuation

PII_VALUES = {
    "email": ("jane.roe_1@example.co.uk", "[EMAIL]"),
    "phone": ("555-123-4567", "[PHONE]"),
    "international phone": ("+44 20 7946 0958", "[PHONE]"),
    "bracketed phone": ("(415) 555-0132", "[PHONE]"),
    "card": ("4111 1111 1111 1111", "[CARD]"),
    "ssn": ("123-45-6789", "[SSN]"),
    "ipv4": ("203.0.113.7", "[IP]"),
    "ipv6": ("2001:db8::8a2e:370:7334", "[IP]"),
}
PII_CONTEXTS = [
    "mail me at {}.", "at {}...", "({})", "[{}]", "{{{}}}", "<{}>", '"{}"', "'{}'", "“{}”", "‘{}’", "«{}»",
    "contact: {}", "contact:{}", "{}: that is all", "{}, thanks", "{}; then", "{}!", "{}?", "*{}*", "`{}`",
    "line one\n{}\nline two",
]


@pytest.mark.parametrize("context", PII_CONTEXTS)
@pytest.mark.parametrize("kind", PII_VALUES)
def test_personal_data_is_found_beside_punctuation(kind, context):
    value, placeholder = PII_VALUES[kind]
    text, counts = pii.redact(context.format(value))
    assert text == context.format(placeholder)
    assert sum(counts.values()) == 1


@pytest.mark.parametrize("text", [
    "Meet at 10:30:45, not 11:00.", "Version 1.2.3.4.5 is out.", "Sales of 3.5 million in 2019-2020.",
    "Use std::vector::push_back.", "Dates: 2024-01-15 and 2024-02-01.", "Ratio 1:2:3.", "Price 19.99!",
])
def test_numbers_that_are_not_personal_data_are_left_alone(text):
    assert pii.redact(text) == (text, Counter())


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_import_redacts_personal_data_beside_punctuation(fmt):
    job = run_import(FORMATS[fmt](
        "Write to me (jane@example.com).", 'My server is "10.0.0.7".', "Call “555-123-4567”, or [123-45-6789]?",
    ), name=f"p.{fmt}")
    assert sorted(Prompt.objects.values_list("text", flat=True)) == [
        "Call “[PHONE]”, or [[SSN]]?", 'My server is "[IP]".', "Write to me ([EMAIL]).",
    ]
    assert job.redactions == {"email": 1, "ip": 1, "phone": 1, "ssn": 1}


# Malformed rows

def test_malformed_jsonl_lines_are_row_errors_and_the_rest_is_imported():
    content = b"\n".join([
        b'{"prompt": "First good prompt"}',
        b'{"prompt": "unterminated',
        b'["a", "list"]',
        b'{"prompt": "x", "metadata": {"score": NaN}}',
        b'{"prompt": "a raw \x00 NUL"}',
        b'{"prompt": "\\ud800 lone surrogate"}',
        b'{"prompt": "escaped \\u0000 NUL"}',
        b'"just a string"',
        b'{"prompt": "Last good prompt"}',
    ])
    job = run_import(content)
    assert (job.state, job.rows_read, job.accepted, job.rejected) == ("succeeded", 9, 2, 7)
    assert reasons(job) == {
        2: "the line is not valid JSON (Invalid control character at column 25); each line must hold one JSON "
           "object",
        3: "expected a JSON object, got list",
        4: "the row holds a value that cannot be stored (NaN is not a number JSON allows)",
        5: "the line is not valid JSON (Invalid control character at column 19); each line must hold one JSON "
           "object",
        6: "the row contains text that is not valid Unicode (a lone surrogate)",
        7: "the row contains a NUL character",
        8: "expected a JSON object, got str",
    }
    assert sorted(Prompt.objects.values_list("text", flat=True)) == ["First good prompt", "Last good prompt"]


def test_malformed_csv_rows_are_row_errors_and_the_rest_is_imported():
    content = (
        b'prompt,source_user_id\n'
        b'First good prompt,u1\n'
        b'Too,many,fields\n'
        b'Too few fields\n'
        b'"broken"quote,u2\n'
        b'A NUL \x00 inside,u3\n'
        b'"A quoted prompt\nover two lines",u4\n'
        b'Last good prompt,u5\n'
        b'"never closed,u6\n'
        b'swallowed by the open quote,u7\n'
    )
    job = run_import(content, name="p.csv")
    assert (job.state, job.accepted, job.rejected) == ("succeeded", 3, 5)
    assert reasons(job) == {
        3: "the row has 3 fields where the header has 2",
        4: "the row has 1 field where the header has 2",
        5: "the row is not valid CSV (',' expected after '\"')",
        6: "the row contains a NUL character",
        10: "the row is not valid CSV (unexpected end of data)",
    }
    assert sorted(Prompt.objects.values_list("text", flat=True)) == [
        "A quoted prompt\nover two lines", "First good prompt", "Last good prompt",
    ]


@pytest.mark.parametrize("name", ["p.jsonl", "p.csv"])
def test_a_file_that_is_not_utf8_is_refused_whole_even_after_good_rows(name):
    good = FORMATS[name.split(".")[1]](*[f"Good prompt {i}" for i in range(5)])
    job = run_import(good + b"\n\x93smart quotes from a legacy encoding\x94\n", name=name)
    assert job.state == ImportJob.State.FAILED
    assert job.error.startswith("Line 7 is not valid UTF-8" if name == "p.csv" else "Line 6 is not valid UTF-8")
    assert not Prompt.objects.exists()


def test_a_file_whose_every_row_is_turned_away_fails_with_the_reasons():
    run_import(jsonl({"prompt": "Already stored"}))
    job = run_import(jsonl({"prompt": "already stored!"}, {"prompt": ""}, "[1]", {"prompt": "x", "language": "xx"}))
    assert job.state == ImportJob.State.FAILED
    assert job.error == (
        "None of the file's 4 rows could be imported (1 duplicate, 3 rejected): line 1: duplicate of stored prompt "
        f"#{Prompt.objects.get().pk}; line 2: the prompt is empty; line 3: expected a JSON object, got list; and "
        "more, listed with the import. Nothing was imported; correct the rows and upload the file again."
    )
    assert len(job.row_errors) == 4


# Answers of the API, the page and the command

def test_the_api_answers_201_when_rows_were_imported(researcher):
    response = api_client_for(researcher).post(
        "/api/imports/", {"file": SimpleUploadedFile("p.jsonl", jsonl({"prompt": "Good"}, "{bad"))}, format="multipart"
    )
    assert response.status_code == 201
    assert (response.json()["state"], response.json()["accepted"], response.json()["rejected"]) == ("succeeded", 1, 1)


def test_the_api_answers_202_when_the_file_goes_to_a_worker(researcher, settings):
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 1
    response = api_client_for(researcher).post(
        "/api/imports/", {"file": SimpleUploadedFile("p.jsonl", jsonl({"prompt": "Good"}))}, format="multipart"
    )
    assert (response.status_code, response.json()["state"]) == (202, "queued")


@pytest.mark.parametrize("name, content, reason", [
    ("p.csv", b"prompt\nfine\n\xff\n", "Line 3 is not valid UTF-8"),
    ("p.csv", b"title\nhello\n", "The CSV header has no 'prompt' column"),
    ("p.jsonl", jsonl({"prompt": ""}, {"prompt": "x", "source": "twitter"}),
     "None of the file's 2 rows could be imported"),
])
def test_the_api_answers_400_with_the_reason_when_nothing_was_imported_and_keeps_the_failed_job(
    researcher, name, content, reason
):
    api = api_client_for(researcher)
    response = api.post("/api/imports/", {"file": SimpleUploadedFile(name, content)}, format="multipart")
    assert response.status_code == 400
    body = response.json()
    assert body["state"] == "failed" and body["detail"] == body["error"] and reason in body["error"]
    assert api.get(f"/api/imports/{body['id']}/").json()["error"] == body["error"]
    assert not Prompt.objects.exists()


def test_the_api_lists_each_row_error_of_a_file_whose_rows_were_all_turned_away(researcher):
    response = api_client_for(researcher).post(
        "/api/imports/", {"file": SimpleUploadedFile("p.csv", b"prompt,language\n,en\nHi,xx\n")}, format="multipart"
    )
    assert response.status_code == 400
    assert [error["line"] for error in response.json()["row_errors"]] == [2, 3]


@pytest.mark.parametrize("content, reason", [
    (b"title\nhello\n", "The CSV header has no &#x27;prompt&#x27; column"),
    (b"prompt\n\n", "The file holds no rows to import"),
    (b"prompt,language\nHi,xx\n", "The file&#x27;s one row could not be imported (1 rejected)"),
])
def test_the_page_answers_400_with_the_reason_beside_the_file_and_lists_the_failed_import(
    as_researcher, content, reason
):
    response = as_researcher.post(reverse("imports"), {"file": SimpleUploadedFile("p.csv", content)})
    assert response.status_code == 400
    page = response.content.decode()
    assert reason in page
    assert "<td>failed</td>" in page
    assert ImportJob.objects.get().state == ImportJob.State.FAILED


def test_the_page_still_shows_the_report_of_an_import_that_stored_rows(as_researcher):
    response = as_researcher.post(reverse("imports"), {"file": SimpleUploadedFile("p.csv", b"prompt\nHi\n,\n")})
    assert response.status_code == 302
    assert response["Location"] == ImportJob.objects.get().get_absolute_url()


def test_the_command_exits_non_zero_with_the_reasons_when_every_row_is_turned_away(tmp_path):
    path = tmp_path / "all-bad.jsonl"
    path.write_bytes(jsonl({"prompt": ""}, {"prompt": "Fine", "language": "zz"}))
    out = StringIO()
    with pytest.raises(CommandError, match="None of the file's 2 rows could be imported"):
        call_command("import_prompts", str(path), stdout=out, stderr=StringIO())
    assert "line 1: the prompt is empty" in out.getvalue()
    assert ImportJob.objects.get().state == ImportJob.State.FAILED
