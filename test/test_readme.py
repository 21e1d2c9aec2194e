"""The README's commands, run as written on files this test makes.

Every ``unim2_*`` command of the README's bash blocks runs here through its console-script entry
point, in a scratch folder that holds what the commands name: generated RGB-D rosbags, random
DINOv3 ViT-S/16 weights in Meta's layout under the official file name, a tiny NYU-Depth-v2
folder. Only training length and sizes are cut (extra ``--set`` overrides, fewer trials, a short
recording). The system commands (pip, colcon, ros2 launch, ...) are checked against what they
refer to. A command added to the README without being exercised here fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import torch
import yaml
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from test_backbone import _saved_state, hf_to_meta, random_reference

from unim2_demo.synthetic_scenes import generate_sequence
from unim2_ros.bag_io import BagImageWriter, BagReader
from unim2_ros.image_conversion import array_to_image

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
RGB_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_rect_raw"
WEIGHTS = "weights/dinov3_vits16_pretrain_lvd1689m-08c60483.pth"

# Appended to every training-type command: the reference lengths and sizes, cut to seconds.
SHORT_RUN = [
    "train.steps=2",
    "train.batch_size=4",
    "train.val_every=2",
    "train.checkpoint_every=2",
    "train.device=cpu",
    "crops.crop_size=32",
    "crops.shorter_side=48",
    "eval.crop_size=48",
    "loss.knn_keep=8",
]
SUBSTITUTIONS = {"--trials 50": "--trials 2", "--duration 120": "--duration 1"}
SYSTEM_COMMANDS = {"make", "cd", "git", "rosdep", "pip", "colcon", "source", "ros2", "python3"}
SYSTEM_COMMANDS |= {".", "export", "torchrun"}


def readme_commands() -> list[str]:
    """Every command line of the README's ``bash`` blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for command in " ".join(shlex.quote(w) for w in words).split(" && "):
                if command.strip():
                    commands.append(command.strip())
    return commands


def unim2_commands() -> list[list[str]]:
    commands = []
    for line in readme_commands():
        for old, new in SUBSTITUTIONS.items():
            line = line.replace(old, new)
        words = shlex.split(line)
        if words[0].startswith("unim2_"):
            commands.append(words)
    return commands


def test_every_readme_command_is_known() -> None:
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    for line in readme_commands():
        program = shlex.split(line)[0]
        if program.startswith("unim2_"):
            assert program in scripts, f"README runs {program!r}, which is no console script"
        else:
            assert program in SYSTEM_COMMANDS, f"README command {line!r} is not exercised"


def test_system_commands_refer_to_what_exists() -> None:
    text = README.read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    setup = (REPO_ROOT / "setup.py").read_text()
    launch = (REPO_ROOT / "launch" / "unim2.launch.py").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    for line in readme_commands():
        words = shlex.split(line)
        if words[0] == "make":
            assert re.search(rf"^{words[1]}:", makefile, flags=re.M), line
        if words[:2] == ["ros2", "launch"]:
            assert words[2] == "unim2_ros" and (REPO_ROOT / "launch" / words[3]).is_file()
            for argument in words[4:]:
                name = argument.split(":=")[0]
                assert f'"{name}"' in launch, f"launch file declares no argument {name!r}"
        if words[0] == "pip" and "-e" in words:
            extras = re.findall(r"\[(.*)\]", words[-1])[0].split(",")
            assert all(f'"{extra}":' in setup for extra in extras), line
        if words[0] == "export":
            assert (REPO_ROOT / words[1].split("$PWD/")[1]).is_file()
    assert "make test" in text and "make test" in ci
    assert "TORCH_SPEC" in text and "TORCH_SPEC ?=" in makefile


# --- the commands, run ---------------------------------------------------------------------


def write_bag(path: Path, *, seed: int, n_frames: int) -> None:
    """RGB-D frames of synthetic rooms under the README's topic names."""
    writer = BagImageWriter(path)
    try:
        for frame in generate_sequence(n_frames, width=64, height=48, seed=seed, fps=30.0):
            writer.write_image(RGB_TOPIC, frame.rgb, "rgb8", frame.stamp_ns, "camera")
            writer.write_image(
                DEPTH_TOPIC, frame.depth_mm, "16UC1", frame.stamp_ns + 1_000_000, "camera"
            )
    except BaseException:
        writer.abort()
        raise
    writer.close()


def write_nyu(root: Path, n_frames: int = 12) -> None:
    """The NYU-Depth-v2 layout of the reference code: RGB, HHA, 40-class labels, split lists."""
    rng = np.random.default_rng(0)
    for folder in ("RGB", "HHA", "Labels"):
        (root / folder).mkdir(parents=True)
    stems = [f"{i:04d}" for i in range(1, n_frames + 1)]
    frames = generate_sequence(n_frames, width=64, height=48, seed=3)
    for frame, stem in zip(frames, stems, strict=True):
        cv2.imwrite(str(root / "RGB" / f"{stem}.png"), frame.rgb[..., ::-1])
        hha = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "HHA" / f"{stem}.png"), hha)
        cv2.imwrite(str(root / "Labels" / f"{stem}.png"), (frame.labels % 40 + 1).astype(np.uint8))
    (root / "train.txt").write_text("\n".join(stems[:8]) + "\n")
    (root / "test.txt").write_text("\n".join(stems[8:]) + "\n")


def write_meta_weights(path: Path) -> None:
    """Random DINOv3 ViT-S/16 weights in Meta's checkpoint layout (the licensed file's stand-in)."""
    reference = random_reference("dinov3", 384, 12, 6, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(hf_to_meta(_saved_state(reference, path.parent), "dinov3", 12, 6), path)


def run_script(words: list[str], *, expected_status: int = 0) -> None:
    """Run one ``unim2_*`` command through its console-script entry point, in this process."""
    (script,) = entry_points(group="console_scripts", name=words[0])
    argv = list(words[1:])
    if words[0] in ("unim2_train", "unim2_eval", "unim2_search"):
        for override in SHORT_RUN:
            argv += ["--set", override]
    if words[0] in ("unim2_train", "unim2_eval", "unim2_import_bag", "unim2_replay"):
        argv.append("--no-progress")
    if words[0] == "unim2_record":
        argv.insert(0, words[0])  # a ROS entry point: parses argv[1:] after the ROS arguments
    status = script.load()(argv)
    assert status == expected_status, f"{shlex.join(words)} exited with {status}"


@contextlib.contextmanager
def spinning(context: Context, node: Node) -> Iterator[None]:
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        executor.shutdown()
        thread.join(timeout=5)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run_node(words: list[str], cwd: Path, domain_id: int) -> None:
    """Start the README's node command, feed it one RGB-D frame, expect labels, stop it."""
    command = [sys.executable, "-m", "unim2_ros.segmentation_node", *words[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ROS_DOMAIN_ID": str(domain_id)}
    process = subprocess.Popen(command, cwd=cwd, env=env, text=True, stderr=subprocess.PIPE)
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    try:
        node = Node("readme_camera", context=context)
        labels: list[Image] = []
        info: list[String] = []
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        node.create_subscription(Image, "/unim2_node/labels", labels.append, 10)
        node.create_subscription(String, "/unim2_node/label_info", info.append, latched)
        rgb_pub = node.create_publisher(Image, RGB_TOPIC, qos_profile_sensor_data)
        depth_pub = node.create_publisher(Image, DEPTH_TOPIC, qos_profile_sensor_data)
        frame = next(iter(generate_sequence(1, width=64, height=48, seed=5)))
        with spinning(context, node):
            wait_until(lambda: bool(info) or process.poll() is not None, 120, "label_info")
            assert process.poll() is None, process.communicate()[1][-3000:]
            stamp = node.get_clock().now().to_msg()
            deadline = time.monotonic() + 60
            while not labels and time.monotonic() < deadline:
                header = Header(stamp=stamp, frame_id="camera")
                rgb_pub.publish(array_to_image(frame.rgb, "rgb8", header=header))
                depth_pub.publish(array_to_image(frame.depth_mm, "16UC1", header=header))
                time.sleep(0.5)
            assert labels, "the node published no labels"
            assert (labels[0].height, labels[0].width) == (48, 64)
            assert labels[0].header.stamp == stamp
            assert len(json.loads(info[0].data)["labels"]) == 16  # model.n_clusters of the config
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.ros
def test_readme_commands_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ros_domain_id: int
) -> None:
    (tmp_path / "config").symlink_to(REPO_ROOT / "config")
    write_bag(tmp_path / "bags" / "run1", seed=1, n_frames=120)
    write_bag(tmp_path / "bags" / "run2", seed=2, n_frames=6)
    write_nyu(tmp_path / "data" / "NYUDepthv2")
    write_meta_weights(tmp_path / WEIGHTS)
    monkeypatch.chdir(tmp_path)
    commands = unim2_commands()
    assert [c[0] for c in commands] == [
        "unim2_record",
        "unim2_import_bag",
        "unim2_train",
        "unim2_replay",
        "unim2_node",
        "unim2_export",
        "unim2_node",  # the same model on ONNX Runtime
        "unim2_train",
        "unim2_eval",
        "unim2_eval",
        "unim2_search",
    ]
    for words in commands:
        if words[0] == "unim2_record":
            words = [w.replace("bags/run1", "bags/recorded") for w in words]
            run_script(words, expected_status=1)  # nobody publishes here: nothing recorded
            assert BagReader(tmp_path / "bags" / "recorded").info.message_count == 0
        elif words[0] == "unim2_node":
            run_node(words, tmp_path, ros_domain_id)
        else:
            run_script(words)

    imported = sorted((tmp_path / "data" / "my_robot" / "rgb").iterdir())
    assert len(imported) == 24  # 120 groups, every fifth kept
    robot = yaml.safe_load((tmp_path / "runs" / "my_robot" / "config.yaml").read_text())
    assert robot["backbone"]["weights"] == WEIGHTS and robot["train"]["steps"] == 2
    assert (tmp_path / "runs" / "my_robot" / "loss.png").is_file()
    replay = json.loads((tmp_path / "replay" / "run2" / "replay.json").read_text())
    assert replay["frames"] == replay["frames_with_output"] == 6
    nyu = json.loads((tmp_path / "runs" / "nyu" / "eval" / "metrics.json").read_text())
    assert 0.0 <= nyu["miou"] <= 100.0 and nyu["protocol"] == "paper"
    assert (tmp_path / "runs" / "nyu" / "baselines").is_dir()
    assert (tmp_path / "runs" / "nyu" / "search" / "best_config.yaml").is_file()
