"""System checks (`manage.py check`, and every start of the site): settings a run would otherwise refuse later."""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ValidationError


@checks.register(checks.Tags.compatibility)
def training_options_check(app_configs, **kwargs):
    from .models import TrainingRun
    from .services.training import training_options

    if not isinstance(settings.TRAINING_OPTIONS, dict):
        return [checks.Error("TRAINING_OPTIONS must be a JSON object of run kinds.", id="labeling.E001")]
    errors = []
    for kind, options in settings.TRAINING_OPTIONS.items():
        if kind not in TrainingRun.Kind.values:
            errors.append(checks.Error(
                f"TRAINING_OPTIONS has options for {kind!r}, which is not a kind of run.",
                hint=f"Use {', '.join(TrainingRun.Kind.values)}; a run's evaluations take the run's own options.",
                id="labeling.E001",
            ))
            continue
        try:
            training_options(kind=kind)
        except ValidationError as exc:
            errors.append(checks.Error(" ".join(exc.messages), id="labeling.E001"))
    return errors


@checks.register(checks.Tags.compatibility)
def queue_shares_check(app_configs, **kwargs):
    from .models import Task

    unknown = sorted(set(settings.QUEUE_SHARES) - set(Task.Kind.values))
    if unknown:
        return [checks.Error(f"QUEUE_SHARES names {', '.join(map(repr, unknown))}, which is no kind of task.",
                             hint=f"Use {', '.join(Task.Kind.values)}.", id="labeling.E002")]
    return []
