"""An export that names labelers reaches admins only: on the pages, through the API, and never as a bare file."""

import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from labeling import services
from labeling.models import Export
from tests.conftest import api_client_for
from tests.factories import ranking_task

pytestmark = pytest.mark.django_db

ROLES = ["admin", "researcher", "labeler", "none", "anonymous"]
PAGES = ["export-detail", "export-progress", "export-download"]
API = ["api-export-detail", "api-export-download"]
# What a page answers someone who may not see an export at all: the sign-in page, or "not for your role".
PAGE_REFUSAL = {"labeler": 403, "none": 403, "anonymous": 302}
API_REFUSAL = {"labeler": 403, "none": 403, "anonymous": 401}


@pytest.fixture
def exports(admin_user, labeler):
    """One finished export of every kind, with and without usernames, built by an admin from a real ranking."""
    task = ranking_task(k=4)
    completions = list(task.completions.order_by("id").values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[[cid] for cid in completions],
                          ratings={cid: {"rating": 5} for cid in completions})
    built = {}
    for kind in Export.Kind.values:
        for with_identities in (False, True):
            export = services.export_create(kind=kind, fmt="jsonl", created_by=admin_user,
                                            with_identities=with_identities, queue=False)
            built[kind, with_identities] = services.export_run(export_id=export.pk)
    assert all(export.state == Export.State.SUCCEEDED for export in built.values())
    return built


def may_see(role, export):
    return role == "admin" or (role == "researcher" and not export.with_identities)


def page_client(client, users, role):
    if role != "anonymous":
        client.force_login(users[role])
    return client


def api_for(users, role):
    return APIClient() if role == "anonymous" else api_client_for(users[role])


def test_the_identity_exports_really_name_the_labeler(exports, labeler):
    named = exports["rankings", True].file.read().decode()
    pseudonymous = exports["rankings", False].file.read().decode()
    assert labeler.username in named and labeler.username not in pseudonymous
    assert exports["rankings", True].manifest["labelers"] == "usernames"


@pytest.mark.parametrize("role", ROLES)
def test_the_export_pages_show_identity_exports_to_admins_only(client, users, exports, role):
    client = page_client(client, users, role)
    listing = client.get(reverse("exports"))
    if role in PAGE_REFUSAL:
        assert listing.status_code == PAGE_REFUSAL[role]
    else:
        page = listing.content.decode()
        listed = {export for export in exports.values() if f'href="{export.get_absolute_url()}"' in page}
        assert listed == {export for export in exports.values() if may_see(role, export)}
    for export in exports.values():
        for name in PAGES:
            response = client.get(reverse(name, args=[export.pk]))
            expected = 200 if may_see(role, export) else PAGE_REFUSAL.get(role, 404)
            assert response.status_code == expected, (name, export.kind, export.with_identities)


@pytest.mark.parametrize("role", ROLES)
def test_the_export_api_serves_identity_exports_to_admins_only(users, exports, role):
    api = api_for(users, role)
    listing = api.get(reverse("api-export-list"))
    if role in API_REFUSAL:
        assert listing.status_code == API_REFUSAL[role]
    else:
        listed = {row["id"] for row in listing.json()["results"]}
        assert listed == {export.pk for export in exports.values() if may_see(role, export)}
    for export in exports.values():
        for name in API:
            response = api.get(reverse(name, args=[export.pk]))
            expected = 200 if may_see(role, export) else API_REFUSAL.get(role, 404)
            assert response.status_code == expected, (name, export.kind, export.with_identities)


def test_a_downloaded_identity_export_is_the_file_itself(client, admin_user, exports):
    client.force_login(admin_user)
    export = exports["rankings", True]
    response = client.get(reverse("export-download", args=[export.pk]))
    assert b"".join(response.streaming_content) == export.file.read()
    assert response["X-Checksum-SHA256"] == export.sha256


@pytest.mark.parametrize("role", ["admin", "anonymous"])
def test_no_url_serves_export_files_past_the_permission_checks(client, users, exports, role):
    client = page_client(client, users, role)
    for export in exports.values():
        assert client.get(f"/{settings.MEDIA_URL}{export.file.name}").status_code == 404
        assert client.get(f"/{settings.STATIC_URL}../{settings.MEDIA_URL}{export.file.name}").status_code == 404
