"""Benchmark: preference-pair exports streamed from PostgreSQL, in pairs/s and peak memory.

Creates a scratch PostgreSQL database (bench_export), migrates it and loads rankings of K = 4..9
completions (K cycling, a tie in every third ranking) with COPY, then exports them as TRL
preference pairs to JSONL and to Parquet, each in a fresh process (so its peak RSS is the export's
alone), through the same service a worker runs. Run at two sizes to see whether memory grows with
the data. Drops the scratch database at the end.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/export.py
    DATABASE_URL=... .venv/bin/python bench/export.py --rankings 50000,200000 --formats jsonl,parquet
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from labeling_load import admin_connection  # noqa: E402

SCRATCH = "bench_export"
LABELERS = 40
FILLER = "and then a few more words to give the completion a realistic length for a short answer "


def recreate(url, *, create):
    conn = admin_connection(url)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')
        if create:
            cur.execute(f'CREATE DATABASE "{SCRATCH}"')
    conn.close()


def load(url, rankings):
    """Users, prompts, ranking tasks, completions and one ranking per task, by COPY."""
    import psycopg2

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
                       SELECT '!', false, 'labeler-' || i, '', '', '', false, true, now()
                       FROM generate_series(1, %s) i RETURNING id""", [LABELERS])
        users = [row[0] for row in cur.fetchall()]
        cur.execute("""INSERT INTO labeling_prompt (text, source, source_user_id, split, language, use_case,
                       metadata, dedup_key, redactions, needs_completions, created_at)
                       SELECT 'Explain idea number ' || i || ' to a curious twelve-year-old.', 'imported',
                              'customer-' || i, 'train', 'en', 'open_qa', '{}', '', '{}', false, now()
                       FROM generate_series(1, %s) i""", [rankings])
        cur.execute("""INSERT INTO labeling_task (kind, prompt_id, params, required_annotations, priority, is_gold,
                       state, created_at)
                       SELECT 'rank_completions', id, '{}', 1, 0, false, 'completed', now()
                       FROM labeling_prompt ORDER BY id""")
        cur.execute("SELECT t.id, t.prompt_id FROM labeling_task t ORDER BY t.id")
        tasks = cur.fetchall()
        cur.execute("SELECT coalesce(max(id), 0) FROM labeling_completion")
        next_id = cur.fetchone()[0] + 1
        completions, through, ranked = io.StringIO(), io.StringIO(), io.StringIO()
        for n, (task_id, prompt_id) in enumerate(tasks):
            k = 4 + n % 6
            ids = list(range(next_id, next_id + k))
            next_id += k
            for j, cid in enumerate(ids):
                completions.write(f"{cid}\t{prompt_id}\tAnswer {j} to prompt {prompt_id}, {FILLER}\t{{}}\t\t\\N\t\\N"
                                  f"\t\\N\t2026-11-01 00:00:00+00\n")
                through.write(f"{task_id}\t{cid}\n")
            groups = [[cid] for cid in ids]
            if n % 3 == 0:
                groups = [groups[0], groups[1] + groups[2], *groups[3:]]
            ranked.write(f"{task_id}\t{users[n % LABELERS]}\t{json.dumps(groups)}\tfalse\t2026-11-02 00:00:00+00\n")
        for table, columns, data in [
            ("labeling_completion", "(id, prompt_id, text, sampling_params, finish_reason, seed, token_count, "
             "model_version_id, created_at)", completions),
            ("labeling_task_completions", "(task_id, completion_id)", through),
            ("labeling_ranking", "(task_id, labeler_id, groups, none_acceptable, created_at)", ranked),
        ]:
            data.seek(0)
            cur.copy_expert(f"COPY {table} {columns} FROM STDIN", data)
        cur.execute("SELECT setval(pg_get_serial_sequence('labeling_completion', 'id'), %s)", [next_id])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()


def child(fmt):
    """In a fresh process: one export through the service, timed; prints JSON."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from labeling import services

    export = services.export_create(kind="preference_pairs", fmt=fmt, filters={"style": "standard"},
                                    created_by=None, queue=False)
    start = time.perf_counter()
    export = services.export_run(export_id=export.pk)
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": export.row_count, "seconds": seconds, "bytes": export.size_bytes,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb():
    """This process's peak resident memory since it started (VmHWM; ru_maxrss would count the parent's
    memory from before the exec as well)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def measure(url, fmt, data_dir):
    environment = {**os.environ, "DATABASE_URL": url, "DATA_DIR": data_dir, "SECRET_KEY": "bench"}
    found = subprocess.run([sys.executable, __file__, "--child", fmt], cwd=ROOT, env=environment,
                           capture_output=True, text=True, check=True)
    return json.loads(found.stdout.strip().splitlines()[-1])


def baseline_rss(url, data_dir):
    """Peak memory of a process that sets Django up and imports the export code, exporting nothing."""
    code = ("import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup(); "
            "import labeling.exports, labeling.services, export; print(export.peak_rss_mb())")
    environment = {**os.environ, "DATABASE_URL": url, "DATA_DIR": data_dir, "SECRET_KEY": "bench",
                   "PYTHONPATH": str(ROOT / "bench")}
    return float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rankings", default="200000", help="comma-separated sizes, in rankings")
    parser.add_argument("--formats", default="jsonl,parquet")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith("postgres"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server; the scratch database is made beside it.")
    url = urlunsplit(urlsplit(base)._replace(path="/" + SCRATCH))
    with tempfile.TemporaryDirectory() as data_dir:
        print(f"baseline: Django and the export code loaded, nothing exported: {baseline_rss(base, data_dir):.0f} MB")
        print(f"{'rankings':>9} {'format':>8} {'pairs':>10} {'seconds':>8} {'pairs/s':>9} {'MB file':>8} "
              f"{'peak RSS MB':>11}")
        try:
            for size in [int(s) for s in args.rankings.split(",")]:
                recreate(base, create=True)
                environment = {**os.environ, "DATABASE_URL": url, "DATA_DIR": data_dir, "SECRET_KEY": "bench"}
                subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                               env=environment, check=True)
                started = time.perf_counter()
                load(url, size)
                print(f"  (loaded {size} rankings in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
                for fmt in args.formats.split(","):
                    r = measure(url, fmt, data_dir)
                    print(f"{size:>9} {fmt:>8} {r['rows']:>10} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9.0f} "
                          f"{r['bytes'] / 1e6:>8.0f} {r['peak_rss_mb']:>11.0f}", flush=True)
        finally:
            recreate(base, create=False)


if __name__ == "__main__":
    main()
