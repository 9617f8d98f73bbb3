"""Benchmark: simulated labelers leasing and submitting ranking tasks over the API, under gunicorn.

Creates a scratch PostgreSQL database (bench_labeling), migrates and seeds it (labelers with tokens,
ranking tasks of 4 completions each), starts gunicorn on 127.0.0.1 and drives the labeler flow
(POST /api/work/next/, then POST /api/work/assignments/<id>/submit/) in closed loop (N labelers
cycling with no pause) and in open loop (a fixed arrival rate of cycles, latency counted from each
cycle's scheduled start). After each run it counts tasks holding more live or submitted assignments
than they require (duplicate leases; must be 0). Drops the scratch database at the end.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/labeling_load.py --seconds 10
"""

import argparse
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRATCH = "bench_labeling"
HOST = "127.0.0.1"
HTTP_TIMEOUT = 30


# Database


def scratch_url(url):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + SCRATCH))


def admin_connection(url):
    import psycopg2

    parts = urlsplit(url)
    conn = psycopg2.connect(host=parts.hostname or HOST, port=parts.port or 5432, user=parts.username,
                            password=parts.password, dbname="postgres")
    conn.autocommit = True
    return conn


def recreate_db(url, *, create, name=SCRATCH):
    """Drop the scratch database `name` beside `url`'s, and make it again empty when `create`."""
    conn = admin_connection(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def seed(labelers, tasks):
    """Runs in a child process whose DATABASE_URL names the scratch database; prints the tokens as JSON."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from rest_framework.authtoken.models import Token

    from labeling import services
    from labeling.models import Completion, LabelerProfile, Prompt, Task

    User = get_user_model()
    with transaction.atomic():
        users = User.objects.bulk_create([User(username=f"bench-labeler-{i}") for i in range(labelers)])
        for user in users:
            services.user_set_role(user=user, role="labeler")
        LabelerProfile.objects.filter(user__in=users).update(status=LabelerProfile.Status.ACTIVE, languages=["en"])
        tokens = Token.objects.bulk_create([Token(user=user, key=Token.generate_key()) for user in users])
        batch = 5000
        for start in range(0, tasks, batch):
            n = min(batch, tasks - start)
            prompts = Prompt.objects.bulk_create([
                Prompt(text=f"Write a short poem about the number {start + i}.", split=Prompt.Split.TRAIN,
                       source_user_id=f"customer-{start + i}", language="en") for i in range(n)
            ])
            completions = Completion.objects.bulk_create([
                Completion(prompt=prompt, text=f"Completion {k} of prompt {prompt.pk}.")
                for prompt in prompts for k in range(4)
            ])
            made = Task.objects.bulk_create([
                Task(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt, required_annotations=1) for prompt in prompts
            ])
            Through = Task.completions.through
            Through.objects.bulk_create([
                Through(task_id=task.pk, completion_id=completions[4 * i + k].pk)
                for i, task in enumerate(made) for k in range(4)
            ])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would on a live database; bulk-loaded tables have no statistics
    print(json.dumps([t.key for t in tokens]))


def duplicate_leases(url):
    """Tasks holding more submitted or live assignments than they require."""
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("""
            SELECT count(*) FROM (
                SELECT t.id FROM labeling_task t JOIN labeling_assignment a ON a.task_id = t.id
                WHERE a.state = 'submitted' OR (a.state = 'active' AND a.lease_expires_at > now())
                GROUP BY t.id, t.required_annotations HAVING count(*) > t.required_annotations
            ) d""")
        duplicates = cur.fetchone()[0]
    conn.close()
    return duplicates


# Server


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_gunicorn(env, port, workers, threads, worker_class, log):
    # A sync worker serves one request at a time and closes the connection after it; gunicorn turns a sync worker
    # given threads into a gthread one, so it gets none.
    threads_option = ["--threads", str(threads)] if worker_class == "gthread" else []
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind", f"{HOST}:{port}",
           "--workers", str(workers), *threads_option, "--worker-class", worker_class,
           "--keep-alive", "30", "--timeout", "60", "--error-logfile", "-"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log.name}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/accounts/login/")
            conn.getresponse().read()
            conn.close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop_gunicorn(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Labelers


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = {"next": [], "submit": []}
        self.status = {}
        self.errors = []
        self.cycles = 0
        self.empty = 0
        self.dropped = 0
        self.leases = []  # (task id, labeler index)

    def record(self, endpoint, ms, status):
        with self.lock:
            self.latency[endpoint].append(ms)
            self.status[(endpoint, status)] = self.status.get((endpoint, status), 0) + 1


class Labeler:
    def __init__(self, index, token, port):
        self.index, self.port = index, port
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json",
                        "Accept": "application/json"}
        self.conn = None

    def post(self, path, body):
        data = json.dumps(body).encode()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=HTTP_TIMEOUT)
            try:
                self.conn.request("POST", path, body=data, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection; both endpoints are safe to repeat.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise

    def cycle(self, stats, scheduled=None):
        """One next + submit; `scheduled` (perf_counter) counts queueing into the next latency."""
        try:
            start = time.perf_counter()
            status, body = self.post("/api/work/next/", {})
            stats.record("next", (time.perf_counter() - (scheduled or start)) * 1000, status)
            if status == 204:
                with stats.lock:
                    stats.empty += 1
                    stats.cycles += 1
                return
            if status != 200:
                with stats.lock:
                    stats.errors.append(f"next {status}: {body[:300]!r}")
                return
            assignment = json.loads(body)
            ids = [c["id"] for c in assignment["completions"]]
            with stats.lock:
                stats.leases.append((assignment["id"], self.index))
            answer = {"groups": [ids[:2], *[[cid] for cid in ids[2:]]],
                      "ratings": {str(cid): {"rating": 5} for cid in ids}, "time_spent_seconds": 1}
            start = time.perf_counter()
            status, body = self.post(f"/api/work/assignments/{assignment['id']}/submit/", answer)
            stats.record("submit", (time.perf_counter() - start) * 1000, status)
            if not 200 <= status < 300:
                with stats.lock:
                    stats.errors.append(f"submit {status}: {body[:300]!r}")
                return
            with stats.lock:
                stats.cycles += 1
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            with stats.lock:
                stats.errors.append(f"{type(exc).__name__}: {exc}")
            if self.conn:
                self.conn.close()
                self.conn = None
            time.sleep(0.05)  # a dead server must not turn into a busy loop

    def close(self):
        if self.conn:
            self.conn.close()


def progress(stats, seconds, desc, stop):
    from tqdm import tqdm

    with tqdm(total=int(seconds), desc=desc, unit="s", file=sys.stderr, leave=False) as bar:
        while not stop.wait(1):
            bar.update(1 if bar.n < bar.total else 0)
            with stats.lock:
                bar.set_postfix(cycles=stats.cycles, errors=len(stats.errors))


def run_closed(labelers, seconds):
    stats, stop = Stats(), threading.Event()
    deadline = time.perf_counter() + seconds

    def loop(labeler):
        while time.perf_counter() < deadline:
            labeler.cycle(stats)

    bar = threading.Thread(target=progress, args=(stats, seconds, f"closed {len(labelers)}", stop), daemon=True)
    bar.start()
    threads = [threading.Thread(target=loop, args=(lab,), daemon=True) for lab in labelers]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 2 * HTTP_TIMEOUT + 5)
    elapsed = time.perf_counter() - started
    stop.set()
    bar.join()
    return stats, elapsed


def run_open(labelers, rate, seconds):
    stats, stop = Stats(), threading.Event()
    idle = queue.Queue()
    for lab in labelers:
        idle.put(lab)
    total = int(rate * seconds)

    def work(labeler, scheduled):
        try:
            labeler.cycle(stats, scheduled)
        finally:
            idle.put(labeler)

    bar = threading.Thread(target=progress, args=(stats, seconds, f"open {rate:g}/s", stop), daemon=True)
    bar.start()
    with ThreadPoolExecutor(max_workers=len(labelers)) as pool:
        started = time.perf_counter()
        deadline = started + seconds
        for i in range(total):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:  # every labeler busy: wait (the lateness shows up in the latency), but not past the run's end
                labeler = idle.get(timeout=max(0.001, deadline - time.perf_counter()))
            except queue.Empty:
                labeler = None
            if labeler is None or time.perf_counter() > deadline:
                if labeler is not None:
                    idle.put(labeler)
                stats.dropped = total - i  # arrivals never started: the server could not keep up
                break
            pool.submit(work, labeler, scheduled)
    elapsed = time.perf_counter() - started
    stop.set()
    bar.join()
    return stats, elapsed


# Report


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def row(mode, load, stats, elapsed, duplicates):
    leased = [task for task, _ in stats.leases]
    client_dups = len(leased) - len(set(leased))
    errors = len(stats.errors) + sum(n for (_, status), n in stats.status.items() if not 200 <= status < 300) \
        - sum(1 for e in stats.errors if e.split(" ", 1)[0] in ("next", "submit"))
    n, s = stats.latency["next"], stats.latency["submit"]
    return (f"{mode:<7} {load:>9} {stats.cycles / elapsed:>9.1f} {stats.empty:>6} {stats.dropped:>7} "
            f"{pct(n, 50):>7.1f} {pct(n, 95):>7.1f} {pct(n, 99):>7.1f} "
            f"{pct(s, 50):>7.1f} {pct(s, 95):>7.1f} {pct(s, 99):>7.1f} {errors:>6} {duplicates + client_dups:>5}")


HEADER = (f"{'mode':<7} {'load':>9} {'cycles/s':>9} {'empty':>6} {'dropped':>7} {'next p50':>7} {'p95':>7} {'p99':>7} "
          f"{'sub p50':>7} {'p95':>7} {'p99':>7} {'errors':>6} {'dups':>5}")


def server_settings(args):
    threads = f" --threads {args.threads}" if args.worker_class == "gthread" else ""
    return f"--worker-class {args.worker_class} --workers {args.workers}{threads}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--closed", default="1,8,32,128", help="Labeler counts for closed loop (default: %(default)s).")
    parser.add_argument("--open-rate", type=float, default=100, help="Cycles/s for open loop; 0 skips it.")
    parser.add_argument("--open-labelers", type=int, default=256, help="Labelers the open loop draws from.")
    parser.add_argument("--seconds", type=float, default=15, help="Length of each run (default: %(default)s).")
    parser.add_argument("--tasks", type=int, default=20000, help="Ranking tasks to seed (default: %(default)s).")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="Threads per gthread worker (default: %(default)s).")
    parser.add_argument("--worker-class", choices=["gthread", "sync"], default="gthread",
                        help="gunicorn's worker class (default: %(default)s); sync workers take no threads.")
    parser.add_argument("--throttle-rate", default="1000000/hour",
                        help="API_THROTTLE_RATE for the server; the project default (6000/hour per user) would "
                             "answer a fast simulated labeler with 429s.")
    parser.add_argument("--seed", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        return seed(*args.seed)

    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme not in ("postgres", "postgresql", "pgsql", "postgis"):
        sys.exit("Set DATABASE_URL to a PostgreSQL database; this benchmark measures PostgreSQL.")
    closed = [int(n) for n in args.closed.split(",") if n.strip()]
    open_labelers = args.open_labelers if args.open_rate > 0 else 0
    n_labelers = max([*closed, open_labelers, 1])

    bench_url = scratch_url(url)
    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as data_dir:
        env = {**os.environ, "DATABASE_URL": bench_url, "SECRET_KEY": "benchmark", "ALLOWED_HOSTS": HOST,
               "DATA_DIR": data_dir, "API_THROTTLE_RATE": args.throttle_rate, "LOG_LEVEL": "WARNING"}
        env.pop("DEBUG", None)
        log_path = Path(data_dir) / "gunicorn.log"
        server = None
        recreate_db(url, create=True)
        try:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
            out = subprocess.run([sys.executable, __file__, "--seed", str(n_labelers), str(args.tasks)], cwd=ROOT,
                                 env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
            tokens = json.loads(out.strip().splitlines()[-1])
            print(f"seeded {n_labelers} labelers and {args.tasks:,} ranking tasks in "
                  f"{time.perf_counter() - t0:.1f} s (migrate included)", file=sys.stderr)

            port = free_port()
            with open(log_path, "w") as log:
                server = start_gunicorn(env, port, args.workers, args.threads, args.worker_class, log)
                print(f"gunicorn on {HOST}:{port}: {server_settings(args)}", file=sys.stderr)
                rows, all_errors = [], []
                runs = [("closed", str(n), n) for n in closed]
                if args.open_rate > 0:
                    runs.append(("open", f"{args.open_rate:g}/s", open_labelers))
                for mode, load, n in runs:
                    labelers = [Labeler(i, tokens[i], port) for i in range(n)]
                    if mode == "closed":
                        stats, elapsed = run_closed(labelers, args.seconds)
                    else:
                        stats, elapsed = run_open(labelers, args.open_rate, args.seconds)
                    for lab in labelers:
                        lab.close()
                    rows.append(row(mode, load, stats, elapsed, duplicate_leases(bench_url)))
                    all_errors += [f"[{mode} {load}] {e}" for e in stats.errors]
                    print(rows[-1], file=sys.stderr)
            print(f"server: gunicorn {server_settings(args)}; {args.seconds:g} s per run; "
                  f"latency in ms; next latency in open loop counts from the scheduled start; "
                  f"dropped: open-loop arrivals not started by the end of the run")
            print(HEADER)
            for line in rows:
                print(line)
            if all_errors:
                print(f"\n{len(all_errors)} errors; first ones:")
                seen = {}
                for e in all_errors:
                    seen[e[:200]] = seen.get(e[:200], 0) + 1
                for e, count in list(seen.items())[:10]:
                    print(f"  {count}x {e}")
            server_errors = [line for line in log_path.read_text().splitlines()
                             if "Error" in line or "Traceback" in line or "Exception" in line]
            if server_errors:
                print(f"\ngunicorn stderr has {len(server_errors)} error lines; first ones:")
                for line in server_errors[:15]:
                    print("  " + line)
        finally:
            stop_gunicorn(server)
            if log_path.exists() and os.environ.get("BENCH_KEEP_LOG"):
                print(log_path.read_text()[-5000:], file=sys.stderr)
            recreate_db(url, create=False)


if __name__ == "__main__":
    main()
