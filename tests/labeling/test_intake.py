"""Prompt intake, one rule at a time, on hand-made files."""

import json
import threading
from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction

from labeling import intake, services
from labeling.models import ImportJob, Prompt, Task
from labeling.services import prompts as prompt_services
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


def test_csv_rows_with_chat_turns_and_extra_columns():
    content = (
        'prompt,source_user_id,language,use_case,messages,team\n'
        '"Rewrite this, please: ""hello""",u1,en,rewrite,,support\n'
        ',u2,en,chat,"[{""role"": ""user"", ""content"": ""Hi there""}]",\n'
        'Too many,u3,en,,,x,extra\n'
    ).encode()
    job = run_import(content, name="prompts.csv")
    assert (job.accepted, job.rejected) == (2, 1)
    assert reasons(job) == {4: "the row has more fields than the header (6)"}
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
        ("p.jsonl", jsonl({"prompt": "ok"}, '{"prompt": "unterminated'), "Line 2 is not valid JSON"),
        ("p.csv", b"question,answer\nWhat?,That\n", "The CSV header has no 'prompt' column; it has: question, answer"),
        ("p.csv", b'prompt\n"ok"\n"broken"quote\n', "The CSV file is malformed at line 3"),
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
    assert sorted(results) == [("succeeded", 0, 1), ("succeeded", 1, 0)]
    assert Prompt.objects.count() == 1
