"""Supervised fine-tuning on demonstrations: next-token loss on the assistant's tokens only."""

import json
import math
from pathlib import Path

import torch

from . import adapters, distributed
from .data import load_demonstrations
from .losses import sft_loss
from .models import assistant_labels, load_policy, load_tokenizer, pad, pick_device, truncate_left
from .training import Trainer


class SFTTrainer(Trainer):
    name = "train-sft"

    def encode(self, messages):
        ids, labels = assistant_labels(self.tokenizer, messages)
        return truncate_left(ids, self.config.max_length, labels)

    def loss(self, model, batch):
        input_ids, attention_mask, labels = tensors(batch, self.tokenizer.pad_token_id, self.context.device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return sft_loss(logits, labels), {}

    def evaluate(self, items):
        return validation_loss(self.model, items, self.tokenizer.pad_token_id, self.config.batch_size,
                               self.context.device)

    def finish(self):
        return {"adapter": adapters.adapter_record(self.model)}

    def save_model(self, folder):
        adapters.save(self.model, folder)
        self.tokenizer.save_pretrained(folder)


def tensors(batch, pad_id, device):
    input_ids = pad([ids for ids, _ in batch], pad_id).to(device)
    labels = pad([labels for _, labels in batch], -100).to(device)
    attention_mask = pad([[1] * len(ids) for ids, _ in batch], 0).to(device)
    return input_ids, attention_mask, labels


@torch.no_grad()
def validation_loss(model, items, pad_id, batch_size, device):
    """Mean loss per assistant token over encoded demonstrations, and its perplexity."""
    total, tokens = 0.0, 0
    for start in range(0, len(items), batch_size):
        input_ids, attention_mask, labels = tensors(items[start:start + batch_size], pad_id, device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        n = int((labels[:, 1:] != -100).sum())
        total += sft_loss(logits, labels).item() * n
        tokens += n
    loss = total / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50))}


def eval_sft(config):
    """Validation loss of a model on demonstrations: what the SFT gate compares."""
    device = pick_device(config.device)
    tokenizer = load_tokenizer(config.model)
    model = load_policy(config.model, dtype=getattr(torch, config.dtype)).to(device).eval()
    items = []
    for messages in load_demonstrations(config.data):
        ids, labels = assistant_labels(tokenizer, messages)
        items.append(truncate_left(ids, config.max_length, labels))
    metrics = validation_loss(model, items, tokenizer.pad_token_id, config.batch_size, device)
    if config.output:
        Path(config.output).write_text(json.dumps(metrics, indent=2))
    return metrics


def train_sft(config):
    demonstrations = load_demonstrations(config.data)
    valid = load_demonstrations(config.valid_data) if config.valid_data else []
    context = distributed.setup(config.device, config.seed)
    try:
        tokenizer = load_tokenizer(config.model)
        model = load_policy(config.model, dtype=getattr(torch, config.dtype), lora=config)
        trainer = SFTTrainer(config, model, tokenizer, demonstrations, valid, context)
        return trainer.fit()
    finally:
        distributed.teardown(context)
