"""The labeler API while chats stream: next/submit latency with and without C chats under way.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/0 \
        .venv/bin/python bench/chat.py --api --chats 4 --labelers 8

The whole stack, as docker-compose runs it: a scratch PostgreSQL database, gunicorn (gthread), a
chat worker (Celery, threads) writing SmolLM2's replies in process, Redis as broker and cache.
N labelers lease and submit ranking tasks in closed loop (bench/labeling_load.py's), first alone,
then while C chat clients each send a turn and read its reply's server-sent events until it ends,
over and over; then while the same model writes as many replies at a time outside the site, in a
process of its own (the control: what the model's share of the CPU costs by itself); then alone
again (the two runs alone give the noise). Chats: time from sending a turn to its reply's first
text event, through the site.
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from labeling_load import (
    HOST,
    Labeler,
    free_port,
    pct,
    recreate_db,
    run_closed,
    scratch_url,
    start_gunicorn,
    stop_gunicorn,
)

ROOT = Path(__file__).resolve().parent.parent
TURNS = ["What should I see in Lisbon?", "And where should I eat?", "How do I get around?", "Any day trips?"]


def seed(labelers, chats, tasks):
    """In a child process on the scratch database: labelers, ranking tasks, a chat task; prints the tokens."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    from labeling_load import seed as seed_rankings

    from labeling import services

    services.chat_task_create(conversations=chats, priority=10, system_prompt="You are a helpful travel assistant.")
    seed_rankings(labelers + chats, tasks)  # prints the tokens; the chat task, first in the queue, goes to the first


def generate(chats, model):
    """The control: `chats` replies at a time written without the site, one after another, until stopped."""
    from rlhf.sampling import HFSampler, SamplingParams

    sampler = HFSampler(model, device="cpu")
    params = SamplingParams(temperature=0.7, max_new_tokens=48)
    sampler.sample(["Hello!"], 1, params)
    print("ready", flush=True)

    def loop(n):
        while True:
            for _ in sampler.stream([{"role": "user", "content": TURNS[n % len(TURNS)]}], params):
                pass

    threads = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(chats)]
    for thread in threads:
        thread.start()
    threads[0].join()


class Chat:
    """A labeler chatting through the site: a turn, then its reply's events until the end, again and again."""

    def __init__(self, token, port):
        self.port, self.headers = port, {"Authorization": f"Token {token}", "Content-Type": "application/json",
                                         "Accept": "application/json"}
        self.first_text, self.errors = [], []

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self.headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def start(self):
        status, lease = self.call("POST", "/api/work/next/", {})
        assert status == 200 and lease["kind"] == "chat", (status, lease)
        status, chat = self.call("POST", f"/api/work/assignments/{lease['id']}/chat/")
        self.id, self.after = chat["id"], None

    def run(self, stop):
        n = 0
        while not stop.is_set():
            asked = time.perf_counter()
            status, reply = self.call("POST", f"/api/work/chats/{self.id}/turns/",
                                      {"text": TURNS[n % len(TURNS)], "after": self.after})
            if status != 201:
                self.errors.append(f"turn {status}: {reply}")
                return
            end = self.read(reply["stream"], asked)
            self.after, n = reply["id"], n + 1
            if end["state"] != "done":
                self.errors.append(f"reply {end['state']}: {end['error']}")
                return

    def read(self, path, asked):
        conn = http.client.HTTPConnection(HOST, self.port, timeout=300)
        conn.request("GET", path, headers={**self.headers, "Accept": "text/event-stream"})
        response, event, first = conn.getresponse(), None, None
        try:
            for line in response:
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "text" and first is None:
                    first = time.perf_counter()
                    self.first_text.append(first - asked)
                elif line.startswith("data: ") and event == "end":
                    return json.loads(line[6:])
        finally:
            conn.close()
        return {"state": "lost", "error": "the stream closed before its end event"}


def summary(name, stats, elapsed):
    n, s = stats.latency["next"], stats.latency["submit"]
    return (f"{name:<26} {stats.cycles / elapsed:>9.1f} {pct(n, 50):>8.1f} {pct(n, 95):>8.1f} {pct(s, 50):>8.1f} "
            f"{pct(s, 95):>8.1f} {len(stats.errors):>6}")


def run(model, chats, labelers, seconds, workers, threads, tasks):
    url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if not url.startswith("postgres") or not redis_url:
        sys.exit("Set DATABASE_URL (PostgreSQL) and REDIS_URL: this part measures the production stack.")
    bench_url = scratch_url(url)
    redis_base = redis_url.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as data_dir:
        env = {**os.environ, "DATABASE_URL": bench_url, "SECRET_KEY": "benchmark", "ALLOWED_HOSTS": HOST,
               "DATA_DIR": data_dir, "API_THROTTLE_RATE": "1000000/hour", "LOG_LEVEL": "WARNING",
               "REDIS_URL": f"{redis_base}/13", "CELERY_BROKER_URL": f"{redis_base}/14", "POLICY_MODEL": str(model),
               "CHAT_MAX_NEW_TOKENS": "48", "CHAT_MAX_TURNS": "1000"}
        env.pop("DEBUG", None)
        recreate_db(url, create=True)
        server = worker = None
        try:
            subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
            out = subprocess.run([sys.executable, str(ROOT / "bench" / "chat.py"), "--seed-api", str(labelers),
                                  str(chats), str(tasks)], cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE,
                                 text=True).stdout
            tokens = json.loads(out.strip().splitlines()[-1])
            port = free_port()
            log = open(Path(data_dir) / "server.log", "w")
            server = start_gunicorn(env, port, workers, threads, log)
            # One core for the model, so that the measure is of the design and not of two cores shared out.
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "chat", "--pool", "threads",
                 "--concurrency", str(chats), "--loglevel", "WARNING"],
                cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log)
            clients = [Chat(token, port) for token in tokens[:chats]]
            for client in clients:
                client.start()
            status, reply = clients[0].call("POST", f"/api/work/chats/{clients[0].id}/turns/",
                                            {"text": "Hello!", "after": None})
            clients[0].read(reply["stream"], time.perf_counter())  # the worker loads the model
            clients[0].after, clients[0].first_text = reply["id"], []
            people = [Labeler(i, token, port) for i, token in enumerate(tokens[chats:])]
            rows = [summary("alone", *run_closed(people, seconds))]
            stop = threading.Event()
            streams = [threading.Thread(target=client.run, args=(stop,), daemon=True) for client in clients]
            for thread in streams:
                thread.start()
            time.sleep(2)
            rows.append(summary(f"while {chats} chats stream", *run_closed(people, seconds)))
            stop.set()
            for thread in streams:
                thread.join(timeout=300)
            # The control: the same generation, in a process of its own beside the site, on the same one core.
            outside = subprocess.Popen([sys.executable, str(ROOT / "bench" / "chat.py"), "--generate-only",
                                        str(chats), str(model)], cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"},
                                       stdout=subprocess.PIPE, text=True)
            assert outside.stdout.readline().strip() == "ready"
            rows.append(summary(f"while {chats} generate outside", *run_closed(people, seconds)))
            outside.terminate()
            outside.wait(timeout=60)
            rows.append(summary("alone again", *run_closed(people, seconds)))
            firsts = [s for client in clients for s in client.first_text]
            errors = [e for client in clients for e in client.errors]
            print(f"gunicorn --workers {workers} --threads {threads}; {labelers} labelers in closed loop, {seconds:g} s "
                  f"a run; chat worker: {chats} threads, 1 core for the model; latency in ms")
            print(f"{'labelers':<26} {'cycles/s':>9} {'next p50':>8} {'p95':>8} {'sub p50':>8} {'p95':>8} {'errors':>6}")
            for line in rows:
                print(line)
            print(f"chats: {len(firsts)} replies; turn to first text, median {statistics.median(firsts):.2f} s, "
                  f"slowest {max(firsts):.2f} s; chat errors: {len(errors)} {errors[:3]}")
        finally:
            if worker and worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=30)
            stop_gunicorn(server)
            recreate_db(url, create=False)
