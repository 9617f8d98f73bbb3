"""Dialogue SFT data: the assistant turns labelers wrote inside conversations, in TRL's prompt-completion form.

One row per labeler-written assistant turn: `prompt` is the conversation before it (system prompt
included; earlier replies the model wrote stay as context), `completion` the turn, so that TRL's
SFTTrainer and `rlhf train-sft` train on the labeler's words alone. The turns come from chats (a
reply the labeler rewrote, with the model's original in `model_text`) and from demonstrations of
more than one user turn, where the labeler played both sides (`suggested_by` names the model that
suggested a reply for the turn, and `used_suggestion` says whether the labeler took it). With `single_turn`, single-turn
demonstrations follow in the same format, as ChatGPT's SFT mix took InstructGPT's data.
"""

from collections import defaultdict

import pyarrow as pa
from django.conf import settings
from django.db.models import Exists, OuterRef

from .. import answers, intake
from ..models import ChatMessage, Conversation, Demonstration
from .sources import BATCH, MESSAGES, Source, batched, dated, labeled, prompt_filter
from .trees import _opening_length


class Dialogues(Source):
    schema = pa.schema([
        ("prompt", MESSAGES), ("completion", MESSAGES), ("source", pa.string()), ("conversation_id", pa.int64()),
        ("demonstration_id", pa.int64()), ("turn", pa.int32()), ("model_text", pa.string()),
        ("model_version", pa.string()), ("suggested_by", pa.string()), ("used_suggestion", pa.bool_()),
        ("split", pa.string()), ("language", pa.string()), ("labeler", pa.string()),
        ("created_at", pa.string()),
    ])

    def chats(self):
        f = self.filters
        rewritten = ChatMessage.objects.filter(conversation=OuterRef("pk"), rewritten=True, superseded=False)
        return Conversation.objects.filter(
            Exists(rewritten), dated(f), labeled(f, "labeler", "assignment__task"), state=Conversation.State.ENDED)

    def demonstrations(self):
        f = self.filters
        return Demonstration.objects.filter(prompt_filter(f, "prompt__"), dated(f),
                                            labeled(f, "author", "assignment__task"))

    def queryset(self):
        return self.demonstrations()

    def total(self):
        return self.chats().count() + self.demonstrations().count()

    def rows(self):
        yield from self.chat_rows()
        yield from self.demonstration_rows()

    def chat_rows(self):
        ratios = tuple(settings.PROMPT_SPLIT_RATIOS)
        found = self.chats().select_related("assignment__task", "ranking_prompt").order_by("id").iterator(
            chunk_size=BATCH)
        kept = 0
        for batch in batched(found, BATCH // 4):
            messages = defaultdict(list)
            for message in ChatMessage.objects.filter(conversation__in=batch, superseded=False).select_related(
                "model_version"
            ).order_by("conversation_id", "position"):
                messages[message.conversation_id].append(message)
            for conversation in batch:
                self.done += 1
                prompt = conversation.ranking_prompt  # the split its ranking went to, if it gave one
                split = prompt.split if prompt else str(intake.split_for(f"labeler-{conversation.labeler_id}", ratios))
                language = conversation.assignment.task.params.get("language", "en")
                if not self.wanted(split, language):
                    continue
                current = messages[conversation.pk]
                for message in current:
                    if not message.rewritten:
                        continue
                    prompt = conversation.turns(current, before=message.position)
                    if row := self.row(prompt, message.text, "chat", split=split, language=language,
                                       conversation_id=conversation.pk, turn=message.position,
                                       model_text=message.original_text,
                                       model_version=self.saw(message.model_version and message.model_version.name),
                                       labeler=conversation.labeler_id, created_at=conversation.ended_at):
                        kept += 1
                        yield row
        self.counts["chat_turns"] = kept

    def demonstration_rows(self):
        found = self.demonstrations().order_by("id").values_list(
            "messages", "id", "prompt__split", "prompt__language", "author_id", "created_at",
            "assignment__task__params", "turn_suggestions")
        kept = 0
        for messages, pk, split, language, author, at, params, suggested in found.iterator(chunk_size=BATCH):
            self.done += 1
            if problems := answers.demonstration_problems(messages, limits=self.limits, params=params):
                self.leave_out("demonstration", problems)
                continue
            if sum(m["role"] == "user" for m in messages) < 2 and not self.filters.get("single_turn"):
                continue
            opening, system = _opening_length(messages), int(messages[0]["role"] == "system")
            suggestions = {entry["turn"]: entry for entry in suggested}  # numbered among the labeler's turns
            for n in range(opening, len(messages)):
                suggestion = suggestions.get(n - opening + 1, {})
                if messages[n]["role"] == "assistant" and (row := self.row(
                        messages[:n], messages[n]["content"], "demonstration", split=split, language=language,
                        demonstration_id=pk, turn=n + 1 - system,
                        suggested_by=self.saw(suggestion.get("model_version")),
                        used_suggestion=suggestion.get("used", False), labeler=author, created_at=at)):
                    kept += 1
                    yield row
        self.counts["demonstration_turns"] = kept

    def wanted(self, split, language):
        f = self.filters
        return (split in f.get("split", [split]) and language in f.get("language", [language])
                and "use_case" not in f)  # chats have no use case

    def row(self, prompt, text, source, *, labeler, created_at, **fields):
        completion = [{"role": "assistant", "content": text}]
        if problems := answers.conversation_problems([*prompt, *completion], limits=self.limits, system_allowed=True,
                                                     max_turns=self.limits.turns):
            self.leave_out(f"{source} turn", problems)
            return None
        row = dict.fromkeys(self.schema.names)  # the columns in the schema's order, in every format
        row.update(prompt=prompt, completion=completion, source=source, **fields, labeler=self.name_of(labeler),
                   created_at=created_at.isoformat())
        return row
