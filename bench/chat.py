"""Benchmark: replies streamed to chats, in-process and through `python -m rlhf serve`.

    .venv/bin/python bench/chat.py --concurrency 1,4,16
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/chat.py --api --chats 4 --labelers 8

SmolLM2-135M-Instruct on the CPU (prepared under artifacts/ on first use) unless --model names
another folder. C chats at once, each one streamed reply of at most --max-new-tokens: in-process,
C threads each streaming from one shared `HFSampler` (generation threads side by side on the one
model); through the endpoint, C clients streaming from `rlhf serve` in another process (which
generates one reply at a time). Time to first token is from asking to the first piece of text;
tokens/s counts every chat's tokens over the wall time of the round. With --api, the labeler API's
latency while chats stream through the whole site instead (bench/chat_api.py).
"""

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import chat_api  # noqa: E402
import torch  # noqa: E402
from sampling import PROMPTS, start_server  # noqa: E402

from rlhf.config import DEFAULT_MODEL  # noqa: E402
from rlhf.prepare import prepare_smollm2  # noqa: E402
from rlhf.sampling import HFSampler, SamplingParams  # noqa: E402


def one_chat(sampler, prompt, params):
    """(seconds to the first piece, tokens) of one streamed reply."""
    asked = time.perf_counter()
    first = None
    for item in sampler.stream([{"role": "user", "content": prompt}], params):
        if first is None and isinstance(item, str):
            first = time.perf_counter() - asked
    return first if first is not None else time.perf_counter() - asked, item.token_count or 0


def round_of(sampler, concurrency, params):
    prompts = (PROMPTS * (concurrency // len(PROMPTS) + 1))[:concurrency]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda p: one_chat(sampler, p, params), prompts))
    seconds = time.perf_counter() - start
    firsts = sorted(first for first, _ in results)
    tokens = sum(count for _, count in results)
    return statistics.median(firsts), firsts[-1], tokens / seconds, tokens / seconds / concurrency


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Model folder (default: SmolLM2-135M-Instruct under artifacts/).")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", default="1,4,16", help="Chats at once, comma-separated.")
    parser.add_argument("--api", action="store_true",
                        help="Measure the labeler API while chats stream through the site instead (bench/chat_api.py).")
    parser.add_argument("--chats", type=int, default=4, help="With --api: chats streaming at once.")
    parser.add_argument("--labelers", type=int, default=8, help="With --api: labelers in closed loop.")
    parser.add_argument("--seconds", type=float, default=20, help="With --api: the length of each run.")
    parser.add_argument("--seed-api", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate-only", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_api:
        return chat_api.seed(*args.seed_api)
    if args.generate_only:
        return chat_api.generate(int(args.generate_only[0]), args.generate_only[1])
    folder = Path(args.model) if args.model else prepare_smollm2(DEFAULT_MODEL)
    if args.api:
        return chat_api.run(folder, args.chats, args.labelers, args.seconds, workers=2, threads=16, tasks=5000)
    params = SamplingParams(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    print(f"model {folder.name}, {torch.get_num_threads()} threads, at most {args.max_new_tokens} new tokens a reply")
    local = HFSampler(str(folder), device="cpu")
    server, client = start_server(folder)
    try:
        for sampler in (local, client):  # warm-up
            one_chat(sampler, PROMPTS[0], params)
        print(f"{'backend':<12} {'chats':>5} {'first token, median s':>21} {'slowest s':>9} {'tokens/s':>8} "
              f"{'per chat':>8}")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for backend, sampler in (("in-process", local), ("endpoint", client)):
                median, slowest, rate, per_chat = round_of(sampler, concurrency, params)
                print(f"{backend:<12} {concurrency:>5} {median:>21.2f} {slowest:>9.2f} {rate:>8.1f} {per_chat:>8.1f}",
                      flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
