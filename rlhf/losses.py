"""Losses as pure functions of tensors."""

import torch
import torch.nn.functional as F


def ranking_pairs(groups_per_prompt):
    """Index tensors (better, worse, prompt) over a batch's flattened completions.

    `groups_per_prompt[b]` ranks prompt b's completions (indices local to it) as ordered
    groups of ties, best first. Tied completions form no pair.
    """
    better, worse, prompt, offset = [], [], [], 0
    for b, groups in enumerate(groups_per_prompt):
        for n, high in enumerate(groups):
            for low in groups[n + 1:]:
                for i in high:
                    for j in low:
                        better.append(offset + i)
                        worse.append(offset + j)
                        prompt.append(b)
        offset += sum(len(group) for group in groups)
    return torch.tensor(better, dtype=torch.long), torch.tensor(worse, dtype=torch.long), torch.tensor(prompt)


def ranking_loss(rewards, groups_per_prompt, margin=0.0):
    """InstructGPT's reward-model loss (Ouyang et al. 2022, eq. 1).

    loss = -1/C(K,2) * sum over pairs of log sigmoid(r_better - r_worse - margin), per prompt,
    so every comparison of one prompt forms a single batch element; averaged over prompts.
    `rewards` holds one score per completion, prompts' completions one after another. With ties a
    prompt has fewer than C(K,2) pairs and averages over those it has; a prompt whose
    completions are all tied adds nothing. Returns (loss, accuracy over pairs).
    """
    better, worse, prompt = ranking_pairs(groups_per_prompt)
    if len(better) == 0:
        return rewards.sum() * 0.0, float("nan")
    better, worse, prompt = better.to(rewards.device), worse.to(rewards.device), prompt.to(rewards.device)
    diff = rewards[better] - rewards[worse]
    pair_loss = -F.logsigmoid(diff - margin)
    n_prompts = len(groups_per_prompt)
    per_prompt = torch.zeros(n_prompts, device=rewards.device, dtype=pair_loss.dtype).index_add(0, prompt, pair_loss)
    counts = torch.zeros(n_prompts, device=rewards.device, dtype=pair_loss.dtype).index_add(
        0, prompt, torch.ones_like(pair_loss))
    has_pairs = counts > 0
    loss = (per_prompt[has_pairs] / counts[has_pairs]).mean()
    return loss, (diff > 0).float().mean().item()


def sft_loss(logits, labels):
    """Mean next-token cross-entropy over the tokens whose label is not -100 (the assistant's)."""
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shifted_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100)
