import json
import os
import subprocess
import sys
from pathlib import Path

from tests.rlhf.conftest import marker_rankings, write_jsonl


def test_two_processes_under_torchrun_train_and_only_rank_0_writes(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "r.jsonl", marker_rankings(32))
    output = tmp_path / "rm"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "rlhf", "train-rm", "--data", str(data),
         "--model", str(tiny_model), "--output", str(output), "--batch-size", "4", "--epochs", "1", "--device", "cpu",
         "--save-every", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((output / "run.json").read_text())
    assert record["finished"] and record["world_size"] == 2 and record["total_steps"] == 4
    # 32 rankings over 2 processes of 4 per step: 4 steps, each logged once, 8 rankings a step.
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["samples"]) for line in lines] == [(1, 8), (2, 16), (3, 24), (4, 32)]
    assert (output / "model" / "model.safetensors").is_file()
    assert run.stdout.count('"steps": 4') == 1  # rank 0 alone prints the summary


def test_ppo_under_torchrun_then_eval_policy_from_the_command_line(tmp_path, tiny_model):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Tell me about item {i}."} for i in range(8)])
    ptx = write_jsonl(tmp_path / "ptx.jsonl", [{"text": "The quick brown fox jumps over the lazy dog."}] * 4)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    output = tmp_path / "ppo"
    run = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "rlhf", "train-ppo", "--data", str(prompts),
         "--policy", str(tiny_model), "--reward-model", str(tiny_model), "--output", str(output),
         "--ptx-data", str(ptx), "--rollout-batch-size", "2", "--minibatch-size", "2", "--max-new-tokens", "6",
         "--steps", "2", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["episodes"]) for line in lines] == [(1, 4), (2, 8)]
    assert all(line["ptx_loss"] > 0 for line in lines)
    assert json.loads((output / "run.json").read_text())["finished"]

    evaluation = subprocess.run(
        [sys.executable, "-m", "rlhf", "eval-policy", "--policy", str(output / "model"), "--reference",
         str(tiny_model), "--reward-model", str(tiny_model), "--data", str(prompts), "--max-new-tokens", "6",
         "--device", "cpu", "--output", str(tmp_path / "eval.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["prompts"] == 8 and 0 <= metrics["win_rate"] <= 1 and "kl" in metrics
