import json

import pytest
import torch

from rlhf import distributed
from rlhf.config import PPOConfig
from rlhf.models import RewardModel, load_policy, load_tokenizer
from rlhf.train_ppo import PPOTrainer, compare_policies, train_ppo
from tests.rlhf.conftest import write_jsonl

PROMPTS = [f"Tell me about item {i}." for i in range(16)]
TARGET = range(4, 132)  # a quarter of the tiny vocabulary, special tokens left out


def planted_score(prompts, texts, response_ids):
    """The share of response tokens from TARGET: a reward the policy can learn in a few dozen steps."""
    return torch.tensor([sum(t in TARGET for t in ids) / max(len(ids), 1) for ids in response_ids])


def make_trainer(tmp_path, tiny_model, name="ppo", ptx=(), **overrides):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    values = {"data": str(data), "reward_model": "-", "output": str(tmp_path / name), "steps": 30,
              "rollout_batch_size": 8, "minibatch_size": 4, "ppo_epochs": 2, "lr": 1e-2, "max_new_tokens": 12,
              "no_eos_penalty": 0.0, "device": "cpu", "ptx_coef": 0.0}
    config = PPOConfig(**(values | overrides))
    distributed.seed_everything(config.seed)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(tiny_model, padding_side="left")
    return PPOTrainer(config, load_policy(tiny_model), load_policy(tiny_model), RewardModel.from_pretrained(tiny_model),
                      planted_score, tokenizer, PROMPTS, ptx)


def curve(tmp_path, name):
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_ppo_raises_the_reward_while_the_kl_stays_bounded_and_beats_the_reference(tmp_path, tiny_model):
    trainer = make_trainer(tmp_path, tiny_model, rollout_batch_size=16, minibatch_size=8, ppo_epochs=4, lr=3e-3)
    trainer.fit()
    steps = curve(tmp_path, "ppo")
    first, last = (sum(s["reward"] for s in part) / len(part) for part in (steps[:5], steps[-5:]))
    assert first < 0.35 and last > first + 0.25
    assert all(s["kl"] < 25 for s in steps)
    for name in ("kl", "entropy", "clip_fraction", "value_loss", "policy_loss", "ptx_loss", "response_length", "beta"):
        assert name in steps[-1]

    tokenizer = load_tokenizer(tiny_model, padding_side="left")
    held_out = [f"Tell me about thing {i}." for i in range(16)]
    metrics = compare_policies(trainer.policy, trainer.reference, planted_score_texts(tokenizer), tokenizer, held_out,
                               temperature=1.0, max_new_tokens=12, batch_size=8, seed=5, device="cpu")
    assert metrics["win_rate"] > 0.75 and metrics["reward_policy"] > metrics["reward_reference"]
    assert 0 < metrics["kl"] < 25


def test_a_very_large_beta_keeps_the_policy_next_to_the_reference(tmp_path, tiny_model):
    def late_kl(name, beta):
        make_trainer(tmp_path, tiny_model, name=name, beta=beta, steps=15, lr=3e-3).fit()
        steps = curve(tmp_path, name)
        return sum(abs(s["kl"]) for s in steps[-5:]) / 5, sum(s["reward"] for s in steps[-5:]) / 5

    held_kl, held_reward = late_kl("held", 100.0)
    free_kl, free_reward = late_kl("free", 0.0)
    assert held_kl < 1.5 and held_kl < free_kl / 2
    assert held_reward < free_reward


def test_ptx_adds_the_weighted_pretraining_loss(tmp_path, tiny_model):
    texts = ["The quick brown fox jumps over the lazy dog."] * 4
    without = make_trainer(tmp_path, tiny_model, name="without", steps=1, ptx=texts, ptx_coef=0.0)
    with_ptx = make_trainer(tmp_path, tiny_model, name="with", steps=1, ptx=texts, ptx_coef=27.8)
    rollout = without.rollout(without.prompt_batch(0))
    state = {k: v.clone() for k, v in without.policy.state_dict().items()}

    def first_update(trainer):
        trainer.policy.load_state_dict(state)
        optimizer = torch.optim.SGD(list(trainer.policy.parameters()) + list(trainer.value_model.parameters()), lr=0.0)
        trainer.config.ppo_epochs, trainer.config.minibatch_size = 1, 8
        return trainer.update(trainer.policy, trainer.value_model, optimizer, rollout, 0)

    a, b = first_update(without), first_update(with_ptx)
    assert a["ptx_loss"] == 0.0 and b["ptx_loss"] > 1.0  # an untrained model's loss on text is several nats
    assert b["policy_loss"] == pytest.approx(a["policy_loss"], abs=1e-6)  # the RL part is the same


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_model):
    whole = make_trainer(tmp_path, tiny_model, name="whole", steps=4, ema=0.9)
    whole.fit()

    class Interrupted(Exception):
        pass

    cut = make_trainer(tmp_path, tiny_model, name="cut", steps=4, ema=0.9, save_every=2)
    update, calls = cut.update, []

    def crashing(*args):
        if len(calls) == 3:
            raise Interrupted
        calls.append(1)
        return update(*args)

    cut.update = crashing
    with pytest.raises(Interrupted):
        cut.fit()
    distributed.seed_everything(4321)
    resumed = make_trainer(tmp_path, tiny_model, name="cut", steps=4, ema=0.9, resume=True)
    resumed.fit()
    for (name, a), (_, b) in zip(whole.policy.state_dict().items(), resumed.policy.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    saved = [load_policy(tmp_path / name / "model").state_dict() for name in ("whole", "cut")]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    assert [s["step"] for s in curve(tmp_path, "cut")] == [1, 2, 3, 4]


def planted_score_texts(tokenizer):
    def score(prompts, texts, response_ids=None):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        return planted_score(prompts, texts, ids)
    return score


def test_gradient_checkpointing_leaves_the_update_as_it_was_and_bf16_keeps_float32_weights(tmp_path, tiny_model):
    plain = make_trainer(tmp_path, tiny_model, name="plain", steps=1)
    rollout = plain.rollout(plain.prompt_batch(0))

    def first_update(trainer):
        optimizer = torch.optim.AdamW([p for p in trainer.policy.parameters() if p.requires_grad], lr=1e-3)
        metrics = trainer.update(trainer.policy, trainer.value_model, optimizer, rollout, 0)
        return metrics, trainer.policy.state_dict()

    expected, weights = first_update(plain)
    trainer = make_trainer(tmp_path, tiny_model, name="checkpointed", steps=1, gradient_checkpointing=True)
    assert trainer.policy.is_activation_checkpointing and not plain.policy.is_activation_checkpointing
    checkpointed, weights_checkpointed = first_update(trainer)
    assert checkpointed == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert all(torch.allclose(weights[k], weights_checkpointed[k], atol=1e-6) for k in weights)

    mixed = make_trainer(tmp_path, tiny_model, name="bf16", steps=3, mixed_precision="bf16")
    mixed.fit()
    assert all(p.dtype == torch.float32 for p in mixed.policy.parameters())
    assert [s["step"] for s in curve(tmp_path, "bf16")] == [1, 2, 3]
    assert not torch.equal(mixed.policy.state_dict()["transformer.h.0.mlp.c_fc.weight"],
                           load_policy(tiny_model).state_dict()["transformer.h.0.mlp.c_fc.weight"])


def test_fsdp_with_lora_is_refused_before_anything_is_loaded_or_written(tmp_path):
    config = PPOConfig(data=str(tmp_path / "missing.jsonl"), reward_model="-", output=str(tmp_path / "ppo"),
                       fsdp=True, lora_rank=4)
    with pytest.raises(ValueError, match="set lora_rank 0"):
        train_ppo(config)
    assert not (tmp_path / "ppo").exists()
