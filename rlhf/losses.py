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


# PPO (Schulman et al. 2017), as InstructGPT applied it (Ouyang et al. 2022, section 3.5).
# Tensors are [batch, response tokens]; `mask` is 1 on real response tokens, 0 on padding.


def masked_mean(values, mask, dim=None):
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(values, mask, shift_mean=True):
    """Normalise to unit variance over the unmasked entries (and zero mean unless shift_mean is False)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def kl_penalty(logprobs, ref_logprobs):
    """Per-token KL estimate log pi(y_t) - log pi_ref(y_t) on the sampled tokens."""
    return logprobs - ref_logprobs


def token_rewards(scores, kl, mask, beta):
    """InstructGPT's reward: -beta * KL on every token, plus the reward model's score on the last one."""
    rewards = -beta * kl * mask
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation; returns (advantages, returns). Values past the end count 0."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip=0.2):
    """The clipped surrogate objective, negated; returns (loss, share of tokens clipped)."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction.item()


def value_loss(values, old_values, returns, mask, clip=0.2):
    """Squared error with the new values kept within `clip` of the old ones (the worse of the two counts)."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    loss = torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def entropy(logits, mask):
    """Mean entropy of the policy's next-token distributions over the response."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(logp.exp() * logp).sum(-1), mask)
