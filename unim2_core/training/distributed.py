"""Process-group set-up for ``torchrun`` jobs (feature extraction sharded over processes/GPUs)."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class ProcessContext(NamedTuple):
    """This process's place in the job and the device it should use."""

    rank: int
    world_size: int
    device: torch.device


def init_from_environment(device: str = "auto") -> ProcessContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on GPUs).

    Without torchrun this is a single process of rank 0 and nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if world <= 1:
        return ProcessContext(0, 1, torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return ProcessContext(dist.get_rank(), dist.get_world_size(), target)


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
