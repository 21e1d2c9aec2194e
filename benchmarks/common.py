"""Shared helpers of the benchmark scripts: machine description, timing, random backbones."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from unim2_core.backbone_weights import ARCHITECTURES, canonical_key


def machine() -> str:
    """One line naming the processor / GPU, core count and torch build."""
    if torch.cuda.is_available():
        device = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device = f"CPU {cpu}"
    return (
        f"{device}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def timed(function: Callable[[], object], *, repeats: int, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    """Median in milliseconds."""
    return 1000.0 * statistics.median(times)


def write_random_backbone(name: str, path: Path, *, seed: int = 0) -> Path:
    """Random weights of architecture ``name`` in the HF checkpoint layout (safetensors).

    Stands in for licence-gated DINOv3 weights: same shapes and cost, meaningless features.
    """
    from transformers import Dinov2Model, DINOv3ViTModel

    arch = ARCHITECTURES[name]
    torch.manual_seed(seed)
    model_class = DINOv3ViTModel if arch.family == "dinov3" else Dinov2Model
    model = model_class(arch.transformers_config()).eval()
    state = {canonical_key(k, arch.family): v.contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
