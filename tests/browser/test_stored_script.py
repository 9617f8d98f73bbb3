"""Stored script stays text on every page that shows what people write, and every page works under the CSP.

Markup is written into each field a labeler, researcher, admin, import or model can fill, through the
services where they take it; then Chromium opens every page that shows those fields. A page passes when
no dialog opened, no event handler or script URL reached a real tag (in the HTML served and in the live
DOM), the stored text did arrive (escaped), the response carries the Content-Security-Policy, and the
browser reported no violation of it, which would mean the page's own markup needs what the policy refuses.
"""

import json
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from labeling import services
from labeling.models import (
    Assignment,
    Evaluation,
    Export,
    Guidelines,
    ImportJob,
    LabelerProfile,
    ModelVersion,
    Role,
    ScreeningAttempt,
    ScreeningItem,
    Task,
    TrainingRun,
)
from tests.browser.conftest import sign_in
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, UserFactory

pytestmark = pytest.mark.slow  # about 30 s: some fifty pages in Chromium

MARKER = "XSS"  # in every payload, so that a page can be seen to show it
PLAIN = ('XSS"\'><script>alert(1)</script><img src=x onerror=alert(2)><svg onload=alert(3)>'
         '[x](javascript:alert(4)){: onmouseover="alert(5)" }')
SHORT = 'XSS"><img src=x onerror=alert(6)>'  # for fields of 40 characters or fewer
MARKDOWN = "\n\n".join([
    f"# Heading {MARKER} {{: onclick=\"alert(7)\" }}",
    'A paragraph\n{: onmouseover="alert(8)" style="color: red" }',
    "[link](javascript:alert(9)) [mixed case](JaVaScRiPt:alert(10)) [entity](&#106;avascript:alert(11))",
    "![image](data:text/html,<script>alert(12)</script>)",
    '![image](data:image/gif;base64,R0lGOD){: onerror="alert(13)" }',
    "[reference][r]\n\n[r]: javascript:alert(14)",
    "<javascript:alert(15)> <https://example.com/\" onclick=\"alert(16)>",
    "| a {: onclick=\"alert(17)\" } | b |\n|---|---|\n| <img src=x onerror=alert(18)> | 2 |",
    '```{ .python onclick="alert(19)" }\nprint(1)\n```',
    '*[HTML]: Hyper" onmouseover="alert(20)\n\nSome HTML.',
    "Note[^1]\n\n[^1]: <svg onload=alert(21)>",
    '<div markdown="1" onclick="alert(22)">**raw**</div>\n\n<script>alert(23)</script>',
    '"><script>alert(24)</script><img src=x onerror=alert(25)>',
])
RATING = {"rating": 4, "notes": PLAIN}


# Seeding: one function per area, each leaving payloads in every field of that area a person can write.

def seed_labeler_work(labeler):
    """Results the labeler submitted, tasks of each kind on lease, and new guidelines to read."""
    first = Guidelines.objects.create(version=1, title="Basics", body="Be kind.")
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE, languages=["en"],
                                                       guidelines_acknowledged=first)
    policy = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.ACTIVE, name=SHORT)
    submitted, leased = {}, {}

    write = lease(labeler, TaskFactory(kind=Task.Kind.WRITE_PROMPT, prompt=None))
    services.prompt_write(assignment=write, labeler=labeler, style="plain", text=f"Written by a labeler: {PLAIN}")
    submitted["write_prompt"] = write
    demonstrate = lease(labeler, TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION,
                                             prompt=PromptFactory(text=f"Imported: {PLAIN}")))
    services.demonstration_write(assignment=demonstrate, labeler=labeler,
                                 turns=[{"role": "assistant", "content": PLAIN}])
    submitted["write_demonstration"] = demonstrate
    rank = lease(labeler, ranking(policy))
    ids = list(rank.task.completions.values_list("pk", flat=True))
    services.ranking_submit(assignment=rank, labeler=labeler, groups=[ids], ratings={i: RATING for i in ids})
    submitted["rank_completions"] = rank
    practice = TaskFactory(prompt=PromptFactory(text=f"Practice: {PLAIN}"), is_gold=True, is_practice=True,
                           gold_answer={"flags": [], "use_case": "generation", "explanation": PLAIN})
    submitted["practice"] = Assignment.objects.create(
        task=practice, labeler=labeler, state=Assignment.State.SUBMITTED, leased_at=timezone.now(),
        lease_expires_at=timezone.now(), submitted_at=timezone.now(), gold_score=1.0)

    chat = PromptFactory(text=f"Chat: {PLAIN}", turns=[{"role": "user", "content": PLAIN}])
    CompletionFactory(prompt=chat, model_version=policy, text=PLAIN)  # the model's suggestion
    leased["write_prompt"] = lease(labeler, TaskFactory(kind=Task.Kind.WRITE_PROMPT, prompt=None,
                                                        params={"hint": PLAIN}))
    leased["write_demonstration"] = lease(labeler, TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=chat))
    leased["rank_completions"] = lease(labeler, ranking(policy))
    leased["chat"] = lease(labeler, services.chat_task_create(system_prompt=PLAIN))
    conversation = services.chat_start(assignment=leased["chat"], labeler=labeler)
    conversation.messages.create(position=1, role="user", text=PLAIN)
    conversation.messages.create(position=2, role="assistant", text=PLAIN, original_text=f"Model: {PLAIN}",
                                 rewritten=True, state="done", model_version=policy)
    leased["annotate_prompt"] = lease(labeler, TaskFactory(prompt=PromptFactory(text=f"Annotate: {PLAIN}")))
    Guidelines.objects.create(version=2, title=PLAIN, body=MARKDOWN)
    return submitted, leased


def lease(labeler, task):
    now = timezone.now()
    order = list(task.completions.values_list("pk", flat=True))
    return Assignment.objects.create(task=task, labeler=labeler, leased_at=now,
                                     lease_expires_at=now + timedelta(minutes=30), display_order=order)


def ranking(model_version):
    prompt = PromptFactory(text=f"Rank: {PLAIN}")
    task = TaskFactory(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt)
    task.completions.set([CompletionFactory(prompt=prompt, model_version=model_version, text=f"{n} {PLAIN}")
                          for n in range(4)])
    return task


def seed_screening():
    """Screening items as researchers import them, one of each part."""
    rows = [
        {"part": "sensitive_flags", "prompt": PLAIN, "completions": [PLAIN], "gold": {"flags": ["toxic"]},
         "explanation": PLAIN},
        {"part": "ranking", "prompt": PLAIN, "completions": [PLAIN, SHORT], "gold": {"groups": [[0], [1]]}},
        {"part": "demonstration", "prompt": PLAIN},
    ]
    items = services.screening_items_import(lines=[json.dumps(row) for row in rows])
    return {item.part: item for item in items}


def applicant(name, items):
    user = UserFactory(username=f"{name}{SHORT}", first_name=PLAIN, role=Role.LABELER)
    LabelerProfile.objects.filter(user=user).update(status=LabelerProfile.Status.SCREENING)
    if items:
        services.screening_submit(user=user, answers={
            "flags": {str(items["sensitive_flags"].pk): ["toxic"]},
            "rankings": {str(items["ranking"].pk): [[1], [0]]},
            "demonstrations": {str(items["demonstration"].pk): PLAIN},
            "self_assessment": {"topics": [PLAIN], "groups": [PLAIN], "notes": PLAIN},
        })
    return user


def seed_people(admin_user, items):
    """Applicants waiting and decided, an offboarded labeler and an invitation, each with a reason."""
    applicant("waiting", items)
    decided = ScreeningAttempt.objects.get(profile__user=applicant("decided", items))
    services.screening_grade(attempt=decided, grades={str(items["demonstration"].pk): 3}, graded_by=admin_user)
    services.screening_decide(attempt=decided, approve=False, reason=PLAIN, decided_by=admin_user)
    services.invitation_create(note=PLAIN, created_by=admin_user)
    return offboarded(admin_user)


def offboarded(admin_user):
    """A labeler an admin offboarded, with the reason they are shown."""
    user = UserFactory(username=f"gone{SHORT}", role=Role.LABELER)
    LabelerProfile.objects.filter(user=user).update(status=LabelerProfile.Status.ACTIVE)
    services.labeler_set_status(profile=LabelerProfile.objects.get(user=user),
                                status=LabelerProfile.Status.OFFBOARDED, reason=PLAIN, changed_by=admin_user)
    return user


def seed_research(researcher):
    """An import with rejected rows, exports, training runs and model versions, named and described in markup."""
    rows = [{"prompt": f"Imported row: {PLAIN}", "source_user_id": SHORT},
            {"prompt": f"Another: {PLAIN}", "use_case": PLAIN}, {"prompt": f"A third: {PLAIN}", "language": PLAIN}]
    upload = SimpleUploadedFile("prompts.jsonl", "\n".join(json.dumps(row) for row in rows).encode())
    job = services.import_job_start(job=services.import_job_create(uploaded_file=upload, created_by=researcher),
                                    inline=True)
    ImportJob.objects.filter(pk=job.pk).update(filename=f"{PLAIN}.jsonl")
    ImportJob.objects.create(filename=f"failed{PLAIN}.csv", format="csv", size_bytes=10, created_by=researcher,
                             state="failed", error=PLAIN)
    PromptFactory(text=f"Odd language: {PLAIN}", language='"><svg onload=1>')
    Export.objects.create(kind="rankings", state="succeeded", created_by=researcher, filters={PLAIN: [PLAIN]},
                          manifest={"counts": {PLAIN: 1}, "columns": [PLAIN], "code_version": PLAIN}, row_count=1)
    Export.objects.create(kind="rankings", state="failed", created_by=researcher, filters={"split": PLAIN},
                          error=PLAIN)
    reward = ModelVersionFactory(kind=ModelVersion.Kind.REWARD, name=SHORT, status_reason=PLAIN,
                                 metrics={"accuracy": 0.7, PLAIN: 1.0}, artifact_path=PLAIN)
    policy = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, name=f"p{SHORT}", status_reason=PLAIN,
                                 metrics={"reward": 0.3, "kl": 1.2})
    seed_evaluation(policy, reward)
    run = services.training_run_start(kind="reward", created_by=researcher, trigger=SHORT)
    TrainingRun.objects.filter(pk=run.pk).update(  # options as stored before they were checked at request time
        state="failed", error=PLAIN, log=PLAIN, output_path=PLAIN, metrics={PLAIN: 0.5}, config={PLAIN: PLAIN},
        history=[{"step": 1, "loss": 0.9, "accuracy": 0.5}, {"step": 2, "loss": 0.5, "accuracy": 0.6}],
        gate={"passed": False, "reason": PLAIN}, base_model=reward)


def seed_evaluation(candidate, reward):
    """An evaluation of `candidate` against an external endpoint named and described in markup, judged once on a
    prompt whose use case is markup, scored by `reward`."""
    theirs = ModelVersionFactory(kind=ModelVersion.Kind.EXTERNAL, name=f"e{SHORT}", status="ready",
                                 endpoint_url=PLAIN, endpoint_model=PLAIN, endpoint_key_env=SHORT)
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN, trigger=SHORT,
                                           error=PLAIN, reward_model=reward, sampling_params={PLAIN: PLAIN})
    evaluation.baselines.set([theirs])
    prompt = PromptFactory(text=f"Evaluated: {PLAIN}", use_case="XSS<i onclick=1>", split="test")
    outputs = [CompletionFactory(prompt=prompt, model_version=version, text=PLAIN) for version in (candidate, theirs)]
    task = TaskFactory(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt, evaluation=evaluation)
    task.completions.set(outputs)
    Evaluation.objects.filter(pk=evaluation.pk).update(reward_scores={str(c.pk): n for n, c in enumerate(outputs)})
    services.ranking_save(task=task, labeler=UserFactory(role=Role.LABELER), groups=[[c.pk] for c in outputs],
                          ratings={c.pk: RATING for c in outputs})


# Checking a page

class Markup(HTMLParser):
    """What of a page's HTML a browser would treat as live markup: handlers, script URLs, inline scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.live = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            url = (value or "").strip().lower()
            if name.startswith("on") or (name in ("href", "src", "action", "formaction") and
                                         url.startswith(("javascript:", "data:", "vbscript:"))):
                self.live.append(f"<{tag} {name}={value!r}>")
        attrs = dict(attrs)
        if tag == "script" and not attrs.get("src") and attrs.get("type") != "application/json":
            self.live.append("<script> without src")

    handle_startendtag = handle_starttag


# Admin lists whose columns are ids, choices and numbers only.
LISTS_WITHOUT_TEXT = {"task", "completionrating", "promptannotation"}

LIVE_IN_DOM = """() => [...document.querySelectorAll("*")].flatMap((element) => [...element.attributes]
  .filter((a) => a.name.startsWith("on") || (["href", "src", "action", "formaction"].includes(a.name)
    && /^\\s*(javascript|data|vbscript):/i.test(a.value)))
  .map((a) => `${element.tagName} ${a.name}`))"""


@pytest.fixture
def watched(page):
    """The page, recording every dialog it opens and every CSP violation the browser reports."""
    page.dialogs, page.violations = [], []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda message: "Content Security Policy" in message.text
            and page.violations.append(f"{page.url}: {message.text[:300]}"))
    return page


def check(page, path, *, shows_text=True):
    """`shows_text`: the page shows stored text (the applicant queue, anonymised, shows none)."""
    response = page.goto(path)
    assert response.status == 200, f"{path}: {response.status}"
    policy = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy, f"{path}: {policy!r}"
    html = response.text()
    assert MARKER in html or not shows_text, f"{path} shows none of the stored text"
    parser = Markup()
    parser.feed(html)
    assert parser.live == [], path
    assert page.evaluate(LIVE_IN_DOM) == [], path


def assert_nothing_ran(page):
    page.wait_for_timeout(100)  # a handler queued by the last page gets its chance to fire
    assert page.dialogs == []
    assert page.violations == []


def test_a_labelers_pages_show_stored_script_as_text(watched, live_server, transactional_db):
    labeler = UserFactory(username="alice", first_name=PLAIN, role=Role.LABELER)
    submitted, leased = seed_labeler_work(labeler)
    seed_screening()
    applicant("applicant", None)
    gone = offboarded(UserFactory(username="ada", role=Role.ADMIN))

    sign_in(watched, labeler.username)
    check(watched, "/work/")
    expect(watched.locator("#guidelines h1")).to_contain_text(f"Heading {MARKER}")  # the markdown did render
    for assignment in leased.values():
        check(watched, reverse("assignment", args=[assignment.pk]))
    expect(watched.locator("#task-form")).to_be_visible()
    check(watched, "/work/mine/")
    for assignment in submitted.values():
        check(watched, reverse("my-work-detail", args=[assignment.pk]))
    check(watched, reverse("my-work-detail", args=[leased["rank_completions"].pk]))
    check(watched, reverse("my-work-detail", args=[leased["chat"].pk]))

    watched.get_by_role("button", name="Sign out alice").click()
    sign_in(watched, f"applicant{SHORT}")
    check(watched, "/work/screening/")
    watched.get_by_role("button", name=f"Sign out applicant{SHORT}").click()
    sign_in(watched, gone.username)
    check(watched, "/work/")
    expect(watched.locator("#status")).to_contain_text(f"Reason: {PLAIN}")
    assert_nothing_ran(watched)


def test_a_researchers_pages_show_stored_script_as_text(watched, live_server, transactional_db):
    researcher = UserFactory(username="rita", role=Role.RESEARCHER)
    seed_research(researcher)
    sign_in(watched, researcher.username)
    check(watched, "/research/")
    languages = watched.locator(".card", has=watched.get_by_role("heading", name="Languages"))
    expect(languages.locator("meter").first).to_be_visible()  # the bars drawn without inline styles
    for path in ["/research/imports/", "/research/exports/", "/research/training/", "/research/models/",
                 "/research/evaluations/", "/research/evaluations/leaderboard/"]:
        check(watched, path)
    for evaluation in Evaluation.objects.all():
        check(watched, evaluation.get_absolute_url())
    for version in ModelVersion.objects.exclude(kind=ModelVersion.Kind.REWARD):
        check(watched, version.get_absolute_url())
    for job in ImportJob.objects.all():
        check(watched, job.get_absolute_url())
    expect(watched.locator("table.row-errors tbody tr")).to_have_count(2)  # the import ran, refusing two rows
    for export in Export.objects.all():
        check(watched, export.get_absolute_url())
    check(watched, TrainingRun.objects.get().get_absolute_url())
    assert_nothing_ran(watched)


def test_an_admins_pages_show_stored_script_as_text(watched, live_server, transactional_db):
    admin_user = UserFactory(username="ada", role=Role.ADMIN)
    researcher = UserFactory(username=f"rita{SHORT}", role=Role.RESEARCHER)
    labeler = UserFactory(username=f"alice{SHORT}", role=Role.LABELER)
    seed_labeler_work(labeler)
    seed_research(researcher)
    gone = seed_people(admin_user, seed_screening())

    sign_in(watched, admin_user.username)
    check(watched, "/review/", shows_text=False)
    for attempt in ScreeningAttempt.objects.all():
        check(watched, reverse("review", args=[attempt.pk]))
    check(watched, "/quality/")
    for user in (labeler, gone):
        check(watched, reverse("labeler-quality", args=[user.pk]))
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        if meta.app_label not in ("labeling", "auth") or meta.model_name == "group":
            continue
        check(watched, reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"),
              shows_text=meta.model_name not in LISTS_WITHOUT_TEXT)
        for obj in model_admin.get_queryset(_request(admin_user)).order_by("-pk")[:1]:
            check(watched, reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]))
    assert_nothing_ran(watched)


def _request(user):
    request = RequestFactory().get("/")
    request.user = user
    return request


def test_the_api_docs_work_under_the_policy(watched, live_server, transactional_db):
    researcher = UserFactory(username="rita", role=Role.RESEARCHER)
    sign_in(watched, researcher.username)
    response = watched.goto("/api/docs/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(watched.locator(".opblock-summary-path").first).to_be_visible()  # Swagger UI drew the operations
    assert watched.violations == []
    response = watched.goto("/api/redoc/")
    assert "style-src 'self' 'nonce-" in response.headers["content-security-policy"]
    expect(watched.get_by_role("heading", name="exports_list")).to_be_visible()  # Redoc drew the operations
    assert watched.dialogs == []
