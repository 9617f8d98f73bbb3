"""The InstructGPT reward model: K-way rankings, one forward pass per completion.

A batch element is one prompt's ranking: its K completions go through the model once and all
C(K,2) comparisons are formed from those K scores (ties give none), rather than two forwards per
pair. Before the first step the head is fitted to the frozen model's features (a linear probe, then
fine-tuning: LP-FT, Kumar et al. 2022), which with few rankings does better than training a head
from random. After training, a bias makes the labelers' demonstrations score a mean of 0.
"""

import json
import statistics
from pathlib import Path

import torch
from tqdm import tqdm

from . import adapters, distributed
from .config import RewardConfig
from .data import load_demonstrations, load_rankings
from .losses import ranking_loss
from .models import RewardModel, encode_conversation, encode_for_reward, load_tokenizer, pick_device, reward_batch
from .training import Trainer

STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def encode_ranking(tokenizer, ranking, max_length):
    """(`encode_for_reward` pairs, groups, each completion's length in tokens before the cut)."""
    encoded = [encode_for_reward(tokenizer, ranking.prompt, c, max_length) for c in ranking.completions]
    full = [len(encode_conversation(tokenizer, ranking.prompt, c)) for c in ranking.completions]
    return encoded, ranking.groups, full


def _batches(tokenizer, encoded, batch_size, device, progress, what):
    starts = range(0, len(encoded), batch_size)
    for start in tqdm(starts, desc=what, unit="batch", disable=not progress, leave=False):
        batch = reward_batch(encoded[start:start + batch_size], tokenizer.pad_token_id)
        yield [tensor.to(device) for tensor in batch]


def score(reward_model, tokenizer, encoded, batch_size, device, progress=False):
    """Rewards of `encode_for_reward` pairs, batch_size at a time, in order."""
    return [value for batch in _batches(tokenizer, encoded, batch_size, device, progress, "score")
            for value in reward_model(*batch).tolist()]


def fit_linear_reward(features, groups, strengths=STRENGTHS, folds=5):
    """(w, strength, cross-validated accuracy or None) of the linear reward w·x that best orders each ranking.

    `features` holds one [K, width] tensor per ranking and `groups` its ranking. The fit is L2-regularised
    logistic regression on every ranked pair (Bradley-Terry) over standardised features; the strength is
    chosen by cross-validation over the rankings that order a pair (none with fewer than two: strength 1).
    Pairs are indices into the rows, so memory grows with the completions, not with their pairs.
    """
    rows = torch.cat(features).float()
    scale = rows.std(0).nan_to_num(1.0).clamp(min=1e-6)
    rows = rows / scale
    better, worse, owners, offset = [], [], [], 0
    for n, (x, ranks) in enumerate(zip(features, groups)):
        for i, j, _ in ranked_pairs(ranks):
            better.append(offset + i)
            worse.append(offset + j)
            owners.append(n)
        offset += len(x)
    if not better:
        raise ValueError("The rankings order no pair of completions (all ties): nothing to fit a reward to.")
    better, worse = torch.tensor(better), torch.tensor(worse)
    owners = torch.tensor(owners).unique(return_inverse=True)[1]  # numbered among the rankings with pairs

    def margins(w, pairs):
        scores = rows @ w
        return scores[better[pairs]] - scores[worse[pairs]]

    def fit(pairs, strength):
        w = torch.zeros(rows.shape[1], requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.softplus(-margins(w, pairs)).mean() + strength * w.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return w.detach()

    folds = min(folds, int(owners.max()) + 1)
    if folds < 2:
        strength, accuracy = 1.0, None
    else:
        fold = owners % folds

        def held_out_accuracy(strength):
            right = sum((margins(fit(fold != k, strength), fold == k) > 0).sum().item() for k in range(folds))
            return right / len(better)

        accuracy, strength = max((held_out_accuracy(s), -s) for s in strengths)
        strength = -strength  # of equal accuracies, the strongest regularisation
    return fit(torch.ones(len(better), dtype=torch.bool), strength) / scale, strength, accuracy


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

    def start(self):
        """Fit the head to the frozen model's pooled features of the training rankings (`fit_head`)."""
        if not self.config.fit_head:
            return {}
        encoded = [seq for seqs, *_ in self.train for seq in seqs]
        self.model.eval()
        with torch.no_grad():
            flat = torch.cat([self.model.features(*batch).float().cpu() for batch in _batches(
                self.tokenizer, encoded, self.config.batch_size * 4, self.context.device,
                self.context.is_main, "fit head")])
        features = list(flat.split([len(seqs) for seqs, *_ in self.train]))
        w, strength, accuracy = fit_linear_reward(features, [groups for _, groups, _ in self.train])
        self.model.head.weight.data.copy_(w.to(self.model.head.weight)[None])
        return {"head_strength": strength, "head_cv_accuracy": accuracy}

    def loss_weight(self, batch):
        """The loss is a mean over the rankings that order a pair (all ties add nothing)."""
        return sum(len(groups) > 1 for _, groups, _ in batch)

    def loss(self, model, batch):
        encoded = [seq for seqs, *_ in batch for seq in seqs]
        tensors = reward_batch(encoded, self.tokenizer.pad_token_id)
        rewards = model(*(t.to(self.context.device) for t in tensors))
        loss, accuracy = ranking_loss(rewards, [groups for _, groups, _ in batch], self.config.margin)
        return loss, {"accuracy": accuracy, "reward_mean": rewards.mean().item()}

    def evaluate(self, items):
        metrics = evaluate_encoded(self.model, self.tokenizer, items, self.config.batch_size, self.context.device)
        metrics.pop("accuracy_by_rank_distance")
        return metrics

    def finish(self):
        """Centre the labelers' demonstrations at 0, as InstructGPT did before RL."""
        adapter = {"adapter": adapters.adapter_record(self.model.peft_model)}
        if not self.demonstrations:
            return adapter
        sequences = [encode_for_reward(self.tokenizer, None, m, self.config.max_length) for m in self.demonstrations]
        self.model.eval()
        with torch.no_grad():
            mean = statistics.fmean(score(self.model, self.tokenizer, sequences, self.config.batch_size,
                                          self.context.device))
        self.bias = self.model.bias - mean
        return {**adapter, "demonstration_mean_before_bias": mean, "reward_bias": self.bias}

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
    if problem := RewardConfig.problem(vars(config)):
        raise ValueError(problem)
    rankings = load_rankings(config.data)
    valid = load_rankings(config.valid_data) if config.valid_data else []
    demonstrations = load_demonstrations(config.demonstrations) if config.demonstrations else []
    context = distributed.setup(config.device, config.seed)
    try:
        tokenizer = load_tokenizer(config.model)
        model = RewardModel.from_pretrained(config.model, dtype=getattr(torch, config.dtype), lora=config)
        model.pooling = config.pooling
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
