"""The InstructGPT reward model: K-way rankings, one forward pass per completion.

A batch element is one prompt's ranking: its K completions go through the model once and all
C(K,2) comparisons are formed from those K scores (ties give none), rather than two forwards per
pair. After training, a bias makes the labelers' demonstrations score a mean of 0.
"""

import json
import statistics
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .data import load_demonstrations, load_rankings
from .losses import ranking_loss
from .models import RewardModel, batch_of, encode_conversation, load_tokenizer, pick_device, truncate_left
from .training import Trainer


def encode_ranking(tokenizer, ranking, max_length):
    """(sequences cut to max_length, groups, each completion's length in tokens before the cut)."""
    full = [encode_conversation(tokenizer, ranking.prompt, c) for c in ranking.completions]
    return [truncate_left(seq, max_length) for seq in full], ranking.groups, [len(seq) for seq in full]


def score(reward_model, tokenizer, sequences, batch_size, device, progress=False):
    """Rewards of token sequences, batch_size at a time, in order."""
    scores = []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="score", unit="batch", disable=not progress, leave=False):
        input_ids, attention_mask = batch_of(sequences[start:start + batch_size], tokenizer.pad_token_id)
        scores.extend(reward_model(input_ids.to(device), attention_mask.to(device)).tolist())
    return scores


def ranked_pairs(groups):
    """(better, worse, rank distance) for every pair of completions a ranking orders; ties give none."""
    for n, high in enumerate(groups):
        for distance, low in enumerate(groups[n + 1:], start=1):
            for i in high:
                for j in low:
                    yield i, j, distance


def ranking_metrics(scores_per_prompt, groups_per_prompt):
    """Pairwise accuracy, reward mean/std, and accuracy by rank distance (how many groups apart)."""
    right, total, by_distance = 0, 0, {}
    for scores, groups in zip(scores_per_prompt, groups_per_prompt):
        for i, j, distance in ranked_pairs(groups):
            hit = scores[i] > scores[j]
            right, total = right + hit, total + 1
            counts = by_distance.setdefault(distance, [0, 0])
            counts[0], counts[1] = counts[0] + hit, counts[1] + 1
    flat = [s for scores in scores_per_prompt for s in scores]
    return {
        "accuracy": right / total if total else float("nan"),
        "pairs": total,
        "reward_mean": statistics.fmean(flat),
        "reward_std": statistics.pstdev(flat),
        "accuracy_by_rank_distance": {d: hit / n for d, (hit, n) in sorted(by_distance.items())},
    }


def length_baselines(items):
    """The accuracy of "the longer completion wins" and of "the shorter wins" on the same pairs, in tokens.

    Labelers' rankings often follow length, so a reward model is worth using only if it beats both (and
    chance). Lengths are taken before sequences are cut to max_length, so a long prompt hides nothing.
    Completions of equal length count half to each.
    """
    longer = total = 0
    for _, groups, lengths in items:
        for i, j, _ in ranked_pairs(groups):
            better, worse = lengths[i], lengths[j]
            longer += 1 if better > worse else 0.5 if better == worse else 0
            total += 1
    share = longer / total if total else float("nan")
    return {"longer_wins_accuracy": share, "shorter_wins_accuracy": 1 - share}


class RewardTrainer(Trainer):
    name = "train-rm"

    def __init__(self, *args, demonstrations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.demonstrations = demonstrations

    def encode(self, ranking):
        return encode_ranking(self.tokenizer, ranking, self.config.max_length)

    def loss(self, model, batch):
        sequences = [seq for seqs, *_ in batch for seq in seqs]
        input_ids, attention_mask = batch_of(sequences, self.tokenizer.pad_token_id)
        rewards = model(input_ids.to(self.context.device), attention_mask.to(self.context.device))
        loss, accuracy = ranking_loss(rewards, [groups for _, groups, _ in batch], self.config.margin)
        return loss, {"accuracy": accuracy, "reward_mean": rewards.mean().item()}

    def evaluate(self, items):
        metrics = evaluate_encoded(self.model, self.tokenizer, items, self.config.batch_size, self.context.device)
        metrics.pop("accuracy_by_rank_distance")
        return metrics

    def finish(self):
        """Centre the labelers' demonstrations at 0, as InstructGPT did before RL."""
        if not self.demonstrations:
            return {}
        sequences = [truncate_left(encode_conversation(self.tokenizer, None, m), self.config.max_length)
                     for m in self.demonstrations]
        self.model.eval()
        with torch.no_grad():
            mean = statistics.fmean(score(self.model, self.tokenizer, sequences, self.config.batch_size,
                                          self.context.device))
        self.bias = self.model.bias - mean
        return {"demonstration_mean_before_bias": mean, "reward_bias": self.bias}

    def save_model(self, folder):
        self.model.save_pretrained(folder, bias=getattr(self, "bias", None))
        self.tokenizer.save_pretrained(folder)


def evaluate_encoded(model, tokenizer, items, batch_size, device, progress=False):
    sequences = [seq for seqs, *_ in items for seq in seqs]
    with torch.no_grad():
        flat = score(model, tokenizer, sequences, batch_size, device, progress)
    scores, start = [], 0
    for seqs, *_ in items:
        scores.append(flat[start:start + len(seqs)])
        start += len(seqs)
    return {**ranking_metrics(scores, [groups for _, groups, _ in items]), **length_baselines(items)}


def train_reward(config):
    rankings = load_rankings(config.data)
    valid = load_rankings(config.valid_data) if config.valid_data else []
    demonstrations = load_demonstrations(config.demonstrations) if config.demonstrations else []
    context = distributed.setup(config.device, config.seed)
    try:
        tokenizer = load_tokenizer(config.model)
        model = RewardModel.from_pretrained(config.model, dtype=getattr(torch, config.dtype))
        model.train_top_layers(config.train_top_layers)
        trainer = RewardTrainer(config, model, tokenizer, rankings, valid, context, demonstrations=demonstrations)
        return trainer.fit()
    finally:
        distributed.teardown(context)


def eval_reward(config):
    device = pick_device(config.device)
    tokenizer = load_tokenizer(config.model)
    model = RewardModel.from_pretrained(config.model, dtype=getattr(torch, config.dtype)).to(device).eval()
    items = [encode_ranking(tokenizer, r, config.max_length) for r in load_rankings(config.data)]
    metrics = evaluate_encoded(model, tokenizer, items, config.batch_size, device, progress=True)
    if config.output:
        Path(config.output).write_text(json.dumps(metrics, indent=2))
    return metrics
