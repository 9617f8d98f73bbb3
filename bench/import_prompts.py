"""Benchmark: import generated prompts through the full intake rules into PostgreSQL.

Each size runs in a fresh process against a scratch database (bench_import_prompts), so the
peak memory of one size does not leak into the next. Reports rows/s and peak RSS.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/import_prompts.py
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASKS = ["Write a short story about", "Explain to a ten-year-old how", "List five ideas for", "Summarize the debate on",
         "Draft an email to my landlord about", "Translate into French a note about", "Give me a recipe that uses",
         "What are the pros and cons of", "Rewrite more formally: my thoughts on", "Classify the sentiment of a review of"]
TOPICS = ["a lighthouse keeper", "tidal energy", "a birthday party on a budget", "remote work", "sourdough starters",
          "the history of the bicycle", "a broken heating system", "learning the cello as an adult", "urban beekeeping",
          "electric scooters", "a museum of forgotten inventions", "composting in a flat", "the Apollo program"]


def generate(path, rows, seed=0):
    """Unique prompts with 3% duplicates differing in case, spacing and punctuation, 1% near-duplicates with
    a few words added, 1% carrying an email, and a few users above the cap."""
    rng = random.Random(seed)
    recent = []
    with open(path, "w") as out:
        for i in range(rows):
            draw = rng.random()
            if recent and draw < 0.03:
                text = "  ".join(rng.choice(recent).upper().split(" ")).replace(".", "!!")
            elif recent and draw < 0.04:
                text = f"Please {rng.choice(recent)} Thanks."
            else:
                text = f"{rng.choice(TASKS)} {rng.choice(TOPICS)} #{i}. Keep it under {rng.randint(50, 400)} words."
                recent = [*recent[-999:], text]
            if rng.random() < 0.01:
                text += f" Reply to someone{i}@example.com."
            user = f"heavy-{rng.randrange(3)}" if rng.random() < 0.01 else f"user-{rng.randrange(rows // 5 + 1)}"
            out.write(json.dumps({"prompt": text, "source_user_id": user, "use_case": "generation"}) + "\n")


def child(rows):
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark")
    django.setup()
    from django.core.files import File
    from django.db import connection
    from tqdm import tqdm

    from labeling import services

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database; this benchmark measures PostgreSQL.")
    connection.settings_dict["TEST"]["NAME"] = "bench_import_prompts"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")  # the previous run's WAL is not written back in the middle of this one
    try:
        with tempfile.TemporaryDirectory() as folder:
            from django.conf import settings

            settings.MEDIA_ROOT = folder
            path = Path(folder) / "prompts.jsonl"
            generate(path, rows)
            with path.open("rb") as handle:
                job = services.import_job_create(uploaded_file=File(handle, name=path.name), created_by=None)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            with tqdm(total=job.size_bytes, unit="B", unit_scale=True, desc=f"{rows:,} rows", file=sys.stderr) as bar:
                start = time.perf_counter()
                job = services.import_job_run(job_id=job.pk, on_progress=lambda n, done: bar.update(done - bar.n))
                seconds = time.perf_counter() - start
            assert job.state == "succeeded", job.error
            print(json.dumps({
                "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
                "accepted": job.accepted, "duplicates": job.duplicates, "over_cap": job.over_cap,
                "redacted": sum(job.redactions.values()),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "rss_before_mb": round(rss_before / 1024),
            }))
    finally:
        connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000", help="Comma-separated row counts (default: %(default)s).")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    print(f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'accepted':>9} {'dups':>6} {'over cap':>9} {'redacted':>9} "
          f"{'RSS before':>11} {'peak RSS':>9}")
    for rows in (int(size) for size in args.sizes.split(",")):
        result = subprocess.run([sys.executable, __file__, "--child", str(rows)], stdout=subprocess.PIPE, text=True,
                                check=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{r['rows']:>8,} {r['seconds']:>8} {r['rows_per_s']:>8,} {r['accepted']:>9,} {r['duplicates']:>6,} "
              f"{r['over_cap']:>9,} {r['redacted']:>9,} {r['rss_before_mb']:>8} MB {r['peak_rss_mb']:>6} MB")


if __name__ == "__main__":
    main()
