import pytest
from django.core.exceptions import ValidationError

from labeling import services
from labeling.models import CompletionRating, Ranking
from tests.factories import CompletionFactory, ranking_task

pytestmark = pytest.mark.django_db


def ids(task):
    return list(task.completions.order_by("id").values_list("id", flat=True))


def ratings_for(completion_ids, **extra):
    return {cid: {"rating": 4, **extra} for cid in completion_ids}


def test_it_saves_a_ranking_with_ties_and_one_rating_per_completion(labeler):
    task = ranking_task(k=5)
    a, b, c, d, e = ids(task)
    ranking = services.ranking_save(
        task=task, labeler=labeler, groups=[[c], [a, e], [b], [d]],
        ratings={**ratings_for([a, b, c, e]), d: {"rating": 1, "harmful_advice": True, "notes": "unsafe"}},
    )
    assert Ranking.objects.get().groups == [[c], [a, e], [b], [d]]
    worst = CompletionRating.objects.get(ranking=ranking, completion_id=d)
    assert (worst.rating, worst.harmful_advice, worst.hallucination, worst.notes) == (1, True, False, "unsafe")


@pytest.mark.parametrize(
    "make_groups, message",
    [
        (lambda a, b, c, d: [[a], [b], [c]], r"not ranked yet: \[\d+\]"),
        (lambda a, b, c, d: [[a], [b, a], [c], [d]], "ranked more than once"),
        (lambda a, b, c, d: [[a], [b], [c], [d], [999_999]], "not part of task"),
        (lambda a, b, c, d: [[a, b], [], [c, d]], "at least one completion"),
        (lambda a, b, c, d: [], "at least one completion"),
    ],
)
def test_a_ranking_must_place_every_completion_exactly_once(labeler, make_groups, message):
    task = ranking_task(k=4)
    with pytest.raises(ValidationError, match=message):
        services.ranking_save(task=task, labeler=labeler, groups=make_groups(*ids(task)), ratings=ratings_for(ids(task)))
    assert not Ranking.objects.exists()


def test_a_completion_of_the_same_prompt_outside_the_task_is_refused(labeler):
    task = ranking_task(k=4)
    outsider = CompletionFactory(prompt=task.prompt)
    groups = [[cid] for cid in ids(task)] + [[outsider.pk]]
    with pytest.raises(ValidationError, match="not part of task"):
        services.ranking_save(task=task, labeler=labeler, groups=groups, ratings=ratings_for(ids(task)))


@pytest.mark.parametrize("bad", [0, 8, "5", None])
def test_ratings_must_be_whole_numbers_from_1_to_7(labeler, bad):
    task = ranking_task(k=4)
    ratings = ratings_for(ids(task))
    ratings[ids(task)[0]]["rating"] = bad
    with pytest.raises(ValidationError, match="from 1 to 7"):
        services.ranking_save(task=task, labeler=labeler, groups=[ids(task)], ratings=ratings)
    assert not Ranking.objects.exists()


def test_every_completion_needs_a_rating_and_only_known_flags(labeler):
    task = ranking_task(k=4)
    with pytest.raises(ValidationError, match="missing ratings"):
        services.ranking_save(task=task, labeler=labeler, groups=[ids(task)], ratings=ratings_for(ids(task)[:3]))
    with pytest.raises(ValidationError, match="Unknown fields"):
        services.ranking_save(task=task, labeler=labeler, groups=[ids(task)],
                              ratings=ratings_for(ids(task), is_funny=True))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"rating": True}, "from 1 to 7"),
        ({"rating": 5, "hallucination": "false"}, "must be true or false"),
        ({"rating": 5, "notes": ["x"]}, "notes on completion"),
        ("5", "must be an object"),
    ],
)
def test_ratings_are_checked_for_type_not_coerced(labeler, bad, message):
    task = ranking_task(k=4)
    ratings = ratings_for(ids(task))
    ratings[ids(task)[0]] = bad
    with pytest.raises(ValidationError, match=message):
        services.ranking_save(task=task, labeler=labeler, groups=[ids(task)], ratings=ratings)


@pytest.mark.parametrize("groups", ["1,2,3,4", [1, 2, 3, 4], [["1"]], None])
def test_a_ranking_of_the_wrong_shape_is_refused(labeler, groups):
    task = ranking_task(k=4)
    with pytest.raises(ValidationError, match="list of groups of completion ids"):
        services.ranking_save(task=task, labeler=labeler, groups=groups, ratings=ratings_for(ids(task)))


def test_ratings_keyed_by_something_other_than_ids_are_refused(labeler):
    task = ranking_task(k=4)
    with pytest.raises(ValidationError, match="map each completion id"):
        services.ranking_save(task=task, labeler=labeler, groups=[ids(task)], ratings={"first": {"rating": 3}})


def test_ranking_the_same_task_twice_is_refused_plainly(labeler):
    task = ranking_task(k=4)
    services.ranking_save(task=task, labeler=labeler, groups=[ids(task)], ratings=ratings_for(ids(task)))
    with pytest.raises(ValidationError, match="already ranked"):
        services.ranking_save(task=task, labeler=labeler, groups=[ids(task)], ratings=ratings_for(ids(task)))


def test_an_overlap_task_stores_its_consensus_when_the_last_ranking_comes_in(labeler, other_labeler):
    from labeling.models import LabelerProfile, Task
    from tests.factories import UserFactory

    third = UserFactory(username="cleo", role="labeler")
    LabelerProfile.objects.update(status="active")
    task = ranking_task(k=3)
    task.required_annotations = 3
    task.save()
    a, b, c = ids(task)
    for person, groups in [(labeler, [[a], [b], [c]]), (other_labeler, [[b], [c], [a]]), (third, [[c], [a], [b]])]:
        assignment = services.task_lease_next(labeler=person)
        assert Task.objects.get(pk=task.pk).consensus is None
        services.ranking_submit(assignment=assignment, labeler=person, groups=groups, ratings=ratings_for([a, b, c]))
    task.refresh_from_db()
    assert task.state == "completed" and task.consensus == [[a], [b], [c]]  # the cycle broken at C > A
