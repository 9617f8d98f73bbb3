"""Benchmark: batched sampling against one completion at a time, generated tokens per second.

    .venv/bin/python bench/sampling.py

SmolLM2-135M-Instruct on the CPU (prepared under artifacts/ on first use) unless --model names
another folder. Batched: `--prompts` prompts at once, K completions each, in one generate call.
One at a time: the same prompts, one completion per generate call, K calls per prompt.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlhf.config import DEFAULT_MODEL  # noqa: E402
from rlhf.prepare import prepare_smollm2  # noqa: E402
from rlhf.sampling import HFSampler, SamplingParams  # noqa: E402

PROMPTS = [
    "What is the capital of France?", "Give me three tips for a good night's sleep.",
    "Write a haiku about autumn leaves.", "Explain what a black hole is to a ten-year-old.",
    "How do I make a cup of green tea?", "Name three uses for a paperclip.",
    "Summarise the plot of Romeo and Juliet in two sentences.", "What should I pack for a day hike?",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Model folder (default: SmolLM2-135M-Instruct under artifacts/).")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    folder = Path(args.model) if args.model else prepare_smollm2(DEFAULT_MODEL)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    print(f"model {folder.name}, {torch.get_num_threads()} threads; {len(prompts)} prompts x K={args.k}, "
          f"max {args.max_new_tokens} new tokens, temperature 0.7")
    print(f"{'mode':<16} {'seconds':>8} {'completions':>11} {'tokens':>7} {'tokens/s':>9}")
    batched = HFSampler(str(folder), device="cpu", batch_size=len(prompts))
    batched.sample(prompts[:1], 1, params)  # warm-up
    rates = {}
    for mode in ("batched", "one at a time"):
        start = time.perf_counter()
        if mode == "batched":
            samples = [s for group in batched.sample(prompts, args.k, params) for s in group]
        else:
            samples = [batched.sample([p], 1, SamplingParams(**{**params.__dict__, "seed": n}))[0][0]
                       for p in prompts for n in range(args.k)]
        seconds = time.perf_counter() - start
        tokens = sum(s.token_count for s in samples)
        rates[mode] = tokens / seconds
        print(f"{mode:<16} {seconds:>8.1f} {len(samples):>11} {tokens:>7} {rates[mode]:>9.1f}")
    print(f"batched is {rates['batched'] / rates['one at a time']:.1f}x one at a time")


if __name__ == "__main__":
    main()
