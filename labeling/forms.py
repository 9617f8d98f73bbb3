import json

from django import forms
from django.conf import settings
from django.core import validators

from .exports import FILTERS as EXPORT_FILTERS
from .exports import OVERLAP_MODES, STYLES
from .models import (
    Assignment,
    CompletionRating,
    Export,
    ImportJob,
    LabelerProfile,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    ScreeningItem,
    TrainingRun,
    UseCase,
)


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one object per line) or CSV with a header row; UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "From the file name")] + ImportJob.Format.choices, required=False
    )


def _languages():
    return [(code, code) for code in settings.PROMPT_LANGUAGES]


def _flag_label(model, name):
    return model._meta.get_field(name).verbose_name.capitalize()


class TimedForm(forms.Form):
    """Every task page reports the seconds its timer counted."""

    time_spent = forms.IntegerField(min_value=0, required=False, widget=forms.HiddenInput)

    def field_error_count(self):
        """How many fields the page marks as refused, for the summary above the form."""
        return sum(1 for name in self.errors if name in self.fields)

    def add_answer_error(self, exc):
        """Show the service's ValidationError beside the field it is about; here, above the form."""
        self.add_error(None, exc)


class WritePromptForm(TimedForm):
    STYLES = [
        (Prompt.Source.PLAIN, "Plain: any task you think of"),
        (Prompt.Source.FEW_SHOT, "Few-shot: an instruction with several examples"),
        (Prompt.Source.USER_BASED, "User-based: a request for one of the use cases below"),
    ]

    style = forms.ChoiceField(choices=STYLES, widget=forms.RadioSelect, initial=Prompt.Source.PLAIN)
    use_case = forms.ChoiceField(choices=[("", "—")] + UseCase.choices, required=False)
    language = forms.ChoiceField(choices=_languages, initial="en")
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 10}), strip=False, label="Prompt")

    def clean(self):
        data = super().clean()
        if data.get("style") == Prompt.Source.USER_BASED and not data.get("use_case"):
            self.add_error("use_case", "A user-based prompt needs the use case it is based on.")
        return data


class DemonstrationForm(TimedForm):
    """The assistant's reply, and optionally more turns where the labeler plays both sides."""

    EXTRA_TURNS = 3

    assistant_1 = forms.CharField(widget=forms.Textarea(attrs={"rows": 8}), label="Assistant", strip=False)
    used_suggestion = forms.BooleanField(required=False, widget=forms.HiddenInput)
    # The ids of the suggestions asked for turn by turn that the labeler put into a reply, comma-separated.
    suggestions_used = forms.RegexField(regex=r"^\d+(,\d+)*$", required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for n in range(2, self.EXTRA_TURNS + 2):
            self.fields[f"user_{n}"] = forms.CharField(
                widget=forms.Textarea(attrs={"rows": 3}), required=False, label="User", strip=False
            )
            self.fields[f"assistant_{n}"] = forms.CharField(
                widget=forms.Textarea(attrs={"rows": 5}), required=False, label="Assistant", strip=False
            )

    def extra_turns(self):
        return [(self[f"user_{n}"], self[f"assistant_{n}"]) for n in range(2, self.EXTRA_TURNS + 2)]

    def clean(self):
        data = super().clean()
        for n in range(2, self.EXTRA_TURNS + 2):
            user, assistant = data.get(f"user_{n}", "").strip(), data.get(f"assistant_{n}", "").strip()
            if user and not assistant:
                self.add_error(f"assistant_{n}", "Write the assistant's answer to this turn, or clear the turn.")
            if assistant and not user:
                self.add_error(f"user_{n}", "Write the user's turn this answer replies to, or clear it.")
        return data

    def written(self):
        """The names of the fields the labeler filled in, turn by turn."""
        names = ["assistant_1"]
        for n in range(2, self.EXTRA_TURNS + 2):
            if self.cleaned_data.get(f"user_{n}", "").strip():
                names += [f"user_{n}", f"assistant_{n}"]
        return names

    def turns(self):
        return [{"role": name.partition("_")[0], "content": self.cleaned_data[name]} for name in self.written()]

    def suggestions(self):
        used = self.cleaned_data.get("suggestions_used")
        return [int(pk) for pk in used.split(",")] if used else []

    def add_answer_error(self, exc):
        """Each problem beside the turn it names: `answer_turn` counts the labeler's turns from 1."""
        names = self.written()
        for error in exc.error_list:
            turn = (error.params or {}).get("answer_turn")
            self.add_error(names[turn - 1] if turn and turn <= len(names) else None, error)


class RankingForm(TimedForm):
    """Per output: a 1-7 rating, the metadata flags, notes and a rank; ties share a rank."""

    # The key that toggles each flag of the output in focus; none of them is a key the page uses otherwise
    # (j and k move between outputs, n opens the notes, b goes to the board).
    FLAG_KEYS = {
        "fails_to_follow_instruction": "f",
        "inappropriate_for_customer_assistant": "i",
        "hallucination": "h",
        "satisfies_constraint": "c",
        "sexual_content": "s",
        "violent_content": "v",
        "encourages_violence": "e",
        "denigrates_protected_class": "d",
        "harmful_advice": "a",
        "expresses_opinion": "o",
        "expresses_moral_judgment": "m",
    }

    none_acceptable = forms.BooleanField(required=False, label="None of these outputs is acceptable")

    def __init__(self, *args, completions, **kwargs):
        super().__init__(*args, **kwargs)
        self.completions = completions
        ranks = [(str(n), str(n)) for n in range(1, len(completions) + 1)]
        for completion in completions:
            cid = completion.pk
            self.fields[f"rating_{cid}"] = forms.TypedChoiceField(
                choices=[(str(n), str(n)) for n in range(1, 8)], coerce=int, widget=forms.RadioSelect,
                label="Overall quality (1 worst, 7 best)",
                error_messages={"required": "Rate this output from 1 to 7."},
            )
            for flag in CompletionRating.FLAGS:
                self.fields[f"{flag}_{cid}"] = forms.BooleanField(
                    required=False, label=_flag_label(CompletionRating, flag),
                    help_text=CompletionRating._meta.get_field(flag).help_text,
                    widget=forms.CheckboxInput(attrs={"data-key": self.FLAG_KEYS[flag],
                                                      "aria-keyshortcuts": self.FLAG_KEYS[flag]}),
                )
            self.fields[f"notes_{cid}"] = forms.CharField(
                required=False, label="Notes", widget=forms.Textarea(attrs={"rows": 2})
            )
            self.fields[f"rank_{cid}"] = forms.TypedChoiceField(
                choices=[("", "—")] + ranks, coerce=int, label="Rank",
                error_messages={"required": "Place this output on the ranking board."},
            )

    def outputs(self):
        """(letter, completion, its fields) in the order this labeler sees them."""
        for index, completion in enumerate(self.completions):
            cid = completion.pk
            yield {
                "letter": chr(ord("A") + index),
                "completion": completion,
                "rating": self[f"rating_{cid}"],
                "flags": [(self[f"{flag}_{cid}"], self.FLAG_KEYS[flag]) for flag in CompletionRating.FLAGS],
                "notes": self[f"notes_{cid}"],
                "rank": self[f"rank_{cid}"],
            }

    def unranked(self):
        """The letters of the outputs refused for want of a rank, for the board to name."""
        return [output["letter"] for output in self.outputs() if output["rank"].errors]

    def flag_keys(self):
        """(label, key) of each flag, for the page's list of shortcuts."""
        return [(_flag_label(CompletionRating, flag), self.FLAG_KEYS[flag]) for flag in CompletionRating.FLAGS]

    def add_answer_error(self, exc):
        """A problem with one output's notes goes beside those notes."""
        for error in exc.error_list:
            params = error.params or {}
            field = f"notes_{params.get('completion')}" if params.get("field") == "notes" else None
            self.add_error(field if field in self.fields else None, error)

    def groups(self):
        ranks = {}
        for completion in self.completions:
            ranks.setdefault(self.cleaned_data[f"rank_{completion.pk}"], []).append(completion.pk)
        return [ranks[rank] for rank in sorted(ranks)]

    def ratings(self):
        return {
            c.pk: {
                "rating": self.cleaned_data[f"rating_{c.pk}"],
                "notes": self.cleaned_data[f"notes_{c.pk}"],
                **{flag: self.cleaned_data[f"{flag}_{c.pk}"] for flag in CompletionRating.FLAGS},
            }
            for c in self.completions
        }


class AnnotationForm(TimedForm):
    use_case = forms.ChoiceField(choices=[("", "—")] + UseCase.choices)
    language = forms.ChoiceField(choices=_languages)
    contains_personal_data = forms.BooleanField(required=False, label="Contains personal data")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for flag in PromptAnnotation.FLAGS:
            self.fields[flag] = forms.BooleanField(required=False, label=_flag_label(PromptAnnotation, flag))

    def flag_fields(self):
        return [self[flag] for flag in PromptAnnotation.FLAGS]

    def flags(self):
        return {flag: self.cleaned_data[flag] for flag in PromptAnnotation.FLAGS}


class SkipForm(forms.Form):
    reason = forms.ChoiceField(choices=Assignment.SkipReason.choices, widget=forms.RadioSelect)


PICK_SEVERAL = "Ctrl-click (⌘-click on a Mac) to choose several; none chosen means all."


class ExportForm(forms.Form):
    """An export and its filters. Which filter applies to which kind is the export filters' table
    (labeling/exports/filters.py): the page names each filter's kinds from it, to hide the others, and a filter
    set for a kind it does not apply to is refused beside the field."""

    kind = forms.ChoiceField(choices=Export.Kind.choices)
    format = forms.ChoiceField(choices=Export.Format.choices)
    split = forms.MultipleChoiceField(choices=Prompt.Split.choices, required=False,
                                      widget=forms.CheckboxSelectMultiple)
    language = forms.CharField(required=False, help_text="Language codes, comma-separated: en,fr")
    use_case = forms.MultipleChoiceField(choices=UseCase.choices, required=False, help_text=PICK_SEVERAL,
                                         widget=forms.SelectMultiple(attrs={"size": len(UseCase.choices)}))
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model_version = forms.ModelMultipleChoiceField(queryset=ModelVersion.objects.all(), required=False,
                                                   help_text=PICK_SEVERAL,
                                                   widget=forms.SelectMultiple(attrs={"size": 6}))
    labeler_status = forms.MultipleChoiceField(
        choices=LabelerProfile.Status.choices, required=False, help_text=PICK_SEVERAL,
        widget=forms.SelectMultiple(attrs={"size": len(LabelerProfile.Status.choices)}),
    )
    include_gold = forms.BooleanField(required=False, label="Include gold tasks")
    include_evaluations = forms.BooleanField(required=False, label="Include judgments of human evaluations")
    overlap = forms.ChoiceField(required=False, label="Overlap tasks",
                                choices=[("", "—"), *((k, f"{k}: {v}") for k, v in OVERLAP_MODES.items())])
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1, label="Minimum agreement (0-1)")
    style = forms.ChoiceField(required=False, choices=[("", "—"), *STYLES.items()])
    margin = forms.BooleanField(required=False, label="Margin column (rank distance)")
    feedme = forms.BooleanField(required=False, label="Add completions rated 7 of 7 (FeedME)")
    single_turn = forms.BooleanField(required=False, label="Add single-turn demonstrations as dialogues")
    with_identities = forms.BooleanField(required=False, label="Usernames instead of pseudonyms (admins only)")

    FILTERS = list(EXPORT_FILTERS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.FILTERS:
            self.fields[name].kinds = sorted(EXPORT_FILTERS[name][1])

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind:
            for name in self.filters():
                if kind not in self.fields[name].kinds:
                    self.add_error(name, f"Filter `{name}` does not apply to {Export.Kind(kind).label} exports. "
                                         f"Clear it, or choose a kind it applies to.")
        return cleaned

    def filters(self):
        """The filters that were set, as the service takes them."""
        found = {}
        for name in self.FILTERS:
            value = self.cleaned_data.get(name)
            if value in (None, "", [], False) or (hasattr(value, "exists") and not value.exists()):
                continue
            if name == "model_version":
                value = [version.pk for version in value]
            elif name in ("since", "until"):
                value = value.isoformat()
            found[name] = value
        return found


class TrainingStartForm(forms.Form):
    kind = forms.ChoiceField(choices=TrainingRun.Kind.choices, label="Train")
    options = forms.CharField(
        required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "epochs: 2"}),
        help_text="rlhf options for this run, one name: value per line or a JSON object; they add to "
                  "TRAINING_OPTIONS, and the run's evaluations use the same. For SFT, feedme: true also trains "
                  "on completions rated 7 of 7.",
    )

    def clean_options(self):
        """One `name: value` per line, each value read as JSON where it is JSON (2, 1e-4, true, [0.9, 0.95]) and as
        text otherwise, as `manage.py train --option` reads them; or a JSON object."""
        text = self.cleaned_data["options"].strip()
        if text.startswith("{"):
            try:
                options = json.loads(text)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(f"The options are not a JSON object: {exc.msg} at character {exc.pos}.")
            except RecursionError:
                raise forms.ValidationError("The options nest too deeply; options are numbers, text and pairs.")
            if not isinstance(options, dict):
                raise forms.ValidationError("Write the options as name: value lines, such as epochs: 2.")
            return options
        options = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise forms.ValidationError(f"Line {number} is not name: value, such as epochs: 2.")
            options[name.strip()] = typed_value(value.strip())
        return options


def typed_value(text):
    """2 -> 2, 1e-5 -> 1e-05, true -> True, [0.9, 0.95] -> a list; anything else (or nested past Python's stack)
    stays text, for the option's check to refuse by name."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text


class AccountForm(forms.Form):
    username = forms.RegexField(r"^[\w.@+-]{3,150}$", max_length=150,
                                help_text="3 to 150 letters, digits and @ . + - _ — what you sign in with.")
    email = forms.EmailField(required=False, help_text="Only admins see it; reviewers never do.")
    password = forms.CharField(widget=forms.PasswordInput, min_length=8)


# The self-assessment of the screening test: what a person is comfortable judging (InstructGPT, appendix B.1).
TOPICS = ["health and medicine", "law", "finance", "politics", "religion", "sexuality", "violence and crime",
          "mental health", "software", "science"]
GROUPS = ["North American", "Latin American", "European", "African", "Middle Eastern", "South Asian",
          "East Asian", "Southeast Asian", "Oceanian"]


class ScreeningForm(forms.Form):
    """The four parts, built from the active screening items."""

    topics = forms.MultipleChoiceField(choices=[(t, t) for t in TOPICS], required=False,
                                       widget=forms.CheckboxSelectMultiple,
                                       label="Topics you are comfortable judging")
    groups = forms.MultipleChoiceField(choices=[(g, g) for g in GROUPS], required=False,
                                       widget=forms.CheckboxSelectMultiple,
                                       label="Cultural groups whose norms you know well")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                            label="Anything else we should know")

    def __init__(self, items, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.items = items
        flag_choices = [(name, name.replace("_", " ")) for name in ScreeningItem.SENSITIVE_FLAGS]
        for item in items["sensitive_flags"]:
            self.fields[f"flags_{item.pk}"] = forms.MultipleChoiceField(
                choices=flag_choices, required=False, widget=forms.CheckboxSelectMultiple, label="Flags")
        for item in items["ranking"]:
            ranks = [(n, str(n)) for n in range(1, len(item.completions) + 1)]
            for index in range(len(item.completions)):
                self.fields[f"rank_{item.pk}_{index}"] = forms.TypedChoiceField(
                    choices=[("", "—"), *ranks], coerce=int, label=f"Response {chr(ord('A') + index)}",
                    error_messages={"required": "Give every response a rank."})
        for item in items["demonstration"]:
            self.fields[f"demo_{item.pk}"] = forms.CharField(
                widget=forms.Textarea(attrs={"rows": 5}), label="Your reply",
                error_messages={"required": "Write a reply to this prompt."})

    def parts(self):
        """Each item with its fields, part by part, for the page."""
        return {
            "flags": [(item, self[f"flags_{item.pk}"]) for item in self.items["sensitive_flags"]],
            "rankings": [(item, [(chr(ord("A") + i), text, self[f"rank_{item.pk}_{i}"])
                                 for i, text in enumerate(item.completions)]) for item in self.items["ranking"]],
            "demonstrations": [(item, self[f"demo_{item.pk}"]) for item in self.items["demonstration"]],
        }

    def answers(self):
        data = self.cleaned_data
        rankings = {}
        for item in self.items["ranking"]:
            by_rank = {}
            for index in range(len(item.completions)):
                by_rank.setdefault(data[f"rank_{item.pk}_{index}"], []).append(index)
            rankings[str(item.pk)] = [by_rank[rank] for rank in sorted(by_rank)]
        return {
            "flags": {str(item.pk): data[f"flags_{item.pk}"] for item in self.items["sensitive_flags"]},
            "rankings": rankings,
            "demonstrations": {str(item.pk): data[f"demo_{item.pk}"] for item in self.items["demonstration"]},
            "self_assessment": {"topics": data["topics"], "groups": data["groups"], "notes": data["notes"]},
        }


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve: on to onboarding"), ("reject", "Reject")],
                                 widget=forms.RadioSelect)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Needed to reject; kept with the decision.")


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=[("paused", "Pause"), ("active", "Resume"), ("offboarded", "Offboard")])
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))


def _generators():
    return ModelVersion.objects.filter(kind__in=[ModelVersion.Kind.POLICY, ModelVersion.Kind.SFT]).exclude(
        status__in=[ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED]).order_by("kind", "-created_at")


class VersionLabels:
    def label_from_instance(self, version):
        return f"{version} ({version.get_status_display().lower()})"


class VersionChoiceField(VersionLabels, forms.ModelChoiceField):
    pass


class VersionsChoiceField(VersionLabels, forms.ModelMultipleChoiceField):
    pass


class EvaluationStartForm(forms.Form):
    candidate = VersionChoiceField(queryset=ModelVersion.objects.none(),
                                   help_text="The policy or SFT version to judge.")
    baselines = VersionsChoiceField(queryset=ModelVersion.objects.none(), widget=forms.CheckboxSelectMultiple,
                                    help_text="Up to eight: the SFT model, the active policy, the base model, an "
                                              "external endpoint.")
    prompts = forms.IntegerField(min_value=1, initial=100,
                                 help_text="Test-split prompts; each gets one sample per model.")
    held_out_labelers = forms.BooleanField(
        required=False, label="Held-out labelers only",
        help_text="Only labelers with no data the candidate may have learnt from judge it.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["candidate"].queryset = _generators()
        self.fields["baselines"].queryset = _generators() | ModelVersion.objects.filter(
            kind=ModelVersion.Kind.EXTERNAL)
        self.fields["prompts"].max_value = settings.EVALUATION_MAX_PROMPTS
        self.fields["prompts"].validators.append(validators.MaxValueValidator(settings.EVALUATION_MAX_PROMPTS))


class ExternalModelForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="Its name here, e.g. gpt-4o-mini.")
    url = forms.CharField(max_length=500, label="Base URL",
                          help_text="OpenAI-compatible, e.g. https://api.example.com/v1")
    model = forms.CharField(max_length=200, help_text="The model name the endpoint serves.")
    api_key_env = forms.CharField(max_length=100, required=False, label="API key variable",
                                  help_text="The workers' environment variable holding its key; never the key itself.")
