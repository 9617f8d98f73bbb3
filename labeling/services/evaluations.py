"""Human evaluations of model versions: a candidate against baselines on prompts of the test split.

No training run reads the test split, so the prompts are held out. Each prompt gets one sample per
model, drawn with the same seed and settings for every model, and becomes a ranking task tied to
the evaluation: the outputs blind and shuffled, a rating and InstructGPT's flags on each, ties
allowed. Evaluation tasks come first in the queue (EVALUATION_PRIORITY); their judgments stay out of
reward-model data unless a researcher asks for them.
"""

import logging
import random
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import answers
from ..evaluations import evaluation_results
from ..models import Completion, Evaluation, ModelVersion, Prompt, Task
from ..samplers import SamplerUnavailable, reward_scores, sampler_for
from .prompts import required_annotations
from .sampling import draw, model_version_activate, model_version_active, sampling_params

logger = logging.getLogger(__name__)
GENERATORS = (ModelVersion.Kind.POLICY, ModelVersion.Kind.SFT)
BASELINES = (*GENERATORS, ModelVersion.Kind.EXTERNAL)
MAX_BASELINES = 8  # with the candidate, the 9 outputs a ranking holds at most
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
URL = re.compile(r"https?://[^/\s?#]+(/[^\s?#]*)?")
KEY_ENV = re.compile(r"[A-Z_][A-Z0-9_]{0,99}")


def external_model_register(*, name: str, url: str, model: str, api_key_env: str = "",
                            created_by=None) -> ModelVersion:
    """A model served elsewhere behind an OpenAI-compatible endpoint, as a version to evaluate against. The key
    itself is never stored: `api_key_env` names the environment variable of the workers that holds it."""
    problems = []
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.append(f"The name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                        f"not {str(name)[:80]!r}.")
    elif ModelVersion.objects.filter(kind=ModelVersion.Kind.EXTERNAL, name=name).exists():
        problems.append(f"There is already an external endpoint named {name!r}.")
    if not isinstance(url, str) or len(url) > 500 or not url.isprintable() or not URL.fullmatch(url.rstrip("/")):
        problems.append(f"The URL must be an http(s) base URL such as https://api.example.com/v1, not "
                        f"{str(url)[:80]!r}.")
    if not isinstance(model, str) or not model.strip() or len(model) > 200 or not model.isprintable():
        problems.append("Name the model the endpoint serves (1 to 200 printable characters).")
    if not isinstance(api_key_env, str) or api_key_env and not KEY_ENV.fullmatch(api_key_env):
        problems.append("The API key's variable must be an environment variable name such as OPENAI_API_KEY "
                        "(capitals, digits and '_'); the key itself is never stored here.")
    if problems:
        raise ValidationError(problems)
    who = f" by {created_by.username}" if created_by else ""
    return ModelVersion.objects.create(
        kind=ModelVersion.Kind.EXTERNAL, name=name, status=ModelVersion.Status.READY, endpoint_url=url.rstrip("/"),
        endpoint_model=model.strip(), endpoint_key_env=api_key_env,
        status_reason=f"Registered{who}: {model.strip()} at {url.rstrip('/')}.")


def evaluation_start(*, candidate: ModelVersion, baselines: list, prompt_count: int, held_out_labelers: bool = False,
                     created_by=None, trigger: str = "", gates: bool = False) -> Evaluation:
    """Choose the prompts and queue the sampling; the tasks open when every model has answered them."""
    baselines = list(baselines)
    _check_models(candidate, baselines)
    if type(prompt_count) is not int or not 1 <= prompt_count <= settings.EVALUATION_MAX_PROMPTS:
        raise ValidationError(f"An evaluation takes 1 to {settings.EVALUATION_MAX_PROMPTS:,} prompts, not "
                              f"{prompt_count!r}.")
    if not isinstance(held_out_labelers, bool):
        raise ValidationError("held_out_labelers must be true or false.")
    limits = answers.Limits.from_settings()
    test = [pk for pk, text, turns in Prompt.objects.filter(split=Prompt.Split.TEST).order_by("id").values_list(
        "id", "text", "turns") if not answers.prompt_problems(text, turns, limits=limits)]
    if not test:
        raise ValidationError("There are no prompts in the test split to evaluate on; import some first (a share of "
                              "every import goes to it, by PROMPT_SPLIT_RATIOS).")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            candidate=candidate, held_out_labelers=held_out_labelers, created_by=created_by, trigger=trigger,
            gates=gates,
            sampling_params={"temperature": settings.EVALUATION_TEMPERATURE, "top_p": 1.0,
                             "max_new_tokens": settings.SAMPLE_MAX_NEW_TOKENS},
        )
        evaluation.baselines.set(baselines)
        evaluation.prompt_ids = sorted(random.Random(evaluation.pk).sample(test, min(prompt_count, len(test))))
        evaluation.save(update_fields=["prompt_ids"])
    from ..tasks import sample_evaluation

    transaction.on_commit(lambda: sample_evaluation.apply_async((evaluation.pk,), queue="sampling"))
    return evaluation


def _check_models(candidate, baselines):
    if not isinstance(candidate, ModelVersion) or candidate.kind not in GENERATORS:
        raise ValidationError("The candidate must be a policy or SFT model version (an external endpoint can only be "
                              "a baseline).")
    if not baselines:
        raise ValidationError("Name at least one baseline to compare the candidate with.")
    if len(baselines) > MAX_BASELINES:
        raise ValidationError(f"At most {MAX_BASELINES} baselines: a judgment ranks at most {MAX_BASELINES + 1} "
                              f"outputs, not {len(baselines) + 1}.")
    for version in [candidate, *baselines]:
        if version.kind not in BASELINES:
            raise ValidationError(f"{version} writes no replies; evaluate policy and SFT versions.")
        if version.kind == ModelVersion.Kind.EXTERNAL:
            continue
        if not version.artifact_path or version.status in (ModelVersion.Status.TRAINING, ModelVersion.Status.FAILED):
            raise ValidationError(f"{version} has no model to sample from ({version.get_status_display()}).")
    if candidate in baselines or len(set(baselines)) != len(baselines):
        raise ValidationError("The candidate and the baselines must be different model versions.")


def evaluation_sample(*, evaluation_id: int) -> Evaluation:
    """One sample per model per prompt, then a ranking task per prompt. Safe to run twice: a prompt whose task
    exists is skipped. A sampler that fails leaves the rest for the next try (SamplerUnavailable goes on)."""
    evaluation = Evaluation.objects.select_related("candidate").get(pk=evaluation_id)
    if evaluation.state != Evaluation.State.SAMPLING:
        return evaluation
    done = set(evaluation.tasks.values_list("prompt_id", flat=True))
    prompts = [p for p in Prompt.objects.filter(pk__in=evaluation.prompt_ids).order_by("id") if p.pk not in done]
    models = [evaluation.candidate, *evaluation.baselines.order_by("id")]
    params = evaluation.sampling_params
    samples = {prompt.pk: [] for prompt in prompts}
    try:
        for version in models:
            found = {prompt.pk: [] for prompt in prompts}
            try:
                # The same seed for every model: the outputs differ by the model alone.
                draw(sampler_for(version), prompts, 1, version, found,
                     lambda seed: sampling_params(evaluation.pk * 1_000_003 + seed, params["temperature"],
                                                  params["max_new_tokens"]), k=1)
            finally:
                for pk, drawn in found.items():
                    samples[pk].extend(drawn)
    except SamplerUnavailable as exc:
        Evaluation.objects.filter(pk=evaluation.pk).update(error=str(exc)[:500])
        _open_tasks(evaluation, samples, len(models))
        raise
    _open_tasks(evaluation, samples, len(models))
    scores = _reward_scores(evaluation)
    with transaction.atomic():
        evaluation = Evaluation.objects.select_for_update().get(pk=evaluation.pk)
        if scores:
            evaluation.reward_model, evaluation.reward_scores = scores
        if evaluation.state == Evaluation.State.SAMPLING:
            evaluation.state, evaluation.opened_at, evaluation.error = Evaluation.State.OPEN, timezone.now(), ""
        evaluation.save(update_fields=["state", "opened_at", "error", "reward_model", "reward_scores"])
    return evaluation


def _reward_scores(evaluation):
    """(reward model, {completion id: score}) of the active reward model on every output, so that the results show
    it beside the humans on the same outputs; None without one, or when it fails (the evaluation goes on)."""
    reward = model_version_active(ModelVersion.Kind.REWARD)
    if reward is None:
        return None
    rows = list(Completion.objects.filter(tasks__evaluation=evaluation).select_related("prompt").order_by("id"))
    try:
        scores = reward_scores(reward, [(c.prompt.turns or c.prompt.text, c.text) for c in rows])
    except Exception:  # a missing folder, a device out of memory: the humans' numbers do not need it
        logger.exception("Reward model %s could not score evaluation #%s", reward.name, evaluation.pk)
        return None
    return reward, {str(c.pk): score for c, score in zip(rows, scores, strict=True)}


def _open_tasks(evaluation, samples, models):
    """A ranking task for each prompt every model answered, once."""
    for prompt_id, drawn in samples.items():
        if len(drawn) != models:
            continue
        with transaction.atomic():
            Evaluation.objects.select_for_update().get(pk=evaluation.pk)  # one task per prompt, however many runs
            if evaluation.tasks.filter(prompt_id=prompt_id).exists():
                continue
            completions = Completion.objects.bulk_create([
                Completion(prompt_id=prompt_id, text=sample.text, model_version=version, seed=params.seed,
                           token_count=sample.token_count, finish_reason=sample.finish_reason,
                           sampling_params={"temperature": params.temperature, "top_p": params.top_p,
                                            "max_new_tokens": params.max_new_tokens})
                for version, params, sample in drawn
            ])
            task = Task.objects.create(kind=Task.Kind.RANK_COMPLETIONS, prompt_id=prompt_id, evaluation=evaluation,
                                       priority=settings.EVALUATION_PRIORITY,
                                       required_annotations=required_annotations(prompt_id))
            task.completions.set(completions)


def evaluation_cancel(*, evaluation: Evaluation) -> Evaluation:
    """Stop an evaluation: its open tasks leave the queue; judgments made so far are kept and still count. A human
    gate's candidate is refused."""
    with transaction.atomic():
        evaluation = Evaluation.objects.select_for_update().get(pk=evaluation.pk)
        if evaluation.state not in (Evaluation.State.SAMPLING, Evaluation.State.OPEN):
            raise ValidationError(f"Evaluation #{evaluation.pk} is {evaluation.get_state_display().lower()} already.")
        evaluation.tasks.filter(state=Task.State.OPEN).update(state=Task.State.CANCELLED)
        evaluation.state = Evaluation.State.CANCELLED
        evaluation.save(update_fields=["state"])
        if evaluation.gates:
            ModelVersion.objects.filter(pk=evaluation.candidate_id, status=ModelVersion.Status.AWAITING).update(
                status=ModelVersion.Status.REJECTED, status_reason=f"Human evaluation #{evaluation.pk} was cancelled.")
    return evaluation


# The human gate

def human_gate_start(*, version: ModelVersion, reason: str) -> Evaluation | None:
    """Hold a policy that passed the reward-model gate for humans to judge against the active one; None, with the
    version refused, when no evaluation can start."""
    active = model_version_active(ModelVersion.Kind.POLICY)
    try:
        evaluation = evaluation_start(candidate=version, baselines=[active], prompt_count=settings.HUMAN_GATE_PROMPTS,
                                      trigger="the human gate", gates=True)
    except ValidationError as exc:
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.REJECTED,
            status_reason=f"{reason} The human gate could not start an evaluation: {' '.join(exc.messages)}")
        return None
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.AWAITING,
        status_reason=f"{reason} Awaiting human evaluation #{evaluation.pk} against {active.name}.")
    return evaluation


def human_gates_decide() -> list:
    """Decide the human gates that can be decided: (version name, verdict) for each; beat asks every minute."""
    decided = []
    for evaluation in Evaluation.objects.filter(gates=True, state=Evaluation.State.OPEN,
                                                candidate__status=ModelVersion.Status.AWAITING):
        if verdict := human_gate_decide(evaluation=evaluation):
            decided.append((evaluation.candidate.name, verdict))
    return decided


def human_gate_decide(*, evaluation: Evaluation) -> str | None:
    """Activate the candidate when, after HUMAN_GATE_MIN_JUDGMENTS judgments, the low end of its win rate's
    interval reaches HUMAN_GATE_MIN_WIN_RATE; refuse it when the high end is below, or when every task is done
    without a verdict. None while it waits."""
    results = evaluation_results(evaluation)
    [win] = results["win_rates"]
    threshold, needed = settings.HUMAN_GATE_MIN_WIN_RATE, settings.HUMAN_GATE_MIN_JUDGMENTS
    enough = win["n"] >= needed
    if enough and win["low"] >= threshold:
        verdict = "activated"
    elif enough and win["high"] < threshold:
        verdict = "refused"
    elif results["tasks_open"] == 0 and results["tasks"]:
        verdict = "refused"
    else:
        return None
    shown = (f"{win['value']:.0%} [{win['low']:.0%}, {win['high']:.0%}] over {win['n']} judgments on "
             f"{win['prompts']} prompts" if win["n"] else "no judgments")
    reason = (f"Human evaluation #{evaluation.pk}: win rate against {win['baseline']} {shown}; the gate needs the "
              f"interval's low end at {threshold:.0%} or above after {needed} judgments.")
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=evaluation.candidate_id)
        if version.status != ModelVersion.Status.AWAITING:
            return None
        if verdict == "activated":
            model_version_activate(version=version, reason=reason)
        else:
            ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.REJECTED,
                                                              status_reason=reason)
        evaluation.tasks.filter(state=Task.State.OPEN).update(state=Task.State.CANCELLED)
        Evaluation.objects.filter(pk=evaluation.pk).update(state=Evaluation.State.COMPLETED)
    return verdict
