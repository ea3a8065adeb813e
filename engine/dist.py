"""Distributed training from torchrun's environment variables (RANK, LOCAL_RANK, WORLD_SIZE), nothing else."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import OptionsError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def init_distributed(device_type):
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA); a no-op otherwise."""
    world = int(os.environ.get('WORLD_SIZE', 1))
    info = DistInfo(int(os.environ.get('RANK', 0)), int(os.environ.get('LOCAL_RANK', 0)), world)
    if info.enabled and not dist.is_initialized():
        if device_type == 'cuda':
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group('nccl' if device_type == 'cuda' else 'gloo')
    return info


def resolve_device(name, local_rank=0):
    """'auto' -> this rank's GPU when there is one, else the CPU."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda':
        name = f'cuda:{local_rank}'
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise OptionsError(f'device: {name} requested but CUDA is not available')
    return torch.device(name)


def barrier(info):
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value, info):
    """The mean of a scalar tensor over all ranks, as a float (every rank must call it)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value.item()


def cleanup(info):
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
