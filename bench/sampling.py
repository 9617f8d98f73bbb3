"""Benchmark: batched sampling against one completion at a time, and through an endpoint against in-process.

    .venv/bin/python bench/sampling.py                              # batched vs one at a time
    .venv/bin/python bench/sampling.py --endpoint --concurrency 1,4,16   # rlhf serve vs in-process

SmolLM2-135M-Instruct on the CPU (prepared under artifacts/ on first use) unless --model names
another folder. Batched: `--prompts` prompts at once, K completions each, in one generate call.
One at a time: the same prompts, one completion per generate call, K calls per prompt.
--endpoint: `python -m rlhf serve` in another process, C requests at once (one prompt, n=K each, as
the site sends them), against the site's in-process sampler given the same C prompts (batches of 8).
"""

import argparse
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from rlhf.config import DEFAULT_MODEL  # noqa: E402
from rlhf.prepare import prepare_smollm2  # noqa: E402
from rlhf.sampling import HFSampler, OpenAISampler, SamplingParams, ServerError  # noqa: E402

PROMPTS = [
    "What is the capital of France?", "Give me three tips for a good night's sleep.",
    "Write a haiku about autumn leaves.", "Explain what a black hole is to a ten-year-old.",
    "How do I make a cup of green tea?", "Name three uses for a paperclip.",
    "Summarise the plot of Romeo and Juliet in two sentences.", "What should I pack for a day hike?",
]


def start_server(folder):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--model", str(folder), "--model-version",
                               "policy-base", "--port", str(port), "--device", "cpu"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = OpenAISampler(f"http://127.0.0.1:{port}/v1", "policy-base", timeout=600)
    for _ in range(240):
        try:
            client.models()
            return server, client
        except ServerError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("rlhf serve did not start")


def endpoint_against_in_process(folder, prompts, args, params):
    local = HFSampler(str(folder), device="cpu", batch_size=8)  # as the site's in-process sampler
    local.sample(prompts[:1], 1, params)
    server, client = start_server(folder)
    try:
        client.sample(prompts[:1], 1, params)  # warm-up
        print(f"{'backend':<12} {'concurrent':>10} {'seconds':>8} {'completions':>11} {'tokens':>7} "
              f"{'tokens/s':>9} {'completions/s':>13}")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            chosen = (prompts * (concurrency // len(prompts) + 1))[:concurrency]
            for backend in ("in-process", "endpoint"):
                start = time.perf_counter()
                if backend == "in-process":
                    samples = [s for group in local.sample(chosen, args.k, params) for s in group]
                else:
                    with ThreadPoolExecutor(concurrency) as pool:
                        groups = pool.map(lambda p: client.sample([p], args.k, params)[0], chosen)
                        samples = [s for group in groups for s in group]
                seconds = time.perf_counter() - start
                tokens = sum(s.token_count for s in samples)
                print(f"{backend:<12} {concurrency:>10} {seconds:>8.1f} {len(samples):>11} {tokens:>7} "
                      f"{tokens / seconds:>9.1f} {len(samples) / seconds:>13.2f}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Model folder (default: SmolLM2-135M-Instruct under artifacts/).")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--endpoint", action="store_true", help="rlhf serve in another process vs in-process.")
    parser.add_argument("--concurrency", default="1,4,16", help="--endpoint: requests at once, comma-separated.")
    args = parser.parse_args()
    folder = Path(args.model) if args.model else prepare_smollm2(DEFAULT_MODEL)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    print(f"model {folder.name}, {torch.get_num_threads()} threads; {len(prompts)} prompts x K={args.k}, "
          f"max {args.max_new_tokens} new tokens, temperature 0.7")
    if args.endpoint:
        return endpoint_against_in_process(folder, prompts, args, params)
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
