"""Model versions and the completions labelers rank."""

import logging
import random
from dataclasses import replace

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from .. import selectors
from ..models import Completion, ModelVersion, Prompt, Task
from ..samplers import SamplerUnavailable, sampler_for, sampler_serve
from .prompts import required_annotations

logger = logging.getLogger(__name__)


def model_version_active(kind):
    """The active version of a kind. The first policy and SFT versions are the base model, registered on first use."""
    version = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
    if version is None and kind in (ModelVersion.Kind.POLICY, ModelVersion.Kind.SFT):
        with transaction.atomic():
            version, _ = ModelVersion.objects.get_or_create(
                kind=kind, name="base",
                defaults={"status": ModelVersion.Status.ACTIVE, "artifact_path": settings.POLICY_MODEL,
                          "activated_at": timezone.now(), "status_reason": "The base model, before any training."},
            )
    return version


def model_version_activate(*, version, reason):
    """Make `version` the active one of its kind, in one transaction: samplers see the old or the new, never none."""
    if version.kind == ModelVersion.Kind.EXTERNAL:
        raise ValidationError(f"{version.name} is served elsewhere: it is a baseline for evaluations, never active.")
    with transaction.atomic():
        current = list(ModelVersion.objects.select_for_update().filter(kind=version.kind,
                                                                      status=ModelVersion.Status.ACTIVE))
        ModelVersion.objects.filter(pk__in=[v.pk for v in current]).update(status=ModelVersion.Status.RETIRED)
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.ACTIVE, activated_at=timezone.now(), status_reason=reason
        )
    version.refresh_from_db()
    if version.kind == ModelVersion.Kind.POLICY:
        transaction.on_commit(lambda: _serve_quietly(version))
    return version


def _serve_quietly(version):
    """The endpoint serves `version` from now on; if it cannot yet, sampling loads it when it asks for it."""
    try:
        sampler_serve(version)
    except SamplerUnavailable as exc:
        logger.warning("The sampler does not serve %s yet: %s", version, exc)


def prompts_needing_completions(limit):
    """The prompts to sample next: first those whose demonstration task waits for a suggestion, then the others in
    the order they came in, unless RANKING_BUFFER ranking tasks wait already."""
    waiting = Prompt.objects.filter(needs_completions=True).order_by("id").values_list("id", flat=True)
    chosen = list(waiting.filter(Exists(Task.objects.filter(prompt=OuterRef("pk"), state=Task.State.OPEN,
                                                             kind=Task.Kind.WRITE_DEMONSTRATION)))[:limit])
    if len(chosen) < limit and not ranking_buffer_full():
        chosen += waiting.exclude(pk__in=chosen)[:limit - len(chosen)]
    return chosen


def ranking_buffer_full():
    return bool(settings.RANKING_BUFFER) and selectors.ranking_tasks_waiting() >= settings.RANKING_BUFFER


def completions_sample(*, prompt_ids):
    """K completions per prompt from the active policy (a share from older versions), then a ranking task. A chat's
    prompt holds the reply chosen from it already, and gets CHAT_RANK_K - 1 alternatives from the active policy.

    Sampling runs outside any transaction; each prompt is then stored under its row lock and only if
    it still needs completions, so a retried or concurrent task stores nothing twice. A sampler that
    fails part way: the prompts it answered in full are stored, the others keep waiting, and
    SamplerUnavailable goes on to the caller (the task tries again later).
    """
    active = model_version_active(ModelVersion.Kind.POLICY)
    older = list(ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.RETIRED)
                 .exclude(pk=active.pk).exclude(artifact_path=""))
    # Completions already stored and in no task yet (a chat's chosen reply) count toward K; an evaluation's do not.
    prompts = {p.pk: p for p in Prompt.objects.filter(pk__in=prompt_ids, needs_completions=True)
               .annotate(stored=Count("completions", filter=Q(completions__tasks__isnull=True)))}
    if not prompts:
        return 0
    ordered = sorted(prompts)
    # A chat's prompt holds its original reply already: its alternatives all come from the active version.
    wanted = {pk: _k_of(prompts[pk]) - prompts[pk].stored for pk in ordered}
    plan = {pk: [(active, wanted[pk])] for pk in ordered}
    k_older = round(settings.SAMPLE_K * settings.SAMPLE_OLDER_SHARE) if older else 0
    if k_older:
        rng = random.Random(sum(ordered))
        for pk in ordered:
            if not prompts[pk].stored:
                plan[pk] = [(active, wanted[pk] - k_older), (rng.choice(older), k_older)]
    samples = {pk: [] for pk in ordered}
    failure = None
    batches = {}  # prompts drawn together: the same version, count and sampling settings
    for pk in ordered:
        for version, n in plan[pk]:
            batches.setdefault((version, n, _settings_of(prompts[pk])), []).append(pk)
    try:
        for (version, n, (temperature, max_new_tokens)), batch in batches.items():
            found = {pk: [] for pk in batch}
            try:
                draw(sampler_for(version), [prompts[pk] for pk in batch], n, version, found,
                      lambda seed, v=version.pk, t=temperature, m=max_new_tokens: sampling_params(v * 1_000_003 + seed, t, m))
            finally:
                for pk, drawn in found.items():
                    samples[pk].extend(drawn)
    except SamplerUnavailable as exc:
        failure = exc
    opened = sum(_store(pk, samples[pk]) for pk in ordered if len(samples[pk]) == wanted[pk])
    if failure:
        raise failure
    return opened


def draw(sampler, prompts, n, version, found, params_for, attempts=3, k=None):
    """Fill `found`, {prompt id: samples}, with n non-empty samples per prompt, drawing k at a time (by default
    4 or more): an empty completion is drawn again with another seed, a few times; a prompt still short waits
    for the next round. `params_for(seed)` gives the sampling parameters of a draw."""
    for attempt in range(attempts):
        short = [p for p in prompts if len(found[p.pk]) < n]
        if not short:
            break
        params = params_for(short[0].pk + 7919 * attempt)
        try:
            drawn = sampler.sample([p.turns or p.text for p in short], k or _k(n), params)
        except SamplerUnavailable as exc:
            _keep(found, short[:len(exc.done)], exc.done, n, version, params)
            raise
        _keep(found, short, drawn, n, version, params)


def _keep(found, prompts, drawn, n, version, params):
    for prompt, results in zip(prompts, drawn, strict=True):
        made_by = producer(results[0].model_version, version) if results else version  # one reply, one model
        cleaned = [replace(r, text=r.text.replace("\x00", "")) for r in results]  # PostgreSQL refuses NUL
        kept = [(made_by, params, r) for r in cleaned if r.text.strip()]
        found[prompt.pk].extend(kept[: n - len(found[prompt.pk])])


def producer(name, asked):
    """The version a sample names as its producer: the one asked for, or the one the server says answered."""
    if name == asked.served_name:
        return asked
    kind, _, version_name = name.partition("-")
    actual = ModelVersion.objects.filter(kind=kind, name=version_name).first()
    if actual is None:
        raise SamplerUnavailable(f"The sampler answered as {name!r}, which is no model version here.")
    return actual


def _k_of(prompt):
    return settings.CHAT_RANK_K if prompt.source == Prompt.Source.CHAT else settings.SAMPLE_K


def _settings_of(prompt):
    """(temperature, max_new_tokens): a chat's alternatives are drawn as its replies were, so none stands out."""
    if prompt.source == Prompt.Source.CHAT:
        return settings.CHAT_TEMPERATURE, settings.CHAT_MAX_NEW_TOKENS
    return settings.SAMPLE_TEMPERATURE, settings.SAMPLE_MAX_NEW_TOKENS


def _k(n):
    return max(n, 4)  # the sampler draws 4 to 9 per prompt; an older version's share keeps what it needs


def sampling_params(seed, temperature, max_new_tokens):
    from rlhf.sampling import SamplingParams

    return SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)


def _store(prompt_id, samples):
    with transaction.atomic():
        prompt = Prompt.objects.select_for_update().filter(pk=prompt_id, needs_completions=True).first()
        if prompt is None:
            return 0
        stored = list(prompt.completions.filter(tasks__isnull=True))
        completions = stored + Completion.objects.bulk_create([
            Completion(prompt=prompt, text=sample.text, model_version=version, seed=params.seed,
                       token_count=sample.token_count, finish_reason=sample.finish_reason,
                       sampling_params={"temperature": params.temperature, "top_p": params.top_p,
                                        "max_new_tokens": params.max_new_tokens})
            for version, params, sample in samples
        ])
        task = Task.objects.create(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt,
                                   required_annotations=required_annotations(prompt.pk))
        task.completions.set(completions)
        prompt.needs_completions = False
        prompt.save(update_fields=["needs_completions"])
    return 1

