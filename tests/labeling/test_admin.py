import html
import re
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.forms.models import model_to_dict
from django.urls import reverse

from labeling import services
from labeling.models import (
    Assignment,
    Completion,
    CompletionRating,
    Demonstration,
    LabelerProfile,
    ModelVersion,
    PromptAnnotation,
    Ranking,
)
from tests.factories import ModelVersionFactory, TaskFactory, ranking_task

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


def test_an_admin_cannot_make_anyone_a_superuser_or_edit_roles_around_the_role_actions(client, admin_user, labeler):
    client.force_login(admin_user)
    page = client.get(reverse("admin:auth_user_change", args=[labeler.pk])).content.decode()
    for field in ("is_superuser", "is_staff", "groups"):
        assert f'name="{field}"' not in page


def test_the_role_actions_keep_group_staff_status_and_profile_in_step(client, admin_user, researcher):
    client.force_login(admin_user)
    changelist = reverse("admin:auth_user_changelist")
    client.post(changelist, {"action": "make_admin", ACTION_CHECKBOX_NAME: [researcher.pk]})
    researcher.refresh_from_db()
    assert list(researcher.groups.values_list("name", flat=True)) == ["admin"] and researcher.is_staff

    client.post(changelist, {"action": "make_labeler", ACTION_CHECKBOX_NAME: [researcher.pk]})
    researcher.refresh_from_db()
    assert list(researcher.groups.values_list("name", flat=True)) == ["labeler"] and not researcher.is_staff
    assert LabelerProfile.objects.filter(user=researcher).exists()


class FormFields(HTMLParser):
    """What a browser would send for the admin's change form: its inputs, selects and text areas as they stand."""

    def __init__(self):
        super().__init__()
        self.data, self._select, self._textarea = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button", "file"):
            if attrs.get("type") in ("checkbox", "radio"):
                if "checked" in attrs:
                    self.data[name] = attrs.get("value", "on")
            else:
                self.data[name] = attrs.get("value", "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attrs:
            self.data[self._select] = attrs.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data


def change_form(client, obj):
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    page = client.get(url)
    assert page.status_code == 200
    fields = FormFields()
    fields.feed(page.content.decode())
    return url, {name: value.lstrip("\n") for name, value in fields.data.items() if name != "csrfmiddlewaretoken"}


@pytest.fixture
def active_labeler(labeler):
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE, flag_agreement=0.9)
    return labeler


def test_a_labelers_change_form_saves_languages_but_not_status_or_screening_scores(client, admin_user,
                                                                                   active_labeler):
    client.force_login(admin_user)
    profile = active_labeler.labeler_profile
    url, data = change_form(client, profile)
    data.update(status="offboarded", status_reason="typed in the admin", flag_agreement="0.1",
                approved_by=str(admin_user.pk), languages='["fr"]')
    assert client.post(url, data).status_code == 302
    profile.refresh_from_db()
    assert profile.languages == ["fr"]  # the form did save
    assert (profile.status, profile.status_reason, profile.flag_agreement, profile.approved_by) == (
        "active", "", 0.9, None)
    assert not profile.status_changes.exists()


def test_a_model_versions_change_form_cannot_activate_it_or_change_its_artifact(client, admin_user):
    client.force_login(admin_user)
    version = ModelVersionFactory(kind="reward", status="ready", artifact_path="/models/rm-1", metrics={"a": 1})
    url, data = change_form(client, version)
    data.update(name="renamed", status="active", artifact_path="/elsewhere", metrics='{"a": 2}',
                activated_at_0="2020-01-01", activated_at_1="00:00:00")
    assert client.post(url, data).status_code == 302
    version.refresh_from_db()
    assert version.name == "renamed"
    assert (version.status, version.artifact_path, version.metrics, version.activated_at) == (
        "ready", "/models/rm-1", {"a": 1}, None)


def test_a_tasks_change_form_keeps_its_state_and_consensus(client, admin_user):
    client.force_login(admin_user)
    task = ranking_task(k=4)
    url, data = change_form(client, task)
    data.update(priority="5", state="completed", consensus="[[1], [2]]")
    assert client.post(url, data).status_code == 302
    task.refresh_from_db()
    assert (task.priority, task.state, task.consensus) == (5, "open", None)


@pytest.fixture
def results(active_labeler):
    """One result of each kind, submitted by a labeler through the labeling services."""
    for kind in ["annotate_prompt", "write_demonstration", "rank_completions"]:
        task = ranking_task(k=4) if kind == "rank_completions" else TaskFactory(kind=kind)
        assignment = services.task_lease_next(labeler=active_labeler)
        assert assignment.task == task
        if kind == "annotate_prompt":
            services.annotation_submit(assignment=assignment, labeler=active_labeler, flags={"ambiguous": True},
                                       use_case="brainstorming", language="en")
        elif kind == "write_demonstration":
            services.demonstration_write(assignment=assignment, labeler=active_labeler,
                                         turns=[{"role": "assistant", "content": "A fine reply."}])
        else:
            ids = list(task.completions.order_by("id").values_list("id", flat=True))
            services.ranking_submit(assignment=assignment, labeler=active_labeler, groups=[[i] for i in ids],
                                    ratings={i: {"rating": 5} for i in ids})
    return {
        "ranking": Ranking.objects.get(), "rating": CompletionRating.objects.first(),
        "demonstration": Demonstration.objects.get(), "annotation": PromptAnnotation.objects.get(),
        "assignment": Assignment.objects.first(), "completion": Completion.objects.first(),
    }


CHANGES = {
    "ranking": {"groups": "[[1]]", "none_acceptable": "on"},
    "rating": {"rating": "1", "harmful_advice": "on"},
    "demonstration": {"messages": '[{"role": "assistant", "content": "Rewritten."}]'},
    "annotation": {"use_case": "chat", "sensitive_content": "on"},
    "assignment": {"state": "active", "lease_expires_at_0": "2999-01-01", "lease_expires_at_1": "00:00:00"},
    "completion": {"text": "Rewritten."},
}


@pytest.mark.parametrize("name", CHANGES)
def test_results_are_shown_in_the_admin_and_never_changed_there(client, admin_user, results, name):
    client.force_login(admin_user)
    row = results[name]
    before = model_to_dict(row)
    url = reverse(f"admin:labeling_{row._meta.model_name}_change", args=[row.pk])
    page = client.get(url).content.decode()
    assert 'name="_save"' not in page and "Delete" not in page
    assert client.post(url, CHANGES[name]).status_code == 403
    assert client.get(reverse(f"admin:labeling_{row._meta.model_name}_add")).status_code == 403
    row.refresh_from_db()
    assert model_to_dict(row) == before


def test_a_rankings_page_shows_its_ratings_without_a_way_to_edit_them(client, admin_user, results):
    client.force_login(admin_user)
    page = client.get(reverse("admin:labeling_ranking_change", args=[results["ranking"].pk])).content.decode()
    cells = re.findall(r'<td class="field-rating">\s*<p>(\d)</p>', page)
    assert cells == ["5"] * 4 and 'name="ratings-0-rating"' not in page


def select(client, model, action, rows, follow=False, **extra):
    """Choose rows on the admin's list and run an action on them, as the list page's form does."""
    url = reverse(f"admin:labeling_{model._meta.model_name}_changelist")
    return client.post(url, {"action": action, ACTION_CHECKBOX_NAME: [row.pk for row in rows], **extra},
                       follow=follow)


def test_pausing_from_the_admin_asks_for_a_reason_then_records_it_and_frees_the_leases(client, admin_user,
                                                                                     active_labeler):
    client.force_login(admin_user)
    TaskFactory()
    lease = services.task_lease_next(labeler=active_labeler)
    profile = active_labeler.labeler_profile
    form = select(client, LabelerProfile, "pause", [profile])
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    profile.refresh_from_db()
    assert profile.status == "active"  # nothing changes before the reason is given
    refused = select(client, LabelerProfile, "pause", [profile], apply="Pause labelers", reason=" ")
    assert refused.status_code == 200 and "This field is required" in refused.content.decode()
    done = select(client, LabelerProfile, "pause", [profile], apply="Pause labelers", reason="On holiday")
    assert done.status_code == 302
    profile.refresh_from_db()
    change = profile.status_changes.get()
    assert (profile.status, change.old_status, change.new_status, change.reason, change.changed_by) == (
        "paused", "active", "paused", "On holiday", admin_user)
    lease.refresh_from_db()
    assert lease.state == "expired"


def test_resume_and_offboard_go_through_the_same_rules_as_the_team_pages(client, admin_user, active_labeler,
                                                                         other_labeler):
    client.force_login(admin_user)
    profiles = [active_labeler.labeler_profile, other_labeler.labeler_profile]  # the other is still invited
    select(client, LabelerProfile, "pause", profiles[:1], apply="Pause labelers", reason="Checking their work")
    page = select(client, LabelerProfile, "resume", profiles, apply="Resume labelers", reason="Work checked",
                  follow=True).content.decode()
    # The admin capitalises its messages.
    assert "Bob: A labeler who is invited can&#x27;t be moved to active by hand." in page
    assert "Resumed: alice." in page
    select(client, LabelerProfile, "offboard", profiles[:1], apply="Offboard labelers", reason="Contract ended")
    statuses = [change.new_status for change in profiles[0].status_changes.order_by("changed_at")]
    assert statuses == ["paused", "active", "offboarded"]
    assert LabelerProfile.objects.get(pk=profiles[1].pk).status == "invited"


def test_activating_a_version_from_the_admin_retires_the_active_one_of_its_kind(client, admin_user):
    client.force_login(admin_user)
    active = ModelVersionFactory(kind="reward", name="rm-1", status="active")
    policy = ModelVersionFactory(kind="policy", name="p-1", status="active")
    candidate = ModelVersionFactory(kind="reward", name="rm-2", status="rejected")
    assert 'name="reason"' in select(client, ModelVersion, "activate", [candidate]).content.decode()
    select(client, ModelVersion, "activate", [candidate], apply="Activate", reason="The gate's set was too small")
    for version in (active, policy, candidate):
        version.refresh_from_db()
    assert (active.status, candidate.status, policy.status) == ("retired", "active", "active")
    assert candidate.status_reason == "Activated by ada: The gate's set was too small"
    assert candidate.activated_at is not None


def test_a_version_still_training_or_two_at_once_are_not_activated(client, admin_user):
    client.force_login(admin_user)
    active = ModelVersionFactory(kind="reward", name="rm-1", status="active")
    training = ModelVersionFactory(kind="reward", name="rm-2", status="training")
    page = select(client, ModelVersion, "activate", [training], apply="Activate", reason="Try it",
                  follow=True).content.decode()
    assert "only a ready, retired or rejected version can be activated" in page
    page = select(client, ModelVersion, "activate", [active, training], follow=True).content.decode()
    assert "Choose one version to activate" in page
    assert list(ModelVersion.objects.order_by("name").values_list("status", flat=True)) == ["active", "training"]
    external = services.external_model_register(name="theirs", url="https://api.example.com/v1", model="m")
    page = select(client, ModelVersion, "activate", [external], apply="Activate", reason="Try it",
                  follow=True).content.decode()
    assert "served elsewhere: it is a baseline for evaluations, never active" in page
    external.refresh_from_db()
    assert external.status == "ready"


def test_the_active_version_and_labeler_profiles_cannot_be_deleted(client, admin_user, labeler):
    client.force_login(admin_user)
    active = ModelVersionFactory(kind="reward", status="active")
    assert client.post(reverse("admin:labeling_modelversion_delete", args=[active.pk]), {"post": "yes"}
                       ).status_code == 403
    profile = labeler.labeler_profile
    assert client.post(reverse("admin:labeling_labelerprofile_delete", args=[profile.pk]), {"post": "yes"}
                       ).status_code == 403
    assert ModelVersion.objects.filter(pk=active.pk).exists() and LabelerProfile.objects.filter(pk=profile.pk).exists()


SITE_PAGES = {"Review": "review-queue", "Team": "team-quality", "Research": "research-home",
              "Training": "training-runs", "Exports": "exports", "Evaluations": "evaluations"}
RESEARCH_PAGES = ["Research", "Training", "Exports", "Evaluations"]


def site_links(page, where):
    """(label, href) of the links in the admin's header (`where="nav"`) or in the index's module ("module")."""
    start = page.index('<nav class="site-pages"') if where == "nav" else page.index('class="module site-pages-module"')
    block = page[start:page.index("</nav>" if where == "nav" else "</table>", start)]
    return [(label, href) for href, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', block)]


def test_the_admin_links_to_the_site_pages_an_admin_uses_in_its_header_and_index(client, admin_user):
    client.force_login(admin_user)
    expected = [(label, reverse(name)) for label, name in SITE_PAGES.items()]
    index = client.get(reverse("admin:index")).content.decode()
    assert site_links(index, "nav") == expected
    assert site_links(index, "module") == expected
    changelist = client.get(reverse("admin:labeling_prompt_changelist")).content.decode()
    assert site_links(changelist, "nav") == expected
    for _, url in expected:
        assert client.get(url).status_code == 200, url


def test_the_admin_shows_a_staff_researcher_only_the_site_pages_of_that_role(client, researcher, no_role_user):
    get_user_model().objects.filter(pk__in=[researcher.pk, no_role_user.pk]).update(is_staff=True)
    client.force_login(researcher)
    index = client.get(reverse("admin:index")).content.decode()
    assert [label for label, _ in site_links(index, "nav")] == RESEARCH_PAGES
    assert [label for label, _ in site_links(index, "module")] == RESEARCH_PAGES
    for label, url in site_links(index, "nav"):
        assert client.get(url).status_code == 200, label
    assert client.get(reverse("review-queue")).status_code == 403  # the rule the missing links follow

    client.force_login(no_role_user)
    index = client.get(reverse("admin:index")).content.decode()
    assert 'class="site-pages"' not in index and "site-pages-module" not in index


def test_view_site_lands_an_admin_on_a_site_page_that_links_back_to_the_admin(client, admin_user):
    client.force_login(admin_user)
    index = client.get(reverse("admin:index")).content.decode()
    view_site = re.search(r'<a href="([^"]+)">View site</a>', index).group(1)
    response = client.get(view_site, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse("team-quality")
    assert f'href="{reverse("admin:index")}"' in response.content.decode()


def copy_fields(page):
    """The values of the read-only inputs that have a Copy button beside them."""
    return re.findall(r'<span class="copy-field"><input type="text" readonly value="([^"]+)"[^>]*> '
                      r'<button type="button" class="copy-button"[^>]*>Copy</button></span>', page)


def test_an_invitation_shows_its_whole_link_with_a_copy_button_in_the_admin(client, admin_user):
    invitation = services.invitation_create(note="for Jane", created_by=admin_user)
    link = f"http://testserver/join/{invitation.token}/"
    client.force_login(admin_user)
    for url in (reverse("admin:labeling_invitation_changelist"),
                reverse("admin:labeling_invitation_change", args=[invitation.pk])):
        page = client.get(url).content.decode()
        assert copy_fields(page) == [link], url
        assert '<script src="/static/js/copy.js"></script>' in page
    add_page = client.get(reverse("admin:labeling_invitation_add")).content.decode()
    assert "made when saved" in add_page and not copy_fields(add_page)


def test_guidelines_added_in_the_admin_are_published_as_the_next_version_and_stay_as_published(client, admin_user):
    from labeling.models import Guidelines

    services.guidelines_publish(title="First", body="Be helpful.")
    client.force_login(admin_user)
    response = client.post(reverse("admin:labeling_guidelines_add"), {"title": "Second", "body": "Be truthful."})
    assert response.status_code == 302
    second = Guidelines.objects.first()
    assert (second.version, second.title, second.published_by) == (2, "Second", admin_user)
    assert client.post(reverse("admin:labeling_guidelines_add"), {"title": " ", "body": "x"}).status_code == 200
    assert Guidelines.objects.count() == 2

    url = reverse("admin:labeling_guidelines_change", args=[second.pk])
    page = client.get(url).content.decode()
    assert "Be truthful." in page and 'name="body"' not in page
    assert client.post(url, {"title": "Changed", "body": "Changed"}).status_code == 403
    second.refresh_from_db()
    assert second.body == "Be truthful."
