import html
import re

import pytest
from django.contrib import admin
from django.urls import reverse

from labeling import services
from tests.factories import ranking_task

pytestmark = pytest.mark.django_db

MODELS = [model for model in admin.site._registry if model._meta.app_label in ("labeling", "auth", "authtoken")]


@pytest.fixture
def with_data(labeler):
    task = ranking_task(k=4)
    completions = list(task.completions.values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[completions],
                          ratings={cid: {"rating": 5} for cid in completions})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_an_admin_can_list_search_and_filter_every_model(client, admin_user, with_data, model):
    client.force_login(admin_user)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    model_admin = admin.site._registry[model]
    assert client.get(url).status_code == 200
    if model_admin.search_fields:
        assert client.get(url, {"q": "poem"}).status_code == 200
    page = client.get(url).content.decode()
    sidebar = page.split('id="changelist-filter"', 1)[1] if model_admin.list_filter else ""
    links = set(re.findall(r'href="(\?[^"]+)"', sidebar))
    assert bool(links) == bool(model_admin.list_filter)
    for link in links:  # every filter choice an admin can click
        assert client.get(url + html.unescape(link)).status_code == 200, link


def test_an_admin_cannot_make_anyone_a_superuser(client, admin_user, labeler):
    client.force_login(admin_user)
    page = client.get(reverse("admin:auth_user_change", args=[labeler.pk])).content.decode()
    assert 'name="is_superuser"' not in page
    assert 'name="is_staff"' in page
