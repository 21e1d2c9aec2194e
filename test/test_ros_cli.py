"""The ROS commands' error convention (:mod:`unim2_ros.ros_cli`) and the one place that reaches
rclpy internals (:mod:`unim2_ros.rclpy_internals`), with real rclpy contexts and nodes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node

from unim2_core.errors import ConfigError, Interrupted
from unim2_ros.rclpy_internals import RCLError, UnknownROSArgsError, parameter_override_names
from unim2_ros.ros_cli import run_ros_cli


def _init(args: list[str], domain_id: int) -> int:
    context = Context()
    rclpy.init(args=args, context=context, domain_id=domain_id)
    rclpy.shutdown(context=context)
    return 0


def test_unknown_ros_arguments_are_one_error_line_pointing_to_help(
    ros_domain_id: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UnknownROSArgsError, match="--bogus"):
        _init(["prog", "--ros-args", "--bogus"], ros_domain_id)
    status = run_ros_cli(lambda: _init(["prog", "--ros-args", "--bogus"], ros_domain_id), prog="p")
    assert status == 1
    assert capsys.readouterr().err == "ERROR: unknown ROS arguments ['--bogus']; see p --help\n"


def test_rcl_failures_are_one_error_line(
    tmp_path: Path, ros_domain_id: int, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    args = ["prog", "--ros-args", "--params-file", str(missing)]
    with pytest.raises(RCLError, match="Couldn't parse params file"):
        _init(args, ros_domain_id)
    assert run_ros_cli(lambda: _init(args, ros_domain_id), prog="p") == 1
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("ERROR: ")]
    assert (
        len(errors) == 1 and f"Couldn't parse params file: '--params-file {missing}'" in errors[0]
    )
    assert not any("Traceback" in line for line in lines)


def _raise(error: BaseException) -> int:
    raise error


@pytest.mark.parametrize(
    ("error", "status", "stderr"),
    [
        (ConfigError("bad key 'x'"), 1, "ERROR: bad key 'x'\n"),
        (KeyboardInterrupt(), 130, "interrupted\n"),
        (Interrupted("saved at step 3", signal.SIGTERM), 143, "interrupted: saved at step 3\n"),
    ],
)
def test_our_errors_and_interrupts_keep_the_core_convention(
    error: BaseException, status: int, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_ros_cli(lambda: _raise(error), prog="p") == status
    assert capsys.readouterr().err == stderr


def test_body_status_is_returned(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_ros_cli(lambda: 0, prog="p") == 0
    assert run_ros_cli(lambda: 3, prog="p") == 3
    assert capsys.readouterr().err == ""


def test_parameter_override_names_lists_values_given_to_the_node_declared_or_not(
    tmp_path: Path, ros_domain_id: int
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "unim2_overrides:\n  ros__parameters:\n    sync:\n      slope: 0.1\n"
        "another_node:\n  ros__parameters:\n    model:\n      device: cpu\n"
    )
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        node = Node(
            "unim2_overrides",
            context=context,
            cli_args=["--ros-args", "--params-file", str(params), "-p", "output.overlay:=false"],
        )
        try:
            assert sorted(parameter_override_names(node)) == ["output.overlay", "sync.slope"]
            node.declare_parameter("sync.slope", 0.5)
            assert sorted(parameter_override_names(node)) == ["output.overlay", "sync.slope"]
            assert node.get_parameter("sync.slope").value == 0.1
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
