"""Leases: who gets which task, and what happens to late, repeated and skipped work."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from labeling import selectors, services
from labeling.models import Assignment, LabelerProfile, Prompt, PromptAnnotation, Ranking, Role, Task
from tests.factories import PromptFactory, TaskFactory, UserFactory, ranking_task

pytestmark = pytest.mark.django_db

ANNOTATION = {"flags": {"ambiguous": True}, "use_case": "chat", "language": "en"}


def activate(user, **fields):
    LabelerProfile.objects.filter(user=user).update(status=LabelerProfile.Status.ACTIVE, **fields)
    return user


@pytest.fixture
def alice(labeler):
    return activate(labeler)


@pytest.fixture
def bob(other_labeler):
    return activate(other_labeler)


def lease(user):
    return services.task_lease_next(labeler=user)


def annotate(assignment, user, **extra):
    return services.annotation_submit(assignment=assignment, labeler=user, **ANNOTATION, **extra)


def test_the_next_task_is_the_highest_priority_then_the_oldest(alice):
    old, urgent, new = TaskFactory(), TaskFactory(priority=5), TaskFactory()
    assert lease(alice).task == urgent
    annotate(lease(alice), alice)
    assert lease(alice).task == old
    annotate(lease(alice), alice)
    assert lease(alice).task == new


def test_a_live_lease_is_handed_back_instead_of_a_new_one(alice):
    TaskFactory(), TaskFactory()
    first = lease(alice)
    assert lease(alice) == first
    assert Assignment.objects.count() == 1
    assert first.lease_expires_at - first.leased_at == timedelta(minutes=30)


def test_nothing_to_do_is_none(alice):
    assert lease(alice) is None


def test_only_active_labelers_get_tasks(labeler):
    TaskFactory()
    with pytest.raises(ValidationError, match="Only active labelers"):
        lease(labeler)
    for status, says in [("screening", "Take the screening test"), ("screened", "waiting for review"),
                         ("paused", "paused by an admin"), ("offboarded", "no longer labeling"),
                         ("rejected", "not accepted")]:
        LabelerProfile.objects.filter(user=labeler).update(status=status)
        with pytest.raises(ValidationError, match=says):
            lease(labeler)


def test_a_task_once_had_is_never_offered_again(alice):
    task = TaskFactory()
    services.assignment_skip(assignment=lease(alice), labeler=alice, reason="unclear_intent")
    assert lease(alice) is None
    assert Task.objects.get(pk=task.pk).state == Task.State.OPEN


def test_kinds_and_languages_a_labeler_is_not_enabled_for_are_left_out(alice):
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION)
    TaskFactory(prompt=PromptFactory(language="fr"))
    english = TaskFactory(prompt=PromptFactory(language="en"))
    activate(alice, task_kinds=["annotate_prompt"], languages=["en", "de"])
    assert lease(alice).task == english
    annotate(lease(alice), alice)
    assert lease(alice) is None


def test_a_chat_without_a_language_and_a_prompt_to_write_go_to_labelers_of_any_language(alice):
    activate(alice, languages=["fr"])
    TaskFactory(prompt=PromptFactory(language="en"))
    chat = Task.objects.create(kind=Task.Kind.CHAT, params={"system_prompt": ""})
    to_write = TaskFactory(kind=Task.Kind.WRITE_PROMPT, prompt=None)
    assert lease(alice).task == chat
    services.assignment_skip(assignment=lease(alice), labeler=alice, reason="unclear_intent")
    assert lease(alice).task == to_write
    services.assignment_skip(assignment=lease(alice), labeler=alice, reason="unclear_intent")
    assert lease(alice) is None


def test_the_tasks_available_are_the_same_read_inside_another_query(alice, bob):
    had, french = TaskFactory(), TaskFactory(prompt=PromptFactory(language="fr"))
    open_ones = TaskFactory.create_batch(3)
    activate(alice, languages=["en"])
    services.assignment_skip(assignment=lease(alice), labeler=alice, reason="unclear_intent")
    full = TaskFactory(required_annotations=1)
    Assignment.objects.create(task=full, labeler=bob, lease_expires_at=timezone.now() + timedelta(minutes=5))
    profile = LabelerProfile.objects.get(user=alice)
    available = selectors.tasks_available_to(labeler=alice, profile=profile, now=timezone.now())
    assert list(available) == open_ones
    assert set(Prompt.objects.filter(pk__in=available.values("prompt"))) == {task.prompt for task in open_ones}
    assert had.assignments.get().labeler == alice and french not in available


def test_a_labeler_never_ranks_their_own_prompt(alice, bob):
    task = ranking_task(k=4)
    task.prompt.created_by = alice
    task.prompt.save()
    assert lease(alice) is None
    assert lease(bob).task == task


def test_completions_are_shuffled_per_labeler_and_kept(alice):
    task = ranking_task(k=9)
    assignment = lease(alice)
    assert sorted(assignment.display_order) == sorted(task.completions.values_list("id", flat=True))
    assert Assignment.objects.get(pk=assignment.pk).display_order == assignment.display_order


def test_an_overlap_task_goes_to_as_many_labelers_as_it_needs(alice, bob):
    task = TaskFactory(required_annotations=2)
    carol = activate(UserFactory(username="carol", role=Role.LABELER))
    assert lease(alice).task == task
    assert lease(bob).task == task
    assert lease(carol) is None
    annotate(lease(alice), alice)
    assert Task.objects.get(pk=task.pk).state == Task.State.OPEN
    annotate(lease(bob), bob)
    assert Task.objects.get(pk=task.pk).state == Task.State.COMPLETED
    assert PromptAnnotation.objects.filter(prompt=task.prompt).count() == 2


def test_an_expired_lease_returns_the_task_to_others(alice, bob):
    task = TaskFactory()
    first = lease(alice)
    Assignment.objects.filter(pk=first.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert lease(bob).task == task


def test_a_late_submit_is_accepted_when_nobody_took_the_slot(alice):
    TaskFactory()
    first = lease(alice)
    Assignment.objects.filter(pk=first.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=5))
    services.assignments_expire()
    assert annotate(first, alice).state == Assignment.State.SUBMITTED


def test_a_late_submit_is_refused_plainly_when_someone_else_took_the_slot(alice, bob):
    TaskFactory()
    first = lease(alice)
    Assignment.objects.filter(pk=first.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=5))
    annotate(lease(bob), bob)
    with pytest.raises(ValidationError, match="another labeler has taken it"):
        annotate(first, alice)
    assert PromptAnnotation.objects.filter(labeler=alice).count() == 0


def test_submitting_twice_stores_one_result(alice):
    task = ranking_task(k=4)
    assignment = lease(alice)
    ids = list(task.completions.values_list("id", flat=True))
    answer = {"groups": [ids[:2], ids[2:]], "ratings": {cid: {"rating": 6} for cid in ids}}
    services.ranking_submit(assignment=assignment, labeler=alice, **answer)
    again = services.ranking_submit(assignment=assignment, labeler=alice, **answer)
    assert again.state == Assignment.State.SUBMITTED
    assert Ranking.objects.count() == 1


def test_time_spent_is_stored_within_the_lease(alice):
    TaskFactory()
    done = annotate(lease(alice), alice, time_spent_seconds=10_000_000)
    assert 0 <= done.time_spent_seconds <= 2


def test_skip_needs_a_known_reason_and_frees_the_slot(alice, bob):
    task = TaskFactory()
    assignment = lease(alice)
    with pytest.raises(ValidationError, match="Choose why you skip"):
        services.assignment_skip(assignment=assignment, labeler=alice, reason="bored")
    services.assignment_skip(assignment=assignment, labeler=alice, reason="not_my_language")
    assert Assignment.objects.get(pk=assignment.pk).skip_reason == "not_my_language"
    assert lease(bob).task == task
    with pytest.raises(ValidationError, match="skipped this task"):
        annotate(assignment, alice)


def test_a_labeler_cannot_submit_someone_elses_assignment(alice, bob):
    TaskFactory()
    with pytest.raises(Assignment.DoesNotExist):
        annotate(lease(alice), bob)


def test_a_written_prompt_goes_through_intake_and_opens_its_tasks(alice, settings):
    settings.INTAKE_DEMONSTRATION_SHARE = 0
    Task.objects.create(kind=Task.Kind.WRITE_PROMPT)
    assignment = lease(alice)
    services.prompt_write(assignment=assignment, labeler=alice, style="user_based", use_case="brainstorming",
                          text="Give me ten names for a bakery that sells only croissants.")
    prompt = assignment.written_prompt
    assert (prompt.source, prompt.use_case, prompt.created_by) == ("user_based", "brainstorming", alice)
    assert prompt.tasks.filter(kind=Task.Kind.ANNOTATE_PROMPT).exists()


def test_a_written_prompt_that_duplicates_one_is_refused_with_the_reason(alice):
    PromptFactory(text="Tell me a joke about cats.", dedup_key="")
    services.prompts_create(rows=[(1, {"prompt": "Tell me a joke about dogs."}, 0)], created_by=None)
    Task.objects.create(kind=Task.Kind.WRITE_PROMPT, priority=9)
    assignment = lease(alice)
    with pytest.raises(ValidationError, match="duplicate of stored prompt"):
        services.prompt_write(assignment=assignment, labeler=alice, style="plain", text="tell me a joke about DOGS.")
    assert Assignment.objects.get(pk=assignment.pk).state == Assignment.State.ACTIVE


def test_a_demonstration_continues_the_prompt_and_ends_with_the_assistant(alice):
    task = TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION)
    assignment = lease(alice)
    with pytest.raises(ValidationError, match="Write the assistant's reply"):
        services.demonstration_write(assignment=assignment, labeler=alice, turns=[])
    services.demonstration_write(
        assignment=assignment, labeler=alice,
        turns=[{"role": "assistant", "content": "Here it is."}, {"role": "user", "content": "Shorter?"},
               {"role": "assistant", "content": "Sure."}],
    )
    assert assignment.demonstration.messages[0] == {"role": "user", "content": task.prompt.text}
    assert [m["role"] for m in assignment.demonstration.messages] == ["user", "assistant", "user", "assistant"]


def test_a_share_of_imported_annotation_tasks_needs_several_labelers(settings):
    settings.OVERLAP_SHARE = 0.5
    rows = [(i, {"prompt": f"Prompt number {i}"}, 0) for i in range(200)]
    services.prompts_create(rows=rows, created_by=None)
    needs = Task.objects.filter(kind=Task.Kind.ANNOTATE_PROMPT).values_list("required_annotations", flat=True)
    assert set(needs) == {1, 3}
    assert 0.35 < list(needs).count(3) / 200 < 0.65


def test_twenty_labelers_asking_at_once_get_twenty_distinct_leases(transactional_db):
    TaskFactory.create_batch(25)
    labelers = [activate(UserFactory(username=f"l{i}", role=Role.LABELER)) for i in range(20)]
    leases, errors = [], []
    start = threading.Barrier(20)

    def ask(user):
        try:
            start.wait()
            leases.append(services.task_lease_next(labeler=user).task_id)
        except Exception as exc:  # reported below, with the database's message
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(user,)) for user in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(leases) == 20 and len(set(leases)) == 20
