"""The export form names, on each filter, the kinds the export filters' table says it applies to; the server
refuses a filter set for another kind beside that filter."""

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from labeling.exports import FILTERS
from labeling.models import Export

pytestmark = pytest.mark.django_db


class KindsOfControls(HTMLParser):
    """control name -> the data-kinds of the box around it (None when the box names no kinds), in the export form."""

    def __init__(self):
        super().__init__()
        self.kinds, self._boxes, self._in_form = {}, [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "export-form":
            self._in_form = True
        if not self._in_form:
            return
        if tag == "div":
            self._boxes.append(attrs.get("data-kinds"))
        elif tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            kinds = next((box for box in reversed(self._boxes) if box is not None), None)
            self.kinds.setdefault(attrs["name"], kinds)

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "div" and self._in_form:
            self._boxes.pop()


def kinds_on_page(client):
    parser = KindsOfControls()
    parser.feed(client.get(reverse("exports")).content.decode())
    return parser.kinds


def test_each_filter_names_exactly_the_kinds_it_applies_to(client, admin_user):
    client.force_login(admin_user)
    on_page = kinds_on_page(client)
    assert set(on_page) == {"kind", "format", "with_identities", *FILTERS}
    assert on_page["kind"] is None and on_page["format"] is None and on_page["with_identities"] is None
    for kind in Export.Kind.values:
        shown = {name for name, kinds in on_page.items() if kinds and kind in kinds.split()}
        assert shown == {name for name, (_, kinds, _) in FILTERS.items() if kind in kinds}, kind


@pytest.mark.parametrize("filters, field", [
    ({"margin": "on"}, "margin"),
    ({"min_agreement": "0.5"}, "min_agreement"),
    ({"split": ["train"], "feedme": "on", "overlap": "consensus"}, "overlap"),
])
def test_a_filter_of_another_kind_is_refused_beside_it(as_researcher, filters, field):
    response = as_researcher.post(reverse("exports"), {"kind": "sft", "format": "jsonl", **filters})
    assert response.status_code == 400
    page = response.content.decode()
    box = page[page.index(f'name="{field}"'):]
    box = box[:box.index('<div class="field')] if '<div class="field' in box else box
    assert f"Filter `{field}` does not apply to SFT demonstrations exports. Clear it" in box
    assert page.count("does not apply to") == 1
    assert not Export.objects.exists()


def test_filters_of_the_chosen_kind_are_accepted(as_researcher):
    response = as_researcher.post(reverse("exports"), {"kind": "sft", "format": "jsonl", "split": ["train"],
                                                       "feedme": "on", "since": "2026-01-01"})
    export = Export.objects.get()
    assert response.status_code == 302
    assert set(export.filters) == {"split", "feedme", "since"}
