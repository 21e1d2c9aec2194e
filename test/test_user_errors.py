"""A new user's mistakes, each run as the real command in a subprocess (issue 11).

Every case sets up tiny real inputs in ``tmp_path`` (a bag, a config, a folder of someone's
files, a text file renamed ``.pt``), runs one command and checks that

- it exits with the expected status,
- stderr holds exactly one ``ERROR:`` line matching the expected message and no traceback,
- every file that existed before is still there, byte for byte (new files may appear).

The cases stop before any model runs, so each costs about one interpreter start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import yaml
from tiny_setup import tiny_config_dict

from unim2_ros.bag_io import BagImageWriter

REPO = Path(__file__).resolve().parents[1]
RGB_TOPIC = "/camera/color/image_raw"
NOT_A_CHECKPOINT = {
    "text": b"hello world\n",
    "yaml": b"model:\n  code_dim: 70\n",
    "png": (REPO / "test" / "data" / "nyu_rgbd_sample" / "rgb" / "0003.png").read_bytes(),
    "empty": b"",
}
REASONS = {
    "text": "it is a text file, not a torch.save file",
    "yaml": "it is a text file, not a torch.save file",
    "png": "it is a PNG image, not a torch.save file",
    "empty": "the file is empty",
}


def _bag(path: Path) -> Path:
    """A two-frame rgb8 bag."""
    with BagImageWriter(path) as writer:
        for index in range(2):
            image = np.full((8, 8, 3), 40 * index, np.uint8)
            writer.write_image(RGB_TOPIC, image, "rgb8", 10**9 * (index + 1), "color")
    return path


def _config(tmp: Path, **overrides: object) -> Path:
    data = tiny_config_dict(tmp / "data", tmp / "run", None)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition("__")
        data[section][key] = value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _someones_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("irreplaceable\n")
    (folder / "rgb").mkdir(exist_ok=True)
    (folder / "rgb" / "0001.png").write_bytes(NOT_A_CHECKPOINT["png"])


def _training_run(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text('{"steps": 3300, "test": {"miou": 36.9}}\n')
    (folder / "model.unim2.pt").write_bytes(b"PK\x03\x04 stands for a real checkpoint")
    (folder / "metrics.jsonl").write_text('{"step": 10}\n')


def _node_params(path: Path, node: str, values: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({node: {"ros__parameters": values}}))
    return path


class Case(NamedTuple):
    """One mistake: files to set up, the command, and what the user must see."""

    setup: Callable[[Path], list[str]]
    status: int
    message: str
    """Regex the single ``ERROR:`` line must match (``""``: no ERROR line at all)."""


def _import_into_someones_folder(tmp: Path) -> list[str]:
    _someones_files(tmp / "mine")
    bag = _bag(tmp / "bag")
    return [
        "unim2_ros.bag_import",
        str(bag),
        "--out",
        str(tmp / "mine"),
        "--topic",
        f"rgb={RGB_TOPIC}",
        "--no-progress",
    ]


def _import_a_second_bag(tmp: Path) -> list[str]:
    first, second = _bag(tmp / "first"), _bag(tmp / "second")
    args = ["--out", str(tmp / "data"), "--topic", f"rgb={RGB_TOPIC}", "--no-progress"]
    subprocess.run(
        _command(["unim2_ros.bag_import", str(first), *args]),
        check=True,
        env=_environment(),
        capture_output=True,
        timeout=120,
    )
    return ["unim2_ros.bag_import", str(second), *args]


def _eval_into_a_run_folder(tmp: Path) -> list[str]:
    _training_run(tmp / "run")
    return [
        "unim2_train.evaluate",
        "--config",
        str(_config(tmp)),
        "--checkpoint",
        str(tmp / "run" / "model.unim2.pt"),
        "--out",
        str(tmp / "run"),
    ]


def _demo_restart_on_someones_folder(tmp: Path) -> list[str]:
    _someones_files(tmp / "mine")
    return ["unim2_demo.run", "--quick", "--fresh", "--out", str(tmp / "mine")]


def _demo_on_cuda(tmp: Path) -> list[str]:
    return ["unim2_demo.run", "--quick", "--out", str(tmp / "demo"), "--device", "cuda"]


def _train_on_cuda(tmp: Path) -> list[str]:
    return ["unim2_train.train", "--config", str(_config(tmp)), "--device", "cuda"]


def _train_on_a_gpu_index(tmp: Path) -> list[str]:
    return ["unim2_train.train", "--config", str(_config(tmp, train__device="cuda:1"))]


def _not_a_checkpoint(kind: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "model.pt").write_bytes(NOT_A_CHECKPOINT[kind])
        return [
            "unim2_train.evaluate",
            "--config",
            str(_config(tmp)),
            "--checkpoint",
            str(tmp / "model.pt"),
        ]

    return setup


def _not_backbone_weights(tmp: Path) -> list[str]:
    (tmp / "weights.pth").write_bytes(NOT_A_CHECKPOINT["text"])
    return [
        "unim2_train.train",
        "--config",
        str(_config(tmp)),
        "--set",
        f"backbone.weights={tmp / 'weights.pth'}",
        "--no-progress",
    ]


def _record_invalid_topic(tmp: Path) -> list[str]:
    return ["unim2_ros.bag_record", "bad topic!", "--out", str(tmp / "bag")]


def _record_missing_topic(tmp: Path) -> list[str]:
    return [
        "unim2_ros.bag_record",
        "/never_published",
        "--out",
        str(tmp / "bag"),
        "--duration",
        "0.5",
    ]


def _node_misspelt_parameter(tmp: Path) -> list[str]:
    params = _node_params(
        tmp / "p.yaml", "unim2_node", {"model.checkpoint": "x.pt", "sync.slope": 0.1}
    )
    return ["unim2_ros.node_main", "--ros-args", "--params-file", str(params)]


def _node_misspelt_group(tmp: Path) -> list[str]:
    return ["unim2_ros.node_main", "--ros-args", "-p", "outputs.overlay:=false"]


def _node_params_under_another_name(tmp: Path) -> list[str]:
    params = _node_params(tmp / "p.yaml", "segmenter", {"model.checkpoint": "x.pt"})
    return ["unim2_ros.node_main", "--ros-args", "--params-file", str(params)]


def _node_unknown_ros_argument(tmp: Path) -> list[str]:
    return ["unim2_ros.node_main", "--ros-args", "--bogus"]


def _node_device(tmp: Path) -> list[str]:
    return ["unim2_ros.node_main", "--ros-args", "-p", "model.device:=gpu"]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch")
CASES = [
    pytest.param(
        Case(
            _import_into_someones_folder,
            1,
            r"--out '.*mine' already holds files \(rgb, "
            r"thesis.tex\) that no import wrote",
        ),
        id="import_bag-into-a-folder-of-other-files",
    ),
    pytest.param(
        Case(_import_a_second_bag, 1, r"holds frames imported from '.*first'.*pass --append"),
        id="import_bag-second-bag-into-an-import",
    ),
    pytest.param(
        Case(
            _eval_into_a_run_folder,
            1,
            r"--out '.*run' already holds files that are not an "
            r"evaluation report \(metrics.json, metrics.jsonl, model.unim2.pt\)",
        ),
        id="eval-out-into-a-training-run",
    ),
    pytest.param(
        Case(
            _demo_restart_on_someones_folder,
            1,
            r"--restart would delete '.*mine', which "
            r"holds no demo",
        ),
        id="demo-fresh-on-a-folder-that-is-no-demo",
    ),
    pytest.param(
        Case(_train_on_cuda, 1, r"device 'cuda' was requested but torch .* sees no CUDA GPU"),
        id="train-device-cuda-without-gpu",
        marks=NO_CUDA,
    ),
    pytest.param(
        Case(_demo_on_cuda, 1, r"device 'cuda' was requested but torch .* sees no CUDA GPU"),
        id="demo-device-cuda-without-gpu",
        marks=NO_CUDA,
    ),
    pytest.param(
        Case(_train_on_a_gpu_index, 1, r"device 'cuda:1' was requested but torch .* no CUDA"),
        id="train-config-device-cuda-1-without-gpu",
        marks=NO_CUDA,
    ),
    *(
        pytest.param(
            Case(
                _not_a_checkpoint(kind),
                1,
                rf"'.*model.pt' is not a unim2 checkpoint: "
                rf"{REASONS[kind]}$",
            ),
            id=f"eval-{kind}-file-renamed-pt",
        )
        for kind in NOT_A_CHECKPOINT
    ),
    pytest.param(
        Case(
            _not_backbone_weights,
            1,
            r"'.*weights.pth' is not a backbone weight file: it is "
            r"a text file",
        ),
        id="train-text-file-as-backbone-weights",
    ),
    pytest.param(
        Case(
            _record_invalid_topic,
            1,
            r"^ERROR: invalid topic name 'bad topic!': topic name "
            r"must not contain",
        ),
        id="record-invalid-topic-name",
    ),
    pytest.param(
        Case(
            _record_missing_topic,
            1,
            r"nothing was recorded into '.*bag': '/never_published' "
            r"never appeared",
        ),
        id="record-topic-that-never-appears",
    ),
    pytest.param(
        Case(
            _node_misspelt_parameter,
            1,
            r"^ERROR: unknown parameter 'sync.slope' \(did you "
            r"mean 'sync.slop'\?\)",
        ),
        id="node-misspelt-parameter-in-params-file",
    ),
    pytest.param(
        Case(
            _node_misspelt_group,
            1,
            r"unknown parameter 'outputs.overlay' \(did you mean "
            r"'output.overlay'\?\)",
        ),
        id="node-outputs-instead-of-output",
    ),
    pytest.param(
        Case(_node_params_under_another_name, 1, r"parameter model.checkpoint is not set"),
        id="node-params-file-under-another-node-name",
    ),
    pytest.param(
        Case(_node_unknown_ros_argument, 1, r"unknown ROS arguments \['--bogus'\]"),
        id="node-unknown-ros-argument",
    ),
    pytest.param(
        Case(_node_device, 1, r"model.device must be one of cpu, cuda, cuda:N .*; got 'gpu'"),
        id="node-bad-device",
    ),
]


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
    }


def _command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", *argv]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("case", CASES)
def test_mistake_gets_one_line_and_leaves_every_file_as_it_was(
    case: Case, tmp_path: Path, ros_domain_id: int
) -> None:
    argv = case.setup(tmp_path)
    before = _snapshot(tmp_path)
    result = subprocess.run(
        _command(argv), env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == case.status, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr
    assert re.search(case.message, errors[0]), errors[0]
    assert "weights_only" not in errors[0] and "\x1b" not in errors[0]
    after = _snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before


def test_params_file_under_another_node_name_is_named(tmp_path: Path, ros_domain_id: int) -> None:
    argv = _node_params_under_another_name(tmp_path)
    result = subprocess.run(
        _command(argv), env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.stderr.splitlines()[0] == (
        f"WARNING: no parameter was given to this node's name 'unim2_node': the params file(s) "
        f"{tmp_path / 'p.yaml'} address only ['segmenter']; put the parameters under "
        "'unim2_node:' or '/**:'"
    )


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--ros-args", "--help"]])
def test_node_help_lists_its_parameters(argv: list[str], ros_domain_id: int) -> None:
    result = subprocess.run(
        _command(["unim2_ros.node_main", *argv]),
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: unim2_node")
    assert "  sync.slop (double, default 0.05" in result.stdout
    assert "  model.checkpoint (string, required, read-only)" in result.stdout


def test_ctrl_c_while_the_node_loads_exits_quietly(tmp_path: Path, ros_domain_id: int) -> None:
    process = subprocess.Popen(
        _command(["unim2_ros.node_main", "--ros-args", "-p", "model.checkpoint:=x.pt"]),
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # importing torch and rclpy takes longer
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
