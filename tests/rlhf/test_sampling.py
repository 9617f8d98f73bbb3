import json
import threading

import pytest

from rlhf.config import SampleConfig
from rlhf.sampling import HFSampler, OpenAISampler, SamplingParams, sample_file
from rlhf.serve import make_server
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
    with pytest.raises(RuntimeError, match="answered 400: .*n` must be 1 to 16"):
        remote.sample(["Hi"], 40)
