"""Benchmark: reward-model training, K-way against pairs, against TRL, and accuracy on HH-RLHF.

    .venv/bin/python bench/reward_model.py throughput        # K-way vs every pair expanded, K = 4 and 9
    .venv/bin/python bench/reward_model.py trl               # the same data through TRL's RewardTrainer
    .venv/bin/python bench/reward_model.py hh --epochs 0 --max-length 128 --save artifacts/bench/rm-hh  # HH-RLHF

All three use SmolLM2-135M-Instruct (prepared under artifacts/ on first use) on the CPU unless
--model names another folder.
"""

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlhf.config import DEFAULT_MODEL, EvalRewardConfig, RewardConfig  # noqa: E402
from rlhf.data import Ranking, load_rankings  # noqa: E402
from rlhf.losses import ranking_pairs  # noqa: E402
from rlhf.models import RewardModel, load_tokenizer  # noqa: E402
from rlhf.prepare import prepare_smollm2  # noqa: E402
from rlhf.train_reward import RewardTrainer, eval_reward, train_reward  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
WORDS = "the a river stone light quiet morning garden window paper green slow bright warm open".split()


def graded_rankings(n, k, seed):
    """K completions per prompt; each holds 0..K-1 copies of "excellent" among filler, more is better."""
    rng = random.Random(seed)
    rankings = []
    for i in range(n):
        texts = []
        for quality in range(k):
            words = [rng.choice(WORDS) for _ in range(24)]
            for _ in range(quality):
                words.insert(rng.randrange(len(words)), "excellent")
            texts.append(" ".join(words))
        order = list(range(k))
        rng.shuffle(order)
        completions = [texts[q] for q in order]
        groups = [[order.index(q)] for q in reversed(range(k))]
        rankings.append(Ranking(f"Describe scene {i} in a few words.", completions, groups))
    return rankings


def as_pairs(rankings):
    return [Ranking(r.prompt, [r.completions[i], r.completions[j]], [[0], [1]]) for r in rankings for i, j in r.pairs()]


def model_folder(args):
    return Path(args.model) if args.model else prepare_smollm2(DEFAULT_MODEL)


def throughput(args):
    folder = model_folder(args)
    tokenizer = load_tokenizer(folder)
    print(f"model {folder.name}, {torch.get_num_threads()} threads; {args.steps} timed steps after one warm-up; "
          f"each step forwards {args.sequences} sequences of about 30 tokens")
    print(f"{'K':>2} {'mode':<12} {'prompts/step':>12} {'pairs/step':>10} {'s/step':>7} {'comparisons/s':>13}")
    rows = []
    for k in (4, 9):
        kway = graded_rankings(args.sequences // k * (args.steps + 1), k, seed=k)
        for mode, items, per_step in (("K-way", kway, args.sequences // k), ("pairs", as_pairs(kway), args.sequences // 2)):
            torch.manual_seed(0)
            model = RewardModel.from_pretrained(folder)
            config = RewardConfig(data="-", output="-", batch_size=per_step, device="cpu")
            trainer = RewardTrainer(config, model, tokenizer, items[: per_step * (args.steps + 1)])
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
            pairs, elapsed = 0, 0.0
            for step in range(args.steps + 1):
                batch = trainer.train[step * per_step:(step + 1) * per_step]
                start = time.perf_counter()
                loss, _ = trainer.loss(model, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step:  # the first step warms up allocators and kernels
                    elapsed += time.perf_counter() - start
                    pairs += len(ranking_pairs([groups for _, groups, _ in batch])[0])
            rate = pairs / elapsed
            rows.append((k, mode, rate))
            print(f"{k:>2} {mode:<12} {per_step:>12} {pairs // args.steps:>10} {elapsed / args.steps:>7.2f} {rate:>13.1f}")
    for k in (4, 9):
        kway, pairs = (rate for kk, _, rate in rows if kk == k)
        print(f"K={k}: K-way is {kway / pairs:.2f}x the pairs rate (ideal K-1 = {k - 1})")


def trl_side_by_side(args):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig as TRLConfig
    from trl import RewardTrainer as TRLTrainer

    folder = model_folder(args)
    train, held_out = graded_rankings(args.prompts, 4, seed=1), graded_rankings(args.prompts // 2, 4, seed=2)
    comparisons = sum(len(r.pairs()) for r in train)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_rankings(tmp / "train.jsonl", train)
        write_rankings(tmp / "held_out.jsonl", held_out)
        print(f"model {folder.name}; {len(train)} training rankings of K=4 ({comparisons} comparisons), "
              f"{len(held_out)} held out; one epoch, lr {args.lr}, {args.sequences} sequences per step")

        ours = {}
        for epochs in (1, 2):  # K-way takes C(K,2)/(K/2) times fewer steps per epoch: also compare at equal steps
            start = time.perf_counter()
            # The head read and trained as TRL's is: the last token, from random.
            summary = train_reward(RewardConfig(data=str(tmp / "train.jsonl"), model=str(folder),
                                                output=str(tmp / f"ours-{epochs}"), epochs=epochs, lr=args.lr,
                                                batch_size=args.sequences // 4, device="cpu", pooling="last",
                                                fit_head=False))
            seconds = time.perf_counter() - start
            accuracy = eval_reward(EvalRewardConfig(model=summary["output"], data=str(tmp / "held_out.jsonl")))
            ours[epochs] = (seconds, summary["steps"], accuracy["accuracy"])

        tokenizer = load_tokenizer(folder)
        pairs = [{"prompt": [{"role": "user", "content": r.prompt}],
                  "chosen": [{"role": "assistant", "content": r.completions[i]}],
                  "rejected": [{"role": "assistant", "content": r.completions[j]}]} for r in train for i, j in r.pairs()]
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        trl_args = TRLConfig(output_dir=str(tmp / "trl"), per_device_train_batch_size=args.sequences // 2,
                             num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine",
                             adam_beta2=0.95, report_to="none", save_strategy="no", logging_steps=1000,
                             use_cpu=True, max_length=512, disable_tqdm=True,
                             # TRL's defaults are bf16 and gradient checkpointing; both trainers run fp32 without.
                             bf16=False, gradient_checkpointing=False)
        trainer = TRLTrainer(model=model, args=trl_args, train_dataset=Dataset.from_list(pairs),
                             processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        trl_seconds = time.perf_counter() - start
        trainer.save_model(str(tmp / "trl-model"))
        tokenizer.save_pretrained(tmp / "trl-model")
        trl_accuracy = eval_reward(EvalRewardConfig(model=str(tmp / "trl-model"),
                                                    data=str(tmp / "held_out.jsonl")))["accuracy"]
    trl_steps = trainer.state.global_step
    print(f"{'trainer':<34} {'steps':>5} {'seconds':>8} {'comparisons/s':>13} {'held-out accuracy':>17}")
    for epochs, (seconds, steps, accuracy) in ours.items():
        print(f"{f'rlhf train-rm, K-way, {epochs} epoch(s)':<34} {steps:>5} {seconds:>8.1f} "
              f"{comparisons * epochs / seconds:>13.1f} {accuracy:>17.3f}")
    print(f"{'TRL RewardTrainer, pairs, 1 epoch':<34} {trl_steps:>5} {trl_seconds:>8.1f} "
          f"{comparisons / trl_seconds:>13.1f} {trl_accuracy:>17.3f}")


def write_rankings(path, rankings):
    with open(path, "w") as f:
        for r in rankings:
            f.write(json.dumps({"prompt": r.prompt, "completions": r.completions, "ranks": r.groups}) + "\n")


def hh_messages(text):
    """An HH-RLHF dialogue ("\n\nHuman: ... \n\nAssistant: ...") as chat messages, as the site's rankings are."""
    parts = re.split(r"\n\n(Human|Assistant): ?", text)
    return [{"role": "user" if role == "Human" else "assistant", "content": content.strip()}
            for role, content in zip(parts[1::2], parts[2::2])]


def hh_accuracy(args):
    folder = model_folder(args)
    pairs = load_rankings(HH)
    random.Random(0).shuffle(pairs)
    test, train = pairs[: args.test], pairs[args.test:]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, rows in (("train", train), ("test", test)):
            with open(tmp / f"{name}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps({"chosen": hh_messages(r.completions[0]),
                                        "rejected": hh_messages(r.completions[1])}) + "\n")
        options = dict(batch_size=args.batch_size, max_length=args.max_length, device="cpu", epochs=args.epochs,
                       train_top_layers=args.train_top_layers, pooling=args.pooling, fit_head=args.fit_head)
        if args.pairs or not args.epochs:  # the head alone: one forward pass, every pair by default
            steps = (args.pairs or len(train)) // args.batch_size
        else:  # fit the budget: time two steps, then train on as many pairs as the minutes allow
            probe = RewardConfig(data=str(tmp / "train.jsonl"), model=str(folder), output=str(tmp / "probe"),
                                 **{**options, "max_steps": 2, "fit_head": False, "epochs": 1})
            start = time.perf_counter()
            train_reward(probe)
            steps = max(1, int(args.minutes * 60 * 0.8 / ((time.perf_counter() - start) / 2)))
        used = min(len(train), steps * args.batch_size)
        with open(tmp / "train.jsonl") as f:
            head = [next(f) for _ in range(used)]
        (tmp / "train-used.jsonl").write_text("".join(head))
        config = RewardConfig(data=str(tmp / "train-used.jsonl"), model=str(folder), output=str(tmp / "rm"),
                              lr=args.lr, warmup_steps=max(1, steps // 20), **options)
        start = time.perf_counter()
        summary = train_reward(config)
        train_seconds = time.perf_counter() - start
        metrics = eval_reward(EvalRewardConfig(model=summary["output"], data=str(tmp / "test.jsonl"),
                                               max_length=args.max_length))
        if args.save:
            shutil.copytree(summary["output"], args.save, dirs_exist_ok=True)
    print(json.dumps({"model": folder.name, "train_pairs": used, "test_pairs": len(test), "max_length": args.max_length,
                      "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs, "pooling": args.pooling,
                      "fit_head": args.fit_head, "train_top_layers": args.train_top_layers,
                      "head_cv_accuracy": summary.get("head_cv_accuracy"),
                      "train_minutes": round(train_seconds / 60, 1),
                      "total_minutes": round((time.perf_counter() - started) / 60, 1),
                      "held_out_accuracy": round(metrics["accuracy"], 3),
                      "shorter_wins_baseline": round(metrics["shorter_wins_accuracy"], 3)}, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["throughput", "trl", "hh"])
    parser.add_argument("--model", help="Model folder (default: SmolLM2-135M-Instruct under artifacts/).")
    parser.add_argument("--steps", type=int, default=4, help="throughput: timed steps per setting.")
    parser.add_argument("--sequences", type=int, default=36, help="Sequences per forward pass (divisible by 4 and 9).")
    parser.add_argument("--prompts", type=int, default=48, help="trl: training rankings (K=4).")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--minutes", type=float, default=20, help="hh: CPU time budget for fine-tuning steps.")
    parser.add_argument("--pairs", type=int, help="hh: train on this many pairs instead of fitting --minutes.")
    parser.add_argument("--test", type=int, default=500, help="hh: pairs held out for testing.")
    parser.add_argument("--batch-size", type=int, default=8, help="hh: pairs per step.")
    parser.add_argument("--max-length", type=int, default=256, help="hh: token limit per conversation.")
    parser.add_argument("--train-top-layers", type=int, default=0, help="hh: train only the top N blocks (0: all).")
    parser.add_argument("--epochs", type=int, default=0, help="hh: passes after the head is fitted (0: the head alone).")
    parser.add_argument("--pooling", choices=["mean", "last"], default="mean", help="hh: what the head reads.")
    parser.add_argument("--fit-head", action=argparse.BooleanOptionalAction, default=True,
                        help="hh: fit the head to the frozen model's features first.")
    parser.add_argument("--save", help="hh: copy the trained reward model to this folder (bench/ppo.py uses it).")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    {"throughput": throughput, "trl": trl_side_by_side, "hh": hh_accuracy}[args.what](args)


if __name__ == "__main__":
    main()
