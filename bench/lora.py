"""LoRA against full weights: peak memory and seconds per step of SFT, the reward model and PPO, and the reward
model's held-out HH-RLHF accuracy after the same minutes of training.

    .venv/bin/python bench/lora.py speed --modes full,lora-dropout   # SFT, reward model, PPO: full, LoRA, twice
    .venv/bin/python bench/lora.py speed --jobs ppo --modes lora,lora-bf16,lora-checkpointing --repeats 1
    .venv/bin/python bench/lora.py profile --mode lora    # where a PPO step's time and memory go
    .venv/bin/python bench/lora.py profile --mode lora --patch response-logits,generation-logits,merged-rollout
    .venv/bin/python bench/lora.py saved                  # what autograd keeps: full, LoRA, LoRA without dropout
    .venv/bin/python bench/lora.py merge-drift            # what merging an adapter in and out does to the base
    .venv/bin/python bench/lora.py accuracy --minutes 4   # HH held-out accuracy after the same minutes of steps

bench/README.md lists the commands behind its figures.

`speed` runs each configuration in a fresh `python -m rlhf` process on SmolLM2-135M-Instruct (fp32, CPU, one
thread: on a CPU shared with other work, torch's threads wait on each other and times swing tenfold): the modes
of a job back to back, then again --repeats times. LoRA is rank 16, alpha 32, on every linear layer; `lora`
takes rlhf's other defaults (lora_dropout 0 since 77ba85b), `lora-dropout` sets 0.05 (the default before).
SFT: 4 demonstrations of exactly 256 tokens per step. Reward model: 4 HH-RLHF pairs (K=2) per step, cut to 256
tokens, the head from random (`--no-fit-head`: steps alone, nothing fitted before them). PPO: the policy
SmolLM2, the reward model SmolLM2 too (a language model folder gives a random head; the value model starts
from it), HH prompts, rollout batch 4, minibatch 2, 2 PPO epochs, 32 new tokens, no ptx. Peak RSS is the
child's (getrusage through wait4), Python, torch, transformers and peft included (the imports alone are
measured first). Seconds per step are the median of metrics.jsonl's `elapsed` differences after the first
step, so loading and first-touch allocations are not in them.

`profile` runs the same PPO in this process and times each phase (generation, the rollout's forward passes, each
minibatch's forward passes, backward pass and optimizer step), with the resident set before and after each call
and its peak within it (VmHWM, reset through /proc/self/clear_refs). `--patch` first applies changes to rlhf's
PPO that this benchmark proposes, by monkeypatching (see PATCHES).

`accuracy` trains the reward model on HH-RLHF with the split of `bench/reward_model.py hh` (the first 500 of the
shuffled pairs held out, the rest to train on, conversations as chat messages cut to 128 tokens), 8 pairs per
step from a random head, full weights and LoRA each for --minutes of optimizer steps: a 3-step probe measures
each one's seconds per step and the run gets as many steps as fit; then `python -m rlhf eval-rm` on the 500.
"""

import argparse
import gzip
import itertools
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

from memory_options import run  # bench/memory_options.py: a fresh child's peak RSS
from reward_model import HH, hh_messages  # bench/reward_model.py: the HH-RLHF file and how it reads a dialogue

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "artifacts" / "models" / "SmolLM2-135M-Instruct"
GIB = 2**30
PYTHON = sys.executable


def first_question(text):
    return text.split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def speed_data(folder, count=32):
    """Demonstrations whose answers outrun 256 tokens (so each is cut to exactly --max-length), HH chosen/rejected
    pairs as chat messages (lengths as they come) and the first human turns of HH dialogues as PPO prompts."""
    with gzip.open(HH, "rt") as f:
        rows = [json.loads(line) for line in f]
    texts = [row["chosen"] for row in rows]
    long = ["".join(texts[n:n + 8])[:2400] for n in range(0, 8 * count, 8)]
    return {
        "demonstrations": write_jsonl(folder / "demonstrations.jsonl", [
            {"messages": [{"role": "user", "content": first_question(texts[n])},
                          {"role": "assistant", "content": long[n]}]} for n in range(count)]),
        "pairs": write_jsonl(folder / "pairs.jsonl", [
            {"chosen": hh_messages(row["chosen"]), "rejected": hh_messages(row["rejected"])} for row in rows[:count]]),
        "prompts": write_jsonl(folder / "prompts.jsonl", [{"prompt": first_question(t)} for t in texts[:count]]),
    }


def training_steps(output):
    return [step for step in map(json.loads, (output / "metrics.jsonl").read_text().splitlines())
            if "split" not in step]


def seconds_per_step(steps):
    later = [b["elapsed"] - a["elapsed"] for a, b in itertools.pairwise(steps)]
    return statistics.median(later) if later else float("nan")


def job_command(job, data, output, args, options):
    common = ["--device", "cpu", "--output", str(output), *options]
    if job == "sft":
        return [PYTHON, "-m", "rlhf", "train-sft", "--data", data["demonstrations"], "--model", args.model,
                "--epochs", "1", "--max-steps", str(args.steps), "--batch-size", "4", "--max-length", "256", *common]
    if job == "rm":
        return [PYTHON, "-m", "rlhf", "train-rm", "--data", data["pairs"], "--model", args.model, "--epochs", "1",
                "--no-fit-head", "--max-steps", str(args.steps), "--batch-size", "4", "--max-length", "256", *common]
    return [PYTHON, "-m", "rlhf", "train-ppo", "--data", data["prompts"], "--policy", args.model,
            "--reward-model", args.model, "--steps", str(args.ppo_steps), "--rollout-batch-size", "4",
            "--minibatch-size", "2", "--max-new-tokens", "32", *common]


MMAP = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
CONFIGURATIONS = {  # name: (row label, options, environment); {rank} is --rank
    "full": ("full", [], {}),
    "lora": ("LoRA r{rank}", ["--lora-rank", "{rank}"], {}),  # rlhf's defaults: lora_dropout 0 since 77ba85b
    "lora-dropout": ("LoRA r{rank}, lora_dropout 0.05", ["--lora-rank", "{rank}", "--lora-dropout", "0.05"], {}),
    "lora-bf16": ("LoRA r{rank}, bf16", ["--lora-rank", "{rank}", "--mixed-precision", "bf16"], {}),
    "lora-checkpointing": ("LoRA r{rank}, gradient checkpointing",
                           ["--lora-rank", "{rank}", "--gradient-checkpointing"], {}),
    # glibc serves blocks under its mmap threshold from heaps it rarely gives back, and raises the threshold
    # (up to 32 MiB) each time a larger mmapped block is freed; fixed at 1 MiB, blocks that size and larger go back
    # to the system when freed.
    "full-mmap": ("full, MALLOC_MMAP_THRESHOLD_ 1 MiB", [], MMAP),
    "lora-mmap": ("LoRA r{rank}, MALLOC_MMAP_THRESHOLD_ 1 MiB", ["--lora-rank", "{rank}"], MMAP),
    "lora-dropout-mmap": ("LoRA r{rank}, lora_dropout 0.05, MALLOC_MMAP_THRESHOLD_ 1 MiB",
                          ["--lora-rank", "{rank}", "--lora-dropout", "0.05"], MMAP),
}


def speed(args):
    modes = args.modes.split(",")
    labels = {mode: CONFIGURATIONS[mode][0].format(rank=args.rank) for mode in CONFIGURATIONS}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = speed_data(tmp)
        runtime, why = run([PYTHON, "-c", "import peft, rlhf.train_sft, rlhf.train_reward, rlhf.train_ppo"],
                           tmp / "imports.log", args.threads)
        if why:
            sys.exit(f"importing the trainers failed: {why}")
        print(f"imports alone: {runtime / GIB:.2f} GiB", flush=True)
        for job in args.jobs.split(","):
            for n, mode in enumerate(modes * args.repeats):  # the modes of a job back to back, then again
                options = [option.format(rank=args.rank) for option in CONFIGURATIONS[mode][1]]
                output = tmp / f"{job}-{n}"
                rss, why = run(job_command(job, data, output, args, options), tmp / f"{job}-{n}.log", args.threads,
                               CONFIGURATIONS[mode][2])
                if why:
                    print(f"{job} {labels[mode]}: failed: {why}", flush=True)
                    continue
                steps = training_steps(output)
                first = {key: steps[0][key] for key in ("loss", "reward", "policy_loss", "value_loss")
                         if key in steps[0]}
                rows.append({"job": job, "mode": mode, "rss": rss, "s_per_step": seconds_per_step(steps),
                             "first_step": first})
                print(f"{job} {labels[mode]}: {rss / GIB:.2f} GiB, {rows[-1]['s_per_step']:.2f} s/step, "
                      f"step 1 {first}", flush=True)
    print(f"\nSmolLM2-135M-Instruct, fp32 on CPU, OMP_NUM_THREADS={args.threads}; imports alone "
          f"{runtime / GIB:.2f} GiB\n")
    print("| job | weights trained | peak RSS (GiB) | s/step | steps/s against full's |")
    print("|---|---|---:|---:|---:|")
    for job in args.jobs.split(","):
        full = [r["s_per_step"] for r in rows if r["job"] == job and r["mode"] == "full"]
        for mode in modes:
            mine = [r for r in rows if r["job"] == job and r["mode"] == mode]
            if not mine:
                continue
            rss = " / ".join(f"{r['rss'] / GIB:.2f}" for r in mine)
            step = " / ".join(f"{r['s_per_step']:.2f}" for r in mine)
            ratio = " / ".join(f"{f / r['s_per_step']:.2f}x" for f, r in zip(full, mine, strict=False))
            print(f"| {job} | {labels[mode]} | {rss} | {step} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


class Phases:
    """Wall time, the resident set before and after, and its peak within each call of the phases wrapped."""

    def __init__(self):
        self.calls, self.open = [], []

    @staticmethod
    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def wrap(self, name, function):
        import time

        def timed(*args, **kwargs):
            # The peak (VmHWM) restarts from the current RSS at each call; the calls this one runs inside
            # keep the peak they had reached.
            for outer in self.open:
                outer["peak"] = max(outer["peak"], self.status("VmHWM"))
            Path("/proc/self/clear_refs").write_text("5")
            call = {"name": name, "depth": len(self.open), "before": self.status("VmRSS"), "peak": 0}
            self.calls.append(call)
            self.open.append(call)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.open.pop()
                call["seconds"] = time.perf_counter() - start
                call["peak"] = max(call["peak"], self.status("VmHWM"))
                call["after"] = self.status("VmRSS")
        return timed

    def table(self, calls):
        lines = ["| phase | seconds | RSS before (GiB) | peak within | RSS after |", "|---|---:|---:|---:|---:|"]
        for c in calls:
            lines.append(f"| {'. ' * c['depth']}{c['name']} | {c['seconds']:.2f} | {c['before'] / GIB:.2f} | "
                         f"{c['peak'] / GIB:.2f} | {c['after'] / GIB:.2f} |")
        return "\n".join(lines)

    def totals(self, calls):
        """Seconds per phase over `calls`, and the highest peak within it."""
        rows = {}
        for c in calls:
            row = rows.setdefault(c["name"], {"calls": 0, "seconds": 0.0, "peak": 0})
            row["calls"] += 1
            row["seconds"] += c["seconds"]
            row["peak"] = max(row["peak"], c["peak"])
        lines = ["| phase | calls | seconds | highest peak within (GiB) |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {r['calls']} | {r['seconds']:.1f} | {r['peak'] / GIB:.2f} |" for name, r in rows.items()]
        return "\n".join(lines)


def reuse_generation_logits(train_ppo, stash):
    """The rollout's policy log-probabilities from the logits generate computed (as TRL's PPO does) instead of a
    second forward pass over prompt and response: `generate` keeps them, and the policy's next forward hands them
    back in the shape `response_logprobs` reads (zeros where it does not read)."""
    import torch
    import torch.nn.functional as F

    generate, forward = train_ppo.generate, train_ppo.forward

    def generate_keeping_logits(policy, *args, **kwargs):
        original = policy.generate

        def keeping(**options):
            out = original(**options, output_logits=True, return_dict_in_generate=True)
            stash["logits"], stash["policy"] = torch.stack(out.logits, 1), policy
            return out.sequences

        policy.generate = keeping
        try:
            return generate(policy, *args, **kwargs)
        finally:
            del policy.generate

    def forward_reusing(model, input_ids, attention_mask):
        if stash.get("policy") is model:
            logits = stash.pop("logits")
            stash.pop("policy")
            prompt = input_ids.shape[1] - logits.shape[1]
            return F.pad(logits, (0, 0, prompt - 1, 1))
        return forward(model, input_ids, attention_mask)

    train_ppo.generate, train_ppo.forward = generate_keeping_logits, forward_reusing


def response_logits_only(train_ppo, stash):
    """The policy's LM head run only where `response_logprobs` reads (the last prompt position on), as TRL does;
    zeros before. PPO's minibatch step and rollout pass the prompt length on, which `forward` does not get."""
    import torch.nn.functional as F

    from rlhf.models import position_ids

    generate, minibatch_step = train_ppo.generate, train_ppo.PPOTrainer.minibatch_step

    def generate_noting_prompt(*args, **kwargs):
        g = generate(*args, **kwargs)
        stash["prompt_length"] = g.prompt_length
        return g

    def minibatch_step_noting_prompt(self, policy, value_model, optimizer, batch, ptx, prompt_length):
        stash["prompt_length"] = None if ptx else prompt_length  # pretraining rows need every position
        return minibatch_step(self, policy, value_model, optimizer, batch, ptx, prompt_length)

    def forward_response_only(model, input_ids, attention_mask):
        keep = input_ids.shape[1] - stash["prompt_length"] + 1 if stash.get("prompt_length") else 0
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                       logits_to_keep=keep).logits
        return F.pad(logits, (0, 0, input_ids.shape[1] - logits.shape[1], 0))

    train_ppo.generate, train_ppo.PPOTrainer.minibatch_step = generate_noting_prompt, minibatch_step_noting_prompt
    train_ppo.forward = forward_response_only


def merged_rollout(train_ppo, stash):
    """With LoRA, the adapter merged into the policy's base for the rollout's generation and log-probabilities (no
    adapter layers to run per token), and taken out again before the reference's forward pass and the updates."""
    from rlhf import adapters

    generate, forward = train_ppo.generate, train_ppo.forward

    def generate_merged(policy, *args, **kwargs):
        if adapters.is_peft(policy):
            policy.merge_adapter()
            stash["merged"] = policy
        return generate(policy, *args, **kwargs)

    def forward_unmerging(model, input_ids, attention_mask):
        if stash.get("merged") is not None and model is not stash["merged"]:
            stash.pop("merged").unmerge_adapter()
        return forward(model, input_ids, attention_mask)

    train_ppo.generate, train_ppo.forward = generate_merged, forward_unmerging


def merge_drift(args):
    """How far merging an adapter into the base and taking it out again moves the base weights (float rounding):
    what `merged-rollout` would do to the reference at each rollout batch."""
    import torch

    sys.path.insert(0, str(ROOT))
    from rlhf import adapters
    from rlhf.config import PPOConfig

    policy, _ = adapters.policy_and_reference(PPOConfig(data="-", reward_model="-", lora_rank=args.rank),
                                              args.model, args.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:  # a trained adapter's scale, not the zeros a new one starts from
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
    base = {name: p.detach().clone() for name, p in policy.named_parameters() if "base_layer" in name}
    done = 0
    for cycles in (1, 10):
        while done < cycles:
            policy.merge_adapter()
            policy.unmerge_adapter()
            done += 1
        now = dict(policy.named_parameters())
        changed = sum((now[name] != weight).sum().item() for name, weight in base.items())
        worst = max(((now[name] - weight).abs().max() / weight.abs().max()).item() for name, weight in base.items())
        total = sum(weight.numel() for weight in base.values())
        print(f"after {cycles} merge and unmerge: {changed:,} of {total:,} base weights changed "
              f"({changed / total:.1%}), at most {worst:.1e} of their layer's largest weight")


PATCHES = {"response-logits": response_logits_only, "generation-logits": reuse_generation_logits,  # in this order
           "merged-rollout": merged_rollout}


def profile(args):
    """PPO in this process, each phase timed and its memory read (see the module's docstring)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from rlhf import adapters, models, train_ppo
    from rlhf.config import PPOConfig

    torch.set_num_threads(args.threads)
    stash = {}
    for name, patch in PATCHES.items():  # before the timing wrappers, so that they time the patched code
        if name in args.patch.split(","):
            patch(train_ppo, stash)
    phases = Phases()
    train_ppo.adapters.policy_and_reference = phases.wrap("load policy and reference",
                                                          adapters.policy_and_reference)
    train_ppo.adapters.value_and_reward = phases.wrap("load value and reward models", adapters.value_and_reward)
    train_ppo.load_policy = phases.wrap("load a policy", models.load_policy)
    train_ppo.RewardModel.from_pretrained = phases.wrap("load a reward model", models.RewardModel.from_pretrained)
    trainer = train_ppo.PPOTrainer
    trainer.rollout = phases.wrap("rollout", trainer.rollout)
    train_ppo.generate = phases.wrap("generate", train_ppo.generate)
    train_ppo.forward = phases.wrap("policy forward", train_ppo.forward)
    train_ppo.ValueModel.forward = phases.wrap("value model forward", train_ppo.ValueModel.forward)
    train_ppo.RewardScorer.__call__ = phases.wrap("reward model scores", train_ppo.RewardScorer.__call__)
    trainer.minibatch_step = phases.wrap("minibatch step", trainer.minibatch_step)
    torch.Tensor.backward = phases.wrap("backward", torch.Tensor.backward)
    torch.optim.AdamW.step = phases.wrap("optimizer step", torch.optim.AdamW.step)
    with tempfile.TemporaryDirectory() as tmp:
        data = speed_data(Path(tmp))
        config = PPOConfig(data=data["prompts"], policy=args.model, reward_model=args.model, output=f"{tmp}/ppo",
                           steps=args.ppo_steps, rollout_batch_size=4, minibatch_size=2, max_new_tokens=32,
                           device="cpu", lora_rank=args.rank if args.mode == "lora" else 0)
        train_ppo.train_ppo(config)
        steps = training_steps(Path(tmp) / "ppo")
    rollouts = [n for n, c in enumerate(phases.calls) if c["name"] == "rollout"]
    print(f"\nPPO, {args.mode}, changes: {args.patch or 'none'}; {len(steps)} rollout batches, s/step "
          f"{seconds_per_step(steps):.2f}, highest RSS "
          f"{max(c['peak'] for c in phases.calls) / GIB:.2f} GiB\n\nLoading and the first rollout batch:\n")
    print(phases.table(phases.calls[: rollouts[1] if len(rollouts) > 1 else None]))
    print("\nThe rollout batches after the first:\n")
    print(phases.totals(phases.calls[rollouts[1]:] if len(rollouts) > 1 else []))


def saved(args):
    """What autograd keeps from one training-mode forward pass of the reward model (mean pooling, 2 x 256 tokens),
    counted once per storage: full weights, LoRA, and LoRA without its dropout."""
    import torch

    sys.path.insert(0, str(ROOT))
    from rlhf.config import RewardConfig
    from rlhf.models import RewardModel

    torch.set_num_threads(args.threads)
    ids = torch.randint(100, 40000, (2, 256), generator=torch.Generator().manual_seed(0))
    print("| weights trained | kept for the backward pass (MiB) | of which weights | activations |")
    print("|---|---:|---:|---:|")
    for label, rank, dropout in (("full", 0, 0.05), (f"LoRA r{args.rank}, lora_dropout 0.05", args.rank, 0.05),
                                 (f"LoRA r{args.rank}, lora_dropout 0", args.rank, 0.0)):
        model = RewardModel.from_pretrained(args.model, lora=RewardConfig(data="-", output="-", lora_rank=rank,
                                                                          lora_dropout=dropout))
        model.pooling = "mean"
        model.train()
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        kept = {}

        def keep(tensor, kept=kept):
            storage = tensor.untyped_storage()
            kept[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            model(ids, torch.ones_like(ids))
        of_weights = sum(size for pointer, size in kept.items() if pointer in weights)
        total = sum(kept.values())
        print(f"| {label} | {total / 2**20:.0f} | {of_weights / 2**20:.0f} | {(total - of_weights) / 2**20:.0f} |")


def train_rm(output, steps, options, threads):
    """The HH recipe of bench/reward_model.py from a random head: 8 pairs per step, 128 tokens, a cosine schedule
    after a warm-up of a twentieth of the steps."""
    command = [PYTHON, "-m", "rlhf", "train-rm", "--output", str(output), "--epochs", "1", "--no-fit-head",
               "--batch-size", "8", "--max-length", "128", "--warmup-steps", str(max(1, steps // 20)), "--max-steps",
               str(steps), "--device", "cpu", *options]
    _, why = run(command, output.with_suffix(".log"), threads)
    if why:
        sys.exit(f"train-rm {' '.join(options)} failed: {why}")
    return training_steps(output)


def accuracy(args):
    """The reward model trained from a random head for the same minutes of steps, full weights and LoRA, then scored
    on held-out HH-RLHF pairs by eval-rm (see the module's docstring)."""
    from rlhf.data import load_rankings

    pairs = load_rankings(HH)
    random.Random(0).shuffle(pairs)  # the split of bench/reward_model.py hh
    test, train = pairs[: args.test], pairs[args.test:]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {name: write_jsonl(tmp / f"{name}.jsonl", [
            {"chosen": hh_messages(r.completions[0]), "rejected": hh_messages(r.completions[1])} for r in rows])
            for name, rows in (("train", train), ("test", test))}
        lora = ["--lora-rank", str(args.rank), *(["--lora-dropout", str(args.lora_dropout)]
                                                 if args.lora_dropout is not None else [])]
        for mode, lr, options in (("full", args.lr, []), (f"LoRA r{args.rank}", args.lora_lr, lora)):
            options = ["--data", files["train"], "--model", args.model, "--lr", str(lr), *options]
            probe = seconds_per_step(train_rm(tmp / f"probe-{len(results)}", 3, options, args.threads))
            steps = max(2, round(args.minutes * 60 / probe))
            trained = train_rm(tmp / f"rm-{len(results)}", steps, options, args.threads)
            output = tmp / f"rm-{len(results)}"
            _, why = run([PYTHON, "-m", "rlhf", "eval-rm", "--model", str(output / "model"), "--data", files["test"],
                          "--max-length", "128", "--device", "cpu", "--output", str(tmp / "eval.json")],
                         tmp / "eval.log", args.eval_threads)
            if why:
                sys.exit(f"eval-rm {mode} failed: {why}")
            metrics = json.loads((tmp / "eval.json").read_text())
            row = {"mode": mode, "lr": lr, "probe_s_per_step": probe, "steps": len(trained), "pairs": 8 * len(trained),
                   "train_seconds": trained[-1]["elapsed"], "s_per_step": seconds_per_step(trained),
                   "accuracy": metrics["accuracy"], "shorter_wins": metrics["shorter_wins_accuracy"]}
            results.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nHH-RLHF reward model, SmolLM2-135M-Instruct from a random head, 8 pairs per step, 128 tokens, "
          f"{args.minutes} minutes of steps each (OMP_NUM_THREADS={args.threads}); {len(test)} held-out pairs\n")
    print("| weights trained | lr | s/step | steps | pairs | seconds of steps | held-out accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['lr']:g} | {r['s_per_step']:.1f} | {r['steps']} | {r['pairs']} | "
              f"{r['train_seconds']:.0f} | {r['accuracy']:.3f} |")
    print(f"The shorter answer wins {results[0]['shorter_wins']:.3f} of the same pairs.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "profile", "saved", "merge-drift", "accuracy"])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--jobs", default="sft,rm,ppo", help="speed: any of sft, rm, ppo.")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank.")
    parser.add_argument("--repeats", type=int, default=2, help="speed: runs of each full/LoRA pair.")
    parser.add_argument("--steps", type=int, default=6, help="speed: optimizer steps of SFT and the reward model.")
    parser.add_argument("--ppo-steps", type=int, default=4, help="speed: PPO's rollout batches.")
    parser.add_argument("--modes", default="full,lora", help=f"speed: any of {', '.join(CONFIGURATIONS)}.")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS (speed) or torch threads (profile).")
    parser.add_argument("--mode", choices=["full", "lora"], default="lora", help="profile: which PPO.")
    parser.add_argument("--patch", default="", help=f"profile: changes to PPO to try, any of {', '.join(PATCHES)}.")
    parser.add_argument("--minutes", type=float, default=4, help="accuracy: minutes of optimizer steps for each.")
    parser.add_argument("--test", type=int, default=500, help="accuracy: held-out pairs (bench/reward_model.py's 500).")
    parser.add_argument("--lr", type=float, default=5e-5, help="accuracy: the full-weights learning rate.")
    parser.add_argument("--lora-lr", type=float, default=2e-4, help="accuracy: the LoRA learning rate.")
    parser.add_argument("--lora-dropout", type=float, help="accuracy: LoRA's dropout (default: rlhf's).")
    parser.add_argument("--eval-threads", type=int, default=2, help="accuracy: OMP_NUM_THREADS of eval-rm.")
    parser.add_argument("--json", help="Also write the rows here.")
    args = parser.parse_args()
    {"speed": speed, "profile": profile, "saved": saved, "merge-drift": merge_drift,
     "accuracy": accuracy}[args.what](args)


if __name__ == "__main__":
    main()
