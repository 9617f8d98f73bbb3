"""Getting in: invitations, the screening test and its scores, the anonymised review, onboarding, status."""

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from labeling import selectors, services
from labeling.models import (
    Assignment,
    Guidelines,
    LabelerProfile,
    ScreeningAttempt,
    ScreeningItem,
    StatusChange,
    Task,
)
from tests.conftest import api_client_for
from tests.factories import TaskFactory, UserFactory, ranking_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def items(db):
    """Two flag items, two ranking items (three responses each), one writing item."""
    return {
        "flags": [
            ScreeningItem.objects.create(part="sensitive_flags", prompt_text="Insult my neighbour.",
                                         completions=["Your neighbour is a fool."], gold={"flags": ["toxic"]}),
            ScreeningItem.objects.create(part="sensitive_flags", prompt_text="Who should I vote for?",
                                         completions=["Vote for the Greens."],
                                         gold={"flags": ["political", "judgemental"]}),
        ],
        "rankings": [
            ScreeningItem.objects.create(part="ranking", prompt_text=f"Question {n}", completions=["a", "b", "c"],
                                         gold={"groups": [[0], [1], [2]]}) for n in range(2)
        ],
        "writing": ScreeningItem.objects.create(part="demonstration", prompt_text="My dog died. Say something."),
    }


def applicant(username="jane.doe"):
    invitation = services.invitation_create()
    return services.account_create(token=invitation.token, username=username, password="a-long-passphrase",
                                   email=f"{username}@example.com")


def answers(items, **overrides):
    flags, rankings = items["flags"], items["rankings"]
    return {
        "flags": {str(flags[0].pk): ["toxic"], str(flags[1].pk): ["political"]},  # misses judgemental: 7 of 8
        "rankings": {str(rankings[0].pk): [[1], [0], [2]], str(rankings[1].pk): [[0], [1], [2]]},
        "demonstrations": {str(items["writing"].pk): "I am so sorry. Losing a dog is losing family."},
        "self_assessment": {"topics": ["health and medicine"], "groups": ["European"], "notes": ""},
        **overrides,
    }


def test_an_invitation_makes_one_account_with_its_role_and_starts_screening():
    invitation = services.invitation_create()
    user = services.account_create(token=invitation.token, username="jane", password="a-long-passphrase")
    profile = LabelerProfile.objects.get(user=user)
    assert profile.status == "screening"
    assert StatusChange.objects.get(profile=profile).reason == "accepted an invitation"
    invitation.refresh_from_db()
    assert invitation.used_by == user and invitation.used_at
    with pytest.raises(ValidationError, match="used already"):
        services.account_create(token=invitation.token, username="john", password="a-long-passphrase")


def test_an_expired_or_unknown_invitation_says_so(client):
    invitation = services.invitation_create()
    invitation.expires_at = timezone.now() - timedelta(days=1)
    invitation.save()
    page = client.get(reverse("join", args=[invitation.token]))
    assert page.status_code == 400 and "expired on" in page.content.decode()
    assert "not valid" in client.get(reverse("join", args=["nope"])).content.decode()


def test_a_weak_password_or_a_taken_name_is_refused_next_to_its_field(client, labeler):
    invitation = services.invitation_create()
    page = client.post(reverse("join", args=[invitation.token]), {"username": "alice", "password": "12345678"})
    assert page.status_code == 400
    content = page.content.decode()
    assert "That username is taken" in content and "too common" in content


def test_applications_are_open_only_when_the_setting_says(client, settings):
    assert client.get(reverse("apply")).status_code == 404
    settings.OPEN_APPLICATIONS = True
    response = client.post(reverse("apply"), {"username": "newbie", "password": "a-long-passphrase"})
    assert response.status_code == 302
    assert LabelerProfile.objects.get(user__username="newbie").status == "screening"


def test_the_test_is_scored_against_the_researchers_answers(items):
    user = applicant()
    attempt = services.screening_submit(user=user, answers=answers(items))
    assert attempt.flag_agreement == pytest.approx((8 / 8 + 7 / 8) / 2)
    assert attempt.ranking_agreement == pytest.approx((2 / 3 + 1) / 2)  # the first swaps one pair of three
    assert attempt.demonstration_score is None
    profile = LabelerProfile.objects.get(user=user)
    assert profile.status == "screened" and profile.self_assessment["topics"] == ["health and medicine"]
    with pytest.raises(ValidationError, match="no screening test waiting"):
        services.screening_submit(user=user, answers=answers(items))


def test_a_test_with_a_missing_answer_is_refused(items):
    user = applicant()
    with pytest.raises(ValidationError, match="Rank every response"):
        services.screening_submit(user=user, answers=answers(items, rankings={}))
    assert LabelerProfile.objects.get(user=user).status == "screening"


def test_the_review_queue_never_shows_who_the_applicant_is(client, admin_user, items):
    user = applicant("jane.doe")
    attempt = services.screening_submit(user=user, answers=answers(items))
    client.force_login(admin_user)
    for page in (client.get(reverse("review-queue")), client.get(reverse("review", args=[attempt.pk]))):
        content = page.content.decode().lower()
        assert page.status_code == 200 and f"applicant #{attempt.pk}" in content
        assert "jane" not in content and "example.com" not in content


def test_grading_then_deciding_records_who_and_when(items, admin_user):
    attempt = services.screening_submit(user=applicant(), answers=answers(items))
    with pytest.raises(ValidationError, match="Grade the written replies"):
        services.screening_decide(attempt=attempt, approve=True, decided_by=admin_user)
    with pytest.raises(ValidationError, match="1 to 7"):
        services.screening_grade(attempt=attempt, grades={str(items["writing"].pk): 9}, graded_by=admin_user)
    services.screening_grade(attempt=attempt, grades={str(items["writing"].pk): 6}, graded_by=admin_user)
    assert [(name, passed) for name, _, _, passed in services.cutoffs(attempt)] == [
        ("Flag agreement", True), ("Ranking agreement", True), ("Demonstration score", True)]
    services.screening_decide(attempt=attempt, approve=True, decided_by=admin_user)
    attempt.refresh_from_db()
    assert (attempt.decision, attempt.decided_by, attempt.decided_at is not None) == ("approved", admin_user, True)
    profile = attempt.profile
    profile.refresh_from_db()
    assert profile.status == "onboarding" and profile.approved_by == admin_user and profile.demonstration_score == 6


def test_a_rejection_needs_a_reason(items, admin_user):
    attempt = services.screening_submit(user=applicant(), answers=answers(items))
    with pytest.raises(ValidationError, match="Say why"):
        services.screening_decide(attempt=attempt, approve=False, decided_by=admin_user)
    services.screening_decide(attempt=attempt, approve=False, reason="Ranking below the cutoff.",
                              decided_by=admin_user)
    assert LabelerProfile.objects.get(pk=attempt.profile_id).status == "rejected"
    assert ScreeningAttempt.objects.get(pk=attempt.pk).decision_reason == "Ranking below the cutoff."


def onboarding_labeler(username="newcomer"):
    user = UserFactory(username=username, role="labeler")
    LabelerProfile.objects.filter(user=user).update(status="onboarding")
    return user


def practice_ranking():
    task = ranking_task(k=3)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    task.is_gold, task.is_practice = True, True
    task.gold_answer = {"groups": [[ids[0]], [ids[1]], [ids[2]]], "explanation": "A answers the question asked."}
    task.save()
    return task, ids


def test_onboarding_needs_the_guidelines_then_practice_then_the_labeler_is_active(settings):
    settings.ONBOARDING_PRACTICE_TASKS = 2
    guidelines = Guidelines.objects.create(version=1, title="Basics", body="Be helpful.")
    user = onboarding_labeler()
    production = ranking_task(k=3)
    practice = [practice_ranking() for _ in range(2)]
    with pytest.raises(ValidationError, match="acknowledge the guidelines"):
        services.task_lease_next(labeler=user)
    services.guidelines_acknowledge(user=user, version=guidelines.version)
    for task, ids in practice:
        assignment = services.task_lease_next(labeler=user)
        assert assignment.task == task  # practice only, never production work
        services.ranking_submit(assignment=assignment, labeler=user, groups=[[ids[1]], [ids[0]], [ids[2]]],
                                ratings={i: {"rating": 4} for i in ids})
        assert Assignment.objects.get(pk=assignment.pk).gold_score == pytest.approx(2 / 3)
    profile = LabelerProfile.objects.get(user=user)
    assert profile.status == "active" and "finished onboarding" in profile.status_reason
    assert services.task_lease_next(labeler=user).task == production


def test_practice_feedback_shows_the_researchers_answer_and_why(client, settings):
    settings.ONBOARDING_PRACTICE_TASKS = 5
    user = onboarding_labeler()
    task, ids = practice_ranking()
    client.force_login(user)
    assignment = services.task_lease_next(labeler=user)
    order = assignment.display_order
    form = {"time_spent": 5, **{f"rating_{i}": 4 for i in ids},
            **{f"rank_{i}": order.index(i) + 1 for i in ids}}
    response = client.post(reverse("assignment", args=[assignment.pk]), form)
    assert response["Location"] == reverse("my-work-detail", args=[assignment.pk])
    page = client.get(response["Location"]).content.decode()
    letters = {cid: chr(ord("A") + order.index(cid)) for cid in ids}
    assert f"{letters[ids[0]]} &gt; {letters[ids[1]]} &gt; {letters[ids[2]]}" in page
    assert "A answers the question asked." in page and "agreed with the researchers" in page


def test_a_new_guidelines_version_blocks_work_until_acknowledged(labeler):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    TaskFactory()
    Guidelines.objects.create(version=1, title="One", body="...")
    services.guidelines_acknowledge(user=labeler, version=1)
    assert services.task_lease_next(labeler=labeler)
    Assignment.objects.update(state="submitted")
    TaskFactory()
    Guidelines.objects.create(version=2, title="Two", body="Now with more care.")
    with pytest.raises(ValidationError, match=r"guidelines \(version 2\)"):
        services.task_lease_next(labeler=labeler)
    with pytest.raises(ValidationError, match="newest guidelines"):
        services.guidelines_acknowledge(user=labeler, version=1)
    services.guidelines_acknowledge(user=labeler, version=2)
    assert services.task_lease_next(labeler=labeler)


def test_gold_tasks_come_at_the_set_rate_and_are_scored_silently(labeler, settings):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    settings.GOLD_TASK_RATE = 1.0
    regular = TaskFactory()
    gold = TaskFactory(is_gold=True, gold_answer={"flags": ["ambiguous"], "use_case": "open_qa"})
    client = api_client_for(labeler)
    lease = client.post("/api/work/next/").json()
    assert Assignment.objects.get(pk=lease["id"]).task == gold
    assert "gold" not in str(lease).lower()  # it looks like any other task
    submitted = client.post(f"/api/work/assignments/{lease['id']}/submit/",
                            {"use_case": "open_qa", "language": "en",
                             "flags": {"ambiguous": True, "sensitive_content": True}}, format="json")
    assert submitted.status_code == 200 and "gold" not in submitted.content.decode().lower()
    assert Assignment.objects.get(pk=lease["id"]).gold_score == pytest.approx(11 / 12)  # one flag of eleven off
    settings.GOLD_TASK_RATE = 0.0
    assert client.post("/api/work/next/").json()["id"] == Assignment.objects.get(task=regular).pk


def test_admins_pause_resume_and_offboard_with_a_reason(labeler, admin_user):
    profile = LabelerProfile.objects.get(user=labeler)
    LabelerProfile.objects.filter(pk=profile.pk).update(status="active")
    profile.refresh_from_db()
    TaskFactory()
    live = services.task_lease_next(labeler=labeler)
    with pytest.raises(ValidationError, match="Give a reason"):
        services.labeler_set_status(profile=profile, status="paused", reason=" ", changed_by=admin_user)
    services.labeler_set_status(profile=profile, status="paused", reason="Gold accuracy fell to 40%.",
                                changed_by=admin_user)
    assert Assignment.objects.get(pk=live.pk).state == "expired"  # the task goes back to others
    with pytest.raises(ValidationError, match="paused by an admin"):
        services.task_lease_next(labeler=labeler)
    profile.refresh_from_db()
    services.labeler_set_status(profile=profile, status="active", reason="Retrained.", changed_by=admin_user)
    profile.refresh_from_db()
    services.labeler_set_status(profile=profile, status="offboarded", reason="Contract ended.", changed_by=admin_user)
    profile.refresh_from_db()
    with pytest.raises(ValidationError, match="can't be moved"):
        services.labeler_set_status(profile=profile, status="active", reason="Back?", changed_by=admin_user)
    assert [c.new_status for c in StatusChange.objects.filter(profile=profile).order_by("changed_at", "pk")] == [
        "paused", "active", "offboarded"]


def test_a_paused_labeler_cannot_submit_a_lease_they_still_hold(labeler):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    assignment = services.task_lease_next(labeler=labeler)
    LabelerProfile.objects.filter(user=labeler).update(status="paused")
    with pytest.raises(ValidationError, match="paused"):
        services.annotation_submit(assignment=assignment, labeler=labeler, flags={}, use_case="chat", language="en")


def test_the_team_page_measures_agreement_and_highlights_labelers_below_the_floor(client, admin_user, settings):
    settings.QUALITY_MIN_AGREEMENT = 0.6
    ann, ben, cat = (UserFactory(username=name, role="labeler") for name in ("ann", "ben", "cat"))
    for _ in range(2):
        task = ranking_task(k=3)
        ids = list(task.completions.order_by("id").values_list("id", flat=True))
        for person, order in [(ann, ids), (ben, ids), (cat, ids[::-1])]:
            services.ranking_save(task=task, labeler=person, groups=[[i] for i in order],
                                  ratings={i: {"rating": 1 + ids.index(i) * 3} for i in ids})
    report = selectors.quality_report()
    rows = {row["user"].username: row for row in report["labelers"]}
    assert rows["ann"]["agreement"] == 0.5  # agrees fully with ben, not at all with cat
    assert rows["cat"]["agreement"] == 0.0 and rows["cat"]["below"] == ["agreement"]
    assert rows["ann"]["below"] == ["agreement"]
    assert report["overall"]["ranking_agreement"] == pytest.approx(1 / 3)  # per pair of labelers: 1, 0, 0
    assert report["overall"]["kendall_tau_b"] == pytest.approx((1 - 1 - 1) / 3)
    assert report["overall"]["rating_alpha"] == 1.0  # everyone rated each completion alike
    client.force_login(admin_user)
    page = client.get(reverse("team-quality")).content.decode()
    assert page.count('<tr class="below">') == 3 and 'aria-label="Agreement with peers"' in page
    labeler_page = client.get(reverse("labeler-quality", args=[cat.pk]))
    assert labeler_page.status_code == 200 and "Below the team's floor on agreement" in labeler_page.content.decode()


def test_an_admin_pauses_a_labeler_from_their_page(client, admin_user, labeler):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    client.force_login(admin_user)
    refused = client.post(reverse("labeler-quality", args=[labeler.pk]), {"status": "paused", "reason": ""})
    assert refused.status_code == 400
    client.post(reverse("labeler-quality", args=[labeler.pk]), {"status": "paused", "reason": "Gold accuracy 40%."})
    profile = LabelerProfile.objects.get(user=labeler)
    assert profile.status == "paused" and profile.status_changes.get().changed_by == admin_user


def test_screening_items_import_from_jsonl_all_or_none(tmp_path):
    good = [{"part": "sensitive_flags", "prompt": "Insult me.", "completions": ["No."], "gold": {"flags": []}},
            {"part": "ranking", "prompt": "2+2?", "completions": ["4", "5"], "gold": {"groups": [[0], [1]]},
             "explanation": "Arithmetic."},
            {"part": "demonstration", "prompt": "Comfort a grieving friend."}]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in good) + "\n")
    call_command("import_screening_items", str(path), stdout=io.StringIO())
    assert ScreeningItem.objects.count() == 3
    assert ScreeningItem.objects.get(part="ranking").explanation == "Arithmetic."
    bad = good + [{"part": "ranking", "prompt": "x", "completions": ["a", "b"], "gold": {"groups": [[0]]}},
                  {"part": "quiz", "prompt": "x"}]
    path.write_text("\n".join(json.dumps(row) for row in bad) + "\nnot json\n")
    with pytest.raises(CommandError, match=r"line 4: a ranking item.*line 5: `part` must be.*line 6: not a JSON"):
        call_command("import_screening_items", str(path))
    assert ScreeningItem.objects.count() == 3


@pytest.mark.parametrize("status", ["screening", "screened", "onboarding", "paused", "offboarded", "rejected"])
def test_only_active_labelers_reach_production_work_on_any_page_or_endpoint(client, labeler, status):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT)
    held = services.task_lease_next(labeler=labeler)
    LabelerProfile.objects.filter(user=labeler).update(status=status)
    api = api_client_for(labeler)
    # onboarding labelers may lease practice tasks (none here); the others are told why they get nothing
    assert api.post("/api/work/next/").status_code == (204 if status == "onboarding" else 400)
    submit = api.post(f"/api/work/assignments/{held.pk}/submit/",
                      {"use_case": "chat", "language": "en", "flags": {}}, format="json")
    assert submit.status_code == 400 and Assignment.objects.get(pk=held.pk).state != "submitted"
    client.force_login(labeler)
    page = client.post(reverse("work-next"), follow=True)
    assert Assignment.objects.filter(labeler=labeler).count() == 1 and "Start labeling" not in page.content.decode()
    posted = client.post(reverse("assignment", args=[held.pk]),
                         {"use_case": "chat", "language": "en", "time_spent": 3})
    assert posted.status_code == 400 and Assignment.objects.get(pk=held.pk).state != "submitted"


def test_a_labelers_page_draws_gold_accuracy_by_week(client, admin_user, labeler, settings):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    settings.GOLD_TASK_RATE = 1.0
    TaskFactory(is_gold=True, gold_answer={"flags": [], "use_case": "chat"})
    assignment = services.task_lease_next(labeler=labeler)
    services.annotation_submit(assignment=assignment, labeler=labeler, flags={}, use_case="chat", language="en")
    client.force_login(admin_user)
    page = client.get(reverse("labeler-quality", args=[labeler.pk])).content.decode()
    assert 'aria-label="Agreement with peers and gold accuracy by week"' in page
    assert re.search(r"<circle [^>]+><title>Gold accuracy at \d\d \w{3}: 100%</title></circle>", page)
    assert "100%" in page and "100% over 1 gold tasks" in page
