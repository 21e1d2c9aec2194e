"""The rclpy names unim2_ros needs that rclpy does not export publicly, reached in one place.

rclpy raises ``RCLError`` (an rcl call failed: an unreadable params file, an invalid topic
name, a context already shut down) and ``UnknownROSArgsError`` from its C extension, but no
public module re-exports them (``rclpy.exceptions`` re-exports only ``InvalidHandle`` and
``TimerCancelledError``). They are taken from ``rclpy.impl.implementation_singleton``, the
entry point to the C extension that rclpy's own modules use, instead of the private
``rclpy._rclpy_pybind11`` module.

A node's parameter overrides (the values given to its name by ``-p`` and params files) have no
public getter in rclpy (rclcpp has ``get_parameter_overrides()``), and rebuilding them from the
context's arguments would repeat rcl's node-name and wildcard matching; so
:func:`parameter_override_names` reads rclpy's private attribute, here only, where a change in
rclpy breaks one function.
"""

from __future__ import annotations

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node

__all__ = ["RCLError", "UnknownROSArgsError", "parameter_override_names"]

RCLError = _rclpy.RCLError
UnknownROSArgsError = _rclpy.UnknownROSArgsError


def parameter_override_names(node: Node) -> list[str]:
    """Names of every parameter value given to ``node``'s name, declared or not."""
    return list(node._parameter_overrides)
