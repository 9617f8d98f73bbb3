"""Open Assistant's export schema (oasst1): a tree of messages per prompt.

JSONL files hold one `ExportMessageTree` per line, as `oasst_data` reads them; Parquet holds the
same messages flat, one row each with its `parent_id` and `message_tree_id`, as the oasst1 dataset
on the Hugging Face Hub does. The prompt's turns form the trunk; the last turn's replies are the
ranked completions (synthetic, with `model_name` and `rank`: 0 is best, by Tideman's ranked pairs
over every labeler's ranking) and the demonstrations labelers wrote. Labels are shares of the
labelers who set a flag, with their count; `quality` is the mean 1-7 rating scaled to 0-1.

A chat's tree is the whole conversation: its turns up to the reply chosen for ranking form the
trunk, the alternatives are that reply's ranked siblings, and the rest of the chat goes on under
the original reply (or under the labeler's rewrite of it, a sibling of its own).

What breaks today's rules for answers is left out and counted: a prompt's whole tree, or one
demonstration or ranking within it.
"""

from collections import defaultdict

import pyarrow as pa
from django.db.models import Exists, OuterRef

from .. import answers, quality
from ..models import (
    ChatMessage,
    Completion,
    CompletionRating,
    Conversation,
    Demonstration,
    Prompt,
    PromptAnnotation,
    Ranking,
)
from .sources import BATCH, Source, batched, dated, from_model_versions, labeled, prompt_filter

TREE_STATE = "ready_for_export"
ROLES = {"user": "prompter", "system": "prompter", "assistant": "assistant"}

LABELS = pa.struct([("name", pa.list_(pa.string())), ("value", pa.list_(pa.float64())),
                    ("count", pa.list_(pa.int32()))])
MESSAGE_FIELDS = [
    ("message_id", pa.string()), ("parent_id", pa.string()), ("user_id", pa.string()),
    ("created_date", pa.string()), ("text", pa.string()), ("role", pa.string()), ("lang", pa.string()),
    ("review_count", pa.int32()), ("review_result", pa.bool_()), ("deleted", pa.bool_()), ("rank", pa.int32()),
    ("synthetic", pa.bool_()), ("model_name", pa.string()),
]
FLAT = pa.schema([*MESSAGE_FIELDS, ("labels", LABELS), ("message_tree_id", pa.string()), ("tree_state", pa.string())])
TREES = pa.schema([("message_tree_id", pa.string()), ("tree_state", pa.string()),
                   ("prompt", pa.struct(MESSAGE_FIELDS)), ("origin", pa.string())])


class OasstTrees(Source):
    def __init__(self, filters, name_of, **context):
        super().__init__(filters, name_of, **context)
        self.flat = self.fmt == "parquet"
        self.schema = FLAT if self.flat else TREES

    def rankings(self):
        f = self.filters
        rankings = Ranking.objects.filter(dated(f), labeled(f, "labeler", "task"))
        if "model_version" in f:
            rankings = rankings.filter(from_model_versions(f, "task_id"))
        return rankings

    def demonstrations(self):
        f = self.filters
        if "model_version" in f:  # demonstrations are written, not sampled
            return Demonstration.objects.none()
        return Demonstration.objects.filter(dated(f), labeled(f, "author", "assignment__task"))

    def queryset(self):
        has_ranking = Exists(self.rankings().filter(task__prompt=OuterRef("pk")))
        has_demonstration = Exists(self.demonstrations().filter(prompt=OuterRef("pk")))
        return Prompt.objects.filter(prompt_filter(self.filters, "")).filter(has_ranking | has_demonstration)

    def rows(self):
        prompts = self.queryset().order_by("id").values_list(
            "id", "text", "turns", "language", "source", "created_at", "created_by_id"
        ).iterator(chunk_size=BATCH)
        trees = 0
        for batch in batched(prompts, BATCH // 4):
            self.done += len(batch)
            batch = [row for row in batch if self.keeps_prompt(row[1], row[2])]
            replies = self.replies([row[0] for row in batch])
            self.continue_chats([row[0] for row in batch if row[4] == Prompt.Source.CHAT], replies)
            for prompt_id, text, turns, language, source, created_at, author in batch:
                prompter = self.name_of(author) if source == Prompt.Source.CHAT else None
                tree = self.tree(prompt_id, text, turns, language, created_at, replies, prompter)
                trees += 1
                self.count("messages", _size(tree))
                if self.flat:
                    yield from _flatten(tree, f"prompt-{prompt_id}")
                else:
                    yield {"message_tree_id": f"prompt-{prompt_id}", "tree_state": TREE_STATE, "prompt": tree,
                           "origin": source}
        self.counts["trees"] = trees

    def keeps_prompt(self, text, turns):
        """A prompt that breaks the rules takes its whole tree out of the export."""
        if problems := answers.prompt_problems(text, turns, limits=self.limits):
            self.leave_out("tree", problems)
        return not problems

    def replies(self, prompt_ids):
        """{prompt id: (assistant reply nodes, prompt labels)} for a batch of prompts."""
        rankings, ranked = defaultdict(list), list(self.rankings().filter(task__prompt_id__in=prompt_ids).values_list(
            "task__prompt_id", "id", "task_id", "groups"
        ))
        bad = self.bad_rankings(row[1:] for row in ranked)
        for prompt_id, ranking_id, _, groups in ranked:
            if ranking_id in bad:
                self.leave_out("ranking", bad[ranking_id])
            else:
                rankings[prompt_id].append((ranking_id, groups))
        ranking_ids = [ranking_id for found in rankings.values() for ranking_id, _ in found]
        ratings = defaultdict(list)
        for completion_id, rating, *flags in CompletionRating.objects.filter(ranking_id__in=ranking_ids).values_list(
            "completion_id", "rating", *CompletionRating.FLAGS
        ):
            ratings[completion_id].append((rating, flags))
        completion_ids = [cid for found in rankings.values() for _, groups in found for g in groups for cid in g]
        completions = {
            pk: (text, version, created)
            for pk, text, version, created in Completion.objects.filter(pk__in=completion_ids).values_list(
                "pk", "text", "model_version__name", "created_at"
            )
        }
        self.versions.update(version for _, version, _ in completions.values() if version)
        demonstrations = defaultdict(list)
        for *row, params in self.demonstrations().filter(prompt_id__in=prompt_ids).order_by("id").values_list(
            "prompt_id", "id", "author_id", "messages", "created_at", "assignment__task__params"
        ):
            if problems := answers.demonstration_problems(row[3], limits=self.limits, params=params):
                self.leave_out("demonstration", problems)
            else:
                demonstrations[row[0]].append(row[1:])
        annotations = defaultdict(list)
        for prompt_id, *flags in PromptAnnotation.objects.filter(prompt_id__in=prompt_ids).values_list(
            "prompt_id", *PromptAnnotation.FLAGS
        ):
            annotations[prompt_id].append(flags)

        found = {}
        for prompt_id in prompt_ids:
            orders = [groups for _, groups in rankings[prompt_id]]
            consensus = quality.positions(quality.ranked_pairs_consensus(orders)) if orders else {}
            nodes = [
                _node(f"completion-{cid}", None, completions[cid][0], "assistant", created=completions[cid][2],
                      rank=consensus[cid], synthetic=True, model_name=completions[cid][1],
                      review_count=len(ratings[cid]), labels=_completion_labels(ratings[cid]))
                for cid in sorted(consensus, key=lambda cid: (consensus[cid], cid))
            ]
            nodes += [self.demonstration(*row) for row in demonstrations[prompt_id]]
            found[prompt_id] = (nodes, _shares(PromptAnnotation.FLAGS, annotations[prompt_id]))
        return found

    def demonstration(self, pk, author_id, messages, created_at):
        """The labeler's turns after the prompt's, as a chain of nodes."""
        user = self.name_of(author_id)
        written = messages[_opening_length(messages):]
        chain = None
        for n, message in reversed(list(enumerate(written))):
            node = _node(f"demonstration-{pk}" + (f"-turn-{n}" if n else ""), user, message["content"],
                         message["role"], created=created_at, replies=[chain] if chain else [])
            chain = node
        return chain

    def continue_chats(self, prompt_ids, replies):
        """Hang the rest of each chat under the reply chosen from it: under the original's node, or under the
        labeler's rewrite of it, added as a sibling."""
        chats = {c.ranking_prompt_id: c for c in Conversation.objects.filter(
            ranking_prompt_id__in=prompt_ids).select_related("chosen_message__model_version", "ranking_prompt")}
        later = defaultdict(list)
        for message in ChatMessage.objects.filter(
            conversation__ranking_prompt_id__in=prompt_ids, superseded=False
        ).select_related("model_version").order_by("position"):
            later[message.conversation_id].append(message)
        for prompt_id, chat in chats.items():
            chosen, user = chat.chosen_message, self.name_of(chat.labeler_id)
            chain, rest = None, []
            for message in (m for m in later[chat.pk] if m.position > chosen.position):
                if message.role == "assistant" and message.state != "done" and not message.rewritten:
                    break  # a reply stopped or failed ends the tree's branch, with the turn it answered
                rest.append(message)
            if rest and rest[-1].role == "user":
                rest.pop()
            for message in reversed(rest):
                chain = self.chat_node(message, user, chat.ended_at, [chain] if chain else [])
            nodes = replies[prompt_id][0]
            if chosen.rewritten:
                nodes.append(self.chat_node(chosen, user, chat.ended_at, [chain] if chain else []))
            elif chain:
                original = f"completion-{chat.ranking_prompt.metadata.get('completion')}"
                for node in nodes:
                    if node["message_id"] == original:
                        node["replies"] = [chain]

    def chat_node(self, message, user, created, replies):
        model = message.role == "assistant" and not message.rewritten
        return _node(f"chat-message-{message.pk}", None if model else user, message.text, message.role,
                     created=created, synthetic=model, replies=replies,
                     model_name=self.saw(message.model_version.name if model and message.model_version_id else None))

    def tree(self, prompt_id, text, turns, language, created_at, replies, prompter=None):
        nodes, labels = replies[prompt_id]
        trunk = turns or [{"role": "user", "content": text}]
        node = None
        for n, turn in reversed(list(enumerate(trunk))):
            last = n == len(trunk) - 1
            node = _node(f"prompt-{prompt_id}" + (f"-turn-{n}" if n else ""),
                         prompter if turn["role"] == "user" else None, turn["content"], turn["role"],
                         created=created_at, replies=nodes if last else [node], labels=labels if not n else {})
        _link(node, None, language)
        return node


def _opening_length(messages):
    """Demonstrations repeat the prompt's turns; the labeler's own start at the last user turn's reply."""
    last_user = max((n for n, m in enumerate(messages) if m["role"] == "user"), default=-1)
    first_assistant = next(n for n, m in enumerate(messages) if m["role"] == "assistant")
    return min(first_assistant, last_user + 1)


def _node(message_id, user_id, text, role, *, created, rank=None, synthetic=False, model_name=None,
          review_count=0, labels=None, replies=None):
    return {
        "message_id": message_id, "parent_id": None, "user_id": user_id, "created_date": created.isoformat(),
        "text": text, "role": ROLES[role], "lang": None, "review_count": review_count, "review_result": True,
        "deleted": False, "rank": rank, "synthetic": synthetic, "model_name": model_name,
        "emojis": None, "replies": replies or [], "labels": labels or {},
    }


def _link(node, parent_id, language):
    node["parent_id"], node["lang"] = parent_id, language
    for reply in node["replies"]:
        _link(reply, node["message_id"], language)


def _size(node):
    return 1 + sum(_size(reply) for reply in node["replies"])


def _flatten(node, tree_id):
    row = {name: node[name] for name, _ in MESSAGE_FIELDS}
    labels = node["labels"]
    row["labels"] = {"name": list(labels), "value": [v["value"] for v in labels.values()],
                     "count": [v["count"] for v in labels.values()]} if labels else None
    yield {**row, "message_tree_id": tree_id, "tree_state": TREE_STATE}
    for reply in node["replies"]:
        yield from _flatten(reply, tree_id)


def _shares(names, votes):
    """{flag: {"value": share of votes with it set, "count": votes}}, or {} without votes."""
    if not votes:
        return {}
    return {name: {"value": sum(v[n] for v in votes) / len(votes), "count": len(votes)}
            for n, name in enumerate(names)}


def _completion_labels(ratings):
    if not ratings:
        return {}
    labels = _shares(CompletionRating.FLAGS, [flags for _, flags in ratings])
    labels["quality"] = {"value": (sum(r for r, _ in ratings) / len(ratings) - 1) / 6, "count": len(ratings)}
    return labels
