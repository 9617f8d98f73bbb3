"""Reading prompt files and InstructGPT's intake rules, free of the database.

`read_rows` turns a JSONL or CSV file into numbered rows, refusing the whole file
only when it is not UTF-8 text (or has nothing to import); a line that is not a
JSON object or a CSV row that does not fit the header becomes a row error.
`parse_row` turns one row into a `Candidate` or raises `RowError` with the
reason; `near_duplicates` measures how alike two prompts are. The rules that
need the database (deduplication against stored prompts, the per-user cap)
live in `services.prompts_ingest`.
"""

import codecs
import csv
import functools
import hashlib
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from . import answers, pii
from .models import Prompt, UseCase


class FileRefused(Exception):
    """The file as a whole cannot be read; nothing of it is imported."""


class RowError(Exception):
    """One row cannot be imported; the reason says why."""


@dataclass(frozen=True)
class IntakeRules:
    dedup_prefix_chars: int
    near_duplicate_threshold: float
    cap_per_user: int
    split_ratios: tuple
    redact_pii: bool
    max_chars: int
    languages: tuple
    annotate: bool
    demonstration_share: float

    @classmethod
    def from_settings(cls):
        return cls(
            dedup_prefix_chars=settings.PROMPT_DEDUP_PREFIX_CHARS,
            near_duplicate_threshold=settings.PROMPT_NEAR_DUPLICATE_THRESHOLD,
            cap_per_user=settings.PROMPT_CAP_PER_USER,
            split_ratios=tuple(settings.PROMPT_SPLIT_RATIOS),
            redact_pii=settings.PROMPT_REDACT_PII,
            max_chars=settings.PROMPT_MAX_CHARS,
            languages=tuple(settings.PROMPT_LANGUAGES),
            annotate=settings.INTAKE_ANNOTATE,
            demonstration_share=settings.INTAKE_DEMONSTRATION_SHARE,
        )


@dataclass
class Candidate:
    text: str
    turns: list | None
    source: str
    source_user_id: str
    language: str
    use_case: str
    metadata: dict
    dedup_key: str
    split: str
    normalised: str = ""
    bands: tuple | None = None
    redactions: Counter = field(default_factory=Counter)


# Reading files

TEXT_FIELDS = ("prompt", "text")
CHAT_FIELDS = ("messages", "turns")
USER_FIELDS = ("source_user_id", "user_id")
SOURCES = tuple(source for source in Prompt.Source.values if source != Prompt.Source.CHAT)  # chats make their own
USE_CASES = tuple(UseCase.values)
KNOWN_FIELDS = {*TEXT_FIELDS, *CHAT_FIELDS, *USER_FIELDS, "source", "language", "use_case", "metadata"}


class _Lines:
    """Decodes a binary file one line at a time, so a bad byte is reported on its own line."""

    def __init__(self, binary_file):
        self.binary_file = binary_file
        self.number = 0
        self.bytes_read = 0

    def __iter__(self):
        for raw in self.binary_file:
            self.number += 1
            self.bytes_read += len(raw)
            if self.number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FileRefused(
                    f"Line {self.number} is not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at position "
                    f"{exc.start + 1}). Save the file as UTF-8 and upload it again."
                ) from None


def format_for_filename(filename):
    name = filename.lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise FileRefused(f"{filename!r} is neither JSONL (.jsonl) nor CSV (.csv); rename it or name the format.")


def read_rows(binary_file, fmt):
    """Yield (line number, row dict, bytes read so far) for every row of the file.

    A line that is not a JSON object, or a CSV row that does not fit the header, is yielded as a row
    holding `__error__`, which `parse_row` reports with its line number. FileRefused is raised only for
    a file that is not UTF-8 text, has nothing to import, or has no usable shape (a CSV without a prompt
    column, a JSONL file without one line of JSON); the caller runs inside a transaction, so nothing of
    a refused file is kept.
    """
    lines = _Lines(binary_file)
    rows = 0
    for number, row in _jsonl_rows(lines) if fmt == "jsonl" else _csv_rows(lines):
        rows += 1
        yield number, row, lines.bytes_read
    if not rows:
        raise FileRefused("The file holds no rows to import: add one prompt per line (JSONL) or per row (CSV).")


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _jsonl_rows(lines):
    first_error = None
    parsed_any = False
    for text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            first_error = first_error or (lines.number, exc)
            row = {"__error__": f"the line is not valid JSON ({_json_problem(exc)}); each line must hold one JSON "
                                "object"}
        except (ValueError, RecursionError) as exc:  # NaN, a 5,000-digit number, nesting deeper than Python's stack
            parsed_any = True
            row = {"__error__": f"the row holds a value that cannot be stored ({exc or 'nested too deeply'})"}
        else:
            parsed_any = True
        yield lines.number, row
    if first_error and not parsed_any:
        number, exc = first_error
        raise FileRefused(
            f"Line {number} is not valid JSON ({_json_problem(exc)}), and neither is any other line, so this is "
            "not a JSONL file. Each line must hold one JSON object."
        )


def _json_problem(exc):
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"  # some messages end in "at" already


def _csv_rows(lines):
    # Over-long prompts get a row error from the length rule, not a refusal of the file.
    csv.field_size_limit(max(csv.field_size_limit(), 64 * 1024 * 1024))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FileRefused(
            f"The CSV header (line 1) cannot be read: {exc}. The first row must name the columns."
        ) from None
    if not header:
        raise FileRefused("The CSV file is empty: it needs a header row with a 'prompt' column.")
    header = [name.strip().lower() for name in header]
    if not set(header) & {*TEXT_FIELDS, *CHAT_FIELDS}:
        raise FileRefused(
            f"The CSV header has no 'prompt' column; it has: {', '.join(header)}. Add a 'prompt' column."
        )
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader starts afresh on the next line
            yield start, {"__error__": f"the row is not valid CSV ({exc})"}
        else:
            if values and len(values) != len(header):
                fields = f"{len(values)} field" if len(values) == 1 else f"{len(values)} fields"
                yield start, {"__error__": f"the row has {fields} where the header has {len(header)}"}
            elif values:
                yield start, dict(zip(header, values))
        start = reader.line_num + 1


# One row

def parse_row(row, rules, *, default_source=Prompt.Source.IMPORTED):
    if not isinstance(row, dict):
        raise RowError(f"expected a JSON object, got {type(row).__name__}")
    if "__error__" in row:
        raise RowError(row["__error__"])
    _check_text(row)

    turns = _turns(row)
    if turns is not None:
        text = "\n\n".join(f"{turn['role'].capitalize()}: {turn['content']}" for turn in turns)
    else:
        text = next((row[name] for name in TEXT_FIELDS if name in row), None)
        if text is None:
            raise RowError("the row has no 'prompt' (or 'messages')")
        if not isinstance(text, str):
            raise RowError("the prompt must be text")
    if not text.strip():
        raise RowError("the prompt is empty")
    if len(text) > rules.max_chars:
        raise RowError(f"the prompt is {len(text):,} characters long; the limit is {rules.max_chars:,}")

    source = _choice(row.get("source") or default_source, SOURCES, "source")
    use_case = _choice(row["use_case"], USE_CASES, "use case") if row.get("use_case") else ""
    language = row.get("language") or "en"
    if not isinstance(language, str):
        raise RowError("the language must be a code such as 'en'")
    language = language.strip().lower()
    if language not in rules.languages:
        raise RowError(f"unknown language {language!r}; accepted: {', '.join(rules.languages)}")
    user_id = _first(row, USER_FIELDS)
    if user_id is not None and not isinstance(user_id, (str, int)):
        raise RowError("the source user id must be text or a number")
    user_id = "" if user_id is None else str(user_id).strip()
    if len(user_id) > 128:
        raise RowError("the source user id is longer than 128 characters")
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RowError("metadata must be an object")
    metadata = {**{k: v for k, v in row.items() if k not in KNOWN_FIELDS and v not in ("", None)}, **metadata}

    redactions = Counter()
    if rules.redact_pii:
        text, redactions = pii.redact(text)
        for turn in turns or []:
            turn["content"], _ = pii.redact(turn["content"])
        metadata = _redact_values(metadata, redactions)

    normalised = normalise(text)
    key = dedup_key(normalised, rules.dedup_prefix_chars, normalised=True)
    return Candidate(
        text=text,
        turns=turns,
        source=source,
        source_user_id=user_id,
        language=language,
        use_case=use_case,
        metadata=metadata,
        dedup_key=key,
        split=split_for(user_id or key or text, rules.split_ratios),
        normalised=normalised,
        redactions=redactions,
    )


def _first(row, names):
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


def _turns(row):
    turns = _first(row, CHAT_FIELDS)
    if turns is None:
        return None
    if isinstance(turns, str):  # a CSV cell holding JSON
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError:
            raise RowError("messages must be a JSON list of {role, content} objects") from None
    shape_ok = isinstance(turns, list) and turns and all(
        isinstance(t, dict) and t.get("role") in ("user", "assistant") and isinstance(t.get("content"), str)
        for t in turns
    )
    if not shape_ok:
        raise RowError("messages must be a non-empty list of {role: user|assistant, content: text} objects")
    for number, turn in enumerate(turns, start=1):
        if not turn["content"].strip():
            raise RowError(f"message {number} is empty")
    if turns[-1]["role"] != "user":
        raise RowError("the last message must be the user's, since the model replies to it")
    # The same rules as every stored conversation, so that check_data and exports never refuse an imported prompt.
    problems = answers.conversation_problems(turns, limits=answers.Limits.from_settings(), ends_with="user")
    if problems:
        raise RowError(problems[0].message)
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def _check_text(value):
    """Refuse what a database cannot store as text: NUL characters and lone surrogates."""
    if isinstance(value, str):
        if "\x00" in value:
            raise RowError("the row contains a NUL character")
        if value.isascii():
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RowError("the row contains text that is not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def _redact_values(value, counts):
    """Redact personal data in every string of a metadata tree, adding to `counts`."""
    if isinstance(value, str):
        value, found = pii.redact(value)
        counts.update(found)
        return value
    if isinstance(value, dict):
        return {key: _redact_values(item, counts) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_values(item, counts) for item in value]
    return value


def _choice(value, allowed, what):
    value = str(value).strip().lower()
    if value not in allowed:
        raise RowError(f"unknown {what} {value!r}; use one of: {', '.join(allowed)}")
    return value


# Rules

# Every punctuation and symbol character lies in Unicode's first two planes; a test holds this true.
PUNCTUATION_PLANES_END = 0x20000


@functools.cache
def _punctuation_to_spaces():
    """A str.translate table mapping each punctuation and symbol character (categories P* and S*) to a space."""
    return {code: " " for code in range(PUNCTUATION_PLANES_END) if unicodedata.category(chr(code))[0] in "PS"}


def normalise(text):
    """The text as deduplication compares it: NFKC, case-folded, punctuation and symbols as spaces, spaces collapsed.

    Letters and digits are kept, so "What is 2+2?" and "What is 3+3?" stay apart. A text of nothing but
    punctuation or symbols keeps them, so that "???" and "🙂" are not both the empty string.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.translate(_punctuation_to_spaces()).split()) or " ".join(folded.split())


def dedup_key(text, prefix_chars, *, normalised=False):
    """Prompts whose normalised text shares the first `prefix_chars` characters are duplicates.

    A prompt shorter than that is keyed by the whole of its normalised text, so short prompts that
    differ only in case, spacing or punctuation are duplicates too.
    """
    if not prefix_chars:
        return ""
    return hashlib.sha256((text if normalised else normalise(text))[:prefix_chars].encode()).hexdigest()


def stable_fraction(value, salt):
    digest = hashlib.sha256(f"{salt}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for(source_user_id, ratios):
    """Train/valid/test by a stable hash of the source user, so no user straddles two splits."""
    point = stable_fraction(source_user_id, "split")
    train, valid, _ = ratios
    if point < train:
        return Prompt.Split.TRAIN
    if point < train + valid:
        return Prompt.Split.VALID
    return Prompt.Split.TEST


def wants_demonstration(candidate, rules):
    return candidate.split == Prompt.Split.TRAIN and stable_fraction(
        candidate.dedup_key or candidate.text, "demonstration"
    ) < rules.demonstration_share
