"""Supervised fine-tuning on demonstrations: next-token loss on the assistant's tokens only."""

import math

import torch

from . import distributed
from .data import load_demonstrations
from .losses import sft_loss
from .models import assistant_labels, load_policy, load_tokenizer, pad, truncate_left
from .training import Trainer


class SFTTrainer(Trainer):
    name = "train-sft"

    def encode(self, messages):
        ids, labels = assistant_labels(self.tokenizer, messages)
        return truncate_left(ids, self.config.max_length, labels)

    def tensors(self, batch):
        device = self.context.device
        input_ids = pad([ids for ids, _ in batch], self.tokenizer.pad_token_id).to(device)
        labels = pad([labels for _, labels in batch], -100).to(device)
        attention_mask = pad([[1] * len(ids) for ids, _ in batch], 0).to(device)
        return input_ids, attention_mask, labels

    def loss(self, model, batch):
        input_ids, attention_mask, labels = self.tensors(batch)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return sft_loss(logits, labels), {}

    def evaluate(self, items):
        total, tokens = 0.0, 0
        for start in range(0, len(items), self.config.batch_size):
            input_ids, attention_mask, labels = self.tensors(items[start:start + self.config.batch_size])
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
            n = int((labels[:, 1:] != -100).sum())
            total += sft_loss(logits, labels).item() * n
            tokens += n
        loss = total / max(tokens, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50))}

    def save_model(self, folder):
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


def train_sft(config):
    demonstrations = load_demonstrations(config.data)
    valid = load_demonstrations(config.valid_data) if config.valid_data else []
    context = distributed.setup(config.device, config.seed)
    try:
        tokenizer = load_tokenizer(config.model)
        model = load_policy(config.model, dtype=getattr(torch, config.dtype))
        trainer = SFTTrainer(config, model, tokenizer, demonstrations, valid, context)
        return trainer.fit()
    finally:
        distributed.teardown(context)
