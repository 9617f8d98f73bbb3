"""The loop SFT and reward-model training share.

A trainer subclass says how to encode an example, what a batch's loss is, how to evaluate and how
to save the model; this class owns the rest: data order, optimizer and schedule, DDP or FSDP,
micro-batches, mixed precision and gradient checkpointing (`memory`), metrics, progress, and
checkpoints that resume exactly (the same weights as an uninterrupted run).
"""

import json
import math
import time
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed, memory
from .checkpoint import load_shards, load_state, run_record, save_checkpoint, save_sharded_checkpoint, write_json


def cosine_schedule(optimizer, warmup_steps, total_steps, min_lr_ratio):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def next_token_targets(item):
    """The number of next-token targets of an (ids, labels) example, or 1 for any other example."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], list):
        return sum(label != -100 for label in item[1][1:])
    return 1


class MetricsLog:
    """metrics.jsonl in the output folder, written by rank 0 only."""

    def __init__(self, path, enabled, resume_step=None):
        self.file = None
        if not enabled:
            return
        if resume_step is not None:  # steps after the checkpoint are run again: drop their old lines
            kept = [line for line in Path(path).read_text().splitlines(keepends=True)
                    if json.loads(line)["step"] <= resume_step]
            Path(path).write_text("".join(kept))
        self.file = open(path, "a" if resume_step is not None else "w")

    def write(self, **values):
        if self.file:
            self.file.write(json.dumps(values) + "\n")
            self.file.flush()

    def close(self):
        if self.file:
            self.file.close()


def begin_run(output, config, context, job, total_steps):
    if context.is_main:
        Path(output).mkdir(parents=True, exist_ok=True)
        write_json(Path(output) / "run.json", run_record(config, job=job, total_steps=total_steps,
                                                         world_size=context.world_size))


def mark_finished(output, summary):
    record = json.loads((Path(output) / "run.json").read_text())
    write_json(Path(output) / "run.json", {**record, "finished": True, "summary": summary})


class Trainer(ABC):
    name = "train"

    def __init__(self, config, model, tokenizer, train_items, valid_items=(), context=None):
        self.config, self.model, self.tokenizer = config, model, tokenizer
        self.context = context or distributed.Context()
        self.output = Path(config.output)
        self.sharded = config.fsdp and self.context.distributed
        self.train = [self.encode(item) for item in train_items]
        self.valid = [self.encode(item) for item in valid_items]
        per_rank = len(self.train) // self.context.world_size
        if per_rank == 0:
            raise ValueError(f"{len(self.train)} training examples can't be shared by "
                             f"{self.context.world_size} processes.")
        self.steps_per_epoch = math.ceil(per_rank / config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)

    # What subclasses provide

    @abstractmethod
    def encode(self, item):
        """An example as the loss takes it (token ids and whatever goes with them)."""

    @abstractmethod
    def loss(self, model, batch):
        """(loss tensor, dict of floats to log) for a list of encoded examples."""

    @abstractmethod
    def evaluate(self, items):
        """A dict of validation metrics."""

    @abstractmethod
    def save_model(self, folder):
        """Write the trained model (and its tokenizer) to a folder."""

    def loss_weight(self, batch):
        """How many terms the loss of `batch` is a mean over: micro-batches' losses are weighted by it.

        An example encoded as (token ids, labels), labels -100 where there is no target as in Hugging Face
        models, counts its next-token targets (those the SFT loss averages); any other counts one. A subclass
        whose loss is a mean over something else says so here.
        """
        return sum(next_token_targets(item) for item in batch)

    def start(self):
        """Work before the first step of a new run (every process); returns metrics for the summary."""
        return {}

    def finish(self):
        """Work after the last step and before the final save (rank 0 only, or every process when the model is
        sharded, since its forward passes need them all); returns metrics."""
        return {}

    # The loop

    def batch(self, step):
        """This process's examples for an optimizer step: a permutation per epoch, seeded, then sharded."""
        epoch, index = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed + epoch)
        order = torch.randperm(len(self.train), generator=generator).tolist()
        mine = order[self.context.rank::self.context.world_size][: len(self.train) // self.context.world_size]
        size = self.config.batch_size
        return epoch, [self.train[i] for i in mine[index * size:(index + 1) * size]]

    def fit(self):
        config, context = self.config, self.context
        memory.check_mixed_precision(config, context.device)
        self.model.to(context.device)
        if config.gradient_checkpointing:
            memory.enable_gradient_checkpointing(self.model)
        if not config.resume:
            begin_run(self.output, config, context, self.name, self.total_steps)
        started_with = self.start() if not config.resume else {}
        skeleton = distributed.skeleton(self.model) if self.sharded else None
        model = self.wrap()
        # Under FSDP the parameters are replaced by their shards: the optimizer is made for those.
        trained = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=config.lr, betas=tuple(config.betas),
                                      weight_decay=config.weight_decay)
        scheduler = cosine_schedule(optimizer, config.warmup_steps, self.total_steps, config.min_lr_ratio)
        scaler = memory.grad_scaler(config, context.device)
        step, samples_seen = self.resume(optimizer, scheduler) if config.resume else (0, 0)
        log = MetricsLog(self.output / "metrics.jsonl", context.is_main, step if config.resume else None)
        bar = tqdm(total=self.total_steps, initial=step, desc=self.name, unit="step", disable=not context.is_main,
                   dynamic_ncols=True)
        started = time.perf_counter()
        while step < self.total_steps:
            epoch, batch = self.batch(step)
            model.train()
            optimizer.zero_grad(set_to_none=True)
            metrics = self.accumulate(model, batch, scaler)
            scaler.unscale_(optimizer)
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            samples_seen += len(batch) * context.world_size
            metrics = {name: context.mean(value) for name, value in metrics.items()}
            log.write(step=step, epoch=epoch, samples=samples_seen, lr=scheduler.get_last_lr()[0],
                      elapsed=round(time.perf_counter() - started, 3), **metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            bar.update(1)
            end_of_epoch = step % self.steps_per_epoch == 0 or step == self.total_steps
            if end_of_epoch and self.valid:
                self.validate(log, step, epoch)
            if config.save_every and step % config.save_every == 0 and step < self.total_steps:
                self.checkpoint(optimizer, scheduler, step, samples_seen)
        bar.close()
        if self.valid and not self.total_steps:  # nothing but `start` trained: validate that
            self.validate(log, 0, 0)
        log.close()
        return self.end_run(step, samples_seen, started_with, skeleton)

    def wrap(self):
        """The model as the loop calls it: DDP or FSDP under torchrun (`Context.wrap`), else itself."""
        if self.config.fsdp and not self.context.distributed and self.context.is_main:
            tqdm.write(f"{self.name}: fsdp shards the model over the processes torchrun starts; one process "
                       "holds all of it.")
        return self.context.wrap(self.model, fsdp=self.config.fsdp)

    def accumulate(self, model, batch, scaler):
        """Forward and backward passes over a step's micro-batches; returns the whole batch's metrics.

        Each pass's loss is weighted by its share of what the batch's loss is a mean over (`loss_weight`),
        so the gradients it leaves add up to those of the batch in one pass, and so do the logged loss and
        the other metrics, averaged with the same weights.
        """
        parts = memory.micro_batches(batch, self.config.micro_batch_size)
        weights = [self.loss_weight(part) for part in parts]
        total = sum(weights) or 1
        sums = {}
        for n, (part, weight) in enumerate(zip(parts, weights, strict=True)):
            with self.context.no_sync(model, sync=n == len(parts) - 1):
                with memory.autocast(self.config, self.context.device):
                    loss, metrics = self.loss(model, part)
                scaler.scale(loss * (weight / total)).backward()
            for name, value in {"loss": loss.item(), **metrics}.items():
                sums[name] = sums.get(name, 0.0) + value * weight / total
        return sums

    def end_run(self, step, samples_seen, started_with, skeleton):
        """`finish`, then the final model and the run's summary (returned on rank 0, empty elsewhere)."""
        context, summary = self.context, {}
        finished_with = self.finish() if context.is_main or self.sharded else {}
        if self.sharded:  # rank 0 saves the whole model, in the format everything else loads
            whole = distributed.gathered(self.model, skeleton, context)
            if context.is_main:
                self.model = whole
        if context.is_main:
            summary = {"steps": step, "samples_seen": samples_seen, "output": str(self.output / "model"),
                       "valid": getattr(self, "last_validation", None), **started_with, **finished_with}
            self.save_model(self.output / "model")
            mark_finished(self.output, summary)
        context.barrier()
        return summary

    def resume(self, optimizer, scheduler):
        """(step, samples seen) from the checkpoint, whose state is loaded into the model, optimizer and schedule."""
        state = load_state(self.output)
        if "shards" in state:
            load_shards(self.output, state, self.model, optimizer)
        elif self.sharded:
            raise ValueError(f"{self.output / 'checkpoint'} holds the whole model, written by a run without FSDP; "
                             "resume it with --no-fsdp.")
        else:
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        distributed.set_rng_state(state["rng"][self.context.rank])
        return state["step"], state["samples_seen"]

    def validate(self, log, step, epoch):
        """Rank 0 evaluates and logs; under FSDP every process evaluates, as each forward pass needs them all."""
        if self.context.is_main or self.sharded:
            self.model.eval()
            with torch.no_grad():  # in float32 whatever the training's precision, as eval-sft and eval-rm measure
                metrics = self.evaluate(self.valid)
            self.last_validation = metrics
            log.write(step=step, epoch=epoch, split="valid", **metrics)
            if self.context.is_main:
                tqdm.write(f"{self.name} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        self.context.barrier()

    def checkpoint(self, optimizer, scheduler, step, samples_seen):
        state = {"scheduler": scheduler.state_dict(), "step": step, "samples_seen": samples_seen,
                 "rng": self.context.gather(distributed.rng_state())}
        if self.sharded:
            save_sharded_checkpoint(self.output, self.model, optimizer, state, self.context.is_main)
        elif self.context.is_main:
            save_checkpoint(self.output, {"model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                                          **state})
        self.context.barrier()
