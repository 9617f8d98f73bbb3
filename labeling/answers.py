"""The shape every stored answer has, as small pure functions.

The services check an answer with these before storing it, `manage.py check_data` checks the rows
already stored, and exports leave out rows that break them, so a dataset never holds what the site
would refuse today. Each function returns a list of `Problem`s, empty when all is well; a problem
carries a sentence for a person, a short `rule` name for counts, and the turn it is about.

The rules for a conversation (a demonstration's `messages`, a prompt's chat turns):

- a list of turns, each exactly {"role", "content"} with content non-empty text (after strip);
- it starts with the user and alternates user / assistant; one system turn may come first only
  where allowed: in a prompt's turns, and in a demonstration whose task's params set
  `system_prompt_allowed` (the system turn then comes from the prompt; intake is stricter and
  takes user and assistant turns only, so such prompts come from the admin or a script);
- a demonstration ends with the assistant, a prompt with the user (the model replies to it);
- limits from settings: ANSWER_MAX_TURN_CHARS per turn, ANSWER_MAX_CONVERSATION_CHARS in all,
  ANSWER_MAX_TURNS turns for a demonstration; a prompt is at most PROMPT_MAX_CHARS as text.

Free text beside an answer (ranking notes, reasons, screening notes) is at most ANSWER_MAX_NOTES_CHARS.
"""

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError

TURN_FIELDS = {"role", "content"}
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Limits:
    turn_chars: int
    conversation_chars: int
    turns: int
    notes_chars: int
    prompt_chars: int
    languages: tuple

    @classmethod
    def from_settings(cls):
        return cls(
            turn_chars=settings.ANSWER_MAX_TURN_CHARS,
            conversation_chars=settings.ANSWER_MAX_CONVERSATION_CHARS,
            turns=settings.ANSWER_MAX_TURNS,
            notes_chars=settings.ANSWER_MAX_NOTES_CHARS,
            prompt_chars=settings.PROMPT_MAX_CHARS,
            languages=tuple(settings.PROMPT_LANGUAGES),
        )


@dataclass(frozen=True)
class Problem:
    rule: str
    message: str
    turn: int | None = None  # 1-based position in the conversation, where the problem is one turn's


def as_validation_error(problems, *, offset=0):
    """One ValidationError holding every problem. Its params carry the turn, and `answer_turn`: the turn's place
    among the `offset`-th and later turns (those a person wrote after a prompt's), so a form can place each one."""
    return ValidationError([
        # Django formats a message with its params, so a literal % (from a field name someone sent) is escaped.
        ValidationError(p.message.replace("%", "%%"), code=p.rule, params={
            "turn": p.turn, "answer_turn": p.turn - offset if p.turn and p.turn > offset else None,
        })
        for p in problems
    ])


# Text

def describe(value):
    """What a value is, in words, for 'must be text, not ...'."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def unstorable(text):
    """Why a database can't store this text (a NUL character, a lone surrogate), or None."""
    if "\x00" in text:
        return "holds a NUL character, which can't be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds text that is not valid Unicode (a lone surrogate)"
    return None


def notes_problems(notes, *, what, limits, rule="notes"):
    """Free text beside an answer, e.g. `what`="The notes on completion 12", "The reason"."""
    if not isinstance(notes, str):
        return [Problem(rule, f"{what} must be text, not {describe(notes)}.")]
    if len(notes) > limits.notes_chars:
        return [notes_too_long(len(notes), what=what, limits=limits, rule=rule)]
    if reason := unstorable(notes):
        return [Problem(rule, f"{what} {reason}.")]
    return []


def notes_too_long(length, *, what, limits, rule="notes"):
    """The problem of notes `length` characters long, for checks that read only the length from the database."""
    return Problem(f"{rule}_length", f"{what} must be at most {limits.notes_chars:,} characters long, not {length:,}.")


def _shown(name, width=40):
    text = name if isinstance(name, str) else repr(name)
    return text if len(text) <= width else text[:width - 1] + "…"


# Conversations

def conversation_problems(turns, *, limits, system_allowed=False, ends_with="assistant", max_turns=None):
    """Every problem of a conversation, at most one per turn, numbered from 1."""
    if not isinstance(turns, list):
        return [Problem("shape", f"The conversation must be a list of turns, not {describe(turns)}.")]
    if not turns:
        return [Problem("empty", "The conversation has no turns.")]
    if max_turns is not None and len(turns) > max_turns:
        return [Problem("turn_count", f"The conversation has {len(turns):,} turns; at most {max_turns:,}.")]
    problems, previous, total = [], None, 0
    for number, turn in enumerate(turns, start=1):
        problem, role = _turn_problem(number, turn, system_allowed, limits)
        if role is None:
            problems.append(problem)
            continue
        if isinstance(turn.get("content"), str):
            total += len(turn["content"])
        if role == "system":
            if number != 1:
                problem = problem or Problem("system", f"Turn {number}: a system turn can only come first.", number)
            elif not system_allowed:
                problem = problem or Problem("system", "Turn 1: a system turn is not allowed in this task.", number)
        elif previous is None and role != "user":
            problem = problem or Problem(
                "starts_with_user", f"Turn {number}: the conversation starts with the user, not the {role}.", number)
        elif previous == role:
            problem = problem or Problem(
                "alternation",
                f"Turn {number}: two {role} turns in a row; turns alternate between user and assistant.", number)
        if role != "system":
            previous = role
        if problem:
            problems.append(problem)
    last = turns[-1]
    last_role = last.get("role") if isinstance(last, dict) else None
    if last_role in ROLES and last_role != ends_with:
        if ends_with == "assistant":
            message = (f"Write the assistant's reply: the conversation ends with the assistant, and turn "
                       f"{len(turns)} is the {last_role}'s.")
        else:
            message = f"Turn {len(turns)}: the last turn must be the user's, since the model replies to it."
        problems.append(Problem("ending", message, len(turns)))
    if total > limits.conversation_chars:
        problems.append(Problem(
            "conversation_length",
            f"The conversation is {total:,} characters in all; at most {limits.conversation_chars:,}."))
    return problems


def _turn_problem(number, turn, system_allowed, limits):
    """(the turn's own problem or None, its role when it is a known one, else None).

    A system turn is a known role everywhere; where it may stand is the conversation's rule."""
    if not isinstance(turn, dict):
        return Problem("shape", f"Turn {number} must be an object with role and content, not {describe(turn)}.",
                       number), None
    missing = [name for name in ("role", "content") if name not in turn]
    if missing:
        return Problem("shape", f"Turn {number} has no {' and no '.join(missing)}; a turn holds a role and its "
                                "content.", number), None
    role = turn["role"]
    if role not in ROLES:
        roles = "system (first), user or assistant" if system_allowed else "user or assistant"
        return Problem("role", f"Turn {number}: role must be {roles}, not {_shown(repr(role))}.", number), None
    unknown = sorted(_shown(name) for name in set(turn) - TURN_FIELDS)
    if unknown:
        listed = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        return Problem("fields", f"Turn {number} has unknown fields: {listed}; a turn holds only role and content.",
                       number), role
    content, where = turn["content"], f"Turn {number} ({role})"
    if not isinstance(content, str):
        return Problem("content", f"{where}: content must be text, not {describe(content)}.", number), role
    if not content.strip():
        return Problem("content", f"{where}: content is empty.", number), role
    if len(content) > limits.turn_chars:
        return Problem("turn_length", f"{where}: content is {len(content):,} characters; at most "
                                      f"{limits.turn_chars:,}.", number), role
    if reason := unstorable(content):
        return Problem("content", f"{where}: content {reason}.", number), role
    return None, role


def allows_system_turn(params):
    """Whether a task lets a demonstration open with a system turn."""
    return isinstance(params, dict) and params.get("system_prompt_allowed") is True


def demonstration_problems(messages, *, limits, params=None):
    """A demonstration's stored `messages`: the prompt's opening and the labeler's turns, ending with the assistant."""
    return conversation_problems(messages, limits=limits, system_allowed=allows_system_turn(params),
                                 max_turns=limits.turns)


# Prompts, rankings, annotations

def prompt_problems(text, turns, *, limits):
    """A stored prompt: its text within PROMPT_MAX_CHARS, its chat turns (if any) a conversation for the model
    to reply to."""
    if not isinstance(text, str) or not text.strip():
        return [Problem("prompt_empty", "The prompt is empty.")]
    problems = []
    if len(text) > limits.prompt_chars:
        problems.append(Problem("prompt_length",
                                f"The prompt is {len(text):,} characters; at most {limits.prompt_chars:,}."))
    if turns not in (None, []):
        problems += conversation_problems(turns, limits=limits, system_allowed=True, ends_with="user")
    return problems


def groups_problems(groups):
    """A ranking's groups: a non-empty list of non-empty lists of completion ids, each id once."""
    well_formed = isinstance(groups, list) and all(
        isinstance(group, list) and all(type(cid) is int for cid in group) for group in groups
    )
    if not well_formed:
        return [Problem("groups", "The ranking must be a list of groups of completion ids, best first.")]
    if not groups or any(not group for group in groups):
        return [Problem("groups", "Every rank slot must hold at least one completion.")]
    placed = [cid for group in groups for cid in group]
    repeated = sorted({cid for cid in placed if placed.count(cid) > 1})
    if repeated:
        return [Problem("groups", f"Each completion must be ranked once; ranked more than once: {repeated}.")]
    return []


def ranking_problems(groups, completion_ids, *, task_id):
    """A ranking of a task: well-formed groups that place each of the task's `completion_ids` exactly once."""
    if problems := groups_problems(groups):
        return problems
    placed = {cid for group in groups for cid in group}
    missing, unknown = sorted(set(completion_ids) - placed), sorted(placed - set(completion_ids))
    if missing:
        return [Problem("groups", f"Rank every completion before submitting; not ranked yet: {missing}.")]
    if unknown:
        return [Problem("groups", f"These completions are not part of task #{task_id}: {unknown}.")]
    return []


def rating_problems(completion_id, rating, notes, *, limits):
    """One stored rating of a completion: a whole number from 1 to 7 and notes within the limit."""
    problems = []
    if type(rating) is not int or not 1 <= rating <= 7:
        problems.append(Problem("rating", f"The rating of completion {completion_id} must be a whole number from "
                                          "1 to 7."))
    return problems + notes_problems(notes, what=f"The notes on completion {completion_id}", limits=limits)


def annotation_problems(use_case, language, *, use_cases, limits):
    problems = []
    if use_case not in use_cases:
        problems.append(Problem("use_case", f"Unknown use case {_shown(repr(use_case))}."))
    if language not in limits.languages:
        problems.append(Problem("language", f"Unknown language {_shown(repr(language))}; accepted: "
                                            f"{', '.join(limits.languages)}."))
    return problems
