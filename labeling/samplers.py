"""Where completions come from: the sampling worker's own process, or the OpenAI-compatible endpoint at SAMPLER_URL.

In process, a version's model is loaded once and kept (two at most); a worker that consumes the gpu
queue too frees them before a training run takes the device. Through the endpoint, each version is served as its `served_name`; the site asks the server
to load a version when it is activated, and again whenever a request finds it missing (SAMPLER_SERVER
says how). Every attempt records the sampler's state in the cache, for the Training page.
"""

import gc
import logging
import os
import threading
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

logger = logging.getLogger(__name__)
STATE = "sampler-state"


class SamplerUnavailable(Exception):
    """The sampler cannot answer now; the message says why. `done` holds the samples of the prompts it answered
    before it failed, in order; the rest waits and is tried again."""

    def __init__(self, message, done=()):
        super().__init__(message)
        self.done = list(done)


def sampler_for(version):
    """An object with `sample(prompts, k, params)` and `stream(prompt, params, should_stop)` (rlhf.sampling's) for
    `version`, whose samples name the version that made them."""
    if version.kind == version.Kind.EXTERNAL:
        return _External(version)
    return _Endpoint(version) if settings.SAMPLER_URL else _InProcess(version)


@lru_cache(maxsize=2)
def _load(version):
    from rlhf.sampling import HFSampler

    return HFSampler(version.artifact_path, model_version=version.served_name)


_loading = threading.Lock()


def _in_process(version):
    """The version's model, loaded once even when several of a worker's threads (the chat worker's) ask at once."""
    with _loading:
        return _load(version)


class _InProcess:
    def __init__(self, version):
        self.version = version

    def sample(self, prompts, k, params):
        try:
            done = _in_process(self.version).sample(prompts, k, params)
        except Exception as exc:  # a model folder that is gone, a device out of memory: shown, and tried later
            logger.exception("Sampling %s failed", self.version.served_name)
            message = f"{self.version.served_name} could not sample: {type(exc).__name__}: {exc}"
            _record(ok=False, message=message)
            raise SamplerUnavailable(message) from None
        _record(ok=True, message=f"Sampled {self.version.served_name}.")
        return done

    def stream(self, prompt, params, should_stop=lambda: False):
        try:
            yield from _in_process(self.version).stream(prompt, params, should_stop)
        except Exception as exc:
            logger.exception("Streaming %s failed", self.version.served_name)
            message = f"{self.version.served_name} could not answer: {type(exc).__name__}: {exc}"
            _record(ok=False, message=message)
            raise SamplerUnavailable(message) from None
        _record(ok=True, message=f"Answered with {self.version.served_name}.")


def sampler_release():
    """Free the in-process models (and the device memory they hold), so that a training run has the device."""
    if _load.cache_info().currsize or _scorer.cache_info().currsize:
        _load.cache_clear()
        _scorer.cache_clear()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _client(model=""):
    from rlhf.sampling import OpenAISampler

    return OpenAISampler(settings.SAMPLER_URL, model, timeout=settings.SAMPLER_TIMEOUT_SECONDS,
                         api_key=settings.SAMPLER_API_KEY)


class _Endpoint:
    def __init__(self, version):
        self.version = version
        self.client = _client(version.served_name)

    def sample(self, prompts, k, params):
        from rlhf.sampling import ServerError

        done = []
        for prompt in prompts:
            try:
                done.append(self._one(prompt, k, params))
            except ServerError as exc:
                _record(ok=False, message=str(exc))
                raise SamplerUnavailable(str(exc), done) from None
            except SamplerUnavailable as exc:  # the version could not be loaded: recorded already
                raise SamplerUnavailable(str(exc), done) from None
        _record(ok=True, message=f"Sampled {self.version.served_name}.")
        return done

    def stream(self, prompt, params, should_stop=lambda: False):
        from rlhf.sampling import ServerError

        for first_try in (True, False):
            try:
                yield from self.client.stream(prompt, params, should_stop)
                break
            except ServerError as exc:  # a 404 comes before any piece: the version is loaded and asked for again
                if not (first_try and exc.status == 404 and settings.SAMPLER_SERVER != "fixed"):
                    _record(ok=False, message=str(exc))
                    raise SamplerUnavailable(str(exc)) from None
            sampler_serve(self.version)
        _record(ok=True, message=f"Answered with {self.version.served_name}.")

    def _one(self, prompt, k, params):
        from rlhf.sampling import ServerError

        try:
            return self.client.sample([prompt], k, params)[0]
        except ServerError as exc:
            if exc.status != 404 or settings.SAMPLER_SERVER == "fixed":
                raise
        sampler_serve(self.version)  # not served (the server restarted, or dropped it): load it, and ask once more
        return self.client.sample([prompt], k, params)[0]


class _External:
    """A model someone else serves: its own endpoint and key; its samples name the version, whatever model name
    the endpoint answers with."""

    def __init__(self, version):
        from rlhf.sampling import OpenAISampler

        self.version = version
        key = os.environ.get(version.endpoint_key_env, "") if version.endpoint_key_env else ""
        self.client = OpenAISampler(version.endpoint_url, version.endpoint_model,
                                    timeout=settings.SAMPLER_TIMEOUT_SECONDS, api_key=key)

    def sample(self, prompts, k, params):
        from rlhf.sampling import ServerError

        done = []
        for prompt in prompts:
            try:
                done.append([replace(s, model_version=self.version.served_name)
                             for s in self.client.sample([prompt], k, params)[0]])
            except ServerError as exc:
                raise SamplerUnavailable(f"{self.version.name}: {exc}", done) from None
        return done


@lru_cache(maxsize=1)
def _scorer(version):
    from rlhf.models import RewardModel, load_tokenizer, pick_device
    from rlhf.train_ppo import RewardScorer

    model = RewardModel.from_pretrained(version.artifact_path).to(pick_device("auto")).requires_grad_(False)
    return RewardScorer(model, load_tokenizer(version.artifact_path))


def reward_scores(version, pairs):
    """The reward model's score of each (prompt, reply) pair, in the sampling worker's process."""
    with _loading:
        scorer = _scorer(version)
    return [float(score) for score in scorer([prompt for prompt, _ in pairs], [reply for _, reply in pairs]).tolist()]


def sampler_serve(version):
    """Make the endpoint serve `version` (on activation, or when it is missing); nothing to do in process."""
    from rlhf.sampling import ServerError

    if not settings.SAMPLER_URL or settings.SAMPLER_SERVER == "fixed":
        return
    name, path = version.served_name, str(Path(version.artifact_path).resolve())
    client = _client()
    try:
        if settings.SAMPLER_SERVER == "rlhf":
            client.request("POST", "/load_model", {"model": name, "path": path})
        elif version.base_path:
            _load_lora_adapter(client, name, path)
        else:
            raise ServerError(f"vLLM cannot load the full weights of {name} while it runs: restart it with --model "
                              f"{path} --served-model-name {name}.")
    except ServerError as exc:
        _record(ok=False, message=f"Could not load {name}: {exc}")
        raise SamplerUnavailable(f"Could not load {name}: {exc}") from None
    _record(ok=True, message=f"Loaded {name}.")


def _load_lora_adapter(client, name, path):
    """vLLM's runtime adapter loading (VLLM_ALLOW_RUNTIME_LORA_UPDATING): a name it holds already is served."""
    from rlhf.sampling import ServerError

    try:
        client.request("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path}, text=True)
    except ServerError as exc:
        if exc.status != 400 or "already been loaded" not in str(exc):
            raise


def _record(*, ok, message):
    state = sampler_state()
    now = timezone.now().isoformat()
    state.update(ok=ok, message=message[:500], checked_at=now)
    if ok:
        state.update(failures=0, last_ok_at=now)
    else:
        state.update(failures=state.get("failures", 0) + 1, last_error=message[:500], last_error_at=now)
    cache.set(STATE, state, timeout=None)


def sampler_retry_in(attempts):
    """Seconds before the next try after `attempts` failed ones: doubling from SAMPLER_RETRY_SECONDS to the maximum."""
    return min(settings.SAMPLER_RETRY_MAX_SECONDS, settings.SAMPLER_RETRY_SECONDS * 2 ** min(attempts, 30))


def sampler_state():
    """What the last attempt found: backend, ok, message, failures in a row, and when; for the Training page."""
    backend = settings.SAMPLER_URL or "in-process"
    state = cache.get(STATE) or {}
    if state.get("backend") != backend:
        state = {"backend": backend, "ok": None, "message": "Nothing sampled yet.", "failures": 0}
    return state
