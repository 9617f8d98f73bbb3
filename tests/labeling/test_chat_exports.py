"""What chats become in the datasets: Open Assistant trees with the alternatives as ranked siblings, conversational
preference pairs, dialogue SFT turns, PPO prompts; each read by `datasets`, TRL and `rlhf`."""

import gzip
import json
import random
from types import SimpleNamespace

import pytest
from datasets import load_dataset

from labeling import services
from labeling.models import Assignment, LabelerProfile, Task
from labeling.services import chat as chat_services
from tests.factories import PromptFactory, TaskFactory

pytestmark = pytest.mark.django_db

SYSTEM = "You are a helpful assistant."


@pytest.fixture(params=[2, 4], ids=["a reply of the model chosen", "the rewritten reply chosen"])
def chat(request, labeler, other_labeler, settings, tiny_model, monkeypatch):
    """Alice's ended chat of three turns, its second reply rewritten; the reply at the position the test names is
    chosen (by the seed that picks it), and ranked by Bob."""
    seed = next(seed for seed in range(100) if random.Random(seed).choice([2, 4, 6]) == request.param)
    monkeypatch.setattr(chat_services, "secrets", SimpleNamespace(randbits=lambda bits: seed))
    settings.POLICY_MODEL = str(tiny_model)
    settings.CHAT_MAX_NEW_TOKENS = 8
    settings.CHAT_RANK_K = 4
    settings.OVERLAP_SHARE = 0
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    services.chat_task_create(system_prompt=SYSTEM)
    conversation = services.chat_start(assignment=services.task_lease_next(labeler=labeler), labeler=labeler)
    after = None
    for n, text in enumerate(["Hello!", "Name a colour.", "Thanks, one more?"], start=1):
        reply = services.chat_send(conversation=conversation, labeler=labeler, text=text, after=after)
        reply = services.chat_reply_write(message_id=reply.pk)
        if n == 2:
            reply = services.chat_rewrite(message=reply, labeler=labeler, text="Teal, the blue-green of a duck.")
        after = reply.pk
    conversation = services.chat_end(conversation=conversation, labeler=labeler)
    assert (conversation.choice_seed, conversation.chosen_message.position) == (seed, request.param)
    services.completions_sample(prompt_ids=[conversation.ranking_prompt_id])
    task = Task.objects.get(prompt=conversation.ranking_prompt)
    assignment = services.task_lease_next(labeler=other_labeler)
    assert assignment.task == task
    ids = sorted(task.completions.values_list("id", flat=True))
    services.ranking_submit(assignment=assignment, labeler=other_labeler, groups=[[ids[1]], [ids[0]], ids[2:]],
                            ratings={cid: {"rating": 5} for cid in ids})
    return conversation


def build(researcher, kind, fmt="jsonl", **filters):
    export = services.export_create(kind=kind, fmt=fmt, filters=filters, created_by=researcher, queue=False)
    export = services.export_run(export_id=export.pk)
    assert export.state == "succeeded", export.error
    return export


def rows(export):
    opener = gzip.open if export.file.path.endswith(".gz") else open
    with opener(export.file.path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def turns(conversation, *, before=None):
    return conversation.turns(list(conversation.messages.filter(superseded=False)), before=before)


def test_the_chat_is_an_open_assistant_tree_with_the_alternatives_as_ranked_siblings(researcher, chat):
    [tree] = [t for t in rows(build(researcher, "oasst")) if t["message_tree_id"] == f"prompt-{chat.ranking_prompt_id}"]
    chosen = chat.chosen_message
    node, trunk = tree["prompt"], []
    while len(node["replies"]) == 1:
        trunk.append(node["text"])
        node = node["replies"][0]
    trunk.append(node["text"])
    assert trunk == [turn["content"] for turn in turns(chat, before=chosen.position)]
    assert tree["prompt"]["text"] == SYSTEM and tree["prompt"]["role"] == "prompter"
    siblings = node["replies"]
    ranked = [s for s in siblings if s["rank"] is not None]
    assert len(ranked) == 4 and all(s["synthetic"] and s["model_name"] == "base" for s in ranked)
    assert sorted(s["rank"] for s in ranked) == [0, 1, 2, 2]
    # The rest of the chat goes on under the reply it continued from.
    later = [m.text for m in chat.messages.filter(superseded=False, position__gt=chosen.position)]
    under = next(s for s in siblings if s["text"] == chosen.text and (s["rank"] is None) == chosen.rewritten)
    chain = []
    while under["replies"]:
        under = under["replies"][0]
        chain.append(under["text"])
    assert chain == later and later
    if chosen.rewritten:
        assert any(s["text"] == chosen.original_text for s in ranked)


def test_preference_pairs_of_a_chat_have_the_conversation_so_far_as_prompt(researcher, chat):
    pairs = rows(build(researcher, "preference_pairs"))
    assert len(pairs) == 5  # 4 completions, one tie
    assert all(pair["prompt"] == chat.ranking_prompt.turns for pair in pairs)
    assert pairs[0]["prompt"][0] == {"role": "system", "content": SYSTEM}
    assert pairs[0]["prompt"][-1]["role"] == "user"


def test_the_rewritten_reply_is_a_dialogue_sft_turn_with_the_models_original_beside_it(researcher, chat, labeler):
    [row] = rows(build(researcher, "dialogues"))
    rewritten = chat.messages.get(rewritten=True)
    assert row["source"] == "chat" and row["conversation_id"] == chat.pk and row["turn"] == 4
    assert row["prompt"] == turns(chat, before=4)
    assert row["completion"] == [{"role": "assistant", "content": "Teal, the blue-green of a duck."}]
    assert row["model_text"] == rewritten.original_text and row["model_version"] == "base"
    assert row["labeler"].startswith("labeler-") and row["split"] == chat.ranking_prompt.split


@pytest.fixture
def demonstrations(labeler):
    """A single-turn demonstration and one where the labeler played both sides of two turns."""
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=PromptFactory(text="Say hi."), priority=2)
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=PromptFactory(text="Plan a picnic."), priority=1)
    services.demonstration_write(assignment=services.task_lease_next(labeler=labeler), labeler=labeler,
                                 turns=[{"role": "assistant", "content": "Hi!"}])
    services.demonstration_write(assignment=services.task_lease_next(labeler=labeler), labeler=labeler, turns=[
        {"role": "assistant", "content": "Where?"}, {"role": "user", "content": "A park."},
        {"role": "assistant", "content": "Bring a blanket."}])


def test_dialogue_turns_of_demonstrations_and_single_turn_ones_on_request(researcher, demonstrations):
    found = rows(build(researcher, "dialogues"))
    assert [(r["prompt"], r["completion"][0]["content"]) for r in found] == [
        ([{"role": "user", "content": "Plan a picnic."}], "Where?"),
        ([{"role": "user", "content": "Plan a picnic."}, {"role": "assistant", "content": "Where?"},
          {"role": "user", "content": "A park."}], "Bring a blanket."),
    ]
    mixed = rows(build(researcher, "dialogues", single_turn=True))
    assert len(mixed) == 3 and mixed[0]["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert mixed[0]["completion"] == [{"role": "assistant", "content": "Hi!"}]
    with pytest.raises(Exception, match="does not apply"):
        build(researcher, "sft", single_turn=True)


def test_dialogues_load_in_datasets_train_trl_for_a_step_and_rlhf_trains_on_the_labelers_turns_only(
        researcher, chat, demonstrations, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from rlhf.data import load_demonstrations
    from rlhf.models import assistant_labels, load_tokenizer

    export = build(researcher, "dialogues", "parquet", single_turn=True)
    dataset = load_dataset("parquet", data_files=export.file.path, split="train", cache_dir=str(tmp_path))
    assert dataset.num_rows == export.row_count == 4
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    assert trainer.train().training_loss > 0 and trainer.state.global_step == 1

    conversations = load_demonstrations(export.file.path)
    chat_row = next(c for c in conversations if c[0]["role"] == "system")
    tokenizer = load_tokenizer(tiny_model)
    ids, labels = assistant_labels(tokenizer, chat_row)
    trained = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
    assert "Teal, the blue-green of a duck." in trained
    assert chat_row[2]["weight"] == 0 and chat_row[2]["content"] not in trained  # the model's first reply: context


def test_chat_rankings_feed_the_reward_model_and_their_contexts_the_policy_round(researcher, chat):
    from rlhf.data import load_prompts, load_rankings

    [ranking] = load_rankings(build(researcher, "rankings", "jsonl").file.path)
    assert ranking.prompt == chat.ranking_prompt.turns and len(ranking.completions) == 4
    prompts = load_prompts(build(researcher, "ppo_prompts", "jsonl").file.path)
    assert chat.ranking_prompt.turns in prompts
    assert Assignment.objects.filter(task__kind="rank_completions", state="submitted").count() == 1
