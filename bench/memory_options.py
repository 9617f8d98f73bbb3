"""Peak memory and seconds per step of SFT with each memory option, measured on CPU.

    .venv/bin/python bench/memory_options.py
    .venv/bin/python bench/memory_options.py --model artifacts/models/SmolLM2-135M-Instruct --steps 4 \\
        --batch-size 8 --micro-batch-size 2 --max-length 64 --threads 1

Each configuration trains in a fresh `python -m rlhf train-sft` process on the same demonstrations,
every one cut to exactly --max-length tokens, for --steps optimizer steps. Peak RSS is the child's
(getrusage through wait4), which includes the Python, torch and transformers runtime (the first row
measures that alone). Seconds per step are the median of metrics.jsonl's `elapsed` differences after
the first step, which also pays for first-touch allocations; one thread by default, as a CPU shared
with other work makes torch's threads wait on each other. The loss of the first step shows what each option
changes in the numbers: micro-batches nothing but rounding, bf16 a little.
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
CONFIGURATIONS = {
    "none": [],
    "gradient_checkpointing": ["--gradient-checkpointing"],
    "mixed_precision bf16": ["--mixed-precision", "bf16"],
    "micro_batch_size {micro}": ["--micro-batch-size", "{micro}"],
    "all three": ["--gradient-checkpointing", "--mixed-precision", "bf16", "--micro-batch-size", "{micro}"],
}
WORDS = ("river mountain lantern quiet harbour copper meadow violet engine paper window thunder garden "
         "silver orchard candle north market winter signal").split()


def write_demonstrations(path, count):
    """Demonstrations whose answers are far longer than any --max-length here, so each is cut to exactly it."""
    rows = []
    for n in range(count):
        answer = " ".join(WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(1500))
        rows.append({"messages": [{"role": "user", "content": f"Describe scene {n}."},
                                  {"role": "assistant", "content": answer}]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def run(command, log, threads, env=None):
    """(peak RSS in bytes, None) of a fresh child process, or (None, the last line it wrote when it failed)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads),
                                        **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
        return None, lines[-1] if lines else f"exit status {os.waitstatus_to_exitcode(status)}"
    return usage.ru_maxrss * 1024, None  # Linux reports kilobytes


def seconds_per_step(output):
    """(median seconds of the steps after the first, the first step's loss) from the run's metrics.jsonl."""
    steps = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    elapsed = [step["elapsed"] for step in steps if "split" not in step]
    later = [b - a for a, b in itertools.pairwise(elapsed)]
    return statistics.median(later) if later else float("nan"), steps[0]["loss"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "demonstrations.jsonl"
        write_demonstrations(data, args.batch_size * args.steps)
        runtime, why = run([sys.executable, "-c", "import rlhf.train_sft"], tmp / "runtime.log", args.threads)
        if why:
            sys.exit(f"importing rlhf.train_sft failed: {why}")
        rows.append(("(imports only)", runtime, None, None))
        for name, options in CONFIGURATIONS.items():
            name = name.format(micro=args.micro_batch_size)
            options = [option.format(micro=args.micro_batch_size) for option in options]
            output = tmp / name.replace(" ", "-")
            command = [sys.executable, "-m", "rlhf", "train-sft", "--data", str(data), "--model", args.model,
                       "--output", str(output), "--epochs", "1", "--max-steps", str(args.steps), "--batch-size",
                       str(args.batch_size), "--max-length", str(args.max_length), "--device", "cpu", *options]
            rss, why = run(command, tmp / "run.log", args.threads)
            if why:
                print(f"{name}: failed: {why}", flush=True)
                continue
            step, loss = seconds_per_step(output)
            rows.append((name, rss, step, loss))
            print(f"{name}: {rss / GIB:.2f} GiB, {step:.2f} s/step", flush=True)
    print(f"\nSFT of {Path(args.model).name} on CPU ({args.threads} of {os.cpu_count()} cores' threads): "
          f"{args.steps} steps of {args.batch_size} demonstrations x {args.max_length} tokens\n")
    print("| options | peak RSS (GiB) | s/step | loss, step 1 |")
    print("|---|---:|---:|---:|")
    for name, rss, step, loss in rows:
        print(f"| {name} | {rss / GIB:.2f} | " + (f"{step:.2f} | {loss:.4f} |" if step is not None else "– | – |"))


if __name__ == "__main__":
    main()
