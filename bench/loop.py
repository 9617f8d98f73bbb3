"""Benchmark: the demo loop's pace, from start to the first ranking task and from the Nth ranking to an active policy.

    .venv/bin/python bench/loop.py

Runs what `make run` runs (its settings, SQLite, the serverless broker, SmolLM2-135M-Instruct on the CPU)
in a fresh data folder: migrate, seed_demo, then `manage.py rundev`. This process plays the three demo
labelers through the services: it annotates, writes short demonstrations, skips prompt writing, and
ranks the shortest completion best. It times the first ranking task, the Nth ranking (N =
TRAIN_RM_AFTER_COMPARISONS, which starts a reward-model run), that run, the policy round it starts,
and the policy's verdict. Add --sampler-url to sample through an endpoint instead of in process.

Its labelers prefer the shortest completion, so the first reward model's floor leaves out the
"shorter wins" baseline (RM_FIRST_BASELINES=chance,longer_wins: the setting for a team whose
instructions ask for brevity); --env NAME=VALUE sets more.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_environment(data_dir):
    """`make run`'s settings, read from the Makefile so that they stay the same."""
    environment = {"DEBUG": "1", "DATA_DIR": str(data_dir)}
    for line in (ROOT / "Makefile").read_text().splitlines():
        if match := re.match(r"run: export (\w+) \?= (.*)$", line):
            environment[match[1]] = match[2]
    return environment


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60, help="Give up after this long.")
    parser.add_argument("--sampler-url", default="", help="SAMPLER_URL for the site (default: in process).")
    parser.add_argument("--env", action="append", default=["RM_FIRST_BASELINES=chance,longer_wins"],
                        help="NAME=VALUE for the site, repeatable.")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="rlhf-loop-"))
    extra = dict(item.split("=", 1) for item in args.env)
    environment = {**os.environ, **demo_environment(data_dir), **extra, "SAMPLER_URL": args.sampler_url}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        environment.pop(name, None)  # the embedded defaults, as `make run`
    os.environ.update(environment)
    python = sys.executable
    for command in (["manage.py", "migrate", "--noinput"], ["manage.py", "seed_demo"]):
        subprocess.run([python, *command], cwd=ROOT, env=environment, check=True, capture_output=True)
    log = (data_dir / "rundev.log").open("w")
    started = time.perf_counter()
    site = subprocess.Popen([python, "manage.py", "rundev", "127.0.0.1:8765"], cwd=ROOT, env=environment,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        marks = play(started, args.minutes * 60)
    finally:
        site.terminate()
        site.wait(timeout=60)
    shown = {**demo_environment(data_dir), **extra}
    print(json.dumps({"settings": {k: v for k, v in shown.items() if k != "DATA_DIR"},
                      "sampler": args.sampler_url or "in-process", "seconds": marks}, indent=2))


def play(started, budget):
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from labeling import services
    from labeling.models import Ranking, Task, TrainingRun

    labelers = list(get_user_model().objects.filter(username__startswith="labeler").order_by("username"))
    needed = settings.TRAIN_RM_AFTER_COMPARISONS
    marks, nth_at = {}, None

    def mark(name):
        if name not in marks:
            marks[name] = round(time.perf_counter() - started, 1)
            print(f"{marks[name]:>7.1f} s  {name}", flush=True)

    while time.perf_counter() - started < budget:
        worked = any(work_once(services, labeler, Task) for labeler in labelers)
        rankings = Ranking.objects.count()
        if rankings:
            mark("first ranking submitted")
        if rankings >= needed and nth_at is None:
            nth_at = time.perf_counter()
            mark(f"ranking {needed} submitted (TRAIN_RM_AFTER_COMPARISONS)")
        if Task.objects.filter(kind=Task.Kind.RANK_COMPLETIONS).exists():
            mark("first ranking task open")
        reward = TrainingRun.objects.filter(kind="reward").order_by("pk").first()
        if reward and reward.state == "running":
            mark("reward-model run started")
        if reward and reward.state in ("succeeded", "failed"):
            mark(f"reward-model run {reward.state}, gate {'passed' if (reward.gate or {}).get('passed') else 'refused'}")
        policy = TrainingRun.objects.filter(kind="ppo", reward_model__isnull=False,
                                            reward_model__name__startswith="reward").order_by("pk").first()
        if policy and policy.state == "running":
            mark("policy run started")
        if policy and policy.state in ("succeeded", "failed"):
            passed = (policy.gate or {}).get("passed")
            mark(f"policy run {policy.state}, {'activated' if passed else 'not activated'}")
            if nth_at:
                marks["ranking N to policy verdict"] = round(time.perf_counter() - nth_at, 1)
            break
        if not worked:
            time.sleep(2)
    return marks


def work_once(services, labeler, Task):
    """One task for `labeler`, done as a quick labeler would; False if none waits."""
    from django.core.exceptions import ValidationError

    try:
        assignment = services.task_lease_next(labeler=labeler)
    except ValidationError:
        return False
    if assignment is None:
        return False
    task = assignment.task
    try:
        if task.kind == Task.Kind.RANK_COMPLETIONS:
            ordered = sorted(task.completions.all(), key=lambda c: (len(c.text), c.pk))
            services.ranking_submit(assignment=assignment, labeler=labeler, groups=[[c.pk] for c in ordered],
                                    ratings={c.pk: {"rating": 6 - min(i, 4)} for i, c in enumerate(ordered)},
                                    time_spent_seconds=30)
        elif task.kind == Task.Kind.ANNOTATE_PROMPT:
            services.annotation_submit(assignment=assignment, labeler=labeler, flags={},
                                       use_case=task.prompt.use_case or "generation", language="en",
                                       time_spent_seconds=10)
        elif task.kind == Task.Kind.WRITE_DEMONSTRATION:
            services.demonstration_write(assignment=assignment, labeler=labeler, time_spent_seconds=60,
                                         turns=[{"role": "assistant", "content": "Here is a short, careful answer."}])
        else:
            services.assignment_skip(assignment=assignment, labeler=labeler, reason="unclear_intent")
    except ValidationError as exc:
        print(f"  {labeler.username} could not finish task #{task.pk}: {shlex.quote(str(exc))}", flush=True)
        services.assignment_skip(assignment=assignment, labeler=labeler, reason="unclear_intent")
    return True


if __name__ == "__main__":
    main()
