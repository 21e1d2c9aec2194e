"""Overload: 30 Hz RGB-D input into a slower model, for minutes; latency and memory must not grow.

The node runs as a separate process (``python -m unim2_ros.segmentation_node`` with the Fast DDS
localhost profile). This process is the camera: it publishes the 640x480 NYU RGB-D frames of
test/data on rgb/image + depth/image at ``--rate`` Hz with current stamps, and receives
``~/labels``. Output latency is ``arrival - stamp`` on the same clock. The node's latest-group
buffer should keep it at most about twice the inference time (one inference in progress when a
group arrives, then its own), however long the overload lasts; the node's resident memory is
sampled every ``--rss-every`` seconds and must stay flat.

    python -m benchmarks.node_overload --duration 300
    python -m benchmarks.node_overload --device cuda --precision fp16 --duration 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import machine
from benchmarks.node_harness import (
    NodeProcess,
    Probe,
    add_model_arguments,
    demo_checkpoint,
    model_parameters,
    nyu_frames,
    percentile,
    use_dds_profile,
)


def _camera(probe: Probe, rate: float, stop: threading.Event, sent: list[int]) -> None:
    """Publishes RGB-D groups at ``rate`` Hz until ``stop``; counts them in ``sent``."""
    messages = [probe.messages(rgb, depth, probe.header()) for rgb, depth in nyu_frames()]
    period = 1.0 / rate
    tick = time.monotonic()
    index = 0
    while not stop.is_set():
        rgb_msg, depth_msg = messages[index % len(messages)]
        header = probe.header()
        rgb_msg.header = header
        depth_msg.header = header
        probe.rgb.publish(rgb_msg)
        probe.depth.publish(depth_msg)
        sent[0] += 1
        index += 1
        tick += period
        delay = tick - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            tick = time.monotonic()


def _numbers(diagnostics: list[dict[str, str]], key: str) -> list[float]:
    return [float(d[key]) for d in diagnostics if d.get(key, "n/a") != "n/a"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz")
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--rss-every", type=float, default=10.0, help="RSS sampling period, s")
    parser.add_argument("--domain-id", type=int, default=78)
    args = parser.parse_args()
    use_dds_profile()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or demo_checkpoint(
            Path(folder), args.backbone_weights, args.input_size
        )
        node = NodeProcess(model_parameters(args, checkpoint), args.domain_id)
        probe = Probe(args.domain_id)
        stop = threading.Event()
        sent = [0]
        camera = threading.Thread(target=_camera, args=(probe, args.rate, stop, sent))
        rss: list[tuple[float, float]] = []
        try:
            probe.wait_ready(node)
            camera.start()
            time.sleep(args.warmup)
            measured_from = probe.node.get_clock().now().nanoseconds
            sent_before = sent[0]
            diagnostics_before = len(probe.diagnostics)
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < args.duration:
                rss.append((elapsed, node.rss_mib()))
                time.sleep(min(args.rss_every, max(0.0, args.duration - elapsed)))
            rss.append((time.monotonic() - start, node.rss_mib()))
            measured_to = probe.node.get_clock().now().nanoseconds
            while_loaded = probe.diagnostics[-1]
            stop.set()
            camera.join()
            time.sleep(2.0)
            diagnostics = probe.diagnostics[diagnostics_before:]
            outputs = [
                (stamp, now)
                for stamp, _, now in list(probe.labels.items)
                if measured_from <= stamp <= measured_to
            ]
        finally:
            stop.set()
            if camera.is_alive():
                camera.join()
            probe.close()
            exit_code = node.stop()

    latencies = [(now - stamp) * 1e-6 for stamp, now in outputs]
    inference = _numbers(diagnostics, "inference ms (mean)")
    inference_max = _numbers(diagnostics, "inference ms (max)")
    final = diagnostics[-1] if diagnostics else {}
    groups = sent[0] - sent_before
    print(
        f"model: {checkpoint.name}, rgb+depth 640x480, shorter side {args.input_size}, "
        f"{args.device} {args.precision}; input {args.rate:g} Hz for {args.duration:g} s "
        f"(after {args.warmup:g} s warm-up)"
    )
    print(
        f"groups published {groups} ({groups / args.duration:.1f} Hz), outputs "
        f"{len(latencies)} ({len(latencies) / args.duration:.2f} Hz)"
    )
    inference_ms = statistics.median(inference)
    print(
        f"inference ms (node diagnostics, per 1 s window): median of means {inference_ms:.1f}, "
        f"max {max(inference_max):.1f}"
    )
    print(
        f"output latency ms (arrival - stamp): mean {statistics.fmean(latencies):.1f}, median "
        f"{statistics.median(latencies):.1f}, p95 {percentile(latencies, 95):.1f}, p99 "
        f"{percentile(latencies, 99):.1f}, max {max(latencies):.1f}"
    )
    print(
        f"latency / inference: median {statistics.median(latencies) / inference_ms:.2f}, p99 "
        f"{percentile(latencies, 99) / inference_ms:.2f}, max {max(latencies) / inference_ms:.2f}"
        f" (target <= 2)"
    )
    first_half = [
        latency
        for (stamp, _), latency in zip(outputs, latencies, strict=True)
        if stamp < (measured_from + measured_to) // 2
    ]
    second_half = latencies[len(first_half) :]
    print(
        f"latency median, first half {statistics.median(first_half):.1f} ms, second half "
        f"{statistics.median(second_half):.1f} ms"
    )
    print(
        f"node RSS MiB: start {rss[0][1]:.1f}, end {rss[-1][1]:.1f}, min "
        f"{min(r for _, r in rss):.1f}, max {max(r for _, r in rss):.1f}"
    )
    print("RSS samples (s: MiB): " + ", ".join(f"{t:.0f}: {r:.1f}" for t, r in rss))
    print(
        f"node diagnostics at the end: stale drops {final.get('stale drops', 'n/a')}, sync drops "
        f"rgb {final.get('/rgb/image sync drops', 'n/a')} depth "
        f"{final.get('/depth/image sync drops', 'n/a')}; under load: input rate rgb "
        f"{while_loaded.get('/rgb/image rate (Hz)', 'n/a')} Hz, depth "
        f"{while_loaded.get('/depth/image rate (Hz)', 'n/a')} Hz, output rate "
        f"{while_loaded.get('output rate (Hz)', 'n/a')} Hz; node exit code {exit_code}"
    )


if __name__ == "__main__":
    main()
