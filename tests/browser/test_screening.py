"""An applicant goes from an invitation to active work in Chromium, with an admin reviewing in between."""

from playwright.sync_api import expect

from labeling import services
from labeling.models import Guidelines, LabelerProfile, ScreeningItem
from tests.browser.conftest import shot, sign_in
from tests.factories import ranking_task


def test_an_applicant_goes_from_invitation_to_active(page, admin_user, transactional_db, settings):
    settings.ONBOARDING_PRACTICE_TASKS = 1
    ScreeningItem.objects.create(part="sensitive_flags", prompt_text="Insult my neighbour.",
                                 completions=["Your neighbour is a fool."], gold={"flags": ["toxic"]})
    ScreeningItem.objects.create(part="ranking", prompt_text="What is 2 + 2?", completions=["4", "5", "22"],
                                 gold={"groups": [[0], [1], [2]]})
    ScreeningItem.objects.create(part="demonstration", prompt_text="My dog died. Say something kind.")
    Guidelines.objects.create(version=1, title="How we label", body="Prefer **honest** and *harmless* answers.")
    practice = ranking_task(k=3)
    ids = list(practice.completions.order_by("id").values_list("id", flat=True))
    practice.is_gold = practice.is_practice = True
    practice.gold_answer = {"groups": [[i] for i in ids], "explanation": "The shortest answer is best here."}
    practice.save()
    invitation = services.invitation_create(note="Jane Doe, via the agency")

    # The applicant: the link, an account, the screening test
    page.goto(invitation.get_absolute_url())
    page.get_by_label("Username").fill("jane.doe")
    page.get_by_label("Email").fill("jane@example.com")
    page.get_by_label("Password").fill("a-long-passphrase")
    page.get_by_role("button", name="Create my account").click()
    page.get_by_role("link", name="Take the screening test").click()
    page.get_by_role("group", name="Flags for question 1").get_by_label("toxic").check()
    for letter, rank in zip("ABC", ["1", "2", "3"], strict=True):
        page.get_by_label(f"Rank of response {letter}").select_option(rank)
    page.get_by_label("Your reply to prompt 1").fill("I am so sorry. Losing a dog is losing family.")
    page.get_by_label("health and medicine").check()
    shot(page, "screening-test")
    page.get_by_role("button", name="Submit my test").click()
    expect(page.get_by_role("heading", name="Your test is being reviewed")).to_be_visible()
    page.get_by_role("button", name="Sign out jane.doe").click()

    # The admin: an anonymised queue, a grade, an approval
    sign_in(page, admin_user.username)
    page.goto("/review/")
    expect(page.locator("table.review-queue")).not_to_contain_text("jane")
    page.get_by_role("link", name="Applicant #").click()
    expect(page.locator("main")).not_to_contain_text("jane")
    page.get_by_label("Grade for reply 1 (1-7)").fill("7")
    page.get_by_role("button", name="Save grades").click()
    page.get_by_label("Approve: on to onboarding").check()
    shot(page, "screening-review")
    page.get_by_role("button", name="Record the decision").click()
    page.get_by_role("button", name=f"Sign out {admin_user.username}").click()

    # The applicant again: guidelines, a practice task with feedback, then production work
    sign_in(page, "jane.doe", "a-long-passphrase")
    expect(page.get_by_role("heading", name="Onboarding")).to_be_visible()
    page.get_by_role("button", name="I have read and will follow these guidelines").click()
    page.get_by_role("button", name="Start a practice task").click()
    for output in page.locator(".output").all():
        output.get_by_label("4", exact=True).check()
    for letter, rank in {"A": "1", "B": "2", "C": "3"}.items():  # placed by keyboard on the ranking board
        page.locator(f".chip[data-letter='{letter}']").focus()
        page.keyboard.press(rank)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#feedback")).to_contain_text("The shortest answer is best here.")
    expect(page.locator("#feedback")).to_contain_text("agreed with the researchers on")
    shot(page, "practice-feedback")
    page.get_by_role("link", name="Back to onboarding").click()
    expect(page.locator("#start-labeling")).to_be_visible()
    assert LabelerProfile.objects.get(user__username="jane.doe").status == "active"
