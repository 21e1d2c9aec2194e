"""Exceptions of unim2_ros, deriving from unim2_core's Unim2Error.

Command-line entry points catch Unim2Error, so these are reported like the core's errors:
``ERROR: <message>`` and exit status 1.
"""

from __future__ import annotations

from unim2_core.errors import Unim2Error


class ImageConversionError(Unim2Error):
    """A sensor_msgs/Image cannot be converted to or from an array (encoding, sizes, dtype)."""


class BagError(Unim2Error):
    """A rosbag2 recording cannot be opened, read or written as requested."""


class InputRejectedError(ImageConversionError):
    """An input image message is unusable for its modality; ``reason`` classifies it.

    Attributes:
        reason: A short snake_case word for counting (``wrong_encoding``, ``malformed``,
            ``empty``), as reported in the node's diagnostics.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReplayError(Unim2Error):
    """A live replay cannot reach the segmentation node, or the node does not answer."""


class DemoError(Unim2Error):
    """A stage of ``unim2_demo`` did not produce what the next stage needs."""


class NodeConnectionError(ReplayError):
    """The node did not appear, answer or connect within the connect timeout (it may still be
    starting: trying again later can succeed)."""


class RosStartError(Unim2Error):
    """rclpy refused a command's ROS arguments or an rcl call failed (the message says which)."""
