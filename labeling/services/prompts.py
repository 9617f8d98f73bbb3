"""Prompt intake: files, API batches and labeler-written prompts through InstructGPT's rules."""

import csv
import io
import json
import logging
import os
import pickle
import signal
from collections import Counter, defaultdict
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain, islice

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from .. import intake, near_duplicates
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
                   default_source=Prompt.Source.IMPORTED, keep_ids=False, parse_in_child=False):
    """Apply the intake rules to numbered rows and store the prompts that pass.

    `rows` yields (line, row dict, bytes read). Rows are handled in chunks; each
    chunk is checked against the prompts already stored, which include the chunks
    of this file stored before it, so memory does not grow with the file. Run it
    inside a transaction: a failure midway must leave nothing behind. With
    `parse_in_child`, rows are read and parsed in a forked process (large files,
    in a worker), while this one stores.
    """
    rules = rules or intake.IntakeRules.from_settings()
    max_errors = settings.PROMPT_IMPORT_MAX_REPORTED_ERRORS
    _serialise_intake()
    report = IntakeReport()
    with _index_scans():
        chunks = _parsed_chunks(rows, rules, default_source)
        for chunk in _parsed_in_child(chunks) if parse_in_child else chunks:
            report.rows_read += chunk.rows
            report.rejected += len(chunk.errors)
            for line, reason in chunk.errors:
                report.add_error(line, reason, max_errors)
            _store_chunk(chunk.candidates, rules, report, max_errors, created_by=created_by, import_job=import_job,
                         keep_ids=keep_ids)
            if on_progress:
                on_progress(report.rows_read, chunk.bytes_read)
    report.row_errors.sort(key=lambda error: error["line"])
    return report


@dataclass
class _ParsedChunk:
    rows: int
    bytes_read: int
    candidates: list  # (line, Candidate) with its LSH bands
    errors: list  # (line, reason)


def _parsed_chunks(rows, rules, default_source):
    """Read and parse rows a chunk at a time, with no database work, so that it can run in another process."""
    rows = iter(rows)
    while chunk := list(islice(rows, INGEST_CHUNK)):
        candidates, errors = [], []
        for line, row, _ in chunk:
            try:
                candidates.append((line, intake.parse_row(row, rules, default_source=default_source)))
            except intake.RowError as exc:
                errors.append((line, str(exc)))
        for (_, candidate), bands in zip(candidates, near_duplicates.lsh_bands([c.normalised for _, c in candidates])):
            candidate.bands = bands
        yield _ParsedChunk(rows=len(chunk), bytes_read=chunk[-1][2], candidates=candidates, errors=errors)


def _parsed_in_child(chunks):
    """Yield what the generator `chunks` yields, computed in a forked child process that runs ahead of the caller.

    Parsing is Python work, and so is much of storing: in one process the two take turns on the GIL. A thread
    parsing ahead saved a tenth of a large import; a process saves about a sixth (bench/import_prompts.py).
    The child only reads and parses (no database, no files written) and hands each chunk over a pipe, which
    holds it back once it is a chunk or two ahead. An exception in the child is raised here in its place; the
    child is killed and reaped however the caller stops.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, send, and leave without running the parent's exit handlers
        os.close(read_fd)
        code = 0
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                try:
                    for chunk in chunks:
                        pickle.dump((_CHUNK, chunk), pipe, protocol=pickle.HIGHEST_PROTOCOL)
                        pipe.flush()  # the whole chunk, not all but its last buffer's worth
                    pickle.dump((_END, None), pipe)
                except BaseException as exc:  # noqa: BLE001 - raised in the parent
                    code = 1
                    try:
                        pickle.dump((_ERROR, exc), pipe)
                    except Exception:  # an exception that cannot be pickled goes as its message
                        pickle.dump((_ERROR, RuntimeError(f"{type(exc).__name__}: {exc}")), pipe)
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            while True:
                try:
                    kind, value = pickle.load(pipe)
                except EOFError:
                    raise RuntimeError("The process reading the file stopped before the end of the file.") from None
                if kind == _END:
                    return
                if kind == _ERROR:
                    raise value
                yield value
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with suppress(ChildProcessError):  # reaped already, by a SIGCHLD handler of the worker's
            os.waitpid(pid, 0)


_CHUNK, _END, _ERROR = "chunk", "end", "error"


def _serialise_intake():
    """One intake at a time, until its transaction ends.

    Deduplication and the per-user cap check each chunk against stored prompts;
    two imports running side by side would not see each other's rows. SQLite's
    IMMEDIATE transactions already serialise writers; PostgreSQL needs a lock.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INTAKE_LOCK])


def _stored_matches(candidates, rules):
    """What the stored prompts say about a chunk: stored prompts by dedup key, near-duplicates, prompts per user."""
    keys = {c.dedup_key for _, c in candidates if c.dedup_key}
    users = {c.source_user_id for _, c in candidates if c.source_user_id}
    # The unique index on dedup_key leaves out empty keys, and the query must say so to use it.
    stored = dict(_select("dedup_key", "id", where=[_in("dedup_key", keys)], also="dedup_key <> ''")) if keys else {}
    near = _NearDuplicates(candidates, rules.near_duplicate_threshold)
    # A labeler's chats make prompts under their id too; the cap is on the prompts they write.
    per_user = Counter(
        dict(_select("source_user_id", "COUNT(*)", where=[_in("source_user_id", users)],
                     also=f"source <> '{Prompt.Source.CHAT}'", group_by="source_user_id"))
        if users and rules.cap_per_user
        else {}
    )
    return stored, near, per_user


def _in(column, values):
    """`column IN values` as SQL and parameters: one array parameter on PostgreSQL, one parameter per value elsewhere.

    The intake looks thousands of values up per chunk; as an ORM `__in` each is prepared through its field
    in Python, which took longer than the queries (bench/import_prompts.py).
    """
    values = list(values)
    if connection.vendor == "postgresql":
        array_type = "bigint" if isinstance(values[0], int) else "text"
        return f"{column} = ANY(%s::{array_type}[])", [values]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", values


def _select(*columns, where, also="", group_by=""):
    """Rows of the prompt table matching any of the `_in` conditions in `where` (and `also`, when given)."""
    condition = " OR ".join(sql for sql, _ in where)
    if also:
        condition = f"({condition}) AND {also}"
    sql = f"SELECT {', '.join(columns)} FROM {Prompt._meta.db_table} WHERE {condition}"
    if group_by:
        sql += f" GROUP BY {group_by}"
    with connection.cursor() as cursor:
        cursor.execute(sql, list(chain.from_iterable(params for _, params in where)))
        return cursor.fetchall()


def _store_chunk(candidates, rules, report, max_errors, *, created_by, import_job, keep_ids):
    stored, near, per_user = _stored_matches(candidates, rules)
    seen_lines = {}
    accepted = []
    for position, (line, candidate) in enumerate(candidates):
        key, user = candidate.dedup_key, candidate.source_user_id
        if key and key in stored:
            report.duplicates += 1
            report.add_error(line, f"duplicate of stored prompt #{stored[key]}", max_errors)
        elif key and key in seen_lines:
            report.duplicates += 1
            report.add_error(line, f"duplicate of line {seen_lines[key]}", max_errors)
        elif match := near.match(position):
            report.duplicates += 1
            report.add_error(line, f"near-duplicate of {match[0]} (similarity {match[1]:.2f})", max_errors)
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
            near.add(position)
            accepted.append(candidate)

    prompt_ids = _prompts_insert(accepted, created_by=created_by, import_job=import_job)
    openings = defaultdict(list)  # (kind, required annotations) -> prompt ids
    for prompt_id, candidate in zip(prompt_ids, accepted):
        report.accepted += 1
        report.split_counts[str(candidate.split)] += 1
        report.redactions.update(candidate.redactions)
        if rules.annotate:
            openings[Task.Kind.ANNOTATE_PROMPT, required_annotations(prompt_id)].append(prompt_id)
        if intake.wants_demonstration(candidate, rules):
            openings[Task.Kind.WRITE_DEMONSTRATION, 1].append(prompt_id)
    for (kind, required), ids in openings.items():
        report.tasks_opened[str(kind)] += _tasks_open(kind=kind, prompt_ids=ids, required=required)
    if keep_ids:
        report.prompt_ids.extend(prompt_ids)


@contextmanager
def _index_scans():
    """Look stored prompts up by their indexes, even while PostgreSQL has no statistics of them.

    A large import grows the table inside one transaction, out of autovacuum's sight. Without statistics
    PostgreSQL guesses that each of a chunk's 2,000 keys matches one prompt in 200, and so reads the whole
    table for every chunk: the import slows down as it goes. Each key matches a few prompts at most.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_seqscan')")
        (previous,) = cursor.fetchone()
        cursor.execute("SELECT set_config('enable_seqscan', 'off', true)")
        yield
        # Not restored after an error: rolling the transaction (or savepoint) back restores it.
        cursor.execute("SELECT set_config('enable_seqscan', %s, true)", [previous])


BAND_COLUMNS = [f"lsh_band_{band}" for band in range(near_duplicates.LSH_BANDS)]
# Stored prompts compared with one row at most; more share a band only when many stored prompts are
# alike, and those that share the most bands are the likeliest near-duplicates.
NEAR_DUPLICATE_CANDIDATES = 20


class _NearDuplicates:
    """Finds, for each row of a chunk, a stored prompt or an earlier row of the file it nearly duplicates.

    Stored prompts (which include the earlier chunks of this file) that share an LSH band with a row of the
    chunk come from one indexed query; rows of this chunk are compared when they share a band with an
    earlier row that was accepted. A pair is a near-duplicate when the Jaccard similarity of their bigrams
    reaches the threshold.
    """

    def __init__(self, candidates, threshold):
        self.candidates = candidates
        self.threshold = threshold
        self.stored = {}  # position in the chunk -> [(prompt id, normalised text)], likeliest first
        self.earlier = defaultdict(set)  # position -> earlier positions that share a band with it
        self.accepted = set()
        if threshold and candidates:
            self._find_stored()
            self._find_earlier()

    def _find_stored(self):
        wanted = [{c.bands[band] for _, c in self.candidates} for band in range(near_duplicates.LSH_BANDS)]
        by_band = [defaultdict(list) for _ in BAND_COLUMNS]
        for prompt_id, *bands in _select("id", *BAND_COLUMNS, where=list(map(_in, BAND_COLUMNS, wanted))):
            for band, key in enumerate(bands):
                if key in wanted[band]:
                    by_band[band][key].append(prompt_id)
        if not any(by_band):
            return
        shortlists = {}
        for position, (_, candidate) in enumerate(self.candidates):
            found = [by_band[band][key] for band, key in enumerate(candidate.bands) if key in by_band[band]]
            if found:
                shared = Counter(chain.from_iterable(found))
                ranked = sorted(shared, key=lambda prompt_id: (-shared[prompt_id], -prompt_id))
                shortlists[position] = ranked[:NEAR_DUPLICATE_CANDIDATES]
        ids = set(chain.from_iterable(shortlists.values()))
        texts = {pk: intake.normalise(text) for pk, text in _select("id", "text", where=[_in("id", ids)])}
        self.stored = {position: [(pk, texts[pk]) for pk in shortlist] for position, shortlist in shortlists.items()}

    def _find_earlier(self):
        for band in range(near_duplicates.LSH_BANDS):
            keys = [candidate.bands[band] for _, candidate in self.candidates]
            repeated = {key for key, n in Counter(keys).items() if n > 1}
            groups = defaultdict(list)
            for position, key in enumerate(keys):
                if key in repeated:
                    self.earlier[position].update(groups[key])
                    groups[key].append(position)

    def match(self, position):
        """(what it duplicates, similarity) for the most similar prompt at or above the threshold, else None."""
        if not self.threshold:
            return None
        text = self.candidates[position][1].normalised
        best = None
        for prompt_id, other in self.stored.get(position, ()):
            score = near_duplicates.similarity(text, other)
            if score >= self.threshold and (best is None or score > best[1]):
                best = (f"stored prompt #{prompt_id}", score)
        if best:
            return best
        for earlier in sorted(self.earlier.get(position, set()) & self.accepted)[:NEAR_DUPLICATE_CANDIDATES]:
            line, other = self.candidates[earlier]
            score = near_duplicates.similarity(text, other.normalised)
            if score >= self.threshold and (best is None or score > best[1]):
                best = (f"line {line}", score)
        return best

    def add(self, position):
        self.accepted.add(position)


PROMPT_INSERT_COLUMNS = [
    "text", "turns", "source", "source_user_id", "split", "language", "use_case", "metadata", "dedup_key",
    "redactions", "needs_completions", "created_by", "import_job", "created_at", *BAND_COLUMNS,
]


def _prompts_insert(candidates, *, created_by, import_job):
    """Store accepted candidates as prompts and return their ids, in order.

    Values go in already in the database's form: building a model instance per row for bulk_create and
    preparing each value through its field took about a quarter of an import's time in Python. PostgreSQL
    takes the rows through COPY, with ids drawn from the table's sequence first; rows of VALUES elsewhere.
    COPY took a third of the time of one INSERT of an array per column (see bench/import_prompts.py).
    """
    if not candidates:
        return []
    fields = [Prompt._meta.get_field(name) for name in PROMPT_INSERT_COLUMNS]
    ops, table = connection.ops, Prompt._meta.db_table
    created_at = fields[PROMPT_INSERT_COLUMNS.index("created_at")].get_db_prep_save(timezone.now(), connection)
    created_by_id, import_job_id = created_by and created_by.pk, import_job and import_job.pk

    def json_value(value):
        if value is None:
            return None
        return json.dumps(value) if value else "{}" if isinstance(value, dict) else "[]"

    rows = [
        (c.text, json_value(c.turns), c.source, c.source_user_id, str(c.split), c.language, c.use_case,
         json_value(c.metadata), c.dedup_key, json_value(dict(c.redactions)), True, created_by_id, import_job_id,
         created_at, *c.bands)
        for c in candidates
    ]
    columns = ", ".join(ops.quote_name(field.column) for field in fields)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The sequence's name is looked up once: per row, the lookup cost ten times the nextval.
            cursor.execute("SELECT nextval(sequence) FROM (SELECT pg_get_serial_sequence(%s, 'id')::regclass AS "
                           "sequence) AS prompt_ids, generate_series(1, %s)", [table, len(rows)])
            ids = sorted(row[0] for row in cursor.fetchall())
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows((pk, *row) for pk, row in zip(ids, rows))
            buffer.seek(0)
            # In CSV, NULL and the empty string are both an empty field; FORCE_NOT_NULL reads it as the
            # empty string in the columns that cannot be NULL.
            not_null = ", ".join(ops.quote_name(field.column) for field in fields if not field.null)
            cursor.copy_expert(
                f"COPY {ops.quote_name(table)} ({ops.quote_name('id')}, {columns}) FROM STDIN "
                f"WITH (FORMAT csv, FORCE_NOT_NULL ({not_null}))",
                buffer,
            )
            return ids
        ids = []
        row_sql = f"({', '.join(['%s'] * len(fields))})"
        batch = max(1, ops.bulk_batch_size(fields, rows))
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            values = ", ".join([row_sql] * len(part))
            cursor.execute(f"INSERT INTO {ops.quote_name(table)} ({columns}) VALUES {values} RETURNING "
                           f"{ops.quote_name('id')}", list(chain.from_iterable(part)))
            ids.extend(row[0] for row in cursor.fetchall())
        return ids


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
    ids, id_params = _in("id", prompt_ids)
    sql = (
        f"INSERT INTO {Task._meta.db_table} ({', '.join(columns)}, prompt_id) "
        f"SELECT {placeholders}, id FROM {Prompt._meta.db_table} WHERE {ids}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *id_params])
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
                    # Files large enough to go to a worker (or imported by the command); web processes never fork.
                    parse_in_child=job.size_bytes > settings.PROMPT_IMPORT_INLINE_MAX_BYTES and hasattr(os, "fork"),
                )
            if report.accepted:
                _finish_job(job, ImportJob.State.SUCCEEDED, report=report)
            else:
                _finish_job(job, ImportJob.State.FAILED, report=report, error=_nothing_imported(report))
    except intake.FileRefused as exc:
        _finish_job(job, ImportJob.State.FAILED, error=f"{exc} Nothing was imported.")
    except Exception as exc:
        logger.exception("Import job %s failed", job.pk)
        _finish_job(job, ImportJob.State.FAILED, error=f"The import failed and nothing was imported: {exc}")
    cache.delete(job.progress_cache_key)
    return job


def _nothing_imported(report):
    """Why a file whose every row was turned away imported nothing, with the first reasons."""
    counts = ", ".join(f"{n} {what}" for n, what in [
        (report.duplicates, "duplicate" if report.duplicates == 1 else "duplicates"),
        (report.over_cap, "over the per-user cap"),
        (report.rejected, "rejected"),
    ] if n)
    reasons = "; ".join(f"line {error['line']}: {error['reason']}" for error in report.row_errors[:3])
    if len(report.row_errors) > 3 or report.row_errors_omitted:
        reasons += "; and more, listed with the import"
    if report.rows_read == 1:
        opening = "The file's one row could not be imported"
    else:
        opening = f"None of the file's {report.rows_read:,} rows could be imported"
    return f"{opening} ({counts}): {reasons}. Nothing was imported; correct the rows and upload the file again."


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
