"""Checkpoints that resume exactly, and the record of what a model was trained from.

An output folder holds:

    run.json            the config, seed, code version, dataset sha256 and id; `finished` once done
    metrics.jsonl       one line per optimizer step and per validation
    checkpoint/state.pt the latest resumable state: model and optimizer state, scheduler, step,
                        samples seen, every process's RNG state
    model/              the final model, written last

A folder without `"finished": true` in run.json is an interrupted run and must not be used.
"""

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import torch

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


def load_state(output):
    path = Path(output) / "checkpoint" / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"Nothing to resume: {path} does not exist.")
    return torch.load(path, weights_only=False)
