"""Training runs: export snapshot -> `python -m rlhf` -> model version -> evaluation gate -> activation.

A run trains and evaluates in child processes, so that a cancel can stop it and a dead worker takes
it along; while a child runs, the worker beats the run's heartbeat and copies its metrics.jsonl into
the run for the page. A run that stops beating is failed (or queued again) by the watchdog, and its
model is never activated.
"""

import ctypes
import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from rlhf import config as rlhf_config

from .. import selectors
from ..models import ModelVersion, TrainingRun
from ..samplers import sampler_release
from .evaluations import evaluation_start, human_gate_start, human_gates_decide
from .exports import export_create, export_run
from .sampling import model_version_activate, model_version_active, prompts_needing_completions

logger = logging.getLogger(__name__)
Run = TrainingRun

# kind: (rlhf command, export kind, the model kind it produces)
PLANS = {
    Run.Kind.SFT: ("train-sft", "sft", ModelVersion.Kind.SFT),
    Run.Kind.REWARD: ("train-rm", "rankings", ModelVersion.Kind.REWARD),
    Run.Kind.PPO: ("train-ppo", "ppo_prompts", ModelVersion.Kind.POLICY),
}


@dataclasses.dataclass
class SFTRunOptions(rlhf_config.SFTConfig):
    """An SFT run's options: rlhf's, and the site's choice of training data."""

    feedme: bool = rlhf_config.option(False, "Also train on model completions rated 7 of 7 (FeedME); the gate "
                                             "still validates on the labelers' demonstrations alone.")


# The options of each kind of run: rlhf's, and the site's own (which choose the data; rlhf never sees them). The
# site sets some for every run (data, models, folders), which a request or TRAINING_OPTIONS cannot.
OPTIONS = {Run.Kind.SFT: SFTRunOptions, Run.Kind.REWARD: rlhf_config.RewardConfig, Run.Kind.PPO: rlhf_config.PPOConfig}
DATA_OPTIONS = ({f.name for f in dataclasses.fields(SFTRunOptions)}
                - {f.name for f in dataclasses.fields(rlhf_config.SFTConfig)})
SITE_OPTIONS = {"data", "valid_data", "model", "output", "dataset_id", "resume", "demonstrations", "policy",
                "reference", "reward_model", "value_model", "ptx_data", "reward_max_length"}
# What the evaluations of a run take from its options, so that the gate judges as the run trained:
# {evaluation option: training option}.
EVALUATION_OPTIONS = {
    Run.Kind.SFT: {"max_length": "max_length", "batch_size": "batch_size", "dtype": "dtype", "device": "device"},
    Run.Kind.REWARD: {"max_length": "max_length", "batch_size": "batch_size", "dtype": "dtype", "device": "device"},
    Run.Kind.PPO: {"max_new_tokens": "max_new_tokens", "temperature": "temperature", "batch_size": "rollout_batch_size",
                   "reward_max_length": "reward_max_length", "seed": "seed", "device": "device"},
}
HISTORY_POINTS = 500
SAMPLING_QUEUED = "sampling-queued"  # a cache key: one sampling task waits at a time
LOG_TAIL_BYTES = 6000


class RunStopped(Exception):
    """The run cannot go on; the message says why, for the page."""


class Cancelled(RunStopped):
    pass


def training_options(*, kind, options=None):
    """The options a run of `kind` trains with: TRAINING_OPTIONS for its kind, then `options`, both checked.

    An unknown option, or a value of the wrong type or range, is a ValidationError naming it.
    """
    found = {}
    for source, values, reserved in ((f"TRAINING_OPTIONS[{kind!r}]", settings.TRAINING_OPTIONS.get(kind, {}),
                                      SITE_OPTIONS),
                                     ("Options", {} if options is None else options, SITE_OPTIONS),
                                     (f"Options with TRAINING_OPTIONS[{kind!r}]", found, ())):  # both together
        try:
            found.update(rlhf_config.check_options(OPTIONS[kind], values, reserved=reserved))
        except rlhf_config.OptionError as exc:
            raise ValidationError(f"{source}: {exc}", code="options") from None
    return found


def training_run_start(*, kind, created_by=None, trigger="", options=None):
    """Queue a run for a GPU worker, its options checked now. One live run per kind: the database refuses a second."""
    if kind not in Run.Kind.values:
        raise ValidationError(f"Unknown training kind {kind!r}; choose from {', '.join(Run.Kind.values)}.")
    config = training_options(kind=kind, options=options)
    try:
        with transaction.atomic():
            # A policy run is bound to the reward model and the SFT model active when it starts: beat starts one
            # per pair.
            policy = kind == Run.Kind.PPO
            reward_model = model_version_active(ModelVersion.Kind.REWARD) if policy else None
            reference = model_version_active(ModelVersion.Kind.SFT) if policy else None
            run = Run.objects.create(kind=kind, created_by=created_by, config=config, reward_model=reward_model,
                                     reference_model=reference,
                                     trigger=trigger or (f"started by {created_by}" if created_by else "started"))
    except IntegrityError:
        live = Run.objects.filter(kind=kind, state__in=Run.LIVE).first()
        where = f" (#{live.pk}, {live.state})" if live else ""
        raise ValidationError(
            f"A {Run.Kind(kind).label.lower()} run is already queued or running{where}; wait for it or cancel it."
        ) from None
    from ..tasks import train

    transaction.on_commit(lambda: train.apply_async((run.pk,), queue="gpu"))
    return run


def training_run_cancel(*, run):
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, state=Run.State.QUEUED).update(
        state=Run.State.CANCELLED, finished_at=now, error="Cancelled before it started."
    ):
        return Run.objects.get(pk=run.pk)
    if not Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(cancel_requested=True):
        raise ValidationError(f"Run #{run.pk} has already finished ({Run.objects.get(pk=run.pk).state}).")
    return Run.objects.get(pk=run.pk)


def training_run_execute(*, run_id):
    """The worker's part. Safe to deliver twice: only the delivery that moves the run from queued runs it."""
    now = timezone.now()
    if not Run.objects.filter(pk=run_id, state=Run.State.QUEUED).update(
        state=Run.State.RUNNING, started_at=now, heartbeat_at=now, cancel_requested=False
    ):
        return Run.objects.get(pk=run_id)
    run = Run.objects.get(pk=run_id)
    version = None
    try:
        plan = _prepare(run)
        sampler_release()  # the in-process sampler's models leave the device to the training child
        summary = _train(run, plan)
        version = _register(run, plan, summary)
        _judge(run, plan, version)
    except RunStopped as exc:
        _stop(run, version, exc)
    except Exception as exc:
        logger.exception("Training run #%s failed", run.pk)
        _stop(run, version, RunStopped(f"{type(exc).__name__}: {exc}"))
    return Run.objects.get(pk=run.pk)


def _prepare(run):
    command, export_kind, model_kind = PLANS[run.kind]
    options = dict(run.config)
    reward_model = run.reward_model
    reference = ptx = None
    if run.kind == Run.Kind.PPO:
        if reward_model is None:
            raise RunStopped("No reward model is active yet: train one before the policy.")
        # InstructGPT: the policy starts from the SFT model, which is also its KL reference.
        reference = run.reference_model or model_version_active(ModelVersion.Kind.SFT)
        base = reference if settings.POLICY_START == "sft" else model_version_active(ModelVersion.Kind.POLICY)
        trained = reward_model.training_run  # none for a reward model registered by hand
        max_length = _options_of(trained)["max_length"] if trained else rlhf_config.RewardConfig.max_length
        options["reward_max_length"] = max_length
    else:
        base = model_version_active(ModelVersion.Kind.SFT)
    train = _snapshot(run, export_kind, "train", feedme=options.get("feedme", False))
    if not train.row_count:
        raise RunStopped(f"No training data: the {train.get_kind_display()} export of the train split is empty.")
    valid = _snapshot(run, export_kind, "valid")
    notes = []
    if not valid.row_count:
        valid = train
        notes.append("The valid split is empty, so the gate compared on the training data.")
    if run.kind == Run.Kind.PPO:
        ptx, note = _ptx_data(run)
        notes += [note] if note else []
    run.export, run.valid_export, run.base_model, run.reference_model = train, valid, base, reference
    run.ptx_export, run.ptx_path = ptx, settings.PTX_DATA if run.kind == Run.Kind.PPO and not ptx else ""
    run.output_path = str(Path(settings.MODELS_DIR) / f"{run.kind}-{run.pk}")
    run.config = options
    run.save(update_fields=["export", "valid_export", "base_model", "reference_model", "ptx_export", "ptx_path",
                            "output_path", "config"])
    rlhf_options = {name: value for name, value in options.items() if name not in DATA_OPTIONS}
    return {"command": command, "model_kind": model_kind, "note": " ".join(notes), "options": rlhf_options}


def _ptx_data(run):
    """(export, note): the ptx term's data. PTX_DATA when set, else the train split of the SFT demonstrations."""
    if settings.PTX_DATA:
        if not Path(settings.PTX_DATA).is_file():
            raise RunStopped(f"PTX_DATA names {settings.PTX_DATA}, which is not a file on this worker.")
        return None, ""
    demonstrations = _snapshot(run, "sft", "train")
    if not demonstrations.row_count:
        return None, "No demonstrations yet, so the policy trained without the ptx term."
    return demonstrations, ""


def _snapshot(run, kind, split, feedme=False):
    filters = {"split": [split]} | ({"feedme": True} if feedme else {})
    export = export_create(kind=kind, fmt="jsonl", filters=filters, created_by=run.created_by, queue=False)
    return export_run(export_id=export.pk)


def _train(run, plan):
    output = Path(run.output_path)
    shutil.rmtree(output, ignore_errors=True)  # an earlier attempt's folder is never used
    output.mkdir(parents=True)
    args = ["--data", run.export.file.path, "--output", str(output), "--dataset-id", str(run.export.pk)]
    if run.kind == Run.Kind.PPO:
        args += ["--policy", run.base_model.artifact_path, "--reference", run.reference_model.artifact_path,
                 "--reward-model", run.reward_model.artifact_path]
        ptx = run.ptx_export.file.path if run.ptx_export else run.ptx_path
        args += ["--ptx-data", ptx] if ptx else []
    else:
        args += ["--model", run.base_model.artifact_path, "--valid-data", run.valid_export.file.path]
    log_path = output / "train.log"
    _follow(run, [*_launcher(), plan["command"], *args, *_config_file(output / "options.yaml", plan["options"])],
            log_path, lambda: _progress(run, output, log_path))
    record = json.loads((output / "run.json").read_text())
    if not record.get("finished"):
        raise RunStopped("Training ended without finishing its run record; the model is not used.")
    return record["summary"]


def _launcher():
    if settings.TRAINING_PROCESSES > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(settings.TRAINING_PROCESSES),
                "-m", "rlhf"]
    return [sys.executable, "-m", "rlhf"]


def _config_file(path, options):
    """rlhf reads options from YAML with their types and refuses unknown ones by name."""
    if not options:
        return []
    path.write_text(yaml.safe_dump(options))
    return ["--config", str(path)]


def _die_with_parent():
    """Linux: the child is killed when the worker dies, so a killed worker leaves no training behind."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _follow(run, command, log_path, on_tick=None):
    """Run `command` in a child process; while it runs, beat the heartbeat, call `on_tick` and watch for a cancel."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                   cwd=settings.BASE_DIR)
        try:
            while True:
                try:
                    process.wait(timeout=settings.TRAINING_HEARTBEAT_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
                Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(heartbeat_at=timezone.now())
                if on_tick:
                    on_tick()
                if process.returncode is not None:
                    break
                if Run.objects.filter(pk=run.pk, cancel_requested=True).exists():
                    raise Cancelled("Cancelled while running; the active model is unchanged.")
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    if process.returncode:
        raise RunStopped(f"{command[command.index('rlhf') + 1]} exited with code {process.returncode}: "
                         f"{_tail(log_path, 600).strip()}")


def _progress(run, output, log_path):
    total = run.total_steps
    if not total and (output / "run.json").exists():
        total = json.loads((output / "run.json").read_text()).get("total_steps") or 0
    history = []
    if (output / "metrics.jsonl").exists():
        lines = (output / "metrics.jsonl").read_text().splitlines()
        history = [json.loads(line) for line in lines if line.strip().endswith("}")]
    step = max((point.get("step", 0) for point in history), default=0)
    run.total_steps, run.step = total, step
    run.history = _thin(history)
    run.log = _tail(log_path, LOG_TAIL_BYTES)
    run.save(update_fields=["total_steps", "step", "history", "log"])


def _thin(points):
    """At most HISTORY_POINTS training points, evenly spread, plus every validation point."""
    train = [p for p in points if p.get("split") != "valid"]
    keep = train[:: max(1, len(train) // HISTORY_POINTS)]
    return sorted(keep + [p for p in points if p.get("split") == "valid"], key=lambda p: p.get("step", 0))


def _tail(path, size):
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - size))
        return f.read().decode("utf-8", "replace")


def _register(run, plan, summary):
    adapter = summary.get("adapter") or {}
    version, _ = ModelVersion.objects.update_or_create(
        kind=plan["model_kind"], name=f"{run.kind}-{run.pk}",
        defaults={"status": ModelVersion.Status.READY, "artifact_path": summary["output"], "parent": run.base_model,
                  "base_path": adapter.get("base", ""), "adapter": {k: v for k, v in adapter.items() if k != "base"},
                  "training_run": run,
                  "metrics": {k: v for k, v in summary.items() if k not in ("output", "adapter")}},
    )
    return version


def _options_of(run):
    """Every option `run` trains with: its own, and the defaults of its kind for the rest."""
    return {f.name: f.default for f in dataclasses.fields(OPTIONS[run.kind])} | run.config


def evaluation_options(run):
    """The options every evaluation of `run` takes, from the run's own."""
    trained = _options_of(run)
    return {name: trained[source] for name, source in EVALUATION_OPTIONS[run.kind].items()}


def _evaluate(command, args, run, name):
    """`python -m rlhf <command>` with the run's evaluation options, into a JSON file beside its output."""
    out = Path(run.output_path) / f"{name}.json"
    config = _config_file(Path(run.output_path) / "evaluate.yaml", evaluation_options(run))
    _follow(run, [sys.executable, "-m", "rlhf", command, *args, *config, "--output", str(out)],
            Path(run.output_path) / "evaluate.log")
    return json.loads(out.read_text())


def _judge(run, plan, version):
    """Evaluate the new version against the active one and activate it only if it passes the gate."""
    valid = run.valid_export.file.path
    kind = run.kind
    # The new version's validation metrics come from its training process, with the run's options; the active
    # version is evaluated on the same file with the same options.
    candidate = version.metrics.get("valid") or {}
    if kind == Run.Kind.REWARD:
        active = model_version_active(ModelVersion.Kind.REWARD)
        metrics = {name: candidate[name] for name in ("accuracy", "pairs", "longer_wins_accuracy",
                                                      "shorter_wins_accuracy")}
        if active is None:
            baselines = {name: candidate[f"{name}_accuracy"] for name in ("longer_wins", "shorter_wins")}
            passed, reason = _first_reward_model_verdict(candidate["accuracy"], candidate["pairs"], baselines)
        else:
            current = _evaluate("eval-rm", ["--model", active.artifact_path, "--data", valid], run, "eval-active")
            metrics["active_accuracy"] = current["accuracy"]
            floor = current["accuracy"] - settings.RM_GATE_TOLERANCE
            passed = candidate["accuracy"] >= floor
            reason = (f"Validation accuracy {candidate['accuracy']:.3f} against the active {active.name}'s "
                      f"{current['accuracy']:.3f} (tolerance {settings.RM_GATE_TOLERANCE:g}).")
    elif kind == Run.Kind.SFT:
        active = model_version_active(ModelVersion.Kind.SFT)
        current = _evaluate("eval-sft", ["--model", active.artifact_path, "--data", valid], run, "eval-active")
        metrics = {"valid_loss": candidate["loss"], "active_valid_loss": current["loss"]}
        passed = candidate["loss"] < current["loss"]
        reason = f"Validation loss {candidate['loss']:.4f} against the active {active.name}'s {current['loss']:.4f}."
    else:
        active = model_version_active(ModelVersion.Kind.POLICY)  # what the new policy would replace
        found = _evaluate("eval-policy", ["--policy", version.artifact_path, "--reference", active.artifact_path,
                                          "--reward-model", run.reward_model.artifact_path, "--data", valid],
                          run, "eval-policy")
        metrics = {"win_rate": found["win_rate"], "kl": found["kl"], "reward": found["reward_policy"],
                   "active_reward": found["reward_reference"]}
        passed = found["win_rate"] >= settings.POLICY_GATE_MIN_WIN_RATE and found["kl"] < settings.POLICY_GATE_MAX_KL
        reason = (f"Win rate {found['win_rate']:.1%} over the active {active.name} under {run.reward_model.name} "
                  f"(needs {settings.POLICY_GATE_MIN_WIN_RATE:.0%}), KL {found['kl']:.2f} "
                  f"(limit {settings.POLICY_GATE_MAX_KL:g}).")
    if plan["note"]:
        reason += " " + plan["note"]
    version.metrics = {**version.metrics, **metrics}
    version.save(update_fields=["metrics"])
    with transaction.atomic():
        if passed and kind == Run.Kind.PPO and settings.HUMAN_GATE:
            human_gate_start(version=version, reason=reason)  # activated, or not, by the humans' verdict
        elif passed:
            replaced = model_version_active(ModelVersion.Kind.POLICY) if kind == Run.Kind.PPO else None
            model_version_activate(version=version, reason=reason)
            if replaced and settings.EVALUATE_NEW_POLICIES:
                _evaluate_by_people(version, replaced)
        else:
            ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.REJECTED,
                                                              status_reason=reason)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.SUCCEEDED, finished_at=timezone.now(), metrics={**version.metrics},
            gate={"passed": passed, "reason": reason},
        )
        if passed and kind == Run.Kind.REWARD:
            _start_quietly(Run.Kind.PPO, f"reward model {version.name} became active")
        elif passed and kind == Run.Kind.SFT and model_version_active(ModelVersion.Kind.REWARD):
            _start_quietly(Run.Kind.PPO, f"SFT model {version.name} became active")


def _evaluate_by_people(version, replaced):
    """Humans judge a newly activated policy against the one it replaced; without test prompts, nothing starts."""
    try:
        evaluation_start(candidate=version, baselines=[replaced], prompt_count=settings.EVALUATE_NEW_POLICIES,
                         trigger="the reward-model gate activated it")
    except ValidationError as exc:
        logger.warning("No human evaluation of %s: %s", version, " ".join(exc.messages))


def _first_reward_model_verdict(accuracy, pairs, baselines):
    """(passed, reason): the first reward model must beat RM_FIRST_BASELINES by RM_FIRST_MIN_MARGIN."""
    margin = settings.RM_FIRST_MIN_MARGIN
    scores = {"chance": 0.5, **baselines}
    shown = ", ".join(f"{name.replace('_', '-')} {score:.3f}" for name, score in scores.items())
    floor = max(scores[name] for name in settings.RM_FIRST_BASELINES) + margin
    passed = accuracy >= floor
    reason = (f"First reward model: validation accuracy {accuracy:.3f} on {pairs} pairs; baselines {shown}; it needs "
              f"{floor:.3f}, the best of {', '.join(settings.RM_FIRST_BASELINES)} plus a margin of {margin:g}.")
    return passed, reason


def _stop(run, version, exc):
    state = Run.State.CANCELLED if isinstance(exc, Cancelled) else Run.State.FAILED
    with transaction.atomic():
        Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(
            state=state, error=str(exc), finished_at=timezone.now(),
            gate={"passed": False, "reason": f"Not activated: {exc}"},
        )
        if version is not None:
            ModelVersion.objects.filter(pk=version.pk).exclude(status=ModelVersion.Status.ACTIVE).update(
                status=ModelVersion.Status.FAILED, status_reason=str(exc)
            )


def _start_quietly(kind, trigger):
    """Start a run unless one of its kind is live; options that TRAINING_OPTIONS gets wrong are logged."""
    if Run.objects.filter(kind=kind, state__in=Run.LIVE).exists():
        return None
    try:
        return training_run_start(kind=kind, trigger=trigger)
    except ValidationError as exc:
        if not Run.objects.filter(kind=kind, state__in=Run.LIVE).exists():  # not a race with another start
            logger.error("Could not start a %s run (%s): %s", kind, trigger, " ".join(exc.messages))
        return None


def training_runs_reap():
    """The watchdog: runs whose worker stopped beating are failed, or queued again when the settings say so."""
    stale = timezone.now() - timezone.timedelta(seconds=settings.TRAINING_STALE_AFTER_SECONDS)
    reaped = []
    for run in Run.objects.filter(state=Run.State.RUNNING, heartbeat_at__lt=stale):
        last = run.heartbeat_at.isoformat(timespec="seconds")
        if settings.TRAINING_REQUEUE_LOST:
            if Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(state=Run.State.QUEUED, step=0,
                                                                             heartbeat_at=None):
                from ..tasks import train

                transaction.on_commit(lambda pk=run.pk: train.apply_async((pk,), queue="gpu"))
                reaped.append(run.pk)
            continue
        with transaction.atomic():
            message = (f"The worker running it stopped (last heartbeat {last}); the active model is unchanged "
                       "and this run's model is not used.")
            if Run.objects.filter(pk=run.pk, state=Run.State.RUNNING).update(
                state=Run.State.FAILED, error=message, finished_at=timezone.now(),
                gate={"passed": False, "reason": message},
            ):
                ModelVersion.objects.filter(training_run=run).exclude(status=ModelVersion.Status.ACTIVE).update(
                    status=ModelVersion.Status.FAILED, status_reason=message
                )
                reaped.append(run.pk)
    return reaped


def training_check_due():
    """Beat's rules (selectors.training_rules): reap lost runs, start training where enough new data has come in,
    decide human gates, and sample."""
    report = {"reaped": training_runs_reap()}
    model_version_active(ModelVersion.Kind.SFT)  # the base model is registered as the first SFT model
    started = [_start_quietly(rule.kind, rule.trigger) for rule in selectors.training_rules() if rule.due]
    report["started"] = [run.pk for run in started if run]
    report["human_gates"] = human_gates_decide()
    report["sampling"] = sampling_queue()
    return report


def sampling_queue():
    """Queue a sampling task for prompts waiting for completions, unless one is queued already."""
    waiting = prompts_needing_completions(settings.SAMPLE_PROMPTS_PER_TASK)
    if not waiting or not cache.add(SAMPLING_QUEUED, True, timeout=600):
        return 0
    from ..tasks import sample_completions

    transaction.on_commit(lambda: sample_completions.apply_async((waiting,), queue="sampling"))
    return len(waiting)
