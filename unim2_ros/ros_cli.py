"""The command-line convention of :func:`unim2_core.cli.run_cli` for commands that start rclpy.

rclpy refuses to start with its own exceptions (unknown ROS arguments, an rcl failure such as
an unreadable params file); they are our users' mistakes as much as a bad flag is, so they
become one ``ERROR:`` line and exit status 1 like every other error, instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from unim2_core.cli import run_cli
from unim2_ros.errors import RosStartError
from unim2_ros.rclpy_internals import RCLError, UnknownROSArgsError

__all__ = ["run_ros_cli"]


def run_ros_cli(body: Callable[[], int], *, prog: str) -> int:
    """Runs ``body`` as :func:`unim2_core.cli.run_cli` does, reporting rclpy's errors too.

    Args:
        body: The command; returns its exit status.
        prog: The command's name, pointed to for ``--help`` when ROS arguments are unknown.

    Returns:
        ``body``'s status; 1 after an ``ERROR:`` line for our errors and rclpy's, 130 after
        Ctrl-C, 128 + the signal number after :class:`unim2_core.errors.Interrupted`.
    """

    def guarded() -> int:
        try:
            return body()
        except UnknownROSArgsError as err:
            raise RosStartError(f"unknown ROS arguments {err}; see {prog} --help") from err
        except RCLError as err:
            raise RosStartError(str(err)) from err

    return run_cli(guarded)
