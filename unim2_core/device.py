"""Device names (``cpu``, ``cuda``, ``cuda:N``, ``auto``): one check for every command and the node.

A device is checked twice: its spelling when a config, argument or parameter is read (so a typo
stops a command before any work), and against the GPUs torch actually sees when a model is
placed (so ``cuda`` on a CPU-only torch build, or ``cuda:3`` on a two-GPU machine, is one clear
error naming the value instead of torch's traceback).
"""

from __future__ import annotations

import re

import torch

from unim2_core.errors import ConfigError

DEVICE_HELP = "cpu, cuda, cuda:N (GPU index) or auto (cuda when available)"
_DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:[0-9]+)?")


def device_problem(name: object) -> str | None:
    """Why ``name`` is not a device name, or None when it is spelled right."""
    if isinstance(name, str) and _DEVICE_PATTERN.fullmatch(name):
        return None
    return f"must be one of {DEVICE_HELP}; got {name!r}"


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` stands for on this machine.

    Raises:
        ConfigError: ``name`` is misspelt, names CUDA while torch sees no GPU (a CPU-only
            build, or no driver), or names a GPU index torch does not see.
    """
    problem = device_problem(name)
    if problem is not None:
        raise ConfigError(f"device {problem}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
        raise ConfigError(
            f"device {name!r} was requested but torch {torch.__version__} sees no CUDA GPU "
            f"({build}); use cpu or auto"
        )
    count = torch.cuda.device_count()
    index = int(name.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(
            f"device {name!r}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
        )
    return torch.device(name)
