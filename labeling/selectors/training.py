"""Reads for the Training and Models pages: runs, beat's rules and what they wait for, the sampler."""

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from .. import samplers
from ..models import (
    Demonstration,
    ModelVersion,
    Prompt,
    Ranking,
    Task,
    TrainingRun,
)


def training_runs():
    """The team's training runs with what the pages show of them."""
    return TrainingRun.objects.select_related("export", "valid_export", "base_model", "reward_model", "reference_model",
                                              "ptx_export", "created_by", "model_version")


@dataclass
class TrainingRule:
    """One of beat's rules for starting a run, and where it stands: `done` of `needed` new results since the
    active model's training data, or for a policy the pair of models it waits for."""

    kind: str
    progress: str
    trigger: str
    due: bool
    done: int = 0
    needed: int = 0
    live: TrainingRun | None = None

    @property
    def label(self):
        return TrainingRun.Kind(self.kind).label


def training_rules():
    """Beat's rules, in the order it applies them: a reward model after TRAIN_RM_AFTER_COMPARISONS new rankings,
    an SFT model after TRAIN_SFT_AFTER_DEMONSTRATIONS new demonstrations (judgments of human evaluations are
    rankings but no training data), and a policy for each pair of active reward and SFT models."""
    active = {v.kind: v for v in ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)
              .select_related("training_run__export")}
    live = {run.kind: run for run in TrainingRun.objects.filter(state__in=TrainingRun.LIVE)}
    rules = []
    for kind, results, needed, what in [
        (TrainingRun.Kind.REWARD, Ranking.objects.filter(task__evaluation__isnull=True),
         settings.TRAIN_RM_AFTER_COMPARISONS, "rankings"),
        (TrainingRun.Kind.SFT, Demonstration.objects.all(), settings.TRAIN_SFT_AFTER_DEMONSTRATIONS, "demonstrations"),
    ]:
        version = active.get(TRAINING_OUTPUTS[kind])
        run = version and version.training_run
        if run and run.export:
            done, since = results.filter(created_at__gt=run.export.created_at).count(), f" since {version.name}"
        else:
            done, since = results.count(), " so far"
        rules.append(TrainingRule(kind=kind, progress=f"{min(done, needed):,} of {needed:,} new {what}{since}",
                                  trigger=f"{needed}+ new {what}", due=done >= needed and kind not in live,
                                  done=done, needed=needed, live=live.get(kind)))
    reward, sft = active.get(ModelVersion.Kind.REWARD), active.get(ModelVersion.Kind.SFT)
    pair = f"reward model {reward.name} and SFT model {sft.name if sft else 'base'}" if reward else ""
    trained = reward and TrainingRun.objects.filter(kind=TrainingRun.Kind.PPO, reward_model=reward,
                                                    reference_model=sft).order_by("-pk").first()
    if not reward:
        progress = "Waits for a first reward model."
    elif trained:
        progress = f"Run #{trained.pk} trained a policy on {pair} ({trained.state}); the next waits for a new one."
    else:
        progress = f"Due: no policy has been trained on {pair} yet."
    rules.append(TrainingRule(kind=TrainingRun.Kind.PPO, progress=progress, trigger=f"{pair} are active",
                              due=bool(reward and not trained and TrainingRun.Kind.PPO not in live),
                              live=live.get(TrainingRun.Kind.PPO)))
    return rules


TRAINING_OUTPUTS = {TrainingRun.Kind.REWARD: ModelVersion.Kind.REWARD, TrainingRun.Kind.SFT: ModelVersion.Kind.SFT}


def queued_because(runs):
    """{run id: why it still waits}, for the queued runs among `runs`: the gpu worker trains one run at a time."""
    running = TrainingRun.objects.filter(state=TrainingRun.State.RUNNING).order_by("started_at").first()
    queued = list(TrainingRun.objects.filter(state=TrainingRun.State.QUEUED).order_by("created_at", "pk"))
    now, reasons = timezone.now(), {}
    for n, run in enumerate(queued):
        if running:
            reason = (f"Waits for run #{running.pk} ({running.get_kind_display().lower()}), which the gpu worker is "
                      "training: it trains one run at a time.")
        elif n:
            reason = f"Waits behind run #{queued[0].pk}, queued before it, for the gpu worker."
        elif now - run.created_at > timedelta(minutes=2):
            minutes = int((now - run.created_at).total_seconds() // 60)
            reason = (f"No gpu worker has taken it for {minutes} minutes: check that a worker consumes the gpu queue "
                      "(celery -A config worker -Q gpu).")
        else:
            reason = "Waits for the gpu worker to take it."
        reasons[run.pk] = reason
    return {pk: reason for pk, reason in reasons.items() if pk in {run.pk for run in runs}}


def sampler_overview():
    """The sampler's last known state, what it should serve now, and how many prompts wait for completions."""
    state = dict(samplers.sampler_state())
    if settings.SAMPLER_URL:  # never show credentials written into the URL
        url = urlsplit(settings.SAMPLER_URL)
        state["backend"] = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
    active = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.ACTIVE).first()
    state["serving"] = active.served_name if active else None
    state["waiting"] = Prompt.objects.filter(needs_completions=True).count()
    state["ranking_tasks"], state["buffer"] = ranking_tasks_waiting(), settings.RANKING_BUFFER
    state["server"] = settings.SAMPLER_SERVER if settings.SAMPLER_URL else None
    return state


def ranking_tasks_waiting():
    """Open ranking tasks of training data (an evaluation's are sampled apart)."""
    return Task.objects.filter(kind=Task.Kind.RANK_COMPLETIONS, state=Task.State.OPEN, evaluation__isnull=True).count()


def model_versions_by_kind():
    """[(kind label, versions newest first)], with each version's lineage."""
    versions = ModelVersion.objects.select_related(
        "parent", "training_run__export", "training_run__reference_model", "training_run__reward_model",
        "training_run__ptx_export",
    ).order_by("-created_at")
    return [(label, [v for v in versions if v.kind == kind]) for kind, label in ModelVersion.Kind.choices]
