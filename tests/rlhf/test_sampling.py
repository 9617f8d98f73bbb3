import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from rlhf.config import SampleConfig
from rlhf.sampling import HFSampler, OpenAISampler, Sample, SamplingParams, ServerError, sample_file
from rlhf.serve import make_server
from tests.conftest import free_port
from tests.rlhf.conftest import write_jsonl

PROMPTS = ["Tell me about item 1.", [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "How do I boil an egg?"}], "Name a colour."]


@pytest.fixture(scope="module")
def sampler(tiny_model):
    return HFSampler(str(tiny_model), device="cpu", model_version="tiny-v1", batch_size=2)


def test_k_completions_per_prompt_with_counts_reasons_and_version(sampler):
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=7)
    results = sampler.sample(PROMPTS, 5, params)
    assert [len(samples) for samples in results] == [5, 5, 5]
    for sample in (s for samples in results for s in samples):
        assert sample.model_version == "tiny-v1"
        assert sample.finish_reason in ("stop", "length")
        assert sample.token_count == 12 if sample.finish_reason == "length" else sample.token_count < 12
    assert len({s.text for s in results[0]}) > 1


def test_temperature_0_gives_k_copies_of_the_greedy_completion(sampler):
    params = SamplingParams(temperature=0, max_new_tokens=8, seed=7)
    results = sampler.sample(PROMPTS, 4, params, logprobs=True)
    assert [len(samples) for samples in results] == [4, 4, 4]
    for samples, prompt in zip(results, PROMPTS):
        assert len({(s.text, tuple(s.logprobs)) for s in samples}) == 1
        alone = sampler.sample([prompt], 1, SamplingParams(temperature=0, max_new_tokens=8, seed=99), logprobs=True)
        assert alone[0][0].text == samples[0].text and alone[0][0].logprobs == pytest.approx(samples[0].logprobs)


def test_prompts_are_generated_together_a_batch_at_a_time(tiny_model, monkeypatch):
    sampler = HFSampler(str(tiny_model), device="cpu", batch_size=8)
    generate, batches = sampler.model.generate, []
    monkeypatch.setattr(sampler.model, "generate", lambda **kw: batches.append(len(kw["input_ids"])) or generate(**kw))
    results = sampler.sample([f"Name colour {n}." for n in range(11)], 4, SamplingParams(max_new_tokens=4))
    assert batches == [8, 3] and [len(samples) for samples in results] == [4] * 11


def test_a_seed_replays_a_request_and_another_seed_differs(sampler):
    params = SamplingParams(max_new_tokens=10, seed=3)
    first = sampler.sample(PROMPTS, 4, params)
    assert sampler.sample(PROMPTS, 4, params) == first
    assert sampler.sample(PROMPTS, 4, SamplingParams(max_new_tokens=10, seed=4)) != first


def test_prompts_go_through_the_chat_template(sampler):
    ids = sampler.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                                tokenize=False)
    assert ids == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_the_sample_command_writes_k_completions_per_prompt(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    summary = sample_file(SampleConfig(data=str(data), output=str(tmp_path / "out.jsonl"), model=str(tiny_model),
                                       k=4, max_new_tokens=8, batch_size=2, device="cpu"))
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary == {"prompts": 3, "completions": 12}
    assert [row["prompt"] for row in rows] == PROMPTS
    assert all(len(row["completions"]) == 4 and row["sampling_params"]["max_new_tokens"] == 8 for row in rows)
    assert rows[0]["completions"][0]["model_version"] == tiny_model.name


def test_k_outside_4_to_9_is_refused(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}])
    with pytest.raises(ValueError, match="K must be 4 to 9"):
        sample_file(SampleConfig(data=str(data), output=str(tmp_path / "o.jsonl"), model=str(tiny_model), k=10))


@pytest.fixture(scope="module")
def server(sampler):
    server = make_server(sampler, port=0, model_name="tiny-served")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_the_openai_backend_against_a_real_server(server, sampler, endpoint):
    remote = OpenAISampler(server, "tiny-served", endpoint=endpoint)
    prompts = [p for p in PROMPTS if endpoint == "chat" or isinstance(p, str)]
    results = remote.sample(prompts, 4, SamplingParams(max_new_tokens=9, seed=11))
    assert [len(samples) for samples in results] == [4] * len(prompts)
    for sample in (s for samples in results for s in samples):
        assert sample.model_version == "tiny-served" and sample.finish_reason in ("stop", "length")
        assert 0 <= sample.token_count <= 9
    if endpoint == "chat":  # the server runs the same model: the same seed gives the same texts
        local = sampler.sample(prompts[:1], 4, SamplingParams(max_new_tokens=9, seed=11))
        assert [s.text for s in results[0]] == [s.text for s in local[0]]


def test_the_server_answers_bad_requests_with_400(server):
    remote = OpenAISampler(server, "tiny-served", endpoint="chat")
    with pytest.raises(ServerError, match="answered 400: .*n` must be 1 to 16"):
        remote.sample(["Hi"], 40)


@pytest.fixture
def loading_server(sampler, tiny_model, tmp_path):
    """A server on the tiny model that may load folders from under tmp_path, two at a time, behind a key."""
    shutil.copytree(tiny_model, tmp_path / "v2")
    server = make_server(sampler, port=0, model_name="policy-base", models_dir=tmp_path, max_models=2,
                         api_key="secret", device="cpu")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1", tmp_path
    server.shutdown()
    server.server_close()


def test_the_server_loads_models_from_its_folder_by_name_and_drops_the_least_recently_used(loading_server):
    url, folder = loading_server
    client = OpenAISampler(url, "policy-v2", api_key="secret")
    with pytest.raises(ServerError, match="answered 404: .*policy-v2` does not exist") as missing:
        client.sample(["Hi"], 4, SamplingParams(max_new_tokens=4))
    assert missing.value.status == 404
    client.request("POST", "/load_model", {"model": "policy-v2", "path": str(folder / "v2")})
    assert client.models() == ["policy-base", "policy-v2"]
    (samples,) = client.sample(["Hi"], 4, SamplingParams(max_new_tokens=4))
    assert {s.model_version for s in samples} == {"policy-v2"}
    client.request("POST", "/load_model", {"model": "policy-v3", "path": str(folder / "v2")})
    assert client.models() == ["policy-v2", "policy-v3"]  # two at most: the base went first
    client.request("POST", "/unload_model", {"model": "policy-v2"})
    assert client.models() == ["policy-v3"]


@pytest.mark.parametrize("body, status, message", [
    ({"model": "x", "path": "/etc"}, 403, "must be under"),
    ({"model": "x", "path": "{folder}/../.."}, 403, "must be under"),
    ({"model": "x", "path": "{folder}"}, 400, "is not a model folder"),
    ({"model": "", "path": "{folder}/v2"}, 400, "`model` (the name to serve it under) and `path`"),
    ({"model": "x"}, 400, "`path` (its folder) are needed"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_the_server_refuses_loads_it_should_not_make(loading_server, body, status, message):
    url, folder = loading_server
    client = OpenAISampler(url, "policy-base", api_key="secret")
    if isinstance(body, dict):
        body = {name: value.format(folder=folder) for name, value in body.items()}
    with pytest.raises(ServerError) as refused:
        client.request("POST", "/load_model", body)
    assert refused.value.status == status and message in str(refused.value)
    assert client.models() == ["policy-base"]


def adapter_over(base, folder):
    """A LoRA adapter over `base` with weights drawn at random, saved as training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf import adapters
    from rlhf.models import load_policy

    torch.manual_seed(0)
    model = get_peft_model(load_policy(base), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    adapters.save(model, folder)
    return folder


def test_the_server_loads_adapters_over_their_base_and_answers_vllms_adapter_routes(loading_server, tiny_model):
    url, folder = loading_server
    adapter_over(tiny_model, folder / "ppo-4")
    client = OpenAISampler(url, "policy-ppo-4", api_key="secret")
    answer = client.request("POST", "/load_lora_adapter", {"lora_name": "policy-ppo-4",
                                                           "lora_path": str(folder / "ppo-4")}, text=True)
    assert answer == "Success: LoRA adapter 'policy-ppo-4' added successfully."  # vLLM's words, in plain text
    with pytest.raises(ServerError, match="answered 400: .*'policy-ppo-4' has already been loaded"):
        client.request("POST", "/load_lora_adapter", {"lora_name": "policy-ppo-4", "lora_path": str(folder / "v2")})
    params = SamplingParams(temperature=0, max_new_tokens=6)
    (served,) = client.sample(["Name a colour."], 4, params)
    from rlhf.models import load_policy

    merged = HFSampler(str(folder / "ppo-4"), device="cpu").sample(["Name a colour."], 1, params)[0][0]
    base = HFSampler(str(tiny_model), device="cpu").sample(["Name a colour."], 1, params)[0][0]
    assert {s.text for s in served} == {merged.text} and merged.text != base.text
    assert load_policy(folder / "ppo-4").num_parameters() == load_policy(tiny_model).num_parameters()
    assert client.request("POST", "/unload_lora_adapter", {"lora_name": "policy-ppo-4"}, text=True) == (
        "Success: LoRA adapter 'policy-ppo-4' removed successfully.")
    with pytest.raises(ServerError, match="answered 404: .*'policy-ppo-4' cannot be found"):
        client.request("POST", "/unload_lora_adapter", {"lora_name": "policy-ppo-4"})
    client.request("POST", "/load_model", {"model": "policy-ppo-4", "path": str(folder / "ppo-4")})  # rlhf's route
    assert "policy-ppo-4" in client.models()


@pytest.mark.parametrize("body, status, message", [
    ({"lora_name": "x", "lora_path": "/etc"}, 403, "must be under"),
    ({"lora_name": "x", "lora_path": "{folder}/v2"}, 400, "is not a LoRA adapter folder"),
    ({"lora_name": "x"}, 400, "Both 'lora_name' and 'lora_path' must be provided"),
    ({"lora_name": "x", "lora_path": "{folder}/a\x00b"}, 400, "NUL"),
    ({"lora_name": ["x"], "lora_path": "{folder}/v2"}, 400, "Both 'lora_name' and 'lora_path'"),
])
def test_the_server_refuses_adapters_it_should_not_load(loading_server, body, status, message):
    url, folder = loading_server
    client = OpenAISampler(url, "policy-base", api_key="secret")
    body = {name: value.format(folder=folder) if isinstance(value, str) else value for name, value in body.items()}
    with pytest.raises(ServerError) as refused:
        client.request("POST", "/load_lora_adapter", body)
    assert refused.value.status == status and message in str(refused.value)
    assert client.models() == ["policy-base"]


def test_the_server_wants_its_key_and_loads_nothing_without_a_models_dir(loading_server, server):
    url, _ = loading_server
    with pytest.raises(ServerError, match="answered 401: .*valid API key"):
        OpenAISampler(url, "policy-base", api_key="wrong").models()
    with pytest.raises(ServerError, match="answered 403: .*Loading is off"):
        OpenAISampler(server, "tiny-served").request("POST", "/load_model", {"model": "x", "path": "/tmp"})


def test_a_server_that_is_not_there_is_a_server_error_without_status():
    with pytest.raises(ServerError, match="could not be reached") as down:
        OpenAISampler(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=5).models()
    assert down.value.status is None


def test_a_prompt_longer_than_the_models_context_keeps_its_end(sampler):
    long = "Tell me everything about item 1. " * 200  # far beyond the tiny model's positions
    (samples,) = sampler.sample([long], 4, SamplingParams(max_new_tokens=8))
    assert len(samples) == 4 and all(s.token_count <= 8 for s in samples)
    with pytest.raises(ValueError, match="leaves no room for the prompt"):
        sampler.sample(["Hi"], 4, SamplingParams(max_new_tokens=sampler.context))


def post_raw(url, path, raw):
    request = urllib.request.Request(url + path, data=raw, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_streamed_reply_arrives_in_pieces_and_is_the_reply_that_sample_gives(sampler):
    params = SamplingParams(max_new_tokens=16, seed=3)
    *pieces, whole = sampler.stream(PROMPTS[1], params)
    assert len(pieces) > 1 and all(isinstance(piece, str) for piece in pieces)
    assert "".join(pieces).strip() == whole.text
    assert whole == sampler.sample([PROMPTS[1]], 1, params)[0][0]


def test_a_stream_stops_when_asked_and_when_its_reader_goes_away(sampler):
    asked = []
    *_, whole = sampler.stream("Name a colour.", SamplingParams(max_new_tokens=64, seed=3),
                               should_stop=lambda: asked.append(1) or len(asked) >= 3)
    assert (whole.finish_reason, whole.token_count) == ("abort", 3)
    reading = sampler.stream("Name a colour.", SamplingParams(max_new_tokens=64, seed=3))
    next(reading)
    reading.close()  # the generation thread ends with it
    assert not [t for t in threading.enumerate() if t.name == "rlhf-stream"]


@pytest.mark.parametrize("endpoint, prompt", [("chat", PROMPTS[1]), ("completions", "Tell me about item 1.")])
def test_the_server_streams_a_reply_as_server_sent_events(server, endpoint, prompt):
    remote = OpenAISampler(server, "tiny-served", endpoint=endpoint)
    params = SamplingParams(max_new_tokens=16, seed=5)
    *pieces, whole = remote.stream(prompt, params)
    assert len(pieces) > 1 and "".join(pieces).strip() == whole.text
    (expected,) = remote.sample([prompt], 1, params)[0]
    assert whole == Sample(expected.text, expected.token_count, expected.finish_reason, "tiny-served")


def test_a_stream_of_null_or_false_is_one_json_reply(server):
    for stream in (b"null", b"false"):
        status, body = post_raw(server, "/completions", b'{"prompt": "Hi", "max_tokens": 4, "stream": ' + stream + b"}")
        assert status == 200 and body["object"] == "text_completion" and len(body["choices"]) == 1


def test_a_client_that_stops_reading_a_stream_frees_the_server(server):
    remote = OpenAISampler(server, "tiny-served", timeout=30)
    *pieces, whole = remote.stream("Name a colour.", SamplingParams(max_new_tokens=400, seed=1),
                                   should_stop=lambda: True)
    assert len(pieces) == 1 and whole.finish_reason == "abort"
    assert remote.sample(["Name a colour."], 1, SamplingParams(max_new_tokens=4))[0][0].token_count <= 4


@pytest.mark.parametrize("path, raw, status, message", [
    ("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 2}', 400,
     "a stream holds one reply"),
    ("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', 400,
     "`stream` must be true or false"),
    ("/completions", b'{"prompt": "Hi", "stream": true, "max_tokens": 100000}', 400, "leaves no room for the prompt"),
    ("/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800 hi"}]}', 400, "lone surrogate"),
    ("/chat/completions", b'{"messages": [{"content": "no role"}]}', 400, "Message 1 must be an object with a role"),
    ("/chat/completions", b'{"messages": [1, 2]}', 400, "Message 1 must be an object"),
    ("/chat/completions", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nests too deeply"),
    ("/completions", b'{"prompt": "Hi", "seed": 1208925819614629174706176}', 400, "`seed` must be 0 to"),
    ("/completions", b'{"prompt": "Hi", "max_tokens": true}', 400, "`max_tokens` must be 1 to"),
    ("/completions", b'{"prompt": "Hi", "max_tokens": 100000}', 400, "leaves no room for the prompt"),
    ("/load_model", b'{"model": "x", "path": "/tmp/a\\u0000b"}', 400, "NUL"),
    ("/unload_model", b'{"model": ["x"]}', 400, "`model` must be text"),
])
def test_the_server_answers_hostile_bodies_with_a_json_error(server, path, raw, status, message):
    answered, body = post_raw(server, path, raw)
    assert answered == status and message in body["error"]["message"]


def test_the_server_refuses_a_body_over_its_limit_unread(server):
    from rlhf.serve import MAX_BODY_BYTES

    request = urllib.request.Request(server + "/completions", data=b"{}", method="POST",
                                     headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
