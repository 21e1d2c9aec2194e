"""Shared helpers of the benchmark scripts: machine description, timing (wall and CPU), the NYU
sample camera, random backbones."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import PreprocessConfig
from unim2_core.model.backbone import Backbone
from unim2_core.model.backbone_weights import ARCHITECTURES, canonical_key
from unim2_core.model.checkpoint import Bundle
from unim2_core.model.heads import HeadsConfig, UniM2Heads

NYU_FRAME = Path(__file__).resolve().parents[1] / "test" / "data" / "nyu_rgbd_sample"
"""The real NYU RGB-D sample (640x480 ``rgb``, ``depth_mm``) the latency benchmarks segment."""

NYU_COLOUR = CameraIntrinsics(518.857901, 519.469611, 325.582449, 253.736166, 640, 480)
"""NYU Depth V2 toolbox ``camera_params.m``: the colour camera the depth is registered to (the
camera of the sample frames in ``test/data/nyu_rgbd_sample``)."""


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


def cpu_ms(function: Callable[[], object], *, repeats: int) -> tuple[float, float]:
    """Median and least CPU time of this thread per call, in ms: what the call costs a core,
    without the waits for a core that wall time includes on a shared machine."""
    function()
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        function()
        times.append(time.thread_time() - start)
    return 1000 * statistics.median(times), 1000 * min(times)


def timed_rounds(
    functions: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Wall-clock seconds of each function, called in turn for ``repeats`` rounds.

    Interleaving puts every function under the same machine load, so per-round ratios stay
    meaningful on a noisy shared machine where back-to-back blocks of calls would not.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].extend(timed(function, repeats=1, warmup=0))
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[i] / denominator[i]``."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


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
    config = arch.transformers_config()
    model = DINOv3ViTModel(config) if arch.family == "dinov3" else Dinov2Model(config)  # type: ignore[arg-type]
    state = {canonical_key(k, arch.family): v.contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def random_bundle(
    backbone: Backbone, encodings: dict[str, ModalityEncoding], shorter_side: int
) -> Bundle:
    """Randomly initialised heads (70-dim code, 13 clusters) for ``backbone``: the cost of a
    trained model, without training one."""
    heads = UniM2Heads(
        HeadsConfig(
            modalities=tuple(encodings), channels=backbone.channels, code_dim=70, n_clusters=13
        )
    )
    return Bundle.from_heads(
        heads,
        backbone=backbone.identity,
        encodings=encodings,
        preprocess=PreprocessConfig(shorter_side=shorter_side),
    )
