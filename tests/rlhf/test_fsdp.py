"""FSDP under torchrun: two CPU processes with gloo here, two GPUs with nccl where there are.

Run as a module (`torchrun ... -m tests.rlhf.test_fsdp train-sft --stop-after N <train-sft options>`) this file
is train-sft stopped by an error in its N+1th loss, as a crash would stop it; with train-ppo, train-ppo stopped in
its N+1th update.
"""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf import checkpoint
from rlhf.config import EvalSFTConfig, PPOConfig, SFTConfig, from_args, parser_for
from rlhf.models import load_policy
from rlhf.train_ppo import PPOTrainer, train_ppo
from rlhf.train_sft import SFTTrainer, eval_sft, train_sft
from tests.rlhf.conftest import write_jsonl
from tests.rlhf.test_train_sft import demonstrations


def torchrun(*args):
    torchrun = Path(sys.executable).parent / "torchrun"
    return subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def train_sft_options(tmp_path, tiny_model, output, device, *extra):
    data = write_jsonl(tmp_path / "train.jsonl", demonstrations(24))
    valid = write_jsonl(tmp_path / "valid.jsonl", demonstrations(6, start=24))
    # 12 demonstrations a process, 4 a step in passes of 2: 3 steps an epoch, 6 in all; checkpoints at 2 and 4.
    return ["--data", str(data), "--valid-data", str(valid), "--model", str(tiny_model), "--output", str(output),
            "--batch-size", "4", "--micro-batch-size", "2", "--epochs", "2", "--lr", "1e-3", "--warmup-steps", "2",
            "--save-every", "2", "--fsdp", "--device", device, *extra]


def steps_logged(output):
    return [line["step"] for line in map(json.loads, (output / "metrics.jsonl").read_text().splitlines())
            if "split" not in line]


def check_fsdp_trains_and_resumes_exactly(tmp_path, tiny_model, device, *extra, same=torch.equal):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run = torchrun("-m", "rlhf", "train-sft", *train_sft_options(tmp_path, tiny_model, whole, device, *extra))
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((whole / "run.json").read_text())
    assert record["finished"] and record["world_size"] == 2 and steps_logged(whole) == [1, 2, 3, 4, 5, 6]
    # The model rank 0 gathered and saved is the one both processes validated while it was sharded.
    saved = eval_sft(EvalSFTConfig(model=str(whole / "model"), data=str(tmp_path / "valid.jsonl"), device="cpu"))
    assert saved["loss"] == pytest.approx(record["summary"]["valid"]["loss"], rel=1e-3 if extra else 1e-5)

    stopped = torchrun("-m", "tests.rlhf.test_fsdp", "train-sft", "--stop-after", "8",
                       *train_sft_options(tmp_path, tiny_model, cut, device, *extra))
    assert stopped.returncode != 0 and "stopped after 8 losses" in stopped.stderr  # in step 5
    state = checkpoint.load_state(cut)
    assert state["step"] == 4 and "model" not in state
    assert [p.name for p in (cut / "checkpoint").glob("shards-*")] == [state["shards"]] == ["shards-00000004"]

    resumed = torchrun("-m", "rlhf", "train-sft", "--resume",
                       *train_sft_options(tmp_path, tiny_model, cut, device, *extra))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_logged(cut) == [1, 2, 3, 4, 5, 6] and json.loads((cut / "run.json").read_text())["finished"]
    assert_same_weights(whole / "model", cut / "model", same)


def assert_same_weights(expected, got, same):
    expected, got = load_policy(expected).state_dict(), load_policy(got).state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert same(expected[name], got[name]), name


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_writes_a_loadable_model_and_resumes_exactly(tmp_path, tiny_model):
    check_fsdp_trains_and_resumes_exactly(tmp_path, tiny_model, "cpu")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_fsdp_on_two_gpus_with_nccl_and_bf16_trains_sft_and_ppo_and_resumes(tmp_path, tiny_model):
    # GPU kernels may add in another order from run to run: the resumed weights are compared within one bf16 step.
    def close(a, b):
        return torch.allclose(a, b, atol=2e-3)

    check_fsdp_trains_and_resumes_exactly(tmp_path, tiny_model, "cuda", "--mixed-precision", "bf16", same=close)
    (tmp_path / "ppo").mkdir()
    check_ppo_with_fsdp_trains_and_resumes_exactly(tmp_path / "ppo", tiny_model, "cuda", "--mixed-precision", "bf16",
                                                   same=close)


def train_ppo_options(tmp_path, tiny_model, output, device, *extra):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Tell me about item {i}."} for i in range(16)])
    ptx = write_jsonl(tmp_path / "ptx.jsonl", [{"text": "The quick brown fox jumps over the lazy dog."}] * 4)
    # 8 prompts a process, 2 a rollout batch: 4 steps of one update each; a checkpoint at 2.
    return ["--data", str(prompts), "--policy", str(tiny_model), "--reward-model", str(tiny_model), "--output",
            str(output), "--ptx-data", str(ptx), "--rollout-batch-size", "2", "--minibatch-size", "2", "--ppo-epochs",
            "1", "--max-new-tokens", "6", "--steps", "4", "--lr", "1e-3", "--ema", "0.5", "--save-every", "2",
            "--fsdp", "--device", device, *extra]


def check_ppo_with_fsdp_trains_and_resumes_exactly(tmp_path, tiny_model, device, *extra, same=torch.equal):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run = torchrun("-m", "rlhf", "train-ppo", *train_ppo_options(tmp_path, tiny_model, whole, device, *extra))
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((whole / "run.json").read_text())
    assert record["finished"] and record["world_size"] == 2 and steps_logged(whole) == [1, 2, 3, 4]
    trained = load_policy(whole / "model").state_dict()["transformer.h.0.mlp.c_fc.weight"]
    assert not torch.equal(trained, load_policy(tiny_model).state_dict()["transformer.h.0.mlp.c_fc.weight"])
    evaluation = subprocess.run(
        [sys.executable, "-m", "rlhf", "eval-policy", "--policy", str(whole / "model"), "--reference",
         str(tiny_model), "--reward-model", str(tiny_model), "--data", str(tmp_path / "prompts.jsonl"),
         "--max-new-tokens", "6", "--device", "cpu", "--output", str(tmp_path / "eval.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert json.loads((tmp_path / "eval.json").read_text())["prompts"] == 16

    stopped = torchrun("-m", "tests.rlhf.test_fsdp", "train-ppo", "--stop-after", "2",
                       *train_ppo_options(tmp_path, tiny_model, cut, device, *extra))
    assert stopped.returncode != 0 and "stopped after 2 updates" in stopped.stderr  # in step 3
    state = checkpoint.load_state(cut)
    assert state["step"] == 2 and "policy" not in state and "ema" not in state
    assert [p.name for p in (cut / "checkpoint").glob("shards-*")] == [state["shards"]] == ["shards-00000002"]

    resumed = torchrun("-m", "rlhf", "train-ppo", "--resume",
                       *train_ppo_options(tmp_path, tiny_model, cut, device, *extra))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_logged(cut) == [1, 2, 3, 4] and json.loads((cut / "run.json").read_text())["finished"]
    assert_same_weights(whole / "model", cut / "model", same)  # the moving averages, which every step moves


@pytest.mark.slow
def test_ppo_with_fsdp_on_two_cpu_processes_writes_a_policy_eval_policy_reads_and_resumes_exactly(tmp_path,
                                                                                                   tiny_model):
    check_ppo_with_fsdp_trains_and_resumes_exactly(tmp_path, tiny_model, "cpu")


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # one process, as meant
def test_a_checkpoint_stopped_while_its_shards_are_written_leaves_the_last_one_to_resume(tmp_path, tiny_model,
                                                                                        monkeypatch):
    model = load_policy(tiny_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[3, 4, 5]]), labels=torch.tensor([[3, 4, 5]])).loss.backward()
    optimizer.step()
    checkpoint.save_sharded_checkpoint(tmp_path, model, optimizer, {"step": 2}, is_main=True)
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    def failing(state, checkpoint_id):
        (Path(checkpoint_id) / "__0_0.distcp").parent.mkdir(parents=True)
        (Path(checkpoint_id) / "__0_0.distcp").write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.dcp, "save", failing)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    with pytest.raises(OSError):
        checkpoint.save_sharded_checkpoint(tmp_path, model, optimizer, {"step": 4}, is_main=True)
    monkeypatch.undo()

    state = checkpoint.load_state(tmp_path)
    assert state == {"step": 2, "shards": "shards-00000002"}
    checkpoint.load_shards(tmp_path, state, model, optimizer)  # sharded state loads into a model that is not
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def stopping(method, stop_after, what):
    """`method`, raising an error in its call after the first `stop_after`, as a crash would."""
    calls = itertools.count()

    def stop(*args):
        if next(calls) == stop_after:
            raise RuntimeError(f"stopped after {stop_after} {what}")
        return method(*args)

    return stop


def stop_in_training(argv):
    """From the command line `train-sft --stop-after N <options>`, train-sft whose N+1th loss raises an error, or
    `train-ppo ...`, train-ppo whose N+1th update does."""
    job, stop_after, options = argv[0], int(argv[2]), argv[3:]
    if job == "train-sft":
        SFTTrainer.loss = stopping(SFTTrainer.loss, stop_after, "losses")
        train_sft(from_args(SFTConfig, parser_for(SFTConfig).parse_args(options)))
    else:
        PPOTrainer.update = stopping(PPOTrainer.update, stop_after, "updates")
        train_ppo(from_args(PPOConfig, parser_for(PPOConfig).parse_args(options)))


if __name__ == "__main__":
    stop_in_training(sys.argv[1:])
