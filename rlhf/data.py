"""Reading the dataset files the exports write: JSONL, JSONL.gz or Parquet.

Three shapes:

- rankings: `prompt`, `completions` (texts, or objects with a `text`), `ranks` as ordered groups
  of ties, best first, holding indices into `completions`; also TRL preference pairs
  (`prompt`/`chosen`/`rejected`, or `chosen`/`rejected` alone), read as rankings of two;
- demonstrations: `messages`, a list of {"role", "content"} ending with the assistant, where an
  assistant message with `"weight": 0` is context, not trained on (OpenAI's fine-tuning format);
  or TRL's prompt-completion form, `prompt` (text or messages) and `completion` (the assistant's
  message, or its text), trained on the completion alone;
- prompts: `prompt`, text or messages;
- pretraining text for PPO-ptx: `text` (or `messages`).

A prompt is text or a list of messages. A malformed row stops the run before any training with
the file, the line (or Parquet row) and what was wrong.
"""

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    pass


@dataclass
class Ranking:
    prompt: str | list | None  # None: each completion holds the whole conversation (HH-RLHF style)
    completions: list  # texts, or message lists for conversational pairs
    groups: list[list[int]]  # indices into completions, best first; a group holds ties

    def pairs(self):
        """(better, worse) index pairs; tied completions give none."""
        return [(i, j) for n, better in enumerate(self.groups) for worse in self.groups[n + 1:]
                for i in better for j in worse]


def rows(path):
    """(line number, row) for every row of a JSONL, JSONL.gz or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, row
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object.")
            yield number, row


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path, parse):
    items = []
    for number, row in rows(path):
        try:
            items.append(parse(row))
        except DataError as exc:
            raise DataError(f"{path}, line {number}: {exc}") from None
    if not items:
        raise DataError(f"{path}: no rows.")
    return items


def load_rankings(path):
    return _read(path, parse_ranking)


def load_demonstrations(path):
    """Conversations ending with the assistant; a turn marked `"weight": 0` is context only."""
    return _read(path, parse_demonstration)


def parse_demonstration(row):
    if "messages" in row:
        messages = check_messages(row["messages"], "messages", end_with_assistant=True)
        for n, message in enumerate(messages):
            if message.get("weight", 1) not in (0, 1) or isinstance(message.get("weight"), bool):
                raise DataError(f"`messages[{n}].weight` must be 0 (context) or 1 (trained on).")
        if not any(m["role"] == "assistant" and m.get("weight", 1) for m in messages):
            raise DataError("`messages` has no assistant message to train on: every one has weight 0.")
        return messages
    if "prompt" in row and "completion" in row:
        prompt = check_prompt(row["prompt"])
        completion = row["completion"]
        if isinstance(completion, list):
            completion = check_messages(completion, "completion", end_with_assistant=True)
            if len(completion) != 1:
                raise DataError("`completion` must be the assistant's one message.")
            completion = completion[0]["content"]
        if not isinstance(completion, str) or not completion.strip():
            raise DataError("`completion` must be non-empty text or the assistant's message.")
        context = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if context[-1]["role"] == "assistant":
            raise DataError("`prompt` must not end with the assistant's message: the completion is its reply.")
        return [*({**m, "weight": 0} if m["role"] == "assistant" else m for m in context),
                {"role": "assistant", "content": completion}]
    raise DataError("each row needs `messages`, or `prompt` and `completion`.")


def load_prompts(path):
    return _read(path, lambda row: check_prompt(row.get("prompt")))


def load_ptx(path):
    """Pretraining text (`text`) or demonstrations (`messages`) for the ptx term of PPO-ptx."""

    def parse(row):
        if isinstance(row.get("text"), str) and row["text"].strip():
            return row["text"]
        if "messages" in row:
            return check_messages(row["messages"], "messages", end_with_assistant=True)
        raise DataError("each row needs `text` or `messages`.")

    return _read(path, parse)


def parse_ranking(row):
    if "chosen" in row or "rejected" in row:
        prompt = check_prompt(row["prompt"]) if row.get("prompt") is not None else None
        chosen, rejected = (_completion(row.get(name), name, prompt) for name in ("chosen", "rejected"))
        return Ranking(prompt, [chosen, rejected], [[0], [1]])
    prompt = check_prompt(row.get("prompt"))
    completions = row.get("completions")
    if not isinstance(completions, list) or len(completions) < 2:
        raise DataError("`completions` must be a list of at least two completions.")
    texts = [_completion(c.get("text") if isinstance(c, dict) else c, f"completions[{n}]", prompt)
             for n, c in enumerate(completions)]
    groups = row.get("ranks")
    if not isinstance(groups, list) or not all(isinstance(g, list) and g for g in groups):
        raise DataError("`ranks` must be a list of non-empty groups of completion indices, best first.")
    placed = [i for group in groups for i in group]
    if sorted(placed) != list(range(len(texts))) or not all(type(i) is int for i in placed):
        raise DataError(f"`ranks` must place each of the {len(texts)} completions (0 to {len(texts) - 1}) once.")
    return Ranking(prompt, texts, groups)


def check_prompt(prompt):
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list):
        return check_messages(prompt, "prompt")
    raise DataError("`prompt` must be non-empty text or a list of messages.")


def check_messages(messages, name, end_with_assistant=False):
    if not isinstance(messages, list) or not messages:
        raise DataError(f"`{name}` must be a non-empty list of messages.")
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(
            message.get("content"), str
        ):
            raise DataError(f"`{name}[{n}]` must be {{\"role\": one of {list(ROLES)}, \"content\": text}}.")
    if end_with_assistant and messages[-1]["role"] != "assistant":
        raise DataError(f"`{name}` must end with the assistant's message.")
    return messages


def _completion(value, name, prompt):
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        messages = check_messages(value, name, end_with_assistant=True)
        # Conversational pairs repeat the prompt inside chosen/rejected only when there is no prompt field.
        return messages if prompt is None else messages[-1]["content"]
    raise DataError(f"`{name}` must be non-empty text or a list of messages.")
