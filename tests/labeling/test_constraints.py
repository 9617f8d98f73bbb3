"""Rules about data are enforced by the database, whatever code writes the rows."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling.models import (
    Assignment,
    CompletionRating,
    LabelerProfile,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    Ranking,
    Task,
)
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, ranking_task

pytestmark = pytest.mark.django_db


def violates(**kwargs):
    return pytest.raises(IntegrityError, **kwargs)


def test_one_assignment_per_task_and_labeler(labeler, other_labeler):
    task = TaskFactory()
    expires = timezone.now() + timedelta(minutes=30)
    Assignment.objects.create(task=task, labeler=labeler, lease_expires_at=expires)
    Assignment.objects.create(task=task, labeler=other_labeler, lease_expires_at=expires)
    with violates(), transaction.atomic():
        Assignment.objects.create(task=task, labeler=labeler, lease_expires_at=expires)


def test_a_skipped_assignment_has_a_reason(labeler):
    with violates(), transaction.atomic():
        Assignment.objects.create(
            task=TaskFactory(), labeler=labeler, lease_expires_at=timezone.now(), state=Assignment.State.SKIPPED
        )


def test_at_most_one_active_model_version_per_kind():
    ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.ACTIVE)
    ModelVersionFactory(kind=ModelVersion.Kind.REWARD, status=ModelVersion.Status.ACTIVE)
    ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.RETIRED)
    ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.READY)
    with violates(), transaction.atomic():
        ModelVersionFactory(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.ACTIVE)


@pytest.mark.parametrize("rating", [0, 8])
def test_ratings_are_likert_1_to_7(labeler, rating):
    task = ranking_task(k=4)
    ranking = Ranking.objects.create(task=task, labeler=labeler, groups=[[c.pk] for c in task.completions.all()])
    CompletionRating.objects.create(ranking=ranking, completion=task.completions.first(), rating=7)
    with violates(), transaction.atomic():
        CompletionRating.objects.create(ranking=ranking, completion=task.completions.last(), rating=rating)


def test_one_rating_per_completion_in_a_ranking(labeler):
    task = ranking_task(k=4)
    ranking = Ranking.objects.create(task=task, labeler=labeler, groups=[])
    completion = task.completions.first()
    CompletionRating.objects.create(ranking=ranking, completion=completion, rating=3)
    with violates(), transaction.atomic():
        CompletionRating.objects.create(ranking=ranking, completion=completion, rating=4)


def test_one_ranking_and_one_annotation_per_labeler(labeler):
    task = ranking_task(k=4)
    Ranking.objects.create(task=task, labeler=labeler, groups=[])
    with violates(), transaction.atomic():
        Ranking.objects.create(task=task, labeler=labeler, groups=[])
    prompt = PromptFactory()
    PromptAnnotation.objects.create(prompt=prompt, labeler=labeler, use_case="chat", language="en")
    with violates(), transaction.atomic():
        PromptAnnotation.objects.create(prompt=prompt, labeler=labeler, use_case="chat", language="en")


def test_prompts_are_unique_by_dedup_key_unless_dedup_is_off():
    PromptFactory(dedup_key="k" * 64)
    PromptFactory(dedup_key="")
    PromptFactory(dedup_key="")
    with violates(), transaction.atomic():
        PromptFactory(dedup_key="k" * 64)


def test_a_prompt_has_text():
    with violates(), transaction.atomic():
        Prompt.objects.create(text="", split=Prompt.Split.TRAIN)


def test_tasks_need_at_least_one_annotation_and_a_prompt():
    with violates(), transaction.atomic():
        TaskFactory(required_annotations=0)
    with violates(), transaction.atomic():
        Task.objects.create(kind=Task.Kind.RANK_COMPLETIONS, prompt=None)
    assert Task.objects.create(kind=Task.Kind.WRITE_PROMPT, prompt=None).pk


def test_a_gold_task_has_an_answer():
    with violates(), transaction.atomic():
        TaskFactory(is_gold=True, gold_answer=None)


def test_screening_scores_stay_in_range(labeler):
    profile = labeler.labeler_profile
    for field, value in [("flag_agreement", 1.2), ("ranking_agreement", -0.1), ("demonstration_score", 8)]:
        with violates(), transaction.atomic():
            LabelerProfile.objects.filter(pk=profile.pk).update(**{field: value})


def test_a_completion_keeps_its_model_version():
    version = ModelVersionFactory()
    CompletionFactory(model_version=version)
    with violates(), transaction.atomic():
        version.delete()
