import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf import distributed, memory
from rlhf.config import RewardConfig, SFTConfig
from rlhf.data import load_demonstrations, load_rankings
from rlhf.models import RewardModel, load_policy, load_tokenizer
from rlhf.train_reward import RewardTrainer
from rlhf.train_sft import SFTTrainer, train_sft
from tests.rlhf.conftest import marker_rankings, write_jsonl
from tests.rlhf.test_train_sft import demonstrations


def without_dropout(model):
    """Dropout draws its masks per pass, so a batch cut into passes would drop other units than the whole."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def trained(kind, tmp_path, tiny_model, name, dropout=True, **options):
    """A trainer after fitting its kind of model (the same start each time) with these options."""
    if kind == "sft":
        options.pop("fit_head", None)
        data = write_jsonl(tmp_path / "d.jsonl", demonstrations(16))
        trainer_class, config_class, items = SFTTrainer, SFTConfig, load_demonstrations(data)
        model = load_policy(tiny_model)
    else:
        data = write_jsonl(tmp_path / "r.jsonl", marker_rankings(16))
        trainer_class, config_class, items = RewardTrainer, RewardConfig, load_rankings(data)
        torch.manual_seed(0)  # the head starts at random
        model = RewardModel.from_pretrained(tiny_model)
    if not dropout:
        without_dropout(model)
    config = config_class(**{"data": str(data), "model": str(tiny_model), "output": str(tmp_path / name),
                             "epochs": 1, "batch_size": 8, "lr": 1e-3, "device": "cpu", **options})
    distributed.seed_everything(config.seed)
    trainer = trainer_class(config, model, load_tokenizer(tiny_model), items)
    trainer.fit()
    return trainer


def logged_losses(trainer):
    lines = (trainer.output / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "split" not in line]


def recording_gradients(monkeypatch):
    """The gradients each optimizer step is given, in the order of the parameters."""
    steps, step = [], torch.optim.AdamW.step

    def recording(optimizer, *args, **kwargs):
        steps.append([p.grad.clone() for group in optimizer.param_groups for p in group["params"]])
        return step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    return steps


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_micro_batches_give_the_gradients_and_weights_of_whole_batches(tmp_path, tiny_model, kind, monkeypatch):
    gradients = recording_gradients(monkeypatch)
    whole = trained(kind, tmp_path, tiny_model, "whole", dropout=False, fit_head=False)
    # 8 examples a step in passes of 3, 3 and 2; the demonstrations' answers differ in length, so SFT's passes
    # differ in how many tokens their losses are means over.
    passes = trained(kind, tmp_path, tiny_model, "passes", dropout=False, fit_head=False, micro_batch_size=3)
    assert len(gradients) == 4
    for whole_step, passes_step in zip(gradients[:2], gradients[2:], strict=True):
        for a, b in zip(whole_step, passes_step, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    losses = logged_losses(whole)
    assert len(losses) == 2 and logged_losses(passes) == pytest.approx(losses, rel=1e-5)
    assert losses[1] < losses[0]  # the steps trained
    if kind == "reward":
        # A shift of every reward leaves the ranking loss as it is, so the gradient of the final norm's bias is
        # rounding noise, which Adam's first steps divide by its own size: only the gradients compare.
        return
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), passes.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name


def test_micro_batches_under_ddp_end_with_the_weights_of_whole_batches(tmp_path, tiny_model):
    model = tmp_path / "no-dropout"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "resid_pdrop": 0, "embd_pdrop": 0, "attn_pdrop": 0}))
    data = write_jsonl(tmp_path / "d.jsonl", demonstrations(16))
    torchrun = Path(sys.executable).parent / "torchrun"

    def train(name, *options):
        run = subprocess.run(
            [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "rlhf", "train-sft", "--data", str(data),
             "--model", str(model), "--output", str(tmp_path / name), "--batch-size", "4", "--epochs", "1",
             "--lr", "1e-3", "--device", "cpu", *options],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        return load_policy(tmp_path / name / "model").state_dict()

    # Each process's passes are only added up locally until the last one, whose backward averages the sum over
    # both: had a process stepped on its own gradients, rank 0's weights would be its own, not these.
    whole, passes = train("whole"), train("passes", "--micro-batch-size", "3")
    for name, weight in passes.items():
        assert torch.allclose(weight, whole[name], rtol=1e-5, atol=1e-6), name


def test_the_default_weight_of_a_demonstration_is_its_assistant_tokens_and_of_anything_else_one(tiny_model):
    trainer = SFTTrainer(SFTConfig(data="d.jsonl", output="out", model=str(tiny_model)), load_policy(tiny_model),
                         load_tokenizer(tiny_model), [d["messages"] for d in demonstrations(3)])
    # The loss predicts each token from the ones before: a label on the first token is no target.
    assert trainer.loss_weight([([5, 6, 7, 8], [5, -100, 7, 8])]) == 2
    assert trainer.loss_weight(trainer.train) == sum(sum(x != -100 for x in labels[1:]) for _, labels in trainer.train)
    assert trainer.loss_weight([([5], [5], 3), "anything"]) == 2


def test_a_batch_is_cut_into_passes_of_the_micro_batch_size_the_last_one_what_is_left():
    assert [len(part) for part in memory.micro_batches(list(range(8)), 3)] == [3, 3, 2]
    assert memory.micro_batches(list(range(8)), 0) == [list(range(8))]
    assert memory.micro_batches(list(range(2)), 4) == [[0, 1]]


@pytest.mark.parametrize("kind", ["policy", "reward"])
def test_gradient_checkpointing_recomputes_the_blocks_and_gives_the_same_loss_and_gradients(tiny_model, kind):
    def loss_and_gradients(checkpointing):
        torch.manual_seed(0)
        model = load_policy(tiny_model) if kind == "policy" else RewardModel.from_pretrained(tiny_model)
        if checkpointing:
            memory.enable_gradient_checkpointing(model)
        block = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))[0]
        calls = []  # of the block's first layer: Hugging Face checkpoints the block's forward inside its hooks
        next(block.children()).register_forward_hook(lambda *args: calls.append(1))
        model.train()
        ids = torch.tensor([[3, 50, 60, 70, 80, 90], [3, 40, 41, 42, 0, 0]])
        mask = (ids != 0).long()
        torch.manual_seed(1)  # dropout: the recomputation draws the same masks
        if kind == "policy":
            loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        else:
            loss = model(ids, mask).square().mean()
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters()}, len(calls)

    loss, gradients, calls = loss_and_gradients(False)
    checkpointed_loss, checkpointed_gradients, checkpointed_calls = loss_and_gradients(True)
    assert (calls, checkpointed_calls) == (1, 2)  # the block ran again in the backward pass
    assert checkpointed_loss == pytest.approx(loss, rel=1e-6)
    for name, gradient in gradients.items():
        assert torch.allclose(checkpointed_gradients[name], gradient, rtol=1e-5, atol=1e-7), name


def test_a_trainer_with_gradient_checkpointing_ends_with_the_weights_of_one_without(tmp_path, tiny_model):
    plain = trained("sft", tmp_path, tiny_model, "plain")
    checkpointed = trained("sft", tmp_path, tiny_model, "checkpointed", gradient_checkpointing=True)
    assert checkpointed.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    expected = plain.model.state_dict()
    for name, weight in checkpointed.model.state_dict().items():
        assert torch.allclose(weight, expected[name], rtol=1e-5, atol=1e-6), name


def test_bf16_mixed_precision_trains_in_bf16_and_keeps_float32_weights(tmp_path, tiny_model):
    data = str(write_jsonl(tmp_path / "d.jsonl", demonstrations(16)))
    config = SFTConfig(data=data, valid_data=data, model=str(tiny_model), output=str(tmp_path / "bf16"), epochs=4,
                       batch_size=4, lr=3e-3, device="cpu", mixed_precision="bf16")
    tokenizer, model = load_tokenizer(tiny_model), load_policy(tiny_model)
    trainer = SFTTrainer(config, model, tokenizer, load_demonstrations(data), load_demonstrations(data))
    before = trainer.evaluate(trainer.valid)["loss"]
    computed_in = set()
    model.lm_head.register_forward_hook(lambda module, args, output: computed_in.add(output.dtype) if module.training
                                        else None)
    summary = trainer.fit()
    assert computed_in == {torch.bfloat16}
    assert summary["valid"]["loss"] < before * 0.7
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert {p.dtype for p in load_policy(tmp_path / "bf16" / "model").parameters()} == {torch.float32}


def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tmp_path, tiny_model):
    data = str(write_jsonl(tmp_path / "d.jsonl", demonstrations(4)))
    config = SFTConfig(data=data, model=str(tiny_model), output=str(tmp_path / "fp16"), batch_size=2, device="cpu",
                       mixed_precision="fp16")
    with pytest.raises(ValueError, match="mixed_precision fp16 needs a CUDA GPU.*on cpu use bf16 or no"):
        train_sft(config)
    assert not (tmp_path / "fp16").exists()
