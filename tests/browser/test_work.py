"""A labeler completes each kind of task in Chromium; screenshots land in var/test-output/screenshots."""


import pytest
from playwright.sync_api import expect

from labeling.models import (
    Demonstration,
    Guidelines,
    LabelerProfile,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    Ranking,
    Task,
)
from tests.browser.conftest import shot, sign_in
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, ranking_task


@pytest.fixture
def alice(labeler, transactional_db):
    guidelines = Guidelines.objects.create(version=3, title="Ranking",
                                           body="## Ranking\n\nPrefer **helpful, honest** answers.")
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE, languages=["en"],
                                                       guidelines_acknowledged=guidelines)
    return labeler


def start(page, user):
    sign_in(page, user.username)
    page.get_by_role("button", name="Start labeling").click()


def test_annotating_a_prompt(page, alice):
    task = TaskFactory(prompt=PromptFactory(text="Summarise this contract for a 10-year-old."))
    start(page, alice)
    expect(page.get_by_role("heading", name="Annotate a prompt")).to_be_visible()
    expect(page.locator(".guidelines")).to_contain_text("Prefer helpful, honest answers.")
    page.get_by_label("Ambiguous").check()
    page.get_by_label("Requests advice").check()
    page.get_by_label("Use case", exact=True).select_option("summarization")
    shot(page, "annotate_prompt")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    annotation = PromptAnnotation.objects.get(prompt=task.prompt)
    assert (annotation.ambiguous, annotation.requests_advice, annotation.sensitive_content) == (True, True, False)
    assert (annotation.use_case, annotation.language, annotation.labeler) == ("summarization", "en", alice)


def test_writing_a_prompt_keeps_the_text_when_validation_fails(page, alice):
    Task.objects.create(kind=Task.Kind.WRITE_PROMPT)
    start(page, alice)
    text = "Give me five names for a bakery that sells only croissants."
    page.get_by_label("User-based").check()
    page.get_by_label("Prompt").fill(text)
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".has-error")).to_contain_text("needs the use case it is based on")
    expect(page.get_by_label("Prompt")).to_have_value(text)
    shot(page, "write_prompt_error")
    expect(page.locator("#error-summary")).to_have_text("1 answer needs fixing: each is marked below.")
    page.get_by_label("Use case", exact=True).select_option("brainstorming")
    expect(page.locator(".has-error")).to_have_count(0)  # fixed, so the error goes before the next submit
    expect(page.locator("#error-summary")).to_have_count(0)
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Saved")).to_be_visible()
    prompt = Prompt.objects.get(created_by=alice)
    assert (prompt.text, prompt.source, prompt.use_case) == (text, "user_based", "brainstorming")


def test_writing_a_chat_demonstration(page, alice):
    task = TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=PromptFactory(text="How do I boil an egg?"))
    start(page, alice)
    page.get_by_label("Assistant").first.fill("Put it in boiling water for 7 minutes.")
    page.get_by_role("button", name="Add a turn").click()
    page.locator("textarea[name=user_2]").fill("And for a runny yolk?")
    page.locator("textarea[name=assistant_2]").fill("Take it out after 5 minutes.")
    shot(page, "write_demonstration")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    assert Demonstration.objects.get(prompt=task.prompt).messages == [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Put it in boiling water for 7 minutes."},
        {"role": "user", "content": "And for a runny yolk?"},
        {"role": "assistant", "content": "Take it out after 5 minutes."},
    ]


def rate_all(page, value):
    for output in page.locator(".output").all():
        output.get_by_label(str(value), exact=True).check()


def completion_ids_by_letter(page):
    return {
        output.get_attribute("id").removeprefix("output-"): int(output.get_attribute("data-completion"))
        for output in page.locator(".output").all()
    }


def test_ranking_by_drag_and_drop_with_a_tie(page, alice):
    task = ranking_task(k=4)
    start(page, alice)
    ids = completion_ids_by_letter(page)
    rate_all(page, 5)
    page.locator("#output-B").get_by_label("Hallucination").check()
    slot = lambda rank: page.locator(f".slot[data-rank='{rank}']")  # noqa: E731
    chip = lambda letter: page.locator(f".chip[data-letter='{letter}']")  # noqa: E731
    chip("C").drag_to(slot(1))
    chip("A").drag_to(slot(1))
    chip("D").drag_to(slot(2))
    chip("B").drag_to(slot(3))
    expect(slot(1).locator(".chip")).to_have_count(2)
    shot(page, "rank_completions")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    ranking = Ranking.objects.get(task=task)
    assert [sorted(group) for group in ranking.groups] == [sorted([ids["C"], ids["A"]]), [ids["D"]], [ids["B"]]]
    assert ranking.ratings.get(completion_id=ids["B"]).hallucination is True


def test_ranking_with_the_keyboard_alone(page, alice):
    task = ranking_task(k=5)
    start(page, alice)
    ids = completion_ids_by_letter(page)
    for output in page.locator(".output").all():  # rate 4: focus the radio and press space
        output.get_by_label("4", exact=True).focus()
        page.keyboard.press("Space")
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    for letter, rank in {"E": "1", "B": "2", "A": "2", "D": "3", "C": "4"}.items():
        page.locator(f".chip[data-letter='{letter}']").focus()
        page.keyboard.press(rank)
    page.keyboard.press("Control+Enter")
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    ranking = Ranking.objects.get(task=task)
    assert [sorted(group) for group in ranking.groups] == [
        [ids["E"]], sorted([ids["B"], ids["A"]]), [ids["D"]], [ids["C"]]
    ]


def test_an_incomplete_ranking_is_refused_next_to_the_output_and_keeps_the_ratings(page, alice):
    ranking_task(k=4)
    start(page, alice)
    rate_all(page, 6)
    page.locator(".chip[data-letter='A']").drag_to(page.locator(".slot[data-rank='1']"))
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#output-B .rank-select")).to_contain_text("Place this output on the ranking board.")
    expect(page.locator("#output-B").get_by_label("6", exact=True)).to_be_checked()
    expect(page.locator(".slot[data-rank='1'] .chip")).to_have_text("A")
    assert not Ranking.objects.exists()


def test_my_work_lists_submissions_read_only(page, alice):
    TaskFactory(prompt=PromptFactory(text="Is a tomato a fruit?"))
    start(page, alice)
    page.get_by_label("Use case", exact=True).select_option("open_qa")
    page.get_by_label("Closed domain").check()
    page.get_by_role("button", name="Submit").click()
    page.goto("/work/mine/")
    page.get_by_role("link", name="Annotate a prompt").click()
    expect(page.locator(".result dd")).to_have_text(["Closed domain", "Open QA", "en", "none marked"])
    expect(page.locator("form#task-form")).to_have_count(0)
    shot(page, "my_work")


def test_starting_a_demonstration_from_the_models_suggestion(page, alice):
    prompt = PromptFactory(text="Suggest a name for a grey cat.")
    policy = ModelVersionFactory(status=ModelVersion.Status.ACTIVE, name="policy-7")
    CompletionFactory(prompt=prompt, model_version=policy, text="How about Smokey?")
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt)
    start(page, alice)
    expect(page.locator(".suggestion")).to_contain_text("policy-7")
    page.get_by_role("button", name="Insert into my reply").click()
    reply = page.get_by_label("Assistant").first
    expect(reply).to_have_value("How about Smokey?")
    reply.press("End")
    reply.type(" Or Ash, after the colour of its fur.")
    shot(page, "write_demonstration_suggestion")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    demonstration = Demonstration.objects.get(prompt=prompt)
    assert demonstration.messages[-1]["content"] == "How about Smokey? Or Ash, after the colour of its fur."
    assert (demonstration.used_model_suggestion, demonstration.suggestion_model_version) == (True, policy)
