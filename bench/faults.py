"""Benchmark: faults under load. Labelers work on while PostgreSQL restarts, a web worker and the Celery worker die.

Makes a PostgreSQL 15 cluster of its own (`pg_createcluster`, port 5439 by default; removed at the end, on Ctrl-C
and on errors too), migrates and seeds it (labelers with tokens, ranking and annotation tasks, a tenth of them
for three labelers), starts gunicorn (sync workers) and a Celery worker on Redis database 9, then runs N simulated
labelers in a closed loop over the API for a bounded time: POST /api/work/next/, then
POST /api/work/assignments/<id>/submit/ (a tenth of them twice). A client repeats a request that failed for want
of an answer (a refused or dropped connection, a 5xx) with the same body, waiting as long as a 503's Retry-After
says. A researcher asks for an annotation export every few seconds, which the Celery worker builds.

At set shares of the run: `pg_ctlcluster restart -m fast`; SIGKILL to one gunicorn worker (its master starts
another); SIGKILL to the Celery worker, which the benchmark starts again after a second, as a supervisor would.
Nothing else is restarted: the site must reconnect by itself.

Afterwards it checks the database: every submit answered 2xx is stored exactly once, with the answer that client
sent; no task holds more live or submitted leases than it needs; no labeler holds two live leases. It reports
throughput per second around each fault, what clients saw during each outage and how long recovery took.

    .venv/bin/python bench/faults.py --seconds 60 --labelers 128 --json faults.json
"""

import argparse
import bisect
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labeling_load import HOST, ROOT, free_port  # noqa: E402

PG_VERSION, CLUSTER, DBNAME = "15", "rlhfbench", "bench"
HTTP_TIMEOUT = 30
GRACE = 30  # seconds a submit in flight at the end may keep retrying
RESTART_DELAY = 1.0  # the supervisor's pause before starting a dead Celery worker again
STAGGER = 2.0  # labelers start at random within this many seconds
BASELINE, WINDOW = 5.0, 2.0  # seconds of throughput before a fault; the window that must reach 80% of it


# Cluster, server, worker


def run_quiet(*cmd):
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout[-2000:]}")
    return done.stdout


def cluster_exists():
    return Path(f"/etc/postgresql/{PG_VERSION}/{CLUSTER}").exists()


def cluster_create(port):
    if cluster_exists():  # left by a run that was killed before it could clean up
        run_quiet("pg_dropcluster", "--stop", PG_VERSION, CLUSTER)
    with socket.socket() as s:
        if s.connect_ex((HOST, port)) == 0:
            sys.exit(f"Port {port} is taken; choose another with --pg-port.")
    run_quiet("pg_createcluster", PG_VERSION, CLUSTER, "-p", str(port), "--", "--auth=trust")
    run_quiet("pg_ctlcluster", PG_VERSION, CLUSTER, "start")
    import psycopg2

    conn = psycopg2.connect(host=HOST, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{DBNAME}"')
    conn.close()


def cluster_drop():
    if cluster_exists():
        run_quiet("pg_dropcluster", "--stop", PG_VERSION, CLUSTER)


def children_of(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def start_gunicorn(env, port, workers, log):
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "--bind", f"{HOST}:{port}",
           "--workers", str(workers), "--worker-class", "sync", "--timeout", str(HTTP_TIMEOUT),
           "--graceful-timeout", "5", "--error-logfile", "-"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log.name}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/accounts/login/")
            conn.getresponse().read()
            conn.close()
            if len(children_of(proc.pid)) == workers:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop_process(proc, timeout=20):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class CeleryWorker:
    """One Celery worker, started again RESTART_DELAY after it dies, as systemd's Restart=always would."""

    def __init__(self, env, log_path):
        self.env, self.log_path = env, log_path
        self.proc, self.lock, self.stopping = None, threading.Lock(), threading.Event()
        self.events = []  # (time, "started" | "ready" | "died")
        self.watcher = threading.Thread(target=self._watch, daemon=True)

    def start(self):
        self._spawn()
        self.watcher.start()
        deadline = time.time() + 60
        while not self.ready_since(0) and time.time() < deadline:
            time.sleep(0.1)
        if not self.ready_since(0):
            raise RuntimeError(f"the Celery worker was not ready within 60 s; see {self.log_path}")

    def _spawn(self):
        cmd = [str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "-Q", "default,gpu",
               "--pool", "solo", "-l", "INFO", "-n", "bench@%h", "--without-gossip", "--without-mingle"]
        with self.lock:
            self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = open(self.log_path, "a")
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
            log.close()
            self.events.append((time.time(), "started"))
            self.waiting_ready = True

    def _watch(self):
        while not self.stopping.is_set():
            if self.proc.poll() is not None:
                self.events.append((time.time(), "died"))
                if self.stopping.wait(RESTART_DELAY):
                    return
                self._spawn()
            elif self.waiting_ready:
                with open(self.log_path, errors="replace") as log:
                    log.seek(self.log_offset)
                    if " ready." in log.read():
                        self.events.append((time.time(), "ready"))
                        self.waiting_ready = False
            time.sleep(0.05)

    def ready_since(self, t):
        return next((when for when, what in self.events if what == "ready" and when >= t), None)

    def kill(self):
        with self.lock:
            os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self):
        self.stopping.set()
        if self.watcher.is_alive():
            self.watcher.join(timeout=5)
        stop_process(self.proc)


# Seed (a child process with the bench database in DATABASE_URL)


def seed(labelers, tasks):
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from rest_framework.authtoken.models import Token

    from labeling import services
    from labeling.models import Completion, LabelerProfile, Prompt, PromptAnnotation, Task, UseCase

    User = get_user_model()
    with transaction.atomic():
        users = User.objects.bulk_create([User(username=f"bench-labeler-{i}") for i in range(labelers)])
        for user in users:
            services.user_set_role(user=user, role="labeler")
        LabelerProfile.objects.filter(user__in=users).update(status=LabelerProfile.Status.ACTIVE, languages=["en"])
        researcher = services.user_set_role(user=User.objects.create(username="bench-researcher"), role="researcher")
        everyone = [*users, researcher]
        tokens = Token.objects.bulk_create([Token(user=user, key=Token.generate_key()) for user in everyone])
        prompts = Prompt.objects.bulk_create([
            Prompt(text=f"Write a short poem about the number {i}.", split=Prompt.Split.TRAIN,
                   source_user_id=f"customer-{i}", language="en") for i in range(tasks)
        ])
        ranked = prompts[: tasks // 2]
        completions = Completion.objects.bulk_create([
            Completion(prompt=prompt, text=f"Completion {k} of prompt {prompt.pk}.")
            for prompt in ranked for k in range(4)
        ])
        # A tenth of the tasks go to three labelers, so that slots, not only one lease per task, are checked.
        made = Task.objects.bulk_create([
            Task(kind=Task.Kind.RANK_COMPLETIONS if i < len(ranked) else Task.Kind.ANNOTATE_PROMPT, prompt=prompt,
                 required_annotations=3 if i % 10 == 0 else 1)
            for i, prompt in enumerate(prompts)
        ])
        Through = Task.completions.through
        Through.objects.bulk_create([
            Through(task_id=task.pk, completion_id=completions[4 * i + k].pk)
            for i, task in enumerate(made[: len(ranked)]) for k in range(4)
        ])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would on a live database
    print(json.dumps({"labelers": [t.key for t in tokens[:-1]], "researcher": tokens[-1].key,
                      "flags": PromptAnnotation.FLAGS, "use_cases": UseCase.values}))


# Clients


def request(port, token, path, body):
    conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={
            "Authorization": f"Token {token}", "Content-Type": "application/json", "Accept": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("Retry-After"), response.read()
    finally:
        conn.close()


class Client:
    """Sends a request until it gets an answer, as a careful program would; notes every failure on the way."""

    def __init__(self, port, token, stop, give_up_at):
        self.port, self.token, self.stop, self.give_up_at = port, token, stop, give_up_at
        self.errors = []  # (time, endpoint, what: status code or exception class, told to retry)

    def call(self, endpoint, path, body, *, unanswered_is_final=False):
        """(status, body, attempts, when the last attempt was sent); status None when it gave up.

        `unanswered_is_final`: for a request that is not safe to repeat, only a 503 (nothing done) is retried.
        """
        attempt = 0
        while True:
            attempt += 1
            sent = time.time()
            try:
                status, retry_after, data = request(self.port, self.token, path, body)
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append((time.time(), endpoint, type(exc).__name__, False))
                if unanswered_is_final:
                    return None, b"", attempt, sent
                wait = backoff(attempt)
            else:
                if status < 500:
                    return status, data, attempt, sent
                told = status == 503 and bool(retry_after) and b"again" in data
                self.errors.append((time.time(), endpoint, str(status), told))
                if unanswered_is_final and status != 503:
                    return status, data, attempt, sent
                wait = (float(retry_after) + random.uniform(0, 0.5)) if (retry_after or "").isdigit() \
                    else backoff(attempt)
            if self.stop.is_set() or time.time() + wait > self.give_up_at:
                return None, b"", attempt, sent
            time.sleep(wait)


def backoff(attempt):
    return min(2.0, 0.1 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


class Labeler(Client):
    def __init__(self, index, token, port, stop, run_end, double_share, vocab):
        super().__init__(port, token, stop, run_end + GRACE)
        self.index, self.run_end, self.double_share, self.vocab = index, run_end, double_share, vocab
        self.submits, self.doubles, self.abandoned, self.unexpected, self.leases = [], [], [], [], []
        self.next_answered = []
        self.seq = 0

    def answer(self, lease):
        self.seq += 1
        marker = f"m{self.index}-{self.seq}"
        if lease["kind"] == "rank_completions":
            ids = [c["id"] for c in lease["completions"]]
            ratings = {str(cid): {"rating": 5} for cid in ids}
            ratings[str(ids[0])]["notes"] = marker
            return {"groups": [ids[:2], *[[cid] for cid in ids[2:]]], "ratings": ratings, "time_spent_seconds": 1}, \
                marker
        # Annotations have no free text: the flags and the use case are the marker.
        flags = {name: random.random() < 0.5 for name in self.vocab["flags"]}
        use_case = random.choice(self.vocab["use_cases"])
        marker = "".join("1" if flags[name] else "0" for name in self.vocab["flags"]) + ":" + use_case
        return {"use_case": use_case, "language": "en", "flags": flags, "time_spent_seconds": 1}, marker

    def run(self):
        # Started all at once, labelers would stay in step (all leasing, then all submitting) and throughput would
        # come in waves; a random start and a few milliseconds of thought keep them out of step.
        self.stop.wait(random.uniform(0, STAGGER))
        while time.time() < self.run_end and not self.stop.is_set():
            status, data, _, _ = self.call("next", "/api/work/next/", {})
            if status is None:
                return
            if status in (200, 204):
                self.next_answered.append(time.time())
            if status == 204:
                time.sleep(0.5)
                continue
            if status != 200:
                self.unexpected.append((time.time(), "next", status, data[:300].decode(errors="replace")))
                time.sleep(0.5)
                continue
            lease = json.loads(data)
            self.leases.append(lease["id"])
            body, marker = self.answer(lease)
            time.sleep(random.uniform(0, 0.02))
            path = f"/api/work/assignments/{lease['id']}/submit/"
            status, data, attempts, sent = self.call("submit", path, body)
            if status is None:
                self.abandoned.append(lease["id"])
            elif 200 <= status < 300:
                result = json.loads(data)
                self.submits.append({"id": lease["id"], "kind": lease["kind"], "marker": marker, "sent": sent,
                                     "answered": time.time(), "attempts": attempts, "state": result["state"],
                                     "submitted_at": result["submitted_at"]})
                if random.random() < self.double_share:
                    again, data, _, _ = self.call("submit again", path, body)
                    same = again == 200 and json.loads(data)["submitted_at"] == result["submitted_at"]
                    self.doubles.append({"id": lease["id"], "status": again, "same_result": same})
            else:
                self.unexpected.append((time.time(), "submit", status, data[:300].decode(errors="replace")))


class Researcher(Client):
    """Asks for an annotation export every few seconds; a worker builds each."""

    def __init__(self, token, port, stop, run_end, every):
        super().__init__(port, token, stop, run_end + GRACE)
        self.run_end, self.every, self.exports, self.unexpected = run_end, every, [], []

    def run(self):
        while time.time() < self.run_end and not self.stop.is_set():
            asked = time.time()
            # Not safe to repeat after a lost answer (it could make a second export), so only a 503 is retried.
            status, data, _, _ = self.call("export", "/api/exports/", {"kind": "annotations", "format": "jsonl"},
                                           unanswered_is_final=True)
            if status == 202:
                self.exports.append({"id": json.loads(data)["id"], "asked": asked})
            elif status is not None:
                self.unexpected.append((time.time(), "export", status, data[:300].decode(errors="replace")))
            self.stop.wait(max(0.0, asked + self.every - time.time()))


# Faults


def fault_postgres(_ctx):
    run_quiet("pg_ctlcluster", PG_VERSION, CLUSTER, "restart", "-m", "fast")  # returns once it accepts connections
    return "PostgreSQL restarted (fast shutdown: open transactions rolled back, connections cut)"


def fault_gunicorn(ctx):
    master = ctx["gunicorn"].pid
    before = children_of(master)
    victim = random.choice(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.time() + 30
    while time.time() < deadline:
        now = children_of(master)
        if victim not in now and len(now) >= len(before):
            return f"gunicorn worker {victim} killed; the master started {sorted(set(now) - set(before))}"
        time.sleep(0.05)
    return f"gunicorn worker {victim} killed; no replacement within 30 s"


def fault_celery(ctx):
    worker, t = ctx["celery"], time.time()
    worker.kill()
    deadline = t + 60
    while not worker.ready_since(t) and time.time() < deadline:
        time.sleep(0.05)
    return "Celery worker killed; started again after %.0f s and %s" % (
        RESTART_DELAY, "ready" if worker.ready_since(t) else "not ready within 60 s")


FAULTS = {"postgres": fault_postgres, "gunicorn": fault_gunicorn, "celery": fault_celery}
DEFAULT_FAULTS = "postgres@0.25,gunicorn@0.5,celery@0.75"


def run_faults(schedule, start, seconds, ctx, done, stop):
    for name, share in schedule:
        if stop.wait(max(0.0, start + share * seconds - time.time())):
            return
        began = time.time()
        try:
            detail = FAULTS[name](ctx)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be made is reported, not fatal
            detail = f"could not be made: {exc}"
        done.append({"fault": name, "start": began, "end": time.time(), "detail": detail})


# Checks


def check_database(url, submits, abandoned, flags):
    import psycopg2

    conn = psycopg2.connect(url)
    out = {}
    with conn, conn.cursor() as cur:
        cur.execute("""
            SELECT a.id, a.state,
                   (SELECT count(*) FROM labeling_ranking r WHERE r.assignment_id = a.id)
                 + (SELECT count(*) FROM labeling_promptannotation p WHERE p.assignment_id = a.id),
                   (SELECT string_agg(cr.notes, '') FROM labeling_completionrating cr
                      JOIN labeling_ranking r ON r.id = cr.ranking_id WHERE r.assignment_id = a.id),
                   (SELECT row_to_json(p) FROM labeling_promptannotation p WHERE p.assignment_id = a.id)
            FROM labeling_assignment a WHERE a.id = ANY(%s)""", [list({s["id"] for s in submits})])
        stored = {row[0]: row[1:] for row in cur.fetchall()}
        once = missing = wrong_state = more = mismatch = 0
        for s in {s["id"]: s for s in submits}.values():
            row = stored.get(s["id"])
            if row is None or row[1] == 0:
                missing += 1
                continue
            state, results, notes, annotation = row
            if state != "submitted":
                wrong_state += 1
            if results > 1:
                more += 1
            if s["kind"] == "rank_completions":
                found = notes
            else:
                found = "".join("1" if annotation[name] else "0" for name in flags) + ":" + annotation["use_case"]
            if found != s["marker"]:
                mismatch += 1
            elif state == "submitted" and results == 1:
                once += 1
        out.update(submits_answered_2xx=len({s["id"] for s in submits}), stored_once_as_sent=once,
                   missing=missing, not_submitted=wrong_state, stored_twice=more, different_answer=mismatch)
        cur.execute("SELECT count(*) FROM labeling_assignment WHERE id = ANY(%s) AND state = 'submitted'",
                    [abandoned])
        out["abandoned_submits"], out["abandoned_but_stored"] = len(abandoned), cur.fetchone()[0]
        cur.execute("""
            SELECT count(*) FROM (
                SELECT t.id FROM labeling_task t JOIN labeling_assignment a ON a.task_id = t.id
                WHERE a.state = 'submitted' OR (a.state = 'active' AND a.lease_expires_at > now())
                GROUP BY t.id, t.required_annotations HAVING count(*) > t.required_annotations) d""")
        out["tasks_over_their_slots"] = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT 1 FROM labeling_assignment GROUP BY task_id, labeler_id
                       HAVING count(*) > 1) d""")
        out["task_labeler_pairs_twice"] = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT 1 FROM labeling_assignment WHERE state = 'active'
                       AND lease_expires_at > now() GROUP BY labeler_id HAVING count(*) > 1) d""")
        out["labelers_with_two_live_leases"] = cur.fetchone()[0]
        cur.execute("""
            SELECT count(*) FROM labeling_assignment a WHERE a.state = 'submitted'
              AND NOT EXISTS (SELECT 1 FROM labeling_ranking r WHERE r.assignment_id = a.id)
              AND NOT EXISTS (SELECT 1 FROM labeling_promptannotation p WHERE p.assignment_id = a.id)""")
        out["submitted_without_result"] = cur.fetchone()[0]
        cur.execute("""
            SELECT (SELECT count(*) FROM labeling_ranking r JOIN labeling_assignment a ON a.id = r.assignment_id
                    WHERE a.state <> 'submitted')
                 + (SELECT count(*) FROM labeling_promptannotation p JOIN labeling_assignment a
                    ON a.id = p.assignment_id WHERE a.state <> 'submitted')""")
        out["results_of_unsubmitted"] = cur.fetchone()[0]
    conn.close()
    return out


def export_states(url, exports):
    import psycopg2

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, state, extract(epoch FROM finished_at), error FROM labeling_export WHERE id = ANY(%s)",
                    [[e["id"] for e in exports]])
        rows = {row[0]: row[1:] for row in cur.fetchall()}
    conn.close()
    for e in exports:
        e["state"], finished, e["error"] = rows.get(e["id"], ("missing", None, ""))
        e["finished"] = float(finished) if finished else None
        e["seconds"] = round(e["finished"] - e["asked"], 2) if finished else None
    return exports


def wait_for_exports(url, exports, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(e["state"] in ("succeeded", "failed") for e in export_states(url, exports)):
            break
        time.sleep(0.5)
    return export_states(url, exports)


# Report


def analyse(faults, answers, errors, exports, start, run_end):
    """Per fault: throughput before, recovery, what clients saw. Throughput counts every 2xx answer, next and submit:
    in a closed loop without pauses the labelers drift into step, so submits alone come in waves of several seconds
    while the two together stay level."""
    answered = sorted(t for t in answers if t <= run_end)

    def rate(a, b):
        return (bisect.bisect_left(answered, b) - bisect.bisect_left(answered, a)) / (b - a) if b > a else 0.0

    rows = []
    for i, f in enumerate(faults):
        t0 = f["start"]
        until = faults[i + 1]["start"] if i + 1 < len(faults) else run_end + GRACE
        before = rate(max(start + 2 * STAGGER, t0 - BASELINE), t0)  # leaving out the warm-up
        if f["fault"] == "celery":  # the worker's own work, not the labelers', shows when it is back
            first = min((e["finished"] for e in exports if e["finished"] and e["finished"] > f["end"]), default=None)
        else:
            first = next((t for t in answered if t > f["end"]), None)
        # The search starts once the component is back; labelers do not wait for the Celery worker.
        back, t = None, next((t for t in answered if t > (t0 if f["fault"] == "celery" else f["end"])), None)
        if t is not None:
            while t + WINDOW <= min(until, run_end):
                if rate(t, t + WINDOW) >= 0.8 * before:
                    back = t
                    break
                t += 0.1
        seen = [e for e in errors if t0 <= e[0] < until]
        by_kind = {}
        for _, endpoint, what, _ in seen:
            by_kind[f"{endpoint} {what}"] = by_kind.get(f"{endpoint} {what}", 0) + 1
        asked = [e for e in exports if t0 <= e["asked"] < until]
        rows.append({
            "fault": f["fault"], "at_s": round(t0 - start, 1), "took_s": round(f["end"] - t0, 2),
            "detail": f["detail"], "before_per_s": round(before, 1),
            "first_success_after_s": round(first - t0, 2) if first else None,
            "back_to_80pc_s": round(back - t0, 2) if back else None,
            "errors": len(seen), "errors_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "told_to_retry": sum(1 for e in seen if e[3]),
            "per_second": [bisect.bisect_left(answered, t0 + k + 1) - bisect.bisect_left(answered, t0 + k)
                           for k in range(-3, 8)],
            "exports_asked": len(asked), "exports_succeeded": sum(e["state"] == "succeeded" for e in asked),
            "slowest_export_s": max((e["seconds"] for e in asked if e["seconds"] is not None), default=None),
        })
    first_fault = faults[0]["start"] if faults else run_end
    unattributed = [e for e in errors if e[0] < first_fault]
    return rows, len(unattributed), per_second_of(answered, start, run_end)


def per_second_of(times, start, end):
    times = sorted(times)
    return [bisect.bisect_left(times, start + k + 1) - bisect.bisect_left(times, start + k)
            for k in range(int(end - start))]


def print_report(args, summary, checks, rows, exports, log_notes):
    print(f"\n{args.labelers} labelers, {args.seconds:g} s, gunicorn {args.workers} sync workers, Celery --pool solo; "
          f"{summary['cycles']:,} submits answered 2xx in the run ({summary['cycles_per_s']:.1f}/s)")
    print("\n| fault | at s | took s | 2xx/s before | first success after s | back to 80% s | errors seen "
          "| told to retry | what clients saw | exports asked / built / slowest s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        saw = ", ".join(f"{n} {k}" for k, n in r["errors_by_kind"].items()) or "nothing"
        print(f"| {r['fault']} | {r['at_s']:g} | {r['took_s']:.2f} | {r['before_per_s']:.1f} | "
              f"{r['first_success_after_s'] if r['first_success_after_s'] is not None else 'never'} | "
              f"{r['back_to_80pc_s'] if r['back_to_80pc_s'] is not None else 'not in the run'} | {r['errors']} | "
              f"{r['told_to_retry']} | {saw} | {r['exports_asked']} / {r['exports_succeeded']} / "
              f"{r['slowest_export_s'] if r['slowest_export_s'] is not None else '-'} |")
    print("\n2xx/s: answers to next and submit. First success: the first 2xx after PostgreSQL accepted connections "
          "again or the killed web worker's replacement started; for Celery, the first export built by the new "
          f"worker. Back to 80%: the start of the first {WINDOW:g} s with at least 80% of the 2xx/s of the "
          f"{BASELINE:g} s before the fault.")
    print("\n2xx answers (next and submit) per second, from 3 s before each fault to 8 s after:")
    for r in rows:
        print(f"  {r['fault']:<9} " + " ".join(f"{n:>3}" for n in r["per_second"][:3]) + " |"
              + " ".join(f"{n:>3}" for n in r["per_second"][3:]))
    print("\n| check | count |\n|---|---:|")
    for name, value in checks.items():
        print(f"| {name.replace('_', ' ')} | {value:,} |")
    succeeded = sum(e["state"] == "succeeded" for e in exports)
    print(f"\nExports asked {len(exports)}, succeeded {succeeded}; others: "
          + (", ".join(f"#{e['id']} {e['state']} {e['error'][:120]!r}" for e in exports if e["state"] != "succeeded")
             or "none"))
    for note in log_notes:
        print(note)


def log_notes(gunicorn_log, celery_log):
    notes = []
    text = gunicorn_log.read_text(errors="replace")
    lines = text.splitlines()
    notes.append(f"gunicorn log: {sum('Database unavailable' in line for line in lines)} requests answered 503, "
                 f"{sum('Unexpected error' in line for line in lines)} unexpected errors logged, "
                 f"{sum('Booting worker' in line for line in lines)} workers booted")
    text = celery_log.read_text(errors="replace") if celery_log.exists() else ""
    notes.append(f"Celery log: {text.count('succeeded in')} tasks succeeded, {text.count('raised unexpected')} "
                 f"raised, {text.count(' ready.')} worker starts")
    return notes


def parse_schedule(text):
    schedule = []
    for item in text.split(","):
        name, _, share = item.strip().partition("@")
        if name not in FAULTS or not share:
            raise argparse.ArgumentTypeError(f"{item!r}: write a fault ({', '.join(FAULTS)}) @ a share of the run.")
        schedule.append((name, float(share)))
    return sorted(schedule, key=lambda item: item[1])


def progress(labelers, faults, seconds, stop):
    from tqdm import tqdm

    with tqdm(total=int(seconds), desc="faults", unit="s", file=sys.stderr, leave=False) as bar:
        while not stop.wait(1):
            bar.update(1 if bar.n < bar.total else 0)
            bar.set_postfix(ok=sum(len(lab.submits) for lab in labelers),
                            errors=sum(len(lab.errors) for lab in labelers),
                            fault=faults[-1]["fault"] if faults else "-")


class Site:
    """The benchmark's PostgreSQL cluster, gunicorn and Celery worker, and their removal."""

    def __init__(self, args, broker):
        self.args, self.broker = args, broker
        self.url = f"postgres://postgres@{HOST}:{args.pg_port}/{DBNAME}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
        self.env = {**os.environ, "DATABASE_URL": self.url, "REDIS_URL": args.redis_url, "SECRET_KEY": "benchmark",
                    "DEBUG": "0", "ALLOWED_HOSTS": HOST, "DATA_DIR": str(self.data_dir),
                    "API_THROTTLE_RATE": "1000000/hour", "API_EXPORT_THROTTLE_RATE": "1000000/hour",
                    "LOG_LEVEL": "WARNING"}
        self.env.pop("CELERY_BROKER_URL", None)
        self.gunicorn_log, self.celery_log = self.data_dir / "gunicorn.log", self.data_dir / "celery.log"
        self.server = self.worker = self.port = None

    def start(self):
        """Cluster, schema, seed, server and worker; returns the seed's tokens and answer vocabulary."""
        t0, args = time.time(), self.args
        self.broker.flushdb()
        cluster_create(args.pg_port)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        out = subprocess.run([sys.executable, __file__, "--seed", str(args.labelers), str(args.tasks)], cwd=ROOT,
                             env=self.env, check=True, stdout=subprocess.PIPE, text=True).stdout
        seeded = json.loads(out.strip().splitlines()[-1])
        self.port = free_port()
        with open(self.gunicorn_log, "w") as log:
            self.server = start_gunicorn(self.env, self.port, args.workers, log)
        self.worker = CeleryWorker(self.env, self.celery_log)
        self.worker.start()
        print(f"cluster on port {args.pg_port}, {args.labelers} labelers, {args.tasks:,} tasks, gunicorn on "
              f"{self.port} and a Celery worker ready in {time.time() - t0:.1f} s", file=sys.stderr)
        return seeded

    def stop(self):
        for step in (lambda: self.worker and self.worker.stop(), lambda: stop_process(self.server), cluster_drop,
                     self.broker.flushdb):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - every step of the clean-up is tried
                print(f"clean-up: {exc}", file=sys.stderr)
        if self.args.logs:
            Path(self.args.logs).mkdir(parents=True, exist_ok=True)
            for log in (self.gunicorn_log, self.celery_log):
                if log.exists():
                    shutil.copy(log, self.args.logs)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def run_load(args, site, seeded, stop):
    """The labelers, the researcher and the faults, for args.seconds; returns who saw what."""
    start = time.time()
    run_end = start + args.seconds
    vocab = {"flags": seeded["flags"], "use_cases": seeded["use_cases"]}
    labelers = [Labeler(i, seeded["labelers"][i], site.port, stop, run_end, args.double_share, vocab)
                for i in range(args.labelers)]
    researcher = Researcher(seeded["researcher"], site.port, stop, run_end, args.export_every)
    faults, bar_stop = [], threading.Event()
    threads = [threading.Thread(target=c.run, daemon=True) for c in [*labelers, researcher]]
    threads.append(threading.Thread(target=run_faults, daemon=True, args=(
        args.faults, start, args.seconds, {"gunicorn": site.server, "celery": site.worker}, faults, stop)))
    bar = threading.Thread(target=progress, args=(labelers, faults, args.seconds, bar_stop), daemon=True)
    bar.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, run_end + GRACE + HTTP_TIMEOUT + 70 - time.time()))
    bar_stop.set()
    bar.join()
    return {"start": start, "run_end": run_end, "labelers": labelers, "researcher": researcher, "faults": faults,
            "flags": vocab["flags"]}


def report(args, site, load):
    labelers, researcher, clients = load["labelers"], load["researcher"], [*load["labelers"], load["researcher"]]
    start, run_end = load["start"], load["run_end"]
    submits = [s for lab in labelers for s in lab.submits]
    errors = sorted(e for c in clients for e in c.errors)
    checks = check_database(site.url, submits, [a for lab in labelers for a in lab.abandoned], load["flags"])
    doubles = [d for lab in labelers for d in lab.doubles]
    retried = [s for s in submits if s["attempts"] > 1]
    leases = [a for lab in labelers for a in lab.leases]
    unexpected = [u for c in clients for u in c.unexpected]
    checks.update(
        double_submits=len(doubles), double_submits_2xx_same_result=sum(d["same_result"] for d in doubles),
        retried_submits_2xx=len(retried),
        # The answer's submitted_at is earlier than the attempt that got it: a lost answer's submit had been stored.
        retried_found_stored_by_earlier_attempt=sum(
            datetime.fromisoformat(s["submitted_at"]).timestamp() < s["sent"] for s in retried),
        leases_given_to_two_clients=len(leases) - len(set(leases)), unexpected_answers=len(unexpected),
    )
    exports = wait_for_exports(site.url, researcher.exports, timeout=30)
    answers = [t for lab in labelers for t in lab.next_answered] + [s["answered"] for s in submits]
    rows, before_faults, per_second = analyse(load["faults"], answers, errors, exports, start, run_end)
    checks["errors_before_the_first_fault"] = before_faults
    cycles = sum(1 for s in submits if s["answered"] <= run_end)
    summary = {"labelers": args.labelers, "seconds": args.seconds, "workers": args.workers, "cycles": cycles,
               "cycles_per_s": cycles / args.seconds}
    notes = log_notes(site.gunicorn_log, site.celery_log)
    print_report(args, summary, checks, rows, exports, notes)
    if unexpected:
        print(f"\nFirst unexpected answers: {unexpected[:5]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv), "summary": summary,
            "faults": rows, "checks": checks, "answers_2xx_per_second": per_second, "exports": exports,
            "submits_2xx_per_second": per_second_of([s["answered"] for s in submits], start, run_end),
            "celery_worker": [(round(t - start, 2), what) for t, what in site.worker.events], "log_notes": notes,
            "unexpected": unexpected[:50],
        }, indent=2))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="Length of the run (default: %(default)s).")
    parser.add_argument("--labelers", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=6000, help="Tasks to seed, half rankings (default: %(default)s).")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default: %(default)s).")
    parser.add_argument("--faults", type=parse_schedule, default=parse_schedule(DEFAULT_FAULTS),
                        help=f"Faults and when, as shares of the run (default: {DEFAULT_FAULTS}).")
    parser.add_argument("--double-share", type=float, default=0.1, help="Share of submits sent twice.")
    parser.add_argument("--export-every", type=float, default=3.0, help="Seconds between export requests.")
    parser.add_argument("--pg-port", type=int, default=5439)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9",
                        help="Redis database for the cache and the broker; flushed before and after.")
    parser.add_argument("--json", help="Write the report here as JSON.")
    parser.add_argument("--logs", help="Copy the gunicorn and Celery logs into this folder.")
    parser.add_argument("--seed", nargs=2, type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.seed:
        return seed(*args.seed)
    if os.geteuid() != 0 or not shutil.which("pg_createcluster"):
        sys.exit("Run as root on a machine with postgresql-common: the benchmark makes its own PostgreSQL cluster.")
    import redis

    broker = redis.Redis.from_url(args.redis_url)
    try:
        broker.ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis at {args.redis_url} does not answer ({exc}); start it or pass --redis-url.")

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    site, stop = Site(args, broker), threading.Event()
    try:
        seeded = site.start()
        report(args, site, run_load(args, site, seeded, stop))
    except KeyboardInterrupt:
        stop.set()
        print("\nInterrupted; removing the cluster, the server and the worker.", file=sys.stderr)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not leave them behind
            signal.signal(signum, signal.SIG_IGN)
        stop.set()
        site.stop()


if __name__ == "__main__":
    main()
