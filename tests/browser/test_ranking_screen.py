"""The ranking screen with nine outputs, at the laptop and desktop sizes labelers use: nothing covers anything,
the board stays in view, and the whole task can be done with the mouse or with the keyboard alone."""

import re

import pytest
from playwright.sync_api import expect

from labeling.models import Guidelines, LabelerProfile, Ranking
from tests.browser.conftest import shot, sign_in
from tests.factories import ranking_task

pytestmark = pytest.mark.slow

VIEWPORTS = [
    pytest.param({"width": 1366, "height": 768}, id="1366x768"),
    pytest.param({"width": 1920, "height": 1080}, id="1920x1080"),
]
PARAGRAPH = ("The answer depends on what you need: a short overview first, then the details that matter most, "
             "and finally a word on what to try next if this does not help. ")
MARKDOWN = "Two steps:\n\n- boil the water\n- add the pasta\n\n```python\nprint('al dente')\n```\n"
HOSTILE = "<script>window.ran = 1</script> and <img src=x onerror=\"window.ran = 2\"> done"
# What the page must keep apart: no two of these overlap unless one holds the other (a chip in its slot).
PARTS = {"output": ".output", "board": "#board", "slot": ".slot", "chip": ".chip", "submit": "#submit-task"}
BOXES = """(parts) => {
  const found = [];
  for (const [kind, selector] of Object.entries(parts)) {
    document.querySelectorAll(selector).forEach((element, index) => {
      const name = `${kind} ${element.id || element.dataset.letter || element.dataset.rank || index}`;
      found.push({ name, element });
    });
  }
  return found.map((a) => {
    const r = a.element.getBoundingClientRect();
    return { name: a.name, left: r.left, top: r.top, right: r.right, bottom: r.bottom,
             holds: found.filter((b) => b !== a && a.element.contains(b.element)).map((b) => b.name) };
  });
}"""


@pytest.fixture
def alice(labeler, transactional_db):
    guidelines = Guidelines.objects.create(version=1, title="Ranking", body="Prefer **helpful, honest** answers.")
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE, languages=["en"],
                                                       guidelines_acknowledged=guidelines)
    return labeler


def nine_outputs():
    """A ranking task of nine completions: plain replies of a few paragraphs, one in Markdown, one with markup
    that must not run, one cut at the length limit and a long one."""
    task = ranking_task(k=9)
    completions = list(task.completions.order_by("pk"))
    texts = [PARAGRAPH * 3, MARKDOWN, HOSTILE, PARAGRAPH * 2, PARAGRAPH * 20, PARAGRAPH, PARAGRAPH * 4,
             PARAGRAPH * 2, PARAGRAPH]
    reasons = ["stop", "stop", "stop", "length", "length", "stop", "", "stop", "stop"]
    for completion, text, reason in zip(completions, texts, reasons, strict=True):
        completion.text, completion.finish_reason = text, reason
        completion.save()
    task.prompt.text = "Explain how to cook pasta well. " * 12
    task.prompt.save()
    return task, completions


def open_task(page, user, viewport):
    page.set_viewport_size(viewport)
    sign_in(page, user.username)
    page.get_by_role("button", name="Start labeling").click()
    expect(page.locator(".output")).to_have_count(9)


def letters_by_id(page):
    return {int(output.get_attribute("data-completion")): output.get_attribute("data-letter")
            for output in page.locator(".output").all()}


def overlaps(page):
    boxes = page.evaluate(BOXES, PARTS)
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b["name"] in a["holds"] or a["name"] in b["holds"]:
                continue
            if min(a["right"], b["right"]) - max(a["left"], b["left"]) > 0.5 and \
                    min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 0.5:
                found.append((a["name"], b["name"]))
    return found


def assert_laid_out(page, viewport, name):
    """No part covers another, each fits the window when scrolled to, and the board stays whole in view from the
    top of the page to its bottom."""
    width, height = viewport["width"], viewport["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    for selector in PARTS.values():
        for part in page.locator(selector).all():
            part.scroll_into_view_if_needed()
            box = part.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (selector, box)
            assert box["y"] >= -1 and box["y"] + box["height"] <= height + 1, (selector, box)
    bottom = page.evaluate("document.documentElement.scrollHeight - innerHeight")
    assert bottom > 0, "nine outputs should need scrolling"
    for y in [*range(0, bottom, height // 2), bottom]:
        page.evaluate("(y) => window.scrollTo(0, y)", y)
        assert overlaps(page) == [], f"at {y}px"
        board = page.locator("#board").bounding_box()
        assert board["y"] >= 0 and board["y"] + board["height"] <= height + 1, f"the board leaves the window at {y}px"
    shot(page, f"{name}_bottom")
    page.evaluate("window.scrollTo(0, 0)")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_ranking_nine_outputs_with_the_mouse(page, alice, viewport):
    task, completions = nine_outputs()
    open_task(page, alice, viewport)
    letter = letters_by_id(page)
    size = f"{viewport['width']}x{viewport['height']}"
    shot(page, f"rank_nine_{size}")
    assert_laid_out(page, viewport, f"rank_nine_{size}")
    for rating, output in enumerate(page.locator(".output").all()):
        output.get_by_label(str(1 + rating % 7), exact=True).click()
    page.locator(f"#output-{letter[completions[4].pk]}").get_by_label("Hallucination").click()
    page.locator(f"#output-{letter[completions[2].pk]}").get_by_label("Harmful advice").click()
    # Best first: 0 and 1 tied, then 2, then 3, 4 and 5 tied, then 6, then 7 and 8 tied.
    ranks = {0: 1, 1: 1, 2: 2, 3: 3, 4: 3, 5: 3, 6: 4, 7: 5, 8: 5}
    for index, rank in ranks.items():
        chip = page.locator(f".chip[data-letter='{letter[completions[index].pk]}']")
        chip.drag_to(page.locator(f".slot[data-rank='{rank}']"))
    expect(page.locator(".slot[data-rank='3'] .chip")).to_have_count(3)
    expect(page.locator(".slot.pool .chip")).to_have_count(0)
    shot(page, f"rank_nine_ranked_{size}")
    assert_laid_out(page, viewport, f"rank_nine_ranked_{size}")
    page.get_by_role("button", name="Submit").click()

    message = page.locator(".message")
    expect(message).to_have_count(1)
    expect(message).to_have_text("Saved. Nothing is waiting for you right now. Check back soon.")
    ranking = Ranking.objects.get(task=task)
    ids = [c.pk for c in completions]
    assert [sorted(group) for group in ranking.groups] == [sorted(ids[0:2]), [ids[2]], sorted(ids[3:6]), [ids[6]],
                                                           sorted(ids[7:9])]
    rated = {r.completion_id: r for r in ranking.ratings.all()}
    assert rated[ids[4]].hallucination and rated[ids[2]].harmful_advice and not rated[ids[0]].hallucination
    shown = sorted(completions, key=lambda c: letter[c.pk])
    assert [rated[c.pk].rating for c in shown] == [1 + n % 7 for n in range(9)]

    page.goto("/work/mine/")
    page.get_by_role("link", name="Rank completions").click()
    flagged, cut = page.locator(f"#result-{letter[ids[4]]}"), page.locator(".result .cut-off")
    expect(flagged).to_contain_text("Hallucination")
    expect(flagged).to_contain_text("Cut off at the length limit")
    expect(cut).to_have_count(2)
    expect(page.locator(f"#result-{letter[ids[0]]}")).to_contain_text(f"tied with {letter[ids[1]]}")
    shot(page, f"my_work_ranking_{size}")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_ranking_nine_outputs_with_the_keyboard_alone(page, alice, viewport):
    task, completions = nine_outputs()
    open_task(page, alice, viewport)
    letter = letters_by_id(page)
    page.keyboard.press("?")
    shortcuts = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(shortcuts).to_contain_text("Hallucination")
    expect(shortcuts).to_contain_text("Go to the next / previous output")
    page.keyboard.press("Escape")
    expect(shortcuts).to_be_hidden()

    for index in range(9):  # j goes to the next output; a digit rates it; letters toggle its flags
        page.keyboard.press("j")
        expect(page.locator(".output").nth(index)).to_be_focused()
        page.keyboard.press(str(7 - index % 7))
    page.keyboard.press("h")
    page.keyboard.press("f")
    page.keyboard.press("f")
    page.keyboard.press("o")
    last = page.locator(".output").nth(8)
    expect(last.get_by_label("Hallucination")).to_be_checked()
    expect(last.get_by_label("Expresses opinion")).to_be_checked()
    expect(last.get_by_label("Fails to follow instruction")).not_to_be_checked()
    page.keyboard.press("k")
    expect(page.locator(".output").nth(7)).to_be_focused()
    page.keyboard.press("n")  # into the notes: what is typed there is text, not shortcuts
    expect(page.locator(".output").nth(7).locator("textarea")).to_be_focused()
    page.keyboard.type("Misses step 3; h is wrong")
    page.keyboard.press("Escape")
    expect(page.locator(".output").nth(7)).to_be_focused()
    expect(page.locator(".output").nth(7).get_by_label("3", exact=True)).not_to_be_checked()
    expect(page.locator(".output").nth(7).get_by_label("Hallucination")).not_to_be_checked()

    # The board: b goes to the first letter not ranked yet, Tab to the next one, a digit puts it in that rank.
    ranks = {0: "2", 1: "1", 2: "1", 3: "3", 4: "3", 5: "4", 6: "5", 7: "5", 8: "6"}
    by_letter = {letter[completions[i].pk]: rank for i, rank in ranks.items()}
    page.keyboard.press("b")
    expect(page.locator(".slot.pool .chip").first).to_be_focused()
    page.keyboard.press("Tab")
    second = page.locator(".slot.pool .chip").nth(1).get_attribute("data-letter")
    expect(page.locator(f".chip[data-letter='{second}']")).to_be_focused()
    page.keyboard.press(by_letter.pop(second))
    while by_letter:
        page.keyboard.press("b")
        focused = page.evaluate("document.activeElement.dataset.letter")
        page.keyboard.press(by_letter.pop(focused))
    expect(page.locator(".slot.pool .chip")).to_have_count(0)
    size = f"{viewport['width']}x{viewport['height']}"
    shot(page, f"rank_nine_keyboard_{size}")
    assert_laid_out(page, viewport, f"rank_nine_keyboard_{size}")
    page.keyboard.press("b")
    for _ in range(30):  # Tab on from the board reaches the Submit button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "submit-task":
            break
    expect(page.get_by_role("button", name="Submit")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.locator(".message")).to_have_text("Saved. Nothing is waiting for you right now. Check back soon.")
    ranking = Ranking.objects.get(task=task)
    ids = [c.pk for c in completions]
    assert [sorted(group) for group in ranking.groups] == [sorted(ids[1:3]), [ids[0]], sorted(ids[3:5]), [ids[5]],
                                                           sorted(ids[6:8]), [ids[8]]]
    shown = sorted(completions, key=lambda c: letter[c.pk])
    rated = {r.completion_id: r for r in ranking.ratings.all()}
    assert [rated[c.pk].rating for c in shown] == [7 - n % 7 for n in range(9)]
    assert (rated[shown[8].pk].hallucination, rated[shown[8].pk].expresses_opinion,
            rated[shown[8].pk].fails_to_follow_instruction) == (True, True, False)
    assert rated[shown[7].pk].notes == "Misses step 3; h is wrong"


def test_replies_render_as_markdown_with_markup_as_text_and_a_mark_where_cut_off(page, alice):
    task, completions = nine_outputs()
    open_task(page, alice, {"width": 1366, "height": 768})
    letter = letters_by_id(page)
    output = lambda index: page.locator(f"#output-{letter[completions[index].pk]}")  # noqa: E731

    expect(output(1).locator(".completion-text ul li")).to_have_text(["boil the water", "add the pasta"])
    expect(output(1).locator(".completion-text pre code")).to_have_text("print('al dente')")
    expect(output(2).locator(".completion-text")).to_contain_text('<script>window.ran = 1</script> and <img src=x')
    expect(output(2).locator(".completion-text img, .completion-text script")).to_have_count(0)
    assert page.evaluate("window.ran") is None

    cut = output(3).locator(".cut-off")
    expect(cut).to_have_text("Cut off at the length limit")
    assert "limit of new tokens" in cut.get_attribute("title")
    expect(output(4).locator(".cut-off")).to_be_visible()
    for index in (0, 1, 2, 5, 6):
        expect(output(index).locator(".cut-off")).to_have_count(0)
    shot(page, "rank_nine_markdown")


def test_errors_clear_as_each_answer_is_fixed(page, alice):
    nine_outputs()
    open_task(page, alice, {"width": 1366, "height": 768})
    page.get_by_role("button", name="Submit").click()
    summary = page.locator("#error-summary")
    expect(summary).to_have_text("18 answers need fixing: each is marked below.")
    expect(page.locator("#board-error")).to_contain_text("every output needs one")
    first = page.locator(".output").first
    expect(first.locator(".rating .error")).to_have_text("Rate this output from 1 to 7.")
    shot(page, "rank_nine_errors")

    first.get_by_label("5", exact=True).click()
    expect(first.locator(".rating .error")).to_have_count(0)
    expect(first.locator(".rating")).not_to_have_class(re.compile("has-error"))
    expect(page.locator(".output").nth(1).locator(".rating .error")).to_have_count(1)
    expect(summary).to_be_visible()
    for output in page.locator(".output").all()[1:]:
        output.get_by_label("4", exact=True).click()
    letters = [chip.get_attribute("data-letter") for chip in page.locator(".slot.pool .chip").all()]
    for rank, letter in enumerate(letters, start=1):
        page.locator(f".chip[data-letter='{letter}']").drag_to(page.locator(f".slot[data-rank='{min(rank, 3)}']"))
        if rank == 1:
            expect(page.locator(f"#output-{letter} .rank-select .error")).to_have_count(0)
            expect(page.locator(f"#output-{letters[1]} .rank-select .error")).to_have_count(1)
            expect(page.locator("#board-error")).to_be_visible()
    expect(page.locator("#task-form .error")).to_have_count(0)
    expect(page.locator("#task-form .has-error")).to_have_count(0)
    expect(page.locator("#board-error")).to_have_count(0)
    expect(summary).to_have_count(0)
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Saved. Nothing is waiting for you right now.")).to_be_visible()
    assert Ranking.objects.count() == 1


def test_a_narrow_window_shows_one_column_with_nothing_overlapping(page, alice):
    nine_outputs()
    viewport = {"width": 900, "height": 800}
    open_task(page, alice, viewport)
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    lefts = {round(output.bounding_box()["x"]) for output in page.locator(".output").all()}
    assert len(lefts) == 1, lefts
    board, last = page.locator("#board").bounding_box(), page.locator(".output").last.bounding_box()
    assert board["y"] >= last["y"] + last["height"], "the board comes after the outputs"
    for y in (0, 2000, 100_000):
        page.evaluate("(y) => window.scrollTo(0, y)", y)
        assert overlaps(page) == []
    shot(page, "rank_nine_narrow")
