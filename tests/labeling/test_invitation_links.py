"""Invitation links on the site's own pages: whole, selectable, with a Copy button, only while they can be used."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling import services
from labeling.models import Invitation
from tests.factories import UserFactory
from tests.labeling.test_admin import copy_fields

pytestmark = pytest.mark.django_db


def test_the_team_page_lists_open_invitations_with_their_whole_links_to_copy(client, admin_user):
    waiting = services.invitation_create(note="for Jane", created_by=admin_user)
    researcher_invite = services.invitation_create(role="researcher", note="for Rita")
    used = services.invitation_create(note="for Joe")
    Invitation.objects.filter(pk=used.pk).update(used_at=timezone.now(), used_by=UserFactory(username="joe"))
    expired = services.invitation_create(note="for Max")
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    client.force_login(admin_user)
    page = client.get(reverse("team-quality")).content.decode()
    section = page[page.index('id="invitations"'):]
    assert copy_fields(section) == [f"http://testserver/join/{invitation.token}/"
                                    for invitation in (researcher_invite, waiting)]
    assert "for Jane" in section and "Researcher" in section
    assert "for Joe" not in section and "for Max" not in section
    assert '<script src="/static/js/copy.js"></script>' in section
    assert f'href="{reverse("admin:labeling_invitation_add")}"' in section


def test_the_team_page_says_when_no_invitation_is_open(client, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("team-quality")).content.decode()
    assert "No open invitations." in page and not copy_fields(page)
