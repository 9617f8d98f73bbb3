"""One process or many under `torchrun`: the rank comes from the environment; rank 0 logs and saves.

Under torchrun each process holds a copy of the model (DDP), or with `fsdp` a shard of its weights,
gradients and optimizer state (FSDP2: each transformer block is gathered for its own forward and
backward, then freed). Both run on CPUs with gloo as well as on GPUs with nccl.
"""

import contextlib
import copy
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from .models import pick_device


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    def wrap(self, model, fsdp=False):
        """The model as the training loop calls it: itself in one process; under torchrun a DDP copy on each
        process, or with `fsdp` the same object sharded in place (make its optimizer afterwards)."""
        if not self.distributed:
            return model
        if fsdp:
            return shard(model, init_device_mesh(self.device.type, (self.world_size,)))
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model, sync):
        """The context of a backward pass: with `sync` false, DDP keeps its gradients to add the next pass's to,
        rather than averaging them over the processes now. FSDP averages every pass: keeping whole gradients
        between passes would undo its sharding of them."""
        if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not sync:
            return model.no_sync()
        return contextlib.nullcontext()

    def mean(self, value):
        """The mean of a float over all processes."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def gather(self, obj):
        if not self.distributed:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self):
        if self.distributed:
            dist.barrier()


def setup(device="auto", seed=None):
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU); seed with seed + rank."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if seed is not None:
        seed_everything(seed + rank)
    return Context(rank, world_size, device)


def shard(model, mesh):
    """FSDP2 on each transformer block (the first ModuleList's items), then on the rest at the root."""
    blocks = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), [])
    for block in blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def skeleton(model):
    """A copy of a model before it is sharded, its weights left on the meta device (no memory) for
    `gathered` to fill; its buffers are copied as they are, some (rotary frequencies) being in no state dict."""
    memo = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def gathered(model, skeleton, context):
    """The trained weights of a sharded model in its skeleton, on rank 0's CPU (every process must call this).

    Tied weights stay tied: each skeleton parameter is replaced once, under every name it has.
    """
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not context.is_main:
        return None
    filled = {}
    for name, meta in skeleton.named_parameters(remove_duplicate=False):
        owner, _, attribute = name.rpartition(".")
        if id(meta) not in filled:
            filled[id(meta)] = torch.nn.Parameter(full[name], meta.requires_grad)
        setattr(skeleton.get_submodule(owner), attribute, filled[id(meta)])
    return skeleton.cpu()  # the buffers, copied where the model was


def teardown(context):
    """Leave the process group, once every process is done with it when the run ended well (a process that left
    while another still had work in flight has been seen to abort at exit under gloo). After an error another
    process may be waiting inside a collective, so there is no barrier then."""
    if context.distributed and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
