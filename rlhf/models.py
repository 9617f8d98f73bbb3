"""Loading policies and reward models from local folders, and turning prompts into token ids.

Nothing here reaches the network: every load is from a folder on disk (HF_HUB_OFFLINE is set by
the package). A folder holds full weights, or a LoRA adapter over a named base (rlhf/adapters.py)
that loads merged into that base. A reward model is a Hugging Face
`AutoModelForSequenceClassification` with one label, so TRL and plain transformers load it too;
`RewardModel` reads its score at the last non-padding token and adds the bias stored in its config
(`reward_bias`), which centres demonstrations at 0.
"""

import json
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from .adapters import ADAPTER_CONFIG, base_of, is_adapter, load_base, merged, save, with_lora

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _folder(path):
    folder = Path(path)
    if not (folder / "config.json").is_file() and not is_adapter(folder):
        hint = " Run `python -m rlhf prepare-model` to create the default model." if "SmolLM2" in str(path) else ""
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json or {ADAPTER_CONFIG}).{hint}")
    return folder


def is_reward_folder(path):
    """Whether `path` holds a reward model (full weights or adapter) rather than a language model."""
    folder = _folder(path)
    if is_adapter(folder):
        return json.loads((folder / ADAPTER_CONFIG).read_text()).get("task_type") == "SEQ_CLS"
    config = json.loads((folder / "config.json").read_text())
    return any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or [])


def load_tokenizer(path, padding_side="right"):
    folder = _folder(path)
    if is_adapter(folder) and not (folder / "tokenizer_config.json").is_file():
        folder = base_of(folder)  # an adapter saved without its tokenizer uses its base's
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_policy(path, dtype=torch.float32, lora=None):
    """A language model folder, or an adapter merged into its base. With `lora` (options with a `lora_rank`), the
    weights stay frozen under a trainable adapter: a new one, or the folder's own adapter, trained on."""
    from peft import TaskType

    folder = _folder(path)
    if lora is not None and lora.lora_rank:
        return with_lora(load_base(AutoModelForCausalLM, folder, dtype), lora, TaskType.CAUSAL_LM,
                         start=folder if is_adapter(folder) else None)
    if is_adapter(folder):
        return merged(load_base(AutoModelForCausalLM, folder, dtype), folder)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def prompt_messages(prompt):
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_prompt(tokenizer, prompt):
    """Token ids of the prompt followed by the start of the assistant's turn."""
    return tokenizer.apply_chat_template(prompt_messages(prompt), add_generation_prompt=True, tokenize=True,
                                         return_dict=False)


def encode_conversation(tokenizer, prompt, completion):
    """Token ids of prompt + completion as the model sees them.

    `prompt` None means the completion already holds the whole conversation, as text
    (HH-RLHF's "\\n\\nHuman: ... \\n\\nAssistant: ...") or as messages.
    """
    if prompt is None and isinstance(completion, str):
        return tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    messages = list(completion) if prompt is None else [
        *prompt_messages(prompt), {"role": "assistant", "content": completion}]
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)


def encode_for_reward(tokenizer, prompt, completion, max_length):
    """(token ids of prompt + completion cut to max_length from the left, where the completion starts in them).

    With `prompt` None the completion is the conversation's last message, or all of a plain text (nothing in it
    tells turns apart). The start is at most the last token, so a reward model always has a token to read.
    """
    ids = encode_conversation(tokenizer, prompt, completion)
    if prompt is not None:
        start = len(encode_prompt(tokenizer, prompt))
    elif isinstance(completion, str):
        start = 0
    else:
        start = len(tokenizer.apply_chat_template(list(completion)[:-1], add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
    cut = max(0, len(ids) - max_length)
    return ids[cut:], min(max(0, start - cut), len(ids) - cut - 1)


def reward_batch(encoded, pad_token_id):
    """(input ids, attention mask, completion mask), right-padded, of `encode_for_reward` pairs."""
    input_ids, attention_mask = batch_of([ids for ids, _ in encoded], pad_token_id)
    completion_mask = pad([[0] * start + [1] * (len(ids) - start) for ids, start in encoded], 0)
    return input_ids, attention_mask, completion_mask


def assistant_labels(tokenizer, messages):
    """(input ids, labels) for a conversation, labels -100 everywhere but the assistant's turns.

    Each assistant turn is what the template adds between the conversation so far with a
    generation prompt and the conversation including that turn. A turn with `"weight": 0` is
    context only (a reply the model wrote, in a conversation a labeler continued).
    """
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    labels = [-100] * len(ids)
    for n, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        start = len(tokenizer.apply_chat_template(messages[:n], add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
        end = len(tokenizer.apply_chat_template(messages[:n + 1], tokenize=True, return_dict=False))
        labels[start:end] = ids[start:end]
    return ids, labels


def truncate_left(ids, max_length, labels=None):
    """Keep the end of a sequence: the completion matters more than the start of a long prompt."""
    if len(ids) <= max_length:
        return (ids, labels) if labels is not None else ids
    return (ids[-max_length:], labels[-max_length:]) if labels is not None else ids[-max_length:]


def pad(sequences, value, side="right"):
    width = max(len(s) for s in sequences)
    if side == "left":
        return torch.tensor([[value] * (width - len(s)) + list(s) for s in sequences])
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in sequences])


def batch_of(sequences, pad_token_id, side="right"):
    input_ids = pad(sequences, pad_token_id, side)
    attention_mask = pad([[1] * len(s) for s in sequences], 0, side)
    return input_ids, attention_mask


def position_ids(attention_mask):
    """Positions counted from each sequence's first real token, so left padding changes nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class RewardModel(nn.Module):
    """A language model with a scalar head.

    The head reads a pooled hidden state (`pooling`, kept in the model's config as `reward_pooling`):
    `last`, the final layer at the sequence's last token; or `mean`, the mean over every layer's output
    and over the completion's tokens, a steadier feature when rankings are few (it measured better
    on HH-RLHF, bench/README.md).
    """

    POOLINGS = ("last", "mean")

    def __init__(self, model, peft_model=None):
        super().__init__()
        self.model = model  # an AutoModelForSequenceClassification with num_labels=1
        self.__dict__["peft_model"] = peft_model  # the adapters' wrapper of `model`, when it trains adapters

    @classmethod
    def from_pretrained(cls, path, dtype=torch.float32, lora=None):
        """A reward model folder (full weights, or an adapter merged into its base), or a language model folder
        to start one from (the head starts at random). With `lora` (options with a `lora_rank`), the weights stay
        frozen under a trainable adapter and head: a new adapter, or the folder's own, trained on."""
        from peft import TaskType

        folder = _folder(path)
        peft_model = None
        if lora is not None and lora.lora_rank:
            model = load_base(AutoModelForSequenceClassification, folder, dtype, num_labels=1)
            peft_model = with_lora(model, lora, TaskType.SEQ_CLS, start=folder if is_adapter(folder) else None)
        elif is_adapter(folder):
            model = merged(load_base(AutoModelForSequenceClassification, folder, dtype, num_labels=1), folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=dtype)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = load_tokenizer(folder).pad_token_id
        reward_model = cls(model, peft_model)
        reward_model.pooling = reward_model.pooling  # a config naming another is refused here, not read as `last`
        return reward_model

    @property
    def bias(self):
        return float(getattr(self.model.config, "reward_bias", 0.0))

    @property
    def pooling(self):
        return getattr(self.model.config, "reward_pooling", "last")

    @pooling.setter
    def pooling(self, value):
        if value not in self.POOLINGS:
            raise ValueError(f"reward_pooling must be one of {', '.join(self.POOLINGS)}, not {value!r}.")
        self.model.config.reward_pooling = value

    @property
    def head(self):
        return self.model.score

    def hidden(self, input_ids, attention_mask):
        """[batch, positions, width]: what the head reads at each position."""
        mean = self.pooling == "mean"
        out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                    position_ids=position_ids(attention_mask), output_hidden_states=mean)
        return sum(out.hidden_states[1:]) / (len(out.hidden_states) - 1) if mean else out.last_hidden_state

    def features(self, input_ids, attention_mask, completion_mask=None):
        """[batch, width]: the pooled hidden state the head scores (see the class)."""
        hidden = self.hidden(input_ids, attention_mask)
        if self.pooling == "mean":
            mask = (attention_mask if completion_mask is None else completion_mask * attention_mask).to(hidden.dtype)
            return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (positions * attention_mask).argmax(-1)  # works for left and right padding
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, input_ids, attention_mask, completion_mask=None):
        return self.head(self.features(input_ids, attention_mask, completion_mask)).squeeze(-1).float() + self.bias

    def values(self, input_ids, attention_mask):
        """The head read at every position: PPO's value model starts from the reward model."""
        return self.head(self.hidden(input_ids, attention_mask)).squeeze(-1).float()

    def train_top_layers(self, layers):
        """Train only the top `layers` transformer blocks (and the final norm and the head): the embeddings and
        the blocks below are frozen, so no gradient flows through them. 0, or as many as the model has: all."""
        blocks = next((m for m in self.model.base_model.modules() if isinstance(m, nn.ModuleList)), None)
        if not layers or blocks is None or layers >= len(blocks):
            return
        frozen = [*(m for m in self.model.base_model.modules() if isinstance(m, nn.Embedding)),
                  *blocks[: len(blocks) - layers]]
        for module in frozen:
            module.requires_grad_(False)

    def save_pretrained(self, folder, bias=None):
        """Full weights, or the adapter and head with the config that holds the bias and pooling."""
        if bias is not None:
            self.model.config.reward_bias = float(bias)
        if self.peft_model is None:
            self.model.save_pretrained(folder)
            return
        save(self.peft_model, folder)
        self.model.config.architectures = [type(self.model).__name__]  # what the merged weights will be
        self.model.config.save_pretrained(folder)


def save_tiny_model(folder, seed=0):
    """A 2-layer GPT-2 (width 64) with a small byte-level BPE tokenizer and a ChatML template.

    Random weights: for tests and for trying the pipeline in seconds, not for real text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_TINY_CORPUS.split("\n") * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|pad|>",
        unk_token="<|endoftext|>", chat_template=CHATML,
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    (folder / "rlhf_model.json").write_text(json.dumps({"name": "tiny-gpt2", "kind": "tiny"}))
    return folder


_TINY_CORPUS = """\
The quick brown fox jumps over the lazy dog.
Write a short poem about the sea. The sea is wide and blue, the waves roll in and out.
How do I boil an egg? Put it in boiling water for seven minutes, then cool it in cold water.
Summarise this paragraph in one sentence. Explain the idea to a child. List three reasons.
What is the capital of France? The capital of France is Paris.
Thank you for asking. I am sorry, but I cannot help with that. Here is a helpful answer.
user assistant system: yes no maybe good bad great terrible wonderful excellent awful fine
one two three four five six seven eight nine ten hundred thousand apple banana cherry
"""
