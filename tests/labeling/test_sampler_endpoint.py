"""Sampling through an OpenAI-compatible endpoint: `python -m rlhf serve` as a real process."""

import json
import shutil
import urllib.request

import pytest
from django.core.cache import cache

from labeling import samplers, services
from labeling.models import Completion, ModelVersion, Prompt, Task
from tests.conftest import wait_for
from tests.factories import PromptFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def endpoint(settings, tiny_model, tmp_path, rlhf_server):
    settings.POLICY_MODEL = str(tiny_model)
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_DIR.mkdir()
    settings.SAMPLE_MAX_NEW_TOKENS = 8
    settings.OVERLAP_SHARE = 0
    settings.SAMPLER_SERVER = "rlhf"
    cache.delete(samplers.STATE)
    # The server may load what is under MODELS_DIR, and the base model's own folder.
    server = rlhf_server(tmp_path)
    settings.SAMPLER_URL = server.url
    return server


def served(server):
    with urllib.request.urlopen(server.url + "/models") as reply:
        return [model["id"] for model in json.load(reply)["data"]]


def trained_version(settings, tiny_model, name):
    """A policy version as a training run leaves it: its own folder under MODELS_DIR."""
    folder = settings.MODELS_DIR / name
    shutil.copytree(tiny_model, folder)
    return ModelVersion.objects.create(kind="policy", name=name, status="ready", artifact_path=str(folder))


def test_completions_come_from_the_endpoint_and_record_the_version_it_served(endpoint):
    prompts = PromptFactory.create_batch(2, needs_completions=True)
    assert services.completions_sample(prompt_ids=[p.pk for p in prompts]) == 2
    base = ModelVersion.objects.get(kind="policy", status="active")
    assert set(Completion.objects.values_list("model_version", flat=True)) == {base.pk}
    assert Completion.objects.count() == 8 and not Prompt.objects.filter(needs_completions=True).exists()
    assert wait_for(lambda: len(endpoint.requests()) == 2)  # the server logs each request after its reply
    assert [line[2:4] for line in endpoint.requests()] == [["200", "policy-base"]] * 2
    state = samplers.sampler_state()
    assert (state["ok"], state["backend"], state["failures"]) == (True, endpoint.url, 0)


def test_activation_makes_the_server_serve_the_new_version(endpoint, settings, tiny_model,
                                                          django_capture_on_commit_callbacks):
    services.model_version_active("policy")
    new = trained_version(settings, tiny_model, "ppo-9")
    with django_capture_on_commit_callbacks(execute=True):
        services.model_version_activate(version=new, reason="passed the gate")
    assert "policy-ppo-9" in served(endpoint)
    prompt = PromptFactory(needs_completions=True)
    assert services.completions_sample(prompt_ids=[prompt.pk]) == 1
    assert set(Completion.objects.values_list("model_version__name", flat=True)) == {"ppo-9"}
    assert wait_for(lambda: endpoint.requests()) and endpoint.requests()[-1][3] == "policy-ppo-9"


def test_a_version_the_server_no_longer_holds_is_loaded_again_when_asked_for(endpoint, settings, tiny_model):
    new = trained_version(settings, tiny_model, "ppo-3")
    services.model_version_activate(version=new, reason="passed the gate")  # no commit: the server was not told
    assert "policy-ppo-3" not in served(endpoint)
    prompt = PromptFactory(needs_completions=True)
    assert services.completions_sample(prompt_ids=[prompt.pk]) == 1
    assert "policy-ppo-3" in served(endpoint)
    assert wait_for(lambda: len(endpoint.requests()) == 2)
    assert [line[2] for line in endpoint.requests()] == ["404", "200"]
    assert set(Completion.objects.values_list("model_version__name", flat=True)) == {"ppo-3"}


def test_a_server_that_is_down_stores_nothing_and_the_training_page_says_so(endpoint, settings, as_researcher):
    endpoint.stop()
    prompts = PromptFactory.create_batch(2, needs_completions=True)
    with pytest.raises(samplers.SamplerUnavailable, match="could not be reached"):
        services.completions_sample(prompt_ids=[p.pk for p in prompts])
    assert not Completion.objects.exists() and not Task.objects.filter(kind="rank_completions").exists()
    assert Prompt.objects.filter(needs_completions=True).count() == 2
    state = samplers.sampler_state()
    assert (state["ok"], state["failures"]) == (False, 1)
    page = as_researcher.get("/research/training/").content.decode()
    assert "failing, 1 attempt in a row" in page and "could not be reached" in page
    assert "2 prompts for completions" in page


def test_a_server_that_fails_part_way_keeps_the_prompts_it_answered(endpoint, monkeypatch):
    from rlhf.sampling import OpenAISampler

    prompts = PromptFactory.create_batch(3, needs_completions=True)
    asked = []
    original = OpenAISampler.sample

    def stop_before_the_third(self, prompts, k, params):
        asked.append(prompts)
        if len(asked) == 3:
            endpoint.stop(kill=True)
        return original(self, prompts, k, params)

    monkeypatch.setattr(OpenAISampler, "sample", stop_before_the_third)
    with pytest.raises(samplers.SamplerUnavailable):
        services.completions_sample(prompt_ids=[p.pk for p in prompts])
    assert list(Prompt.objects.filter(needs_completions=True)) == [prompts[2]]
    assert Task.objects.filter(kind="rank_completions").count() == 2 and Completion.objects.count() == 8

    endpoint.start()
    assert services.completions_sample(prompt_ids=[p.pk for p in prompts]) == 1
    assert Task.objects.filter(kind="rank_completions").count() == 3 and Completion.objects.count() == 12


def test_a_fixed_server_that_does_not_serve_the_active_version_leaves_the_prompt_waiting(
    endpoint, settings, rlhf_server, tmp_path
):
    settings.SAMPLER_SERVER = "fixed"
    stranger = rlhf_server(tmp_path, "policy-mystery")
    settings.SAMPLER_URL = stranger.url
    prompt = PromptFactory(needs_completions=True)
    with pytest.raises(samplers.SamplerUnavailable, match="answered 404: .*policy-base` does not exist"):
        services.completions_sample(prompt_ids=[prompt.pk])
    assert not Completion.objects.exists() and Prompt.objects.get().needs_completions


def adapter_version(settings, tiny_model, name):
    """A policy version that is a LoRA adapter over the base model, as a LoRA training run leaves it (its weights
    drawn at random, so that what it writes differs from the base's)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf import adapters
    from rlhf.models import load_policy, load_tokenizer

    folder = settings.MODELS_DIR / name
    torch.manual_seed(0)
    model = get_peft_model(load_policy(tiny_model), LoraConfig(r=4, target_modules="all-linear",
                                                               init_lora_weights=False))
    adapters.save(model, folder)
    load_tokenizer(tiny_model).save_pretrained(folder)
    record = adapters.adapter_record(model)
    return ModelVersion.objects.create(kind="policy", name=name, status="ready", artifact_path=str(folder),
                                       base_path=record.pop("base"), adapter=record)


def written_by(folder, completion):
    """What the model folder writes, greedily, for the completion's prompt with the completion's own parameters."""
    from rlhf.sampling import HFSampler, SamplingParams

    params = SamplingParams(**completion.sampling_params)
    assert params.temperature == 0
    return HFSampler(str(folder), device="cpu", batch_size=1).sample([completion.prompt.text], 1, params)[0][0].text


@pytest.mark.parametrize("backend", ["in-process", "rlhf", "vllm"])
def test_an_activated_adapter_version_is_what_sampling_then_uses(endpoint, settings, tiny_model, backend,
                                                                 django_capture_on_commit_callbacks):
    if backend == "in-process":
        settings.SAMPLER_URL = ""
    settings.SAMPLER_SERVER = "vllm" if backend == "vllm" else "rlhf"
    settings.SAMPLE_TEMPERATURE = 0  # greedy: each completion is what the model itself finds likeliest
    services.model_version_active("policy")
    version = adapter_version(settings, tiny_model, "ppo-11")
    with django_capture_on_commit_callbacks(execute=True):
        services.model_version_activate(version=version, reason="passed the gate")
    if backend != "in-process":
        assert "policy-ppo-11" in served(endpoint)  # loaded on activation, without a restart
    prompt = PromptFactory(needs_completions=True)
    assert services.completions_sample(prompt_ids=[prompt.pk]) == 1
    completions = list(Completion.objects.order_by("id"))
    assert {c.model_version.name for c in completions} == {"ppo-11"}
    assert {c.text for c in completions} == {written_by(version.artifact_path, completions[0])}  # adapter and base
    assert completions[0].text != written_by(tiny_model, completions[0])
    if backend != "in-process":
        assert wait_for(lambda: endpoint.requests()) and endpoint.requests()[-1][3] == "policy-ppo-11"


def test_vllm_is_asked_to_load_adapter_versions_and_told_to_restart_for_full_weights(endpoint, settings, tiny_model):
    settings.SAMPLER_SERVER = "vllm"
    full = trained_version(settings, tiny_model, "ppo-5")
    with pytest.raises(samplers.SamplerUnavailable, match="vLLM cannot load the full weights of policy-ppo-5 .*"
                                                          "--served-model-name policy-ppo-5"):
        samplers.sampler_serve(full)
    adapter = adapter_version(settings, tiny_model, "ppo-6")
    samplers.sampler_serve(adapter)
    samplers.sampler_serve(adapter)  # vLLM answers 400 for a name it holds already: served all the same
    assert "policy-ppo-6" in served(endpoint)
    assert samplers.sampler_state()["ok"] is True
    broken = adapter_version(settings, tiny_model, "ppo-8")
    (settings.MODELS_DIR / "ppo-8" / "adapter_config.json").unlink()
    with pytest.raises(samplers.SamplerUnavailable, match="load_lora_adapter answered 400: .*not a LoRA adapter"):
        samplers.sampler_serve(broken)
    assert samplers.sampler_state()["failures"] == 1


def test_an_in_process_model_that_cannot_load_is_a_sampler_failure(settings, tmp_path):
    settings.SAMPLER_URL = ""
    cache.delete(samplers.STATE)
    ModelVersion.objects.create(kind="policy", name="ppo-2", status="active", artifact_path=str(tmp_path / "gone"))
    prompt = PromptFactory(needs_completions=True)
    with pytest.raises(samplers.SamplerUnavailable, match="policy-ppo-2 could not sample"):
        services.completions_sample(prompt_ids=[prompt.pk])
    assert samplers.sampler_state()["backend"] == "in-process" and Prompt.objects.get().needs_completions


def test_a_reply_streams_from_the_endpoint_loading_its_version_when_missing(endpoint, settings, tiny_model):
    from rlhf.sampling import Sample, SamplingParams

    version = trained_version(settings, tiny_model, "ppo-7")  # not served yet: the first ask is a 404
    *pieces, whole = samplers.sampler_for(version).stream("Tell me about rivers.", SamplingParams(max_new_tokens=12))
    assert len(pieces) > 1 and isinstance(whole, Sample) and "".join(pieces).strip() == whole.text
    assert whole.model_version == "policy-ppo-7" and "policy-ppo-7" in served(endpoint)
    assert samplers.sampler_state()["ok"] is True


def test_a_stream_from_a_server_that_is_down_says_so(endpoint):
    from rlhf.sampling import SamplingParams

    endpoint.stop()
    base = services.model_version_active("policy")
    with pytest.raises(samplers.SamplerUnavailable, match="could not be reached"):
        list(samplers.sampler_for(base).stream("Hi", SamplingParams(max_new_tokens=4)))
    assert samplers.sampler_state()["failures"] == 1


def test_a_reply_streams_in_process(settings, tiny_model):
    from rlhf.sampling import SamplingParams

    settings.SAMPLER_URL = ""
    samplers.sampler_release()  # what earlier tests left loaded, under ids this test's versions may reuse
    version = ModelVersion.objects.create(kind="policy", name="base", status="active", artifact_path=str(tiny_model))
    *pieces, whole = samplers.sampler_for(version).stream("Hi", SamplingParams(max_new_tokens=12, seed=2))
    assert "".join(pieces).strip() == whole.text and whole.model_version == "policy-base"
    missing = ModelVersion.objects.create(kind="policy", name="gone", status="ready", artifact_path="/nonexistent")
    with pytest.raises(samplers.SamplerUnavailable, match="policy-gone could not answer"):
        list(samplers.sampler_for(missing).stream("Hi", SamplingParams(max_new_tokens=4)))
