"""Benchmark: the Evaluation page and the leaderboard with 100,000 judgments over 20 versions.

Creates a scratch PostgreSQL database (bench_evaluations), migrates it and stores 20 policy versions,
2,000 test-split prompts and 19 evaluations: version i against version i-1, and every third one
against version 0 as well (three outputs to rank). Each evaluation has a task per prompt, judged by
two or three of 40 labelers (100,000 judgments in all, each with a rating and flags per output), who
prefer the stronger version as Bradley-Terry says. Then renders each page through Django's full
request cycle (middleware, view, template), as a signed-in researcher, with the cache on a Redis
database of its own:

- cold: nothing cached, so the page computes its numbers (the leaderboard fits Bradley-Terry on every
  judgment and bootstraps it a thousand times);
- warm: the numbers cached, nothing new since;
- after a new judgment (through `services.ranking_save`): each page shows its last numbers, marked as
  out of date, and queues their recomputation, which is timed on its own (what the worker does).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/evaluations.py
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from labeling_load import recreate_db  # noqa: E402

SCRATCH = "bench_evaluations"
LABELERS = 40
BATCH = 5000


def load(versions, prompts, judgments):
    """Versions, prompts, evaluations, their tasks, outputs, judgments and ratings, with bulk inserts."""
    from django.contrib.auth import get_user_model

    from labeling.models import (
        Completion,
        CompletionRating,
        Evaluation,
        ModelVersion,
        Prompt,
        Ranking,
        Role,
        Task,
    )
    from labeling.services import user_set_role

    rng = random.Random(0)
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"labeler-{n}") for n in range(LABELERS)])
    for user in users:
        user_set_role(user=user, role=Role.LABELER)
    models = ModelVersion.objects.bulk_create([
        ModelVersion(kind=ModelVersion.Kind.POLICY, name=f"ppo-{n:02d}", status=ModelVersion.Status.READY,
                     artifact_path="x") for n in range(versions)])
    strength = {model.pk: 0.15 * n for n, model in enumerate(models)}
    use_cases = ["generation", "open_qa", "brainstorming", "chat", "rewrite"]
    test = Prompt.objects.bulk_create([
        Prompt(text=f"Explain idea number {n} to a curious twelve-year-old.", split=Prompt.Split.TEST,
               use_case=use_cases[n % len(use_cases)], dedup_key=f"bench-{n}") for n in range(prompts)])
    evaluations = []
    for n in range(1, versions):
        evaluation = Evaluation.objects.create(candidate=models[n], state=Evaluation.State.OPEN,
                                               prompt_ids=[p.pk for p in test])
        evaluation.baselines.set([models[n - 1], *([models[0]] if n % 3 == 0 and n > 1 else [])])
        evaluations.append((evaluation, [models[n], models[n - 1], *([models[0]] if n % 3 == 0 and n > 1 else [])]))
    tasks_total = len(evaluations) * prompts
    threes = judgments - 2 * tasks_total  # tasks judged three times, the rest twice
    if not 0 <= threes <= tasks_total:
        raise SystemExit(f"{judgments} judgments do not fit {tasks_total} tasks judged two or three times.")
    task_index = 0
    for evaluation, outputs in evaluations:
        tasks = Task.objects.bulk_create([
            Task(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt, evaluation=evaluation, state=Task.State.COMPLETED,
                 required_annotations=2) for prompt in test])
        completions = Completion.objects.bulk_create([
            Completion(prompt_id=task.prompt_id, text=f"An answer of {model.name}.", model_version=model)
            for task in tasks for model in outputs], batch_size=BATCH)
        made = [completions[i:i + len(outputs)] for i in range(0, len(completions), len(outputs))]
        Task.completions.through.objects.bulk_create([
            Task.completions.through(task_id=task.pk, completion_id=c.pk) for task, cs in zip(tasks, made, strict=True)
            for c in cs], batch_size=BATCH)
        rankings, rated = [], []
        for task, cs in zip(tasks, made, strict=True):
            judges = rng.sample(users, 3 if task_index < threes else 2)
            task_index += 1
            for judge in judges:
                # Bradley-Terry's Plackett-Luce: draw the best of what is left by strength, then the next.
                left, order = list(cs), []
                while left:
                    weights = [2.718 ** strength[c.model_version_id] for c in left]
                    order.append(left.pop(rng.choices(range(len(left)), weights)[0]))
                rankings.append(Ranking(task=task, labeler=judge, groups=[[c.pk] for c in order]))
                rated.append(order)
        rankings = Ranking.objects.bulk_create(rankings, batch_size=BATCH)
        CompletionRating.objects.bulk_create([
            CompletionRating(ranking=ranking, completion=c, rating=max(1, 7 - place * 2 - rng.randint(0, 1)),
                             hallucination=rng.random() < 0.1, fails_to_follow_instruction=rng.random() < 0.05)
            for ranking, order in zip(rankings, rated, strict=True) for place, c in enumerate(order)],
            batch_size=BATCH)
    return [evaluation for evaluation, _ in evaluations]


def timed(client, url, repeat=1):
    """Milliseconds to render `url`, median of `repeat` requests."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append(1000 * (time.perf_counter() - started))
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), response.content.decode()


def measure(evaluations):
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.test import Client

    from labeling import evaluations as reads
    from labeling import services
    from labeling.models import Ranking, Role, Task

    researcher = get_user_model().objects.create(username="researcher")
    services.user_set_role(user=researcher, role=Role.RESEARCHER)
    client = Client()
    client.force_login(researcher)
    timed(client, "/research/models/")  # the process's first request: imports, templates, URL patterns
    cache.clear()
    middle = evaluations[len(evaluations) // 2]
    page, board = f"/research/evaluations/{middle.pk}/", "/research/evaluations/leaderboard/"
    rows = []
    ms, body = timed(client, page)
    rows.append(("Evaluation page", "cold", ms, f"{Ranking.objects.filter(task__evaluation=middle).count():,} "
                                               "judgments in this evaluation"))
    rows.append(("Evaluation page", "warm", timed(client, page, repeat=9)[0], "median of 9"))
    ms, body = timed(client, board)
    assert "ppo-19" in body
    rows.append(("Leaderboard page", "cold", ms, "fits every judgment"))
    rows.append(("Leaderboard page", "warm", timed(client, board, repeat=9)[0], "median of 9"))

    # One more judgment in the middle evaluation, through the service a labeler's submission calls.
    task = Task.objects.filter(evaluation=middle).exclude(rankings__labeler=researcher).first()
    completions = list(task.completions.values_list("pk", flat=True))
    services.ranking_save(task=task, labeler=researcher, groups=[completions],
                          ratings={pk: {"rating": 4} for pk in completions})
    ms, body = timed(client, page)
    assert "a worker is counting them" in body
    rows.append(("Evaluation page", "after a new judgment", ms, "shows the last numbers; a worker counts"))
    started = time.perf_counter()
    counted = reads.evaluation_results_compute(middle)
    rows.append(("Evaluation recount", "in the worker", 1000 * (time.perf_counter() - started),
                 f"{counted['judgments']:,} judgments"))
    rows.append(("Evaluation page", "after the recount", timed(client, page, repeat=9)[0], "median of 9"))
    ms, body = timed(client, board)
    assert "a worker is fitting them" in body
    rows.append(("Leaderboard page", "after a new judgment", ms, "shows the last board; a worker refits"))
    started = time.perf_counter()
    fitted = reads.leaderboard_compute()
    rows.append(("Leaderboard refit", "in the worker", 1000 * (time.perf_counter() - started),
                 f"{fitted['judgments']:,} judgments, {len(fitted['versions'])} versions"))
    rows.append(("Leaderboard page", "after the refit", timed(client, board, repeat=9)[0], "median of 9"))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judgments", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if not base.startswith("postgres") or not redis_url:
        raise SystemExit("Set DATABASE_URL (PostgreSQL; the scratch database is made beside it) and REDIS_URL.")
    if args.child:
        import django

        django.setup()
        started = time.perf_counter()
        evaluations = load(args.versions, args.prompts, args.judgments)
        print(f"(stored {args.judgments:,} judgments in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
        print(f"{'page':<18} {'case':<22} {'ms':>8}  note")
        for page, case, ms, note in measure(evaluations):
            print(f"{page:<18} {case:<22} {ms:>8.1f}  {note}", flush=True)
        return
    url = urlunsplit(urlsplit(base)._replace(path="/" + SCRATCH))
    scratch_redis = redis_url.rsplit("/", 1)[0] + "/14"  # its cache and broker, flushed after
    environment = {**os.environ, "DATABASE_URL": url, "REDIS_URL": scratch_redis, "SECRET_KEY": "bench",
                   "ALLOWED_HOSTS": "testserver", "DJANGO_SETTINGS_MODULE": "config.settings"}
    recreate_db(base, create=True, name=SCRATCH)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=environment,
                       check=True)
        subprocess.run([sys.executable, __file__, "--child", "--judgments", str(args.judgments), "--versions",
                        str(args.versions), "--prompts", str(args.prompts)], cwd=ROOT, env=environment, check=True)
    finally:
        recreate_db(base, create=False, name=SCRATCH)
        import redis

        redis.Redis.from_url(scratch_redis).flushdb()


if __name__ == "__main__":
    main()
