"""Benchmark: PPO-ptx episodes/s, generated tokens/s and the reward/KL curve over a fixed budget.

    .venv/bin/python bench/ppo.py --model tiny
    .venv/bin/python bench/ppo.py --model smollm2 --reward-model artifacts/bench/rm-hh --minutes 10

`tiny` is the 2-layer GPT-2 with a planted reward (the share of response tokens from a quarter of
its vocabulary); `smollm2` is SmolLM2-135M-Instruct as policy and reference, judged by a reward
model trained by `bench/reward_model.py hh --save artifacts/bench/rm-hh`, on HH-RLHF prompts.
Runs until the step count or the time budget is spent, whichever comes first.
"""

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlhf.config import DEFAULT_MODEL, PPOConfig  # noqa: E402
from rlhf.models import RewardModel, load_policy, load_tokenizer, save_tiny_model  # noqa: E402
from rlhf.prepare import prepare_smollm2  # noqa: E402
from rlhf.train_ppo import PPOTrainer, RewardScorer  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
TARGET = range(4, 132)


def planted_score(prompts, texts, response_ids):
    return torch.tensor([sum(t in TARGET for t in ids) / max(len(ids), 1) for ids in response_ids])


def hh_prompts(n):
    """The first human turn of HH-RLHF dialogues: red-teaming prompts, used here only as rollout inputs."""
    with gzip.open(HH, "rt") as f:
        rows = [json.loads(line)["chosen"] for line in f]
    prompts = [row.split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip() for row in rows]
    random.Random(0).shuffle(prompts)
    return prompts[:n]


class Budget(Exception):
    pass


def run_trl(policy_dir, reward_dir, prompts, args, lr, beta, ppo_epochs):
    """TRL 1.12's PPOTrainer (trl.experimental.ppo, removed in 1.13) on the same models, prompts and settings."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig as TRLConfig
    from trl.experimental.ppo import PPOTrainer as TRLTrainer

    tokenizer = load_tokenizer(policy_dir, padding_side="left")
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                         return_dict=False) for p in prompts]
    episodes = args.rollout_batch_size * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        config = TRLConfig(
            # TRL's rollout batch is per_device_train_batch_size x gradient_accumulation_steps, split into
            # num_mini_batches: 16 and 8 here as in ours.
            output_dir=tmp, per_device_train_batch_size=args.minibatch_size,
            gradient_accumulation_steps=args.rollout_batch_size // args.minibatch_size,
            num_mini_batches=args.rollout_batch_size // args.minibatch_size, num_ppo_epochs=ppo_epochs,
            total_episodes=episodes, learning_rate=lr, kl_coef=beta, response_length=args.max_new_tokens,
            temperature=1.0, stop_token="eos", missing_eos_penalty=0.0 if args.model == "tiny" else 1.0,
            use_cpu=True, bf16=False, report_to="none", save_strategy="no", num_sample_generations=0,
            logging_steps=1, disable_tqdm=True, seed=1234,
        )
        torch.manual_seed(0)
        value = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1)
        reward = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1)
        for model in (value, reward):
            model.config.pad_token_id = tokenizer.pad_token_id
        trainer = TRLTrainer(args=config, processing_class=tokenizer, model=load_policy(policy_dir),
                             ref_model=load_policy(policy_dir), reward_model=reward, value_model=value,
                             train_dataset=Dataset.from_dict({"input_ids": ids}))
        start = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - start
    logged = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    return elapsed, episodes, logged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--reward-model", help="smollm2: the reward model folder.")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rollout-batch-size", type=int, default=16)
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--trl", action="store_true",
                        help="Also run TRL 1.12's PPO on the same models and prompts (see bench/README.md). The tiny "
                             "policy is then judged by its own random-headed reward model, which TRL needs.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model == "tiny":
            policy_dir = save_tiny_model(tmp / "tiny")
            prompts = [f"Tell me about item {i}." for i in range(256)]
            scorer, value_dir = planted_score, policy_dir
            if args.trl:
                scorer = RewardScorer(RewardModel.from_pretrained(policy_dir).requires_grad_(False),
                                      load_tokenizer(policy_dir))
            lr, beta = 3e-3, 0.02
        else:
            if not args.reward_model:
                sys.exit("--reward-model is required with --model smollm2.")
            policy_dir = prepare_smollm2(DEFAULT_MODEL)
            prompts = hh_prompts(args.rollout_batch_size * args.steps)
            scorer = RewardScorer(RewardModel.from_pretrained(args.reward_model).requires_grad_(False),
                                  load_tokenizer(args.reward_model), max_length=512)
            value_dir, lr, beta = args.reward_model, 1e-5, 0.02
        (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        config = PPOConfig(data=str(tmp / "prompts.jsonl"), reward_model=str(value_dir), output=str(tmp / "ppo"),
                           steps=args.steps, rollout_batch_size=args.rollout_batch_size,
                           minibatch_size=args.minibatch_size, ppo_epochs=4 if args.model == "tiny" else 2, lr=lr,
                           beta=beta, max_new_tokens=args.max_new_tokens, ptx_coef=0.0, device="cpu",
                           # the tiny model rarely ends a reply: a penalty for that would drown the planted reward
                           no_eos_penalty=0.0 if args.model == "tiny" else -1.0)
        tokenizer = load_tokenizer(policy_dir, padding_side="left")
        torch.manual_seed(0)
        trainer = PPOTrainer(config, load_policy(policy_dir), load_policy(policy_dir),
                             RewardModel.from_pretrained(value_dir), scorer, tokenizer, prompts)
        deadline = time.perf_counter() + args.minutes * 60
        rollout, update = trainer.rollout, trainer.update
        timings = {"rollout": 0.0, "update": 0.0}

        def timed_rollout(indices):
            if time.perf_counter() > deadline:
                raise Budget
            start = time.perf_counter()
            result = rollout(indices)
            timings["rollout"] += time.perf_counter() - start
            return result

        def timed_update(*a):
            start = time.perf_counter()
            result = update(*a)
            timings["update"] += time.perf_counter() - start
            return result

        trainer.rollout, trainer.update = timed_rollout, timed_update
        start = time.perf_counter()
        try:
            trainer.fit()
        except Budget:
            pass
        elapsed = time.perf_counter() - start
        steps = [json.loads(line) for line in (tmp / "ppo" / "metrics.jsonl").read_text().splitlines()]
        if args.trl:
            args.steps = len(steps)  # the same number of rollout batches as ours managed in the budget
            trl = run_trl(policy_dir, value_dir, prompts, args, lr, beta, config.ppo_epochs)

    episodes = steps[-1]["episodes"]
    tokens = sum(s["response_length"] * args.rollout_batch_size for s in steps)
    print(f"policy {args.model}, {torch.get_num_threads()} threads: {len(steps)} rollout batches of "
          f"{args.rollout_batch_size} in {elapsed:.0f} s (rollouts {timings['rollout']:.0f} s, "
          f"updates {timings['update']:.0f} s)")
    print(f"episodes/s {episodes / elapsed:.2f}; generated tokens/s {tokens / elapsed:.1f} overall, "
          f"{tokens / timings['rollout']:.1f} within rollouts")
    print(f"{'step':>4} {'reward':>7} {'kl':>7} {'entropy':>7} {'length':>6} {'clip':>5}")
    for s in steps:
        print(f"{s['step']:>4} {s['reward']:>7.3f} {s['kl']:>7.3f} {s['entropy']:>7.3f} {s['response_length']:>6.1f} "
              f"{s['clip_fraction']:>5.2f}")
    if args.trl:
        trl_seconds, trl_episodes, logged = trl
        print(f"TRL 1.12 PPOTrainer: {trl_episodes} episodes in {trl_seconds:.0f} s, episodes/s "
              f"{trl_episodes / trl_seconds:.2f}; rlhf train-ppo is {(episodes / elapsed) / (trl_episodes / trl_seconds):.2f}x")
        print(f"{'step':>4} {'score':>7} {'kl':>7}")
        for n, entry in enumerate(logged, start=1):
            print(f"{n:>4} {entry['objective/scores']:>7.3f} {entry['objective/kl']:>7.3f}")


if __name__ == "__main__":
    main()
