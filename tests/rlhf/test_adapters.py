import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf import adapters, distributed
from rlhf.config import EvalRewardConfig, EvalSFTConfig, PPOConfig, SFTConfig
from rlhf.models import RewardModel, encode_for_reward, load_policy, load_tokenizer, reward_batch
from rlhf.train_ppo import PPOTrainer, compare_policies
from rlhf.train_reward import eval_reward, train_reward
from rlhf.train_sft import eval_sft, train_sft
from tests.rlhf.conftest import write_jsonl
from tests.rlhf.test_train_ppo import PROMPTS, curve, planted_score, planted_score_texts
from tests.rlhf.test_train_reward import config as reward_config
from tests.rlhf.test_train_sft import demonstrations

LORA = {"lora_rank": 8, "lora_dropout": 0.0}
SAMPLE = "<|im_start|>user\nCount to three.<|im_end|>\n<|im_start|>assistant\none two three"


def logits(model, tokenizer):
    ids = tokenizer(SAMPLE, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**ids).logits


def scores(model, tokenizer):
    encoded = [encode_for_reward(tokenizer, "Tell me about item 3.", text, 64)
               for text in ("answer 0 about item 3", "answer 1 about item 3 excellent")]
    with torch.no_grad():
        return model.eval()(*reward_batch(encoded, tokenizer.pad_token_id))


def merge(adapter, output):
    run = subprocess.run([sys.executable, "-m", "rlhf", "merge", "--adapter", str(adapter), "--output", str(output)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (output / "model.safetensors").is_file() and not adapters.is_adapter(output)
    return json.loads(run.stdout)


def unique_parameters(*modules):
    """Elements held once, however many modules share a tensor."""
    return sum(p.numel() for p in {id(p): p for m in modules for p in m.parameters()}.values())


def test_lora_sft_lowers_the_validation_loss_and_saves_an_adapter_that_reloads_and_merges_to_the_same_outputs(
        tmp_path, tiny_base):
    train, valid = (write_jsonl(tmp_path / "train.jsonl", demonstrations(40)),
                    write_jsonl(tmp_path / "valid.jsonl", demonstrations(10, start=40)))
    before = eval_sft(EvalSFTConfig(model=str(tiny_base), data=str(valid)))["loss"]
    summary = train_sft(SFTConfig(data=str(train), valid_data=str(valid), model=str(tiny_base),
                                  output=str(tmp_path / "sft"), epochs=3, lr=1e-2, batch_size=8, device="cpu", **LORA))
    adapter = Path(summary["output"])
    assert summary["valid"]["loss"] < before * 0.7
    assert eval_sft(EvalSFTConfig(model=str(adapter), data=str(valid)))["loss"] == pytest.approx(
        summary["valid"]["loss"], rel=1e-4)
    # An adapter over its named base, as peft and vLLM read it: no full weights.
    assert adapters.is_adapter(adapter) and not (adapter / "model.safetensors").exists()
    assert adapters.base_of(adapter) == tiny_base.resolve()
    record = json.loads((tmp_path / "sft" / "run.json").read_text())["summary"]["adapter"]
    assert record["base"] == str(tiny_base.resolve()) and record["rank"] == 8 and record["alpha"] == 32.0

    from peft import PeftModel

    tokenizer = load_tokenizer(adapter)
    unmerged = logits(PeftModel.from_pretrained(load_policy(tiny_base), str(adapter)), tokenizer)
    loaded = logits(load_policy(adapter), tokenizer)
    assert torch.allclose(loaded, unmerged, atol=1e-4)
    assert not torch.allclose(loaded, logits(load_policy(tiny_base), tokenizer), atol=1e-2)  # it learned something
    assert merge(adapter, tmp_path / "merged")["base"] == str(tiny_base.resolve())
    assert torch.allclose(logits(load_policy(tmp_path / "merged"), tokenizer), unmerged, atol=1e-4)


def test_lora_reward_model_learns_the_planted_preference_and_its_adapter_merges_to_the_same_scores(
        tmp_path, tiny_base):
    demos = write_jsonl(tmp_path / "demos.jsonl", demonstrations(8))
    summary = train_reward(reward_config(tmp_path, tiny_base, demonstrations=str(demos), **LORA))
    adapter = Path(summary["output"])
    assert adapters.is_adapter(adapter) and summary["adapter"]["rank"] == 8
    metrics = eval_reward(EvalRewardConfig(model=str(adapter), data=str(tmp_path / "valid.jsonl")))
    assert metrics["accuracy"] >= 0.95 and metrics["pairs"] == 40 * 3

    tokenizer = load_tokenizer(adapter)
    model = RewardModel.from_pretrained(adapter)
    assert model.pooling == "mean" and model.bias == pytest.approx(summary["reward_bias"])
    assert merge(adapter, tmp_path / "merged")["base"] == str(tiny_base.resolve())
    merged = RewardModel.from_pretrained(tmp_path / "merged")
    assert merged.bias == model.bias and merged.pooling == "mean"
    assert torch.allclose(scores(merged, tokenizer), scores(model, tokenizer), atol=1e-4)
    assert scores(model, tokenizer)[1] > scores(model, tokenizer)[0]  # the marked completion wins


def lora_trainer(tmp_path, policy, reward_model, name="ppo", **overrides):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    values = {"data": str(data), "reward_model": str(reward_model), "output": str(tmp_path / name), "steps": 30,
              "rollout_batch_size": 16, "minibatch_size": 8, "ppo_epochs": 4, "lr": 3e-3, "max_new_tokens": 12,
              "no_eos_penalty": 0.0, "device": "cpu", "ptx_coef": 0.0, **LORA}
    config = PPOConfig(**(values | overrides))
    distributed.seed_everything(config.seed)
    torch.manual_seed(0)
    model, reference = adapters.policy_and_reference(config, str(policy), str(policy))
    value, _ = adapters.value_and_reward(config, str(reward_model), str(reward_model))
    return PPOTrainer(config, model, reference, value, planted_score, load_tokenizer(policy, padding_side="left"),
                      PROMPTS)


@pytest.mark.slow
def test_lora_ppo_raises_the_reward_holding_one_copy_of_each_base(tmp_path, tiny_base):
    trainer = lora_trainer(tmp_path, tiny_base, tiny_base)
    base_size = load_policy(tiny_base).num_parameters()
    trained = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
    # The reference is the policy's base with the adapter off: the base is held once, not twice.
    assert unique_parameters(trainer.policy, trainer.reference) == base_size + trained
    assert trained < base_size / 10
    reward_size = RewardModel.from_pretrained(tiny_base).model.num_parameters()
    value_trained = sum(p.numel() for p in trainer.value_model.parameters() if p.requires_grad)
    assert unique_parameters(trainer.value_model) <= reward_size + 2 * value_trained  # the head's copy

    trainer.fit()
    steps = curve(tmp_path, "ppo")
    first, last = (sum(s["reward"] for s in part) / len(part) for part in (steps[:5], steps[-5:]))
    assert first < 0.35 and last > first + 0.25
    assert all(s["kl"] < 25 for s in steps)
    tokenizer = load_tokenizer(tiny_base, padding_side="left")
    held_out = [f"Tell me about thing {i}." for i in range(16)]
    metrics = compare_policies(trainer.policy, trainer.reference, planted_score_texts(tokenizer), tokenizer, held_out,
                               temperature=1.0, max_new_tokens=12, batch_size=8, seed=5, device="cpu")
    assert metrics["win_rate"] > 0.75 and 0 < metrics["kl"] < 25
    # The reference stayed the base; the saved policy is the adapter alone, and loads merged into its base.
    reference, base = (logits(m, tokenizer) for m in (trainer.reference, load_policy(tiny_base)))
    assert torch.equal(reference, base)
    saved = tmp_path / "ppo" / "model"
    assert adapters.is_adapter(saved) and adapters.base_of(saved) == tiny_base.resolve()
    assert torch.allclose(logits(load_policy(saved), tokenizer), logits(trainer.policy, tokenizer), atol=1e-4)


def test_a_policy_that_starts_from_an_sft_adapter_trains_it_on_and_keeps_it_frozen_as_the_reference(
        tmp_path, tiny_base):
    sft = train_sft(SFTConfig(data=str(write_jsonl(tmp_path / "d.jsonl", demonstrations(16))), model=str(tiny_base),
                              output=str(tmp_path / "sft"), epochs=1, lr=1e-2, batch_size=8, device="cpu",
                              **LORA))["output"]
    trainer = lora_trainer(tmp_path, sft, tiny_base, steps=1, rollout_batch_size=8)
    tokenizer = load_tokenizer(sft, padding_side="left")
    start = logits(load_policy(sft), tokenizer)
    assert torch.allclose(logits(trainer.reference, tokenizer), start, atol=1e-4)
    assert torch.allclose(logits(trainer.policy, tokenizer), start, atol=1e-4)
    assert unique_parameters(trainer.policy, trainer.reference) < 1.2 * load_policy(tiny_base).num_parameters()
    trainer.fit()
    assert torch.allclose(logits(trainer.reference, tokenizer), start, atol=1e-4)  # the reference never trains
    assert not torch.allclose(logits(trainer.policy, tokenizer), start, atol=1e-4)
    saved = tmp_path / "ppo" / "model"
    assert adapters.base_of(saved) == tiny_base.resolve()  # over the same base as the SFT adapter, for vLLM


def test_train_ppo_with_lora_from_the_command_line_over_adapter_versions(tmp_path, tiny_base):
    sft = train_sft(SFTConfig(data=str(write_jsonl(tmp_path / "d.jsonl", demonstrations(8))), model=str(tiny_base),
                              output=str(tmp_path / "sft"), epochs=1, batch_size=8, device="cpu", **LORA))["output"]
    # The reward model starts from the SFT model, as InstructGPT's: here from its adapter's weights.
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    started = get_peft_model_state_dict(RewardModel.from_pretrained(sft, lora=PPOConfig(**LORA)).peft_model)
    assert all(torch.equal(started[name], weight) for name, weight in load_peft_weights(sft).items())
    rm = train_reward(reward_config(tmp_path, sft, epochs=1, **LORA))["output"]
    assert adapters.base_of(rm) == tiny_base.resolve()
    assert eval_reward(EvalRewardConfig(model=rm, data=str(tmp_path / "valid.jsonl")))["accuracy"] >= 0.9
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS[:4]])
    run = subprocess.run(
        [sys.executable, "-m", "rlhf", "train-ppo", "--data", str(prompts), "--policy", sft, "--reward-model", rm,
         "--output", str(tmp_path / "ppo"), "--rollout-batch-size", "4", "--minibatch-size", "2", "--steps", "1",
         "--max-new-tokens", "6", "--device", "cpu", "--lora-rank", "4"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "ppo" / "run.json").read_text())["summary"]
    assert summary["adapter"]["base"] == str(tiny_base.resolve()) and summary["adapter"]["rank"] == 8  # the SFT's
    assert adapters.is_adapter(summary["output"])


def test_lora_refuses_a_reference_over_another_base_and_an_adapter_whose_base_is_gone(tmp_path, tiny_base,
                                                                                        tiny_model):
    config = PPOConfig(data="-", reward_model="-", output="-", **LORA)
    with pytest.raises(ValueError, match="the same model or adapters over one base"):
        adapters.policy_and_reference(config, str(tiny_base), str(tiny_model))
    sft = train_sft(SFTConfig(data=str(write_jsonl(tmp_path / "d.jsonl", demonstrations(8))), model=str(tiny_base),
                              output=str(tmp_path / "sft"), epochs=1, batch_size=8, device="cpu", **LORA))["output"]
    settings = json.loads((Path(sft) / "adapter_config.json").read_text())
    (Path(sft) / "adapter_config.json").write_text(json.dumps(settings | {"base_model_name_or_path": "/nowhere"}))
    with pytest.raises(FileNotFoundError, match="an adapter over /nowhere, which is not a model folder here"):
        load_policy(sft)


def test_the_reference_and_reward_views_compute_with_their_own_adapter_and_leave_the_trained_one_active(
        tmp_path, tiny_base):
    rm = train_reward(reward_config(tmp_path, tiny_base, epochs=1, **LORA))["output"]
    config = PPOConfig(data="-", reward_model=rm, output="-", **LORA)
    value, reward = adapters.value_and_reward(config, rm, rm)
    tokenizer = load_tokenizer(rm)
    assert torch.allclose(scores(reward, tokenizer), scores(RewardModel.from_pretrained(rm), tokenizer), atol=1e-4)
    with torch.no_grad():
        for p in (p for p in value.parameters() if p.requires_grad):
            p.add_(0.1)  # the value model moves away from the reward model it started as
    assert torch.allclose(scores(reward, tokenizer), scores(RewardModel.from_pretrained(rm), tokenizer), atol=1e-4)
    assert not torch.allclose(scores(value, tokenizer), scores(reward, tokenizer), atol=1e-3)
    assert value.peft_model.active_adapter == adapters.TRAINED
    assert all(p.requires_grad == (".default." in n) for n, p in value.named_parameters() if "lora_" in n)


def test_lora_and_training_only_the_top_layers_are_refused_together():
    from rlhf.config import OptionError, RewardConfig, check_options

    with pytest.raises(OptionError, match="'lora_rank' and 'train_top_layers' are two ways to train less"):
        check_options(RewardConfig, {"lora_rank": 8, "train_top_layers": 2})
    with pytest.raises(OptionError, match="option 'lora_target_modules' must match"):
        check_options(RewardConfig, {"lora_target_modules": "q_proj;rm -rf"})


def test_lora_ppo_can_hold_its_frozen_bases_in_bf16_and_train_float32_adapters(tmp_path, tiny_base):
    config = PPOConfig(data="-", reward_model="-", output="-", dtype="bfloat16", **LORA)
    policy, reference = adapters.policy_and_reference(config, str(tiny_base), str(tiny_base), torch.bfloat16)
    value, _ = adapters.value_and_reward(config, str(tiny_base), str(tiny_base), torch.bfloat16)
    for model in (policy, value):
        assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
        assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    tokenizer = load_tokenizer(tiny_base)
    assert torch.allclose(logits(reference, tokenizer).float(), logits(load_policy(tiny_base), tokenizer), atol=0.1)
