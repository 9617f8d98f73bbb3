"""LoRA adapters (Hu et al. 2021) through peft: a model can be an adapter over a named base.

An adapter folder is peft's own layout, which vLLM serves with `--enable-lora`: adapter_config.json,
whose `base_model_name_or_path` is the absolute path of the full-weights folder the adapter applies
to, and adapter_model.safetensors; the tokenizer beside them, and for a reward model its config.json
(the head's bias and pooling). `load_policy` and `RewardModel.from_pretrained` load such a folder
merged into its base; `python -m rlhf merge` writes that merge as full weights.

Training with `lora_rank` freezes the base and trains the adapter alone. PPO keeps one copy of each
base: the reference is the policy's base with the adapter switched off (or the SFT adapter the policy
started from, held as a second, frozen adapter), and the value model is an adapter on the reward
model's base, which scores with the reward model's own adapter (or with none).
"""

import contextlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
TRAINED = "default"  # peft saves the adapter of this name at the top of a folder; frozen ones get other names

# peft says so for every GPT-2 layer it adapts (they are Conv1D) and does the right thing.
warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")


def is_adapter(path):
    return (Path(path) / ADAPTER_CONFIG).is_file()


def base_of(path):
    """The full-weights folder that `path` applies to: the base an adapter names, or the folder itself."""
    folder = Path(path)
    if not is_adapter(folder):
        return folder.resolve()
    base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or ""
    if not base or not (Path(base) / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is an adapter over {base or 'no named base'}, which is not a model "
                                f"folder here; copy the base there, or merge the adapter where the base is.")
    return Path(base).resolve()


def adapter_record(model):
    """What a run records about its model: the adapter's base, rank, scale and layers, or None for full weights."""
    if not is_peft(model):
        return None
    config = model.peft_config[TRAINED]
    targets = config.target_modules
    return {"base": config.base_model_name_or_path, "rank": config.r, "alpha": config.lora_alpha,
            "target_modules": targets if isinstance(targets, str) else sorted(targets)}


def is_peft(model):
    return hasattr(model, "peft_config")


def lora_config(options, task_type):
    from peft import LoraConfig

    targets = options.lora_target_modules
    return LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
                      target_modules=targets if targets == "all-linear" else targets.split(","), task_type=task_type)


def load_base(auto_class, path, dtype=torch.float32, **config_options):
    """`auto_class` from the full weights under `path` (its base, for an adapter), with the config of `path` when it
    has one (a reward adapter's head), so that peft records the base by its absolute path."""
    from transformers import AutoConfig

    folder, base = Path(path), base_of(path)
    config = AutoConfig.from_pretrained(folder if (folder / "config.json").is_file() else base, **config_options)
    return auto_class.from_pretrained(str(base), config=config, dtype=dtype)


def merged(model, path):
    """`model` (the base of the adapter at `path`) with the adapter merged into its weights."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()


def with_lora(model, options, task_type, start=None):
    """`model`, frozen, under one trainable adapter: a new one of `options`, or the adapter at `start` trained on
    (it keeps its own rank and layers). A reward model's head trains beside its adapter and is saved with it."""
    from peft import PeftConfig, PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    if start is None:
        return get_peft_model(model, lora_config(options, task_type))
    config = PeftConfig.from_pretrained(str(start))
    if config.task_type == task_type:
        return PeftModel.from_pretrained(model, str(start), is_trainable=True)
    # An SFT adapter goes on training as a reward model's: its layers' weights, beside a head of the model's own.
    config.task_type, config.inference_mode = task_type, False
    peft_model = get_peft_model(model, config)
    set_peft_model_state_dict(peft_model, get_peft_model_state_dict(peft_model) | load_peft_weights(str(start)))
    return peft_model


def save(model, folder):
    """Full weights, or the trained adapter alone (not the frozen ones PPO holds beside it)."""
    model.save_pretrained(folder, **({"selected_adapters": [TRAINED]} if is_peft(model) else {}))


@contextlib.contextmanager
def using(peft_model, adapter):
    """Compute with `adapter` of `peft_model` active, or with the base alone when it is None."""
    if adapter is None:
        with peft_model.disable_adapter():
            yield
        return
    previous = peft_model.active_adapter
    peft_model.set_adapter(adapter)
    try:
        yield
    finally:
        peft_model.set_adapter(previous)  # which also makes the trained adapter trainable again


class AdapterView(nn.Module):
    """A module computed with another adapter of a shared model (or none): PPO's frozen reference beside the
    trained policy, the reward model beside the value model, without a second copy of their base."""

    def __init__(self, module, peft_model, adapter):
        super().__init__()
        self.module, self.adapter = module, adapter
        self.__dict__["peft_model"] = peft_model  # not a submodule: `module` already holds it

    def forward(self, *args, **kwargs):
        with using(self.peft_model, self.adapter):
            return self.module(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with using(self.peft_model, self.adapter):
            return self.module.generate(*args, **kwargs)

    @property
    def generation_config(self):
        return self.module.generation_config


def policy_and_reference(options, policy, reference, dtype=torch.float32):
    """(policy, reference) on one copy of their base: the policy an adapter (new, or `policy`'s own when that is an
    adapter), the reference the base itself or, when `reference` is an adapter, that adapter, frozen."""
    from peft import TaskType
    from transformers import AutoModelForCausalLM

    base = base_of(policy)
    if base_of(reference) != base:
        raise ValueError(f"With lora_rank, the policy's start ({policy}) and its reference ({reference}) must be "
                         f"the same model or adapters over one base; they are over {base} and "
                         f"{base_of(reference)}. Merge the adapters, or train with lora_rank 0.")
    model = with_lora(AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype), options, TaskType.CAUSAL_LM,
                      start=policy if is_adapter(policy) else None)
    if is_adapter(reference):
        model.load_adapter(str(reference), adapter_name="reference")
    return model, AdapterView(model, model, "reference" if is_adapter(reference) else None)


def value_and_reward(options, reward_model, value_model, dtype=torch.float32):
    """(value model, reward model), each a `RewardModel` on one copy of the reward model's base: the value model an
    adapter and head that start as the reward model's (a new adapter when it has none), the reward model frozen."""
    from peft import PeftModel, TaskType
    from transformers import AutoModelForSequenceClassification

    from .models import RewardModel

    if base_of(value_model) != base_of(reward_model):
        raise ValueError(f"With lora_rank, the value model ({value_model}) must start from the reward model or an "
                         f"adapter over its base ({base_of(reward_model)}).")
    model = load_base(AutoModelForSequenceClassification, reward_model, dtype, num_labels=1)
    if is_adapter(reward_model):
        peft_model = PeftModel.from_pretrained(model, str(reward_model), adapter_name="reward")
        if is_adapter(value_model):
            peft_model.load_adapter(str(value_model), adapter_name=TRAINED, is_trainable=True)
        else:
            peft_model.add_adapter(TRAINED, lora_config(options, TaskType.SEQ_CLS))
        peft_model.set_adapter(TRAINED)
    else:
        peft_model = with_lora(model, options, TaskType.SEQ_CLS, start=value_model if is_adapter(value_model) else None)
    value = RewardModel(model, peft_model)
    return value, AdapterView(value, peft_model, "reward" if is_adapter(reward_model) else None)


def merge(config):
    """Write an adapter merged into its base as full weights, with its tokenizer: a model any tool loads."""
    from .models import RewardModel, is_reward_folder, load_policy, load_tokenizer

    if not is_adapter(config.adapter):
        raise ValueError(f"{config.adapter} is not an adapter folder (it has no {ADAPTER_CONFIG}).")
    dtype = getattr(torch, config.dtype)
    if is_reward_folder(config.adapter):
        RewardModel.from_pretrained(config.adapter, dtype=dtype).save_pretrained(config.output)
    else:
        load_policy(config.adapter, dtype=dtype).save_pretrained(config.output)
    load_tokenizer(config.adapter).save_pretrained(config.output)
    return {"output": config.output, "base": str(base_of(config.adapter))}
