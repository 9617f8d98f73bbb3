"""Prompt intake: files, API batches and labeler-written prompts through InstructGPT's rules."""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import islice

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from .. import intake
from ..models import ImportJob, Prompt, Task

logger = logging.getLogger(__name__)

INGEST_CHUNK = 2000
INTAKE_LOCK = 72_616_001  # any fixed number: the key of PostgreSQL's advisory lock for prompt intake


@dataclass
class IntakeReport:
    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    over_cap: int = 0
    rejected: int = 0
    split_counts: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    tasks_opened: Counter = field(default_factory=Counter)
    row_errors: list = field(default_factory=list)
    row_errors_omitted: int = 0
    prompt_ids: list = field(default_factory=list)

    def add_error(self, line, reason, max_errors):
        if len(self.row_errors) < max_errors:
            self.row_errors.append({"line": line, "reason": reason})
        else:
            self.row_errors_omitted += 1


def prompts_ingest(*, rows, created_by=None, import_job=None, rules=None, on_progress=None,
                   default_source=Prompt.Source.IMPORTED, keep_ids=False):
    """Apply the intake rules to numbered rows and store the prompts that pass.

    `rows` yields (line, row dict, bytes read). Rows are handled in chunks; each
    chunk is checked against the prompts already stored, which include the chunks
    of this file stored before it, so memory does not grow with the file. Run it
    inside a transaction: a failure midway must leave nothing behind.
    """
    rules = rules or intake.IntakeRules.from_settings()
    max_errors = settings.PROMPT_IMPORT_MAX_REPORTED_ERRORS
    _serialise_intake()
    report = IntakeReport()
    rows = iter(rows)
    while chunk := list(islice(rows, INGEST_CHUNK)):
        candidates = []
        for line, row, _ in chunk:
            report.rows_read += 1
            try:
                candidates.append((line, intake.parse_row(row, rules, default_source=default_source)))
            except intake.RowError as exc:
                report.rejected += 1
                report.add_error(line, str(exc), max_errors)
        _store_chunk(candidates, rules, report, max_errors, created_by=created_by, import_job=import_job,
                     keep_ids=keep_ids)
        if on_progress:
            on_progress(report.rows_read, chunk[-1][2])
    report.row_errors.sort(key=lambda error: error["line"])
    return report


def _serialise_intake():
    """One intake at a time, until its transaction ends.

    Deduplication and the per-user cap check each chunk against stored prompts;
    two imports running side by side would not see each other's rows. SQLite's
    IMMEDIATE transactions already serialise writers; PostgreSQL needs a lock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INTAKE_LOCK])


def _store_chunk(candidates, rules, report, max_errors, *, created_by, import_job, keep_ids):
    keys = {c.dedup_key for _, c in candidates if c.dedup_key}
    stored = dict(Prompt.objects.filter(dedup_key__in=keys).values_list("dedup_key", "id")) if keys else {}
    users = {c.source_user_id for _, c in candidates if c.source_user_id}
    per_user = Counter(
        dict(
            Prompt.objects.filter(source_user_id__in=users)
            .order_by()
            .values_list("source_user_id")
            .annotate(n=Count("id"))
        )
        if users and rules.cap_per_user
        else {}
    )
    seen_lines = {}
    accepted = []
    for line, candidate in candidates:
        key, user = candidate.dedup_key, candidate.source_user_id
        if key and key in stored:
            report.duplicates += 1
            report.add_error(line, f"duplicate of stored prompt #{stored[key]}", max_errors)
        elif key and key in seen_lines:
            report.duplicates += 1
            report.add_error(line, f"duplicate of line {seen_lines[key]}", max_errors)
        elif user and rules.cap_per_user and per_user[user] >= rules.cap_per_user:
            report.over_cap += 1
            report.add_error(
                line, f"source user {user!r} already has {rules.cap_per_user} prompts, the cap per user", max_errors
            )
        else:
            if key:
                seen_lines[key] = line
            if user:
                per_user[user] += 1
            accepted.append(candidate)

    prompts = Prompt.objects.bulk_create(
        Prompt(
            text=c.text,
            turns=c.turns,
            source=c.source,
            source_user_id=c.source_user_id,
            split=c.split,
            language=c.language,
            use_case=c.use_case,
            metadata=c.metadata,
            dedup_key=c.dedup_key,
            redactions=dict(c.redactions),
            needs_completions=True,
            created_by_id=created_by and created_by.pk,
            import_job_id=import_job and import_job.pk,
        )
        for c in accepted
    )
    openings = defaultdict(list)  # (kind, required annotations) -> prompt ids
    for prompt, candidate in zip(prompts, accepted):
        report.accepted += 1
        report.split_counts[str(prompt.split)] += 1
        report.redactions.update(candidate.redactions)
        if rules.annotate:
            openings[Task.Kind.ANNOTATE_PROMPT, required_annotations(prompt.pk)].append(prompt.pk)
        if intake.wants_demonstration(candidate, rules):
            openings[Task.Kind.WRITE_DEMONSTRATION, 1].append(prompt.pk)
    for (kind, required), prompt_ids in openings.items():
        report.tasks_opened[str(kind)] += _tasks_open(kind=kind, prompt_ids=prompt_ids, required=required)
    if keep_ids:
        report.prompt_ids.extend(p.pk for p in prompts)


def required_annotations(prompt_id):
    """How many labelers a ranking or annotation task of this prompt needs: a stable share gets several."""
    overlap = intake.stable_fraction(prompt_id, "overlap") < settings.OVERLAP_SHARE
    return settings.OVERLAP_ANNOTATIONS if overlap else 1


def _tasks_open(*, kind, prompt_ids, required):
    """Open one task of `kind`, with the model's defaults, for each prompt.

    A single INSERT ... SELECT per kind and chunk: imports open a task or two per
    prompt, and building them as model instances for bulk_create costs six times
    as long (see bench/import_prompts.py).
    """
    values = {"kind": kind, "required_annotations": required, "state": Task.State.OPEN, "created_at": timezone.now()}
    columns, params = [], []
    for model_field in Task._meta.concrete_fields:
        if model_field.primary_key or model_field.name == "prompt":
            continue
        value = values[model_field.name] if model_field.name in values else model_field.get_default()
        columns.append(connection.ops.quote_name(model_field.column))
        params.append(model_field.get_db_prep_save(value, connection))
    placeholders = ", ".join(["%s"] * len(params))
    ids = ", ".join(["%s"] * len(prompt_ids))
    sql = (
        f"INSERT INTO {Task._meta.db_table} ({', '.join(columns)}, prompt_id) "
        f"SELECT {placeholders}, id FROM {Prompt._meta.db_table} WHERE id IN ({ids})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *prompt_ids])
        return cursor.rowcount


def import_job_create(*, uploaded_file, created_by, fmt=None):
    """Store an uploaded file as an import job; `import_job_start` runs it."""
    fmt = fmt or _format_or_error(uploaded_file.name)
    if fmt not in ImportJob.Format.values:
        raise ValidationError(f"Unknown format {fmt!r}; use jsonl or csv.")
    if not uploaded_file.size:
        raise ValidationError("The file is empty.")
    return ImportJob.objects.create(
        file=uploaded_file, filename=uploaded_file.name[:255], format=fmt, size_bytes=uploaded_file.size,
        created_by=created_by,
    )


def _format_or_error(filename):
    try:
        return intake.format_for_filename(filename)
    except intake.FileRefused as exc:
        raise ValidationError(str(exc)) from None


def import_job_start(*, job, inline=None):
    """Run small files now; queue large ones for a worker. Returns the job, refreshed."""
    if inline is None:
        inline = job.size_bytes <= settings.PROMPT_IMPORT_INLINE_MAX_BYTES
    if inline:
        return import_job_run(job_id=job.pk)
    from ..tasks import import_prompts

    transaction.on_commit(lambda: import_prompts.delay(job.pk))
    return job


def import_job_run(*, job_id, on_progress=None):
    """Import the job's file in one transaction.

    Safe to run twice: a finished job is left alone, and while one worker imports,
    it holds the job's row lock, so a second delivery of the same task returns.
    """
    ImportJob.objects.filter(pk=job_id, state=ImportJob.State.QUEUED).update(
        state=ImportJob.State.RUNNING, started_at=timezone.now()
    )
    job = ImportJob.objects.get(pk=job_id)
    if job.is_finished:
        return job

    def progress(rows_read, bytes_read):
        cache.set(job.progress_cache_key, {"rows_read": rows_read, "bytes_read": bytes_read}, timeout=86400)
        if on_progress:
            on_progress(rows_read, bytes_read)

    try:
        with transaction.atomic():
            if not ImportJob.objects.select_for_update(skip_locked=True).filter(pk=job.pk, state=job.state):
                return ImportJob.objects.get(pk=job.pk)  # another worker holds it, or has just finished it
            with job.file.open("rb") as binary:
                report = prompts_ingest(
                    rows=intake.read_rows(binary, job.format),
                    created_by=job.created_by,
                    import_job=job,
                    on_progress=progress,
                )
            _finish_job(job, ImportJob.State.SUCCEEDED, report=report)
    except intake.FileRefused as exc:
        _finish_job(job, ImportJob.State.FAILED, error=f"{exc} Nothing was imported.")
    except Exception as exc:
        logger.exception("Import job %s failed", job.pk)
        _finish_job(job, ImportJob.State.FAILED, error=f"The import failed and nothing was imported: {exc}")
    cache.delete(job.progress_cache_key)
    return job


def _finish_job(job, state, *, report=None, error=""):
    """Record the outcome, unless another delivery of the task has already recorded one."""
    fields = {"state": state, "error": error, "finished_at": timezone.now()}
    if report is not None:
        fields.update(
            {name: getattr(report, name) for name in (
                "rows_read", "accepted", "duplicates", "over_cap", "rejected", "row_errors", "row_errors_omitted"
            )},
            split_counts=dict(report.split_counts),
            redactions=dict(report.redactions),
            tasks_opened=dict(report.tasks_opened),
        )
    ImportJob.objects.filter(pk=job.pk, state=ImportJob.State.RUNNING).update(**fields)
    job.refresh_from_db()


def prompts_create(*, rows, created_by):
    """Bulk creation from the API: the same rules as a file, all or nothing on a crash."""
    with transaction.atomic():
        return prompts_ingest(rows=rows, created_by=created_by, keep_ids=True)
