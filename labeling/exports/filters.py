"""The filters and options an export takes, checked before any work starts.

Every problem is reported with the filter's name, so the page, the API (a 400) and the
command line can say exactly which one was wrong.
"""

import datetime

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_date, parse_datetime

from ..models import Export, LabelerProfile, ModelVersion, Prompt, UseCase

K = Export.Kind
RANKED = {K.PREFERENCE_PAIRS, K.RANKINGS}
LABELED = {K.PREFERENCE_PAIRS, K.RANKINGS, K.SFT, K.ANNOTATIONS, K.OASST, K.DIALOGUES, K.HUMAN_EVAL, K.LABELER_STATS}
CONTENT = set(K) - {K.LABELER_STATS}

OVERLAP_MODES = {
    "every": "every labeler's annotation",
    "consensus": "one consensus ranking per task (Tideman's ranked pairs)",
    "unanimous": "only the pairs every labeler of the task ordered the same way",
}
STYLES = {"conversational": "prompts and replies as chat messages", "standard": "plain text"}


def _choices(name, allowed):
    def parse(value):
        values = value.split(",") if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise ValidationError(f"Filter `{name}` must be a list of values, or one value.")
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValidationError(f"Filter `{name}`: unknown value {unknown[0]!r}; choose from {', '.join(allowed)}.")
        return sorted(set(values))

    return parse


def _languages(value):
    values = value.split(",") if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValidationError("Filter `language` must be a list of language codes, or one code.")
    return sorted({v.strip().lower() for v in values})


def _date(name, end_of_day=False):
    def parse(value):
        moment = None
        if isinstance(value, str):
            try:
                if len(value) == 10 and (day := parse_date(value)):
                    time = datetime.time.max if end_of_day else datetime.time.min
                    moment = datetime.datetime.combine(day, time)
                else:
                    moment = parse_datetime(value)
            except ValueError:
                moment = None
        if moment is None:
            raise ValidationError(f"Filter `{name}` must be a date (2026-01-31) or a date and time in ISO 8601.")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.astimezone(datetime.UTC).isoformat()

    return parse


def _share(name):
    def parse(value):
        try:
            share = float(value)
        except (TypeError, ValueError):
            share = None
        if isinstance(value, bool) or share is None or not 0 <= share <= 1:
            raise ValidationError(f"Filter `{name}` must be a number from 0 to 1.")
        return share

    return parse


def _flag(name):
    def parse(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValidationError(f"Filter `{name}` must be true or false.")

    return parse


def _one_of(name, allowed):
    def parse(value):
        if value not in allowed:
            raise ValidationError(f"Filter `{name}` must be one of: {', '.join(allowed)}.")
        return value

    return parse


def _model_versions(value):
    values = value.split(",") if isinstance(value, str) else value
    values = values if isinstance(values, list) else [values]
    try:
        ids = sorted({int(v) for v in values if not isinstance(v, bool)})
    except (TypeError, ValueError):
        ids = []
    if not ids or len(ids) != len(values):
        raise ValidationError("Filter `model_version` must be a list of model version ids.")
    missing = sorted(set(ids) - set(ModelVersion.objects.filter(pk__in=ids).values_list("pk", flat=True)))
    if missing:
        raise ValidationError(f"Filter `model_version`: no model version with id {missing[0]}.")
    return ids


# name: (parser, the kinds it applies to, what it does)
FILTERS = {
    "split": (_choices("split", Prompt.Split.values), CONTENT, "prompt splits: train, valid, test"),
    "language": (_languages, CONTENT, "prompt languages, e.g. en,fr"),
    "use_case": (_choices("use_case", UseCase.values), CONTENT, "prompt use cases"),
    "since": (_date("since"), set(K), "from this date (when the annotation or prompt was made)"),
    "until": (_date("until", end_of_day=True), set(K), "up to this date, inclusive"),
    "model_version": (_model_versions, RANKED | {K.OASST}, "tasks with a completion from these model versions"),
    "labeler_status": (
        _choices("labeler_status", LabelerProfile.Status.values), LABELED, "only labelers whose status is one of these"
    ),
    "include_gold": (_flag("include_gold"), LABELED - {K.LABELER_STATS}, "include gold tasks (default false)"),
    "include_evaluations": (
        _flag("include_evaluations"), RANKED | {K.OASST},
        "include the judgments of human evaluations of model versions (default false)",
    ),
    "min_agreement": (
        _share("min_agreement"), RANKED,
        "only overlap tasks whose labelers agree on at least this share of pairs; single-labeler tasks are left out",
    ),
    "overlap": (_one_of("overlap", OVERLAP_MODES), RANKED, "for overlap tasks: every, consensus or unanimous"),
    "style": (_one_of("style", STYLES), {K.PREFERENCE_PAIRS, K.RANKINGS, K.PPO_PROMPTS}, "conversational or standard"),
    "margin": (_flag("margin"), {K.PREFERENCE_PAIRS}, "add a `margin` column: the distance in ranks"),
    "feedme": (
        _flag("feedme"), {K.SFT},
        "add model completions rated 7 of 7 as demonstrations (FeedME): every rating of them a 7, no fault flagged",
    ),
    "single_turn": (
        _flag("single_turn"), {K.DIALOGUES},
        "add single-turn demonstrations in the same dialogue format (ChatGPT's mix with InstructGPT's data)",
    ),
}


def filters_parse(kind, raw):
    """Checked, normalised filters for an export of `kind`; a ValidationError names what was wrong."""
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationError("Filters must be an object of filter names and values.")
    cleaned = {}
    for name, value in raw.items():
        if name not in FILTERS:
            raise ValidationError(f"Unknown filter `{name}`; known filters: {', '.join(FILTERS)}.")
        parse, kinds, _ = FILTERS[name]
        if kind not in kinds:
            raise ValidationError(f"Filter `{name}` does not apply to {Export.Kind(kind).label} exports.")
        if value in (None, "", []):
            continue
        cleaned[name] = parse(value)
    if cleaned.get("overlap") == "unanimous" and kind != K.PREFERENCE_PAIRS:
        raise ValidationError("Filter `overlap`: unanimous keeps pairs, so it applies to preference pairs only.")
    if "since" in cleaned and "until" in cleaned and cleaned["since"] > cleaned["until"]:
        raise ValidationError("Filter `since` is after `until`.")
    return cleaned
