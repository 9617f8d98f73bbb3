"""A labeler chats with the model in Chromium while a real worker writes the replies, another labeler ranks one
of its replies; a labeler writing a demonstration takes the model's suggestion for a later turn. Screenshots land
in var/test-output/screenshots."""

import json
import re
import shutil

import pytest
from playwright.sync_api import expect
from transformers import GPT2Config, GPT2LMHeadModel

from labeling import services
from labeling.models import (
    ChatMessage,
    Conversation,
    Demonstration,
    Guidelines,
    LabelerProfile,
    Ranking,
    Task,
    TurnSuggestion,
)
from tests.browser.conftest import shot, sign_in
from tests.conftest import wait_for
from tests.factories import PromptFactory, TaskFactory


@pytest.fixture(scope="module")
def chatty_model(tiny_model, tmp_path_factory):
    """The tiny model's tokenizer on a model wide enough to write at a pace a person can watch on the CPU, which
    never ends a reply before its token cap: every reply streams for a few seconds."""
    folder = tmp_path_factory.mktemp("chatty")
    for path in tiny_model.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "rlhf_model", "chat_template")):
            shutil.copy(path, folder / path.name)
    tiny = GPT2Config.from_pretrained(tiny_model)
    config = GPT2Config(vocab_size=tiny.vocab_size, n_positions=1024, n_embd=384, n_layer=8, n_head=6,
                        bos_token_id=tiny.bos_token_id, eos_token_id=tiny.eos_token_id,
                        pad_token_id=tiny.pad_token_id)
    model = GPT2LMHeadModel(config)
    model.generation_config.min_new_tokens = 100_000
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def labelers(labeler, other_labeler, transactional_db):
    guidelines = Guidelines.objects.create(version=1, title="Chats", body="Talk as a person with a real need would.")
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE, languages=["en"],
                                  guidelines_acknowledged=guidelines)
    return labeler, other_labeler


@pytest.fixture
def chat_worker(start_worker, chatty_model, settings, worker_cache):
    settings.POLICY_MODEL = str(chatty_model)
    settings.CHAT_MAX_NEW_TOKENS = 120
    settings.CHAT_RANK_K = 4
    settings.OVERLAP_SHARE = 0
    return start_worker("chat,sampling", POLICY_MODEL=chatty_model, CHAT_MAX_NEW_TOKENS=120, CHAT_RANK_K=4,
                        OVERLAP_SHARE=0)


def reply_of(page, n):
    return page.locator("#messages .turn.assistant").nth(n - 1)


def send(page, text):
    page.get_by_label("Your turn").fill(text)
    page.get_by_label("Your turn").press("Control+Enter")


@pytest.mark.slow
def test_a_labeler_chats_stops_regenerates_rewrites_and_another_ranks_a_reply(page, open_page, labelers, chat_worker):
    alice, bob = labelers
    services.chat_task_create(system_prompt="You are a helpful assistant for planning trips.")
    sign_in(page, alice.username)
    page.get_by_role("button", name="Start labeling").click()
    expect(page.get_by_role("heading", name="Chat with the model")).to_be_visible()
    expect(page.locator(".system-prompt")).to_contain_text("planning trips")

    # Turn 1: the reply arrives in parts, as the model writes it.
    page.evaluate("""() => {
      window.seen = [];
      new MutationObserver(() => {
        const text = document.querySelector('#messages .turn.assistant .turn-text');
        if (text) window.seen.push(text.textContent.length);
      }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    send(page, "I have three days in Lisbon. What should I see?")
    expect(reply_of(page, 1).get_by_role("button", name="Regenerate")).to_be_visible(timeout=60_000)
    final = len(reply_of(page, 1).locator(".turn-text").text_content())
    parts = sorted({n for n in page.evaluate("window.seen") if 0 < n < final})
    assert final > 0 and len(parts) >= 2, parts
    expect(reply_of(page, 1)).to_contain_text("Cut at the length limit.")

    # Turn 2: stopped while it streams, then regenerated.
    send(page, "And where should I eat?")
    expect(reply_of(page, 2).locator(".turn-text")).not_to_be_empty(timeout=60_000)
    page.get_by_role("button", name="Stop the reply").click()
    expect(reply_of(page, 2)).to_contain_text("Stopped.")
    stopped = ChatMessage.objects.get(conversation__labeler=alice, position=4)
    assert stopped.state == "stopped" and stopped.finish_reason == "abort"
    assert 0 < len(stopped.text) and stopped.token_count < 120
    shot(page, "chat_stopped")
    reply_of(page, 2).get_by_role("button", name="Regenerate").click()
    expect(reply_of(page, 2)).to_contain_text("Cut at the length limit.", timeout=60_000)
    stopped.refresh_from_db()
    assert stopped.superseded

    # Turn 3: rewritten by the labeler; the model's words are kept.
    send(page, "Thanks! One more tip?")
    expect(reply_of(page, 3).get_by_role("button", name="Rewrite")).to_be_visible(timeout=60_000)
    model_words = reply_of(page, 3).locator(".turn-text").text_content()
    reply_of(page, 3).get_by_role("button", name="Rewrite").click()
    reply_of(page, 3).get_by_label("Your version of the reply").fill("Take tram 28 early, before the crowds.")
    reply_of(page, 3).get_by_role("button", name="Save my version").click()
    expect(reply_of(page, 3)).to_contain_text("Rewritten by you")
    rewritten = ChatMessage.objects.get(conversation__labeler=alice, position=6)
    assert (rewritten.text, rewritten.original_text) == ("Take tram 28 early, before the crowds.", model_words)
    shot(page, "chat")

    # A reload (a closed tab, a dropped connection) keeps the conversation.
    page.reload()
    expect(page.locator("#messages .turn")).to_have_count(6)
    expect(page.get_by_text("7 of 10 turns left")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="End the chat").click()
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    conversation = Conversation.objects.get(labeler=alice)
    assert conversation.state == "ended" and conversation.chosen_message is not None

    # The worker samples the alternatives; bob ranks them, with the conversation before the reply above them.
    assert wait_for(lambda: Task.objects.filter(kind="rank_completions").exists(), timeout=120)
    bob_page = open_page()
    sign_in(bob_page, bob.username)
    bob_page.get_by_role("button", name="Start labeling").click()
    expect(bob_page.get_by_role("heading", name="Rank completions")).to_be_visible()
    expect(bob_page.locator(".prompt")).to_contain_text("planning trips")
    expect(bob_page.locator(".prompt")).to_contain_text("I have three days in Lisbon.")
    expect(bob_page.locator(".output")).to_have_count(4)
    for output in bob_page.locator(".output").all():
        output.get_by_label("4", exact=True).check()
    for rank, letter in enumerate("ABCD", start=1):
        bob_page.locator(f".chip[data-letter='{letter}']").focus()
        bob_page.keyboard.press(str(rank))
    shot(bob_page, "chat_ranking")
    bob_page.get_by_role("button", name="Submit").click()
    expect(bob_page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    ranking = Ranking.objects.get(labeler=bob)
    assert ranking.task.prompt == conversation.ranking_prompt

    # The export holds the chat as a tree: its turns, the ranked alternatives beside the chosen reply.
    export = services.export_create(kind="oasst", fmt="jsonl", filters={}, created_by=bob, queue=False)
    with open(services.export_run(export_id=export.pk).file.path) as lines:
        [tree] = [json.loads(line) for line in lines]
    node, trunk = tree["prompt"], [tree["prompt"]["text"]]
    while len(node["replies"]) == 1:
        node = node["replies"][0]
        trunk.append(node["text"])
    assert trunk[:2] == ["You are a helpful assistant for planning trips.", "I have three days in Lisbon. What should I see?"]
    assert sorted(reply["rank"] for reply in node["replies"] if reply["rank"] is not None) == [0, 1, 2, 3]


@pytest.mark.slow
def test_the_model_suggests_a_later_turn_of_a_demonstration(page, labelers, chat_worker):
    alice, _ = labelers
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=PromptFactory(text="Help me plan a picnic."))
    sign_in(page, alice.username)
    page.get_by_role("button", name="Start labeling").click()
    page.locator("textarea[name=assistant_1]").fill("Happily! Where will it be?")
    page.get_by_role("button", name="Add a turn").click()
    page.locator("textarea[name=user_2]").fill("In a park, for four people.")
    turn = page.locator(".turn-suggestion[data-for=assistant_2]")
    turn.get_by_role("button", name="Suggest a reply").click()
    expect(turn.get_by_role("button", name="Use this suggestion")).to_be_visible(timeout=60_000)
    expect(turn.locator(".suggestion-status")).to_contain_text("Suggested by base")
    suggested = turn.locator(".turn-text").text_content()
    turn.get_by_role("button", name="Use this suggestion").click()
    # A text area keeps the text with its line breaks as LF (CR LF when the form is sent).
    lines = re.compile(r"\r\n|\r|\n")
    assert lines.sub("\n", page.locator("textarea[name=assistant_2]").input_value()) == lines.sub("\n", suggested)
    shot(page, "demonstration_suggestion")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    demonstration, suggestion = Demonstration.objects.get(), TurnSuggestion.objects.get()
    assert suggestion.text == suggested
    assert lines.sub("\n", demonstration.messages[-1]["content"]) == lines.sub("\n", suggested)
    assert demonstration.turn_suggestions == [{"turn": 3, "model_version": "base", "used": True}]
