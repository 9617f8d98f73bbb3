"""An admin's ways between the admin and the site, invitation links to copy, and the export form's filters, in
Chromium."""

import pytest
from playwright.sync_api import expect

from labeling import services
from labeling.exports import FILTERS
from labeling.models import Export
from tests.browser.conftest import shot, sign_in

WIDE = {"width": 1366, "height": 900}

# Whether each control stays inside its box and the window: a control cut off or spilling over is a failure.
OVERFLOWING = """form => {
  const spilled = [];
  for (const box of form.querySelectorAll(".field:not([hidden])")) {
    const outer = box.getBoundingClientRect();
    for (const control of box.querySelectorAll("input, select, label, fieldset")) {
      const inner = control.getBoundingClientRect();
      if (inner.width === 0) continue;
      if (inner.left < outer.left - 1 || inner.right > outer.right + 1 || inner.right > window.innerWidth
          || control.scrollWidth > control.clientWidth + 1 && control.tagName === "SELECT") {
        spilled.push(control.name || control.textContent.trim().slice(0, 30));
      }
    }
  }
  return spilled;
}"""


def shown_filters(page):
    return set(page.locator("#export-form [data-kinds]:visible").evaluate_all(
        "boxes => boxes.map(box => box.querySelector('input, select').name)"))


def test_choosing_a_kind_shows_exactly_its_filters_and_sends_only_those(page, admin_user):
    page.set_viewport_size(WIDE)
    sign_in(page, admin_user.username)
    page.goto("/research/exports/")
    kind = page.get_by_label("Kind")
    for value in [*Export.Kind.values, Export.Kind.PREFERENCE_PAIRS]:
        kind.select_option(value)
        assert shown_filters(page) == {name for name, (_, kinds, _) in FILTERS.items() if value in kinds}, value
        expect(page.get_by_label("Format")).to_be_visible()
        expect(page.get_by_label("Usernames instead of pseudonyms (admins only)")).to_be_visible()
        assert page.locator("#export-form").evaluate(OVERFLOWING) == [], value
    page.get_by_label("Train").check()
    page.get_by_label("Margin column (rank distance)").check()
    page.get_by_label("Minimum agreement (0-1)").fill("0.5")
    shot(page, "exports-preference-pairs")

    kind.select_option(Export.Kind.SFT)  # margin and agreement are for rankings; the split goes with SFT too
    shot(page, "exports-sft")
    page.get_by_role("button", name="Export").click()
    expect(page.get_by_role("heading", name="Export #")).to_be_visible()
    assert Export.objects.get().filters == {"split": ["train"]}


def test_the_export_form_after_a_refusal_still_shows_the_kinds_filters(page, researcher):
    sign_in(page, researcher.username)
    page.goto("/research/exports/")
    page.get_by_label("Kind").select_option(Export.Kind.SFT)
    page.get_by_label("Since").fill("2026-02-01")
    page.get_by_label("Until").fill("2026-01-01")
    page.get_by_role("button", name="Export").click()
    expect(page.get_by_text("Filter `since` is after `until`.")).to_be_visible()
    assert shown_filters(page) == {name for name, (_, kinds, _) in FILTERS.items() if Export.Kind.SFT in kinds}
    expect(page.get_by_label("Since")).to_have_value("2026-02-01")


@pytest.fixture
def clipboard_page(browser, live_server):
    """A page whose browser lets the site read and write the clipboard, as a person who allowed it."""
    context = browser.new_context(base_url=live_server.url, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def test_copy_puts_an_invitation_link_on_the_clipboard_in_the_admin_and_on_the_team_page(clipboard_page, admin_user,
                                                                                          live_server):
    page = clipboard_page
    page.set_viewport_size(WIDE)
    invitation = services.invitation_create(note="for Jane", created_by=admin_user)
    link = f"{live_server.url}/join/{invitation.token}/"
    sign_in(page, admin_user.username)
    expect(page).to_have_url(f"{live_server.url}/quality/")  # an admin starts on the site's Team page

    invitations = page.locator("#invitations")
    expect(invitations.get_by_role("textbox", name="Invitation link")).to_have_value(link)
    invitations.get_by_role("button", name="Copy invitation link").click()
    expect(invitations.get_by_role("button", name="Copy invitation link")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == link
    shot(page, "team-invitations")

    page.evaluate("navigator.clipboard.writeText('')")
    page.goto("/admin/labeling/invitation/")
    page.get_by_role("button", name="Copy invitation link").click()
    expect(page.get_by_role("button", name="Copy invitation link")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == link
    shot(page, "admin-invitations")


def test_without_the_clipboard_copy_selects_the_whole_link(page, admin_user, live_server):
    page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    invitation = services.invitation_create(created_by=admin_user)
    sign_in(page, admin_user.username)
    page.goto(f"/admin/labeling/invitation/{invitation.pk}/change/")
    page.get_by_role("button", name="Copy invitation link").click()
    expect(page.get_by_role("button", name="Copy invitation link")).to_have_text("Press Ctrl+C")
    selected = page.evaluate("[document.activeElement.getAttribute('aria-label'), "
                             "document.activeElement.value.slice(document.activeElement.selectionStart, "
                             "document.activeElement.selectionEnd)]")
    assert selected == ["Invitation link", f"{live_server.url}/join/{invitation.token}/"]


def test_an_admin_goes_between_the_admin_and_the_site(page, admin_user):
    page.set_viewport_size(WIDE)
    sign_in(page, admin_user.username)
    page.goto("/admin/")
    header = page.locator("#header")
    for label in ("Review", "Team", "Research", "Training", "Exports", "Evaluations"):
        expect(header.get_by_role("link", name=label, exact=True)).to_be_visible()
    shot(page, "admin-index")
    header.get_by_role("link", name="Exports", exact=True).click()
    expect(page.get_by_role("heading", name="Exports", exact=True)).to_be_visible()
    page.goto("/admin/labeling/prompt/")
    page.get_by_role("link", name="View site").click()
    expect(page.get_by_role("heading", name="Team quality")).to_be_visible()
