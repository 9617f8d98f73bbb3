"""Checkpoints that resume exactly, and the record of what a model was trained from.

An output folder holds:

    run.json            the config, seed, code version, dataset sha256 and id; `finished` once done
    metrics.jsonl       one line per optimizer step and per validation
    checkpoint/state.pt the latest resumable state: model and optimizer state, scheduler, step,
                        samples seen, every process's RNG state
    checkpoint/shards-N/ under FSDP, the model and optimizer state in every process's shards (and PPO's
                        moving average), by torch.distributed.checkpoint; state.pt then names this folder
    model/              the final model, written last

A folder without `"finished": true` in run.json is an interrupted run and must not be used.
"""

import dataclasses
import json
import shutil
import subprocess
import time
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from . import __version__
from .data import sha256_of


def git_revision():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def run_record(config, **extra):
    data = Path(config.data)
    return {
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "rlhf_version": __version__,
        "git_revision": git_revision(),
        "dataset": {"path": str(data), "id": config.dataset_id, "sha256": sha256_of(data)},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished": False,
        **extra,
    }


def write_json(path, value):
    """Write through a temporary file so readers never see half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def save_checkpoint(output, state):
    """Replace output/checkpoint/state.pt; the old one stays until the new one is completely written."""
    folder = Path(output) / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "state.pt")


def save_sharded_checkpoint(output, model, optimizer, state, is_main, tensors=None):
    """Every process writes its shards of the model and optimizer (and of `tensors`, a dict of further weights such
    as PPO's moving average) to a new folder; then rank 0 replaces state.pt, naming that folder, and removes the
    older ones. A run stopped at any point resumes from a complete checkpoint: state.pt names the new folder only
    once all of it is written. Several models trained by one optimizer are saved as one `nn.ModuleDict`."""
    folder = Path(output) / "checkpoint"
    shards = f"shards-{state['step']:08d}"
    model_state, optimizer_state = get_state_dict(model, optimizer)
    # Rank 0 writes the folder's metadata after every process has reported its shards written.
    dcp.save({"model": model_state, "optimizer": optimizer_state, "tensors": tensors or {}},
             checkpoint_id=folder / shards)
    if is_main:
        save_checkpoint(output, {**state, "shards": shards})
        for old in folder.glob("shards-*"):
            if old.name != shards:
                shutil.rmtree(old)


def load_shards(output, state, model, optimizer, tensors=None):
    """The model and optimizer state from a sharded checkpoint, into a model sharded over any number of
    processes, or not sharded at all; `tensors`, when given, are loaded in place."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.load({"model": model_state, "optimizer": optimizer_state, "tensors": tensors or {}},
             checkpoint_id=Path(output) / "checkpoint" / state["shards"])
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


def load_state(output):
    path = Path(output) / "checkpoint" / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"Nothing to resume: {path} does not exist.")
    return torch.load(path, weights_only=False)
