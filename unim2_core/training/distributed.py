"""Process-group set-up for ``torchrun`` jobs (feature extraction sharded over processes/GPUs)."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist

from unim2_core.device import resolve_device


class ProcessContext(NamedTuple):
    """This process's place in the job and the device it should use."""

    rank: int
    world_size: int
    device: torch.device


def init_from_environment(device: str = "auto") -> ProcessContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on GPUs).

    Without torchrun this is a single process of rank 0 on ``device`` and nothing is
    initialised; under torchrun a CUDA device means the GPU of the local rank.

    Raises:
        ConfigError: ``device`` is misspelt or names a GPU torch does not see.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    use_cuda = resolved.type == "cuda"
    if world <= 1:
        return ProcessContext(0, 1, resolved)
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
