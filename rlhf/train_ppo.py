"""PPO-ptx, InstructGPT's step 3 (Ouyang et al. 2022, section 3.5 and eq. 2).

objective(phi) = E[r_theta(x, y) - beta * log(pi_RL(y|x) / pi_SFT(y|x))] + gamma * E_pretrain[log pi_RL(x)]

Per rollout batch: sample responses with the policy; score them with the frozen reward model;
turn score and per-token KL to the frozen reference into per-token rewards; estimate advantages by
GAE with the value model (which starts from the reward model); then several epochs of clipped
policy and value updates on minibatches, each mixing in a batch of pretraining text.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import adapters, distributed, losses, memory
from .checkpoint import load_shards, load_state, save_checkpoint, save_sharded_checkpoint
from .data import load_prompts, load_ptx
from .kl import AdaptiveKL, FixedKL
from .models import (
    RewardModel,
    assistant_labels,
    batch_of,
    encode_for_reward,
    encode_prompt,
    load_policy,
    load_tokenizer,
    pad,
    pick_device,
    position_ids,
    reward_batch,
    truncate_left,
)
from .training import MetricsLog, begin_run, mark_finished


class RewardScorer:
    """Scores (prompt, response text) pairs with a reward model, in that model's own tokenizer."""

    def __init__(self, model, tokenizer, max_length=512, batch_size=16):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    @torch.no_grad()
    def __call__(self, prompts, texts, response_ids=None):
        device = next(self.model.parameters()).device
        encoded = [encode_for_reward(self.tokenizer, prompt, text, self.max_length)
                   for prompt, text in zip(prompts, texts, strict=True)]
        scores = []
        for start in range(0, len(encoded), self.batch_size):
            batch = reward_batch(encoded[start:start + self.batch_size], self.tokenizer.pad_token_id)
            scores.append(self.model(*(t.to(device) for t in batch)))
        return torch.cat(scores)


@dataclass
class Rollout:
    """One rollout batch; token tensors are [episodes, prompt + response], the rest [episodes, response]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_length: int
    mask: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    scores: torch.Tensor
    kl: torch.Tensor

    def select(self, index):
        return {name: getattr(self, name)[index] for name in
                ("input_ids", "attention_mask", "mask", "logprobs", "values", "advantages", "returns")}


def response_logprobs(logits, input_ids, prompt_length):
    """Log-probabilities of the response tokens, from the logits at the positions before them."""
    logp = F.log_softmax(logits[:, prompt_length - 1:-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, prompt_length:, None]).squeeze(-1)


def forward(model, input_ids, attention_mask):
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)).logits


class ValueModel(torch.nn.Module):
    """The reward model's head read at every position, as a module whose forward DDP can wrap."""

    def __init__(self, reward_model):
        super().__init__()
        self.reward_model = reward_model

    def forward(self, input_ids, attention_mask):
        return self.reward_model.values(input_ids, attention_mask)


@dataclass
class Generation:
    input_ids: torch.Tensor  # prompt (left-padded) + response, padding after each response's end
    attention_mask: torch.Tensor
    prompt_length: int
    mask: torch.Tensor  # [episodes, response tokens]: 1 up to and including the stop token
    ended: torch.Tensor  # the response stopped by itself rather than at max_new_tokens
    texts: list
    response_ids: list


def stop_ids_of(policy, tokenizer):
    stop = policy.generation_config.eos_token_id
    return sorted({i for i in [*(stop if isinstance(stop, list) else [stop]), tokenizer.eos_token_id] if i is not None})


@torch.no_grad()
def generate(policy, tokenizer, encoded_prompts, *, temperature, top_p, max_new_tokens, device, synced_gpus=False):
    """Sampled responses. With `synced_gpus` (a sharded policy) a process whose responses have all ended goes on
    with forward passes until every process's have, since each pass gathers the weights from all of them."""
    stop_ids = stop_ids_of(policy, tokenizer)
    prompt_ids, prompt_mask = (t.to(device) for t in batch_of(encoded_prompts, tokenizer.pad_token_id, "left"))
    sequences = policy.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=temperature, top_p=top_p,
        top_k=0, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids,
        synced_gpus=synced_gpus,
    )
    prompt_length = prompt_ids.shape[1]
    response = sequences[:, prompt_length:]
    is_stop = torch.isin(response, torch.tensor(stop_ids, device=device))
    ended = is_stop.any(1)
    length = torch.where(ended, is_stop.float().argmax(1) + 1, response.shape[1])
    mask = (torch.arange(response.shape[1], device=device)[None] < length[:, None]).float()
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    input_ids = torch.where(attention_mask.bool(), sequences, tokenizer.pad_token_id)
    response_ids = [r[:n] for r, n in zip(response.tolist(), length.tolist(), strict=True)]
    texts = [tokenizer.decode(ids[:-1] if e else ids, skip_special_tokens=True).strip()
             for ids, e in zip(response_ids, ended.tolist(), strict=True)]
    return Generation(input_ids, attention_mask, prompt_length, mask, ended, texts, response_ids)


class PPOTrainer:
    name = "train-ppo"

    def __init__(self, config, policy, reference, value_model, scorer, tokenizer, prompts, ptx=(), context=None):
        self.config, self.tokenizer, self.scorer = config, tokenizer, scorer
        self.context = context or distributed.Context()
        self.sharded = config.fsdp and self.context.distributed
        check_fsdp(config)
        device = self.context.device
        # The frozen reference and reward model stay whole on each process even under FSDP: with no gradients or
        # optimizer state they hold a quarter of what the trained models do per weight, and sharding them would
        # add a gather of every block to each of their forward passes.
        # Dropout stays off throughout, as in TRL and OpenRLHF: with it the ratio of new to old
        # log-probabilities would move before any update, and clipping would act on noise.
        self.policy, self.value_model = policy.to(device).eval(), ValueModel(value_model).to(device).eval()
        self.reference = reference.to(device).eval()
        memory.check_mixed_precision(config, device)
        self.scaler = memory.grad_scaler(config, device)
        if config.gradient_checkpointing:
            for model in (self.policy, self.value_model):
                memory.enable_gradient_checkpointing(model)
                for module in model.modules():  # checkpointing needs training mode; dropout stays off all the same
                    if isinstance(module, torch.nn.Dropout):
                        module.p = 0.0
        self.prompts = [truncate_left(encode_prompt(tokenizer, p), config.max_prompt_length) for p in prompts]
        self.prompt_items = prompts
        self.ptx = [self.encode_ptx(item) for item in ptx]
        self.output = Path(config.output)
        per_rank = len(prompts) // self.context.world_size
        if per_rank < config.rollout_batch_size:
            raise ValueError(f"{len(prompts)} prompts can't fill a rollout batch of {config.rollout_batch_size} "
                             f"on each of {self.context.world_size} processes.")
        self.batches_per_pass = per_rank // config.rollout_batch_size
        self.total_steps = config.steps or self.batches_per_pass
        self.kl_control = (AdaptiveKL(config.beta, config.target_kl, config.kl_horizon) if config.target_kl
                           else FixedKL(config.beta))
        self.ema = None  # made in `fit`, of the weights as trained: under FSDP, this process's shards

    def encode_ptx(self, item):
        if isinstance(item, str):
            ids = self.tokenizer(item, add_special_tokens=False)["input_ids"][: self.config.max_prompt_length * 2]
            return ids, ids
        ids, labels = assistant_labels(self.tokenizer, item)
        return truncate_left(ids, self.config.max_prompt_length * 2, labels)

    # Rollouts

    def prompt_batch(self, step):
        """This process's prompts for a rollout batch: a seeded permutation per pass, then sharded."""
        rounds, index = divmod(step, self.batches_per_pass)
        order = torch.randperm(len(self.prompts), generator=torch.Generator().manual_seed(self.config.seed + rounds))
        mine = order.tolist()[self.context.rank::self.context.world_size]
        size = self.config.rollout_batch_size
        return mine[index * size:(index + 1) * size]

    @torch.no_grad()
    def rollout(self, indices):
        with memory.autocast(self.config, self.context.device):
            return self._rollout(indices)

    def _rollout(self, indices):
        config, device = self.config, self.context.device
        g = generate(self.policy, self.tokenizer, [self.prompts[i] for i in indices], temperature=config.temperature,
                     top_p=config.top_p, max_new_tokens=config.max_new_tokens, device=device,
                     synced_gpus=self.sharded)
        input_ids, attention_mask, prompt_length, mask = g.input_ids, g.attention_mask, g.prompt_length, g.mask
        logprobs = response_logprobs(forward(self.policy, input_ids, attention_mask), input_ids, prompt_length)
        ref_logprobs = response_logprobs(forward(self.reference, input_ids, attention_mask), input_ids, prompt_length)
        values = self.value_model(input_ids, attention_mask)[:, prompt_length - 1:-1] * mask
        scores = self.scorer([self.prompt_items[i] for i in indices], g.texts, g.response_ids).to(device).float()
        scores = scores + config.no_eos_penalty * (~g.ended).float()
        kl = losses.kl_penalty(logprobs, ref_logprobs) * mask
        rewards = losses.token_rewards(scores, kl, mask, self.kl_control.beta)
        advantages, returns = losses.gae(rewards, values, mask, config.gamma, config.lam)
        advantages = losses.whiten(advantages, mask)
        return Rollout(input_ids, attention_mask, prompt_length, mask, logprobs, values, advantages, returns,
                       scores, kl)

    # Updates

    def ptx_batch(self, step, epoch, start, n_rl):
        """Pretraining examples for one minibatch, drawn by a seed of the step so a resumed run draws the same."""
        if not (self.ptx and self.config.ptx_coef):
            return []
        n = max(1, round(self.config.ptx_ratio * n_rl))
        seed = self.config.seed * 7919 + step * 97 + epoch * 13 + start * 7 + self.context.rank
        return [self.ptx[i] for i in torch.randint(len(self.ptx), (n,), generator=torch.Generator().manual_seed(seed))]

    def with_ptx(self, batch, ptx):
        """RL episodes and pretraining examples as one batch, so the policy runs one forward per backward
        (which DDP requires); returns input ids, attention mask and the pretraining rows' labels."""
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if not ptx:
            return input_ids, attention_mask, None
        width = max(input_ids.shape[1], max(len(ids) for ids, _ in ptx))
        pad_id, device = self.tokenizer.pad_token_id, input_ids.device
        ptx_ids = pad([ids + [pad_id] * (width - len(ids)) for ids, _ in ptx], pad_id).to(device)
        ptx_mask = pad([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in ptx], 0).to(device)
        labels = pad([labels + [-100] * (width - len(labels)) for _, labels in ptx], -100).to(device)
        input_ids = torch.cat([F.pad(input_ids, (0, width - input_ids.shape[1]), value=pad_id), ptx_ids])
        attention_mask = torch.cat([F.pad(attention_mask, (0, width - attention_mask.shape[1])), ptx_mask])
        return input_ids, attention_mask, labels

    def update(self, policy, value_model, optimizer, rollout, step):
        """`ppo_epochs` passes over the rollout in minibatches; returns the mean of each logged loss."""
        episodes, totals, updates = rollout.input_ids.shape[0], {}, 0
        training = self.config.gradient_checkpointing  # HF models checkpoint only in training mode
        policy.train(training), value_model.train(training)
        for epoch in range(self.config.ppo_epochs):
            generator = torch.Generator().manual_seed(self.config.seed + step * 31 + epoch)
            order = torch.randperm(episodes, generator=generator).to(self.context.device)
            for start in range(0, episodes, self.config.minibatch_size):
                batch = rollout.select(order[start:start + self.config.minibatch_size])
                ptx = self.ptx_batch(step, epoch, start, len(batch["input_ids"]))
                metrics = self.minibatch_step(policy, value_model, optimizer, batch, ptx, rollout.prompt_length)
                for name, value in metrics.items():
                    totals[name] = totals.get(name, 0.0) + value
                updates += 1
        policy.eval(), value_model.eval()  # generation keeps its cache, which checkpointing would turn off
        return {name: value / updates for name, value in totals.items()}

    def minibatch_step(self, policy, value_model, optimizer, batch, ptx, prompt_length):
        config, n_rl, width = self.config, batch["input_ids"].shape[0], batch["input_ids"].shape[1]
        input_ids, attention_mask, ptx_labels = self.with_ptx(batch, ptx)
        with memory.autocast(config, self.context.device):
            logits = forward(policy, input_ids, attention_mask)
            values = value_model(batch["input_ids"], batch["attention_mask"])[:, prompt_length - 1:-1]
        rl_logits = logits[:n_rl, :width]
        logprobs = response_logprobs(rl_logits, batch["input_ids"], prompt_length)
        policy_loss, clip_fraction = losses.policy_loss(logprobs, batch["logprobs"], batch["advantages"],
                                                        batch["mask"], config.clip)
        value_loss = losses.value_loss(values, batch["values"], batch["returns"], batch["mask"], config.value_clip)
        ptx_loss = losses.sft_loss(logits[n_rl:], ptx_labels) if ptx else torch.zeros((), device=logits.device)
        loss = policy_loss + config.vf_coef * value_loss + config.ptx_coef * ptx_loss
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        self.update_ema()
        with torch.no_grad():
            entropy = losses.entropy(rl_logits[:, prompt_length - 1:-1], batch["mask"]).item()
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "ptx_loss": ptx_loss.item(),
                "clip_fraction": clip_fraction, "entropy": entropy}

    def update_ema(self):
        if self.ema is None:
            return
        params = dict(self.policy.named_parameters())
        with torch.no_grad():
            for name, average in self.ema.items():
                average.mul_(self.config.ema).add_(params[name].detach(), alpha=1 - self.config.ema)

    def moving_average(self):
        """A copy of the trained weights to average into, when `ema` is set: under FSDP, of this process's shards."""
        if not self.config.ema:
            return None
        return {name: p.detach().clone() for name, p in self.policy.named_parameters() if p.requires_grad}

    def save_policy(self, folder, skeleton=None):
        """The policy as trained (with LoRA, its adapter alone), or its moving average when `ema` is set.

        Rank 0 writes it; under FSDP every process calls this to gather the weights into `skeleton` first.
        """
        params = dict(self.policy.named_parameters())  # tied weights appear once here
        trained = {name: params[name].detach().clone() for name in self.ema or ()}
        with torch.no_grad():
            for name, average in (self.ema or {}).items():
                params[name].copy_(average)
            policy = distributed.gathered(self.policy, skeleton, self.context) if self.sharded else self.policy
            for name, value in trained.items():
                params[name].copy_(value)
        if self.context.is_main:
            adapters.save(policy, folder)
            self.tokenizer.save_pretrained(folder)

    # The loop

    def fit(self):
        config, context = self.config, self.context
        if config.fsdp and not context.distributed and context.is_main:
            tqdm.write(f"{self.name}: fsdp shards the models over the processes torchrun starts; one process holds "
                       "all of them.")
        skeleton = distributed.skeleton(self.policy) if self.sharded else None
        policy, value_model = (context.wrap(model, fsdp=config.fsdp) for model in (self.policy, self.value_model))
        # Under FSDP the parameters are replaced by their shards: the optimizer and the average are made of those.
        params = [p for model in (self.policy, self.value_model) for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=0.0)
        self.ema = self.moving_average()
        step, episodes = self.resume_or_record(optimizer)
        log = MetricsLog(self.output / "metrics.jsonl", context.is_main, step if config.resume else None)
        bar = tqdm(total=self.total_steps, initial=step, desc=self.name, unit="batch", disable=not context.is_main,
                   dynamic_ncols=True)
        started = time.perf_counter()
        while step < self.total_steps:
            rollout = self.rollout(self.prompt_batch(step))
            metrics = self.update(policy, value_model, optimizer, rollout, step)
            lengths = rollout.mask.sum(1)
            kl_per_episode = rollout.kl.sum(1).mean().item()
            step += 1
            episodes += len(lengths) * context.world_size
            self.kl_control.update(context.mean(kl_per_episode), len(lengths) * context.world_size)
            metrics = {"reward": rollout.scores.mean().item(), "kl": kl_per_episode,
                       "response_length": lengths.mean().item(), **metrics}
            metrics = {name: context.mean(value) for name, value in metrics.items()}
            log.write(step=step, episodes=episodes, beta=self.kl_control.beta,
                      elapsed=round(time.perf_counter() - started, 3), **metrics)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.3f}")
            bar.update(1)
            if config.save_every and step % config.save_every == 0 and step < self.total_steps:
                self.checkpoint(optimizer, step, episodes)
        bar.close()
        log.close()
        summary = {}
        if context.is_main or self.sharded:
            self.save_policy(self.output / "model", skeleton)
        if context.is_main:
            summary = {"steps": step, "episodes": episodes, "output": str(self.output / "model"),
                       "beta": self.kl_control.beta, "adapter": adapters.adapter_record(self.policy)}
            mark_finished(self.output, summary)
        context.barrier()
        return summary

    def resume_or_record(self, optimizer):
        """(step, episodes): from the checkpoint when resuming, else 0 after recording the new run."""
        if not self.config.resume:
            begin_run(self.output, self.config, self.context, self.name, self.total_steps)
            return 0, 0
        state = load_state(self.output)
        if "shards" in state:
            load_shards(self.output, state, self.trained(), optimizer, self.ema)
        elif self.sharded:
            raise ValueError(f"{self.output / 'checkpoint'} holds whole models, written by a run without FSDP; "
                             "resume it with --no-fsdp.")
        else:
            self.policy.load_state_dict(state["policy"])
            self.value_model.load_state_dict(state["value_model"])
            optimizer.load_state_dict(state["optimizer"])
            self.ema = state["ema"]
        self.kl_control.load_state_dict(state["kl_control"])
        distributed.set_rng_state(state["rng"][self.context.rank])
        return state["step"], state["episodes"]

    def trained(self):
        """The policy and value model as one module, which the optimizer's state of both belongs to."""
        return torch.nn.ModuleDict({"policy": self.policy, "value_model": self.value_model})

    def checkpoint(self, optimizer, step, episodes):
        state = {"kl_control": self.kl_control.state_dict(), "step": step, "episodes": episodes,
                 "rng": self.context.gather(distributed.rng_state())}
        if self.sharded:
            save_sharded_checkpoint(self.output, self.trained(), optimizer, state, self.context.is_main, self.ema)
        elif self.context.is_main:
            save_checkpoint(self.output, {
                "policy": self.policy.state_dict(), "value_model": self.value_model.state_dict(),
                "optimizer": optimizer.state_dict(), "ema": self.ema, **state,
            })
        self.context.barrier()


def check_fsdp(config):
    """Refuse what FSDP cannot do here, before anything is loaded or written."""
    if config.fsdp and config.lora_rank:
        raise ValueError("fsdp shards full fine-tuning only, and lora_rank is set: with LoRA the frozen reference "
                         "and reward model share the trained models' base weights, which this trainer does not "
                         "shard. Train the adapters without fsdp (DDP), or set lora_rank 0 to shard every weight.")


def train_ppo(config):
    check_fsdp(config)
    prompts = load_prompts(config.data)
    ptx = load_ptx(config.ptx_data) if config.ptx_data else []
    context = distributed.setup(config.device, config.seed)
    try:
        tokenizer = load_tokenizer(config.policy, padding_side="left")
        reference_start, value_start = config.reference or config.policy, config.value_model or config.reward_model
        dtype = getattr(torch, config.dtype)
        if config.lora_rank:  # one copy of the policy's base, and one of the reward model's
            policy, reference = adapters.policy_and_reference(config, config.policy, reference_start, dtype)
            value_model, reward_model = adapters.value_and_reward(config, config.reward_model, value_start, dtype)
        else:
            policy = load_policy(config.policy, dtype)
            reference = load_policy(reference_start, dtype).requires_grad_(False)
            reward_model = RewardModel.from_pretrained(config.reward_model, dtype).requires_grad_(False)
            value_model = RewardModel.from_pretrained(value_start, dtype)
        reward_model.to(context.device)
        scorer = RewardScorer(reward_model, load_tokenizer(config.reward_model), max_length=config.reward_max_length)
        trainer = PPOTrainer(config, policy, reference, value_model, scorer, tokenizer, prompts, ptx, context)
        return trainer.fit()
    finally:
        distributed.teardown(context)


@torch.no_grad()
def compare_policies(policy, reference, scorer, tokenizer, prompts, *, temperature, max_new_tokens, batch_size, seed,
                     device):
    """The policy's win rate over the reference by the reward model (ties count half), and its mean KL
    to the reference on its own samples."""
    wins, kls, policy_scores, reference_scores = [], [], [], []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        encoded = [encode_prompt(tokenizer, p) for p in chunk]
        sampled = {}
        for name, model in (("policy", policy), ("reference", reference)):
            torch.manual_seed(seed + start)
            sampled[name] = generate(model, tokenizer, encoded, temperature=temperature, top_p=1.0,
                                     max_new_tokens=max_new_tokens, device=device)
        ours, theirs = (scorer(chunk, sampled[name].texts).float().cpu() for name in ("policy", "reference"))
        wins.extend(((ours > theirs).float() + 0.5 * (ours == theirs).float()).tolist())
        policy_scores.extend(ours.tolist())
        reference_scores.extend(theirs.tolist())
        g = sampled["policy"]
        kl = (response_logprobs(forward(policy, g.input_ids, g.attention_mask), g.input_ids, g.prompt_length)
              - response_logprobs(forward(reference, g.input_ids, g.attention_mask), g.input_ids, g.prompt_length))
        kls.extend((kl * g.mask).sum(1).tolist())
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"win_rate": mean(wins), "kl": mean(kls), "reward_policy": mean(policy_scores),
            "reward_reference": mean(reference_scores), "prompts": len(wins)}


def eval_policy(config):
    prompts = load_prompts(config.data)
    device = pick_device(config.device)
    tokenizer = load_tokenizer(config.policy, padding_side="left")
    policy, reference = load_policy(config.policy).to(device), load_policy(config.reference).to(device)
    reward_model = RewardModel.from_pretrained(config.reward_model).to(device)
    scorer = RewardScorer(reward_model, load_tokenizer(config.reward_model), max_length=config.reward_max_length)
    metrics = compare_policies(policy, reference, scorer, tokenizer, prompts, temperature=config.temperature,
                               max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, seed=config.seed,
                               device=device)
    if config.output:
        Path(config.output).write_text(json.dumps(metrics, indent=2))
    return metrics
