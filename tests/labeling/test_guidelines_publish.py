import pytest
from django.core.exceptions import ValidationError

from labeling import services
from labeling.models import LabelerProfile

pytestmark = pytest.mark.django_db


def test_each_publication_is_the_next_version_and_asks_labelers_to_read_it_again(labeler, admin_user):
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE)
    first = services.guidelines_publish(title="Basics", body="Be helpful.", published_by=admin_user)
    services.guidelines_acknowledge(user=labeler, version=first.version)
    second = services.guidelines_publish(title="Basics, again", body="Be helpful and honest.")
    assert (first.version, second.version) == (1, 2) and first.published_by == admin_user
    with pytest.raises(ValidationError, match=r"acknowledge the guidelines \(version 2\)"):
        services.task_lease_next(labeler=labeler)


@pytest.mark.parametrize("title, body", [("", "Be kind."), ("Basics", "  ")])
def test_guidelines_without_a_title_or_a_body_are_refused(title, body):
    with pytest.raises(ValidationError, match="need a title and a body"):
        services.guidelines_publish(title=title, body=body)
