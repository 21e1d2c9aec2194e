"""The segmentation node as a ROS 2 managed (lifecycle) node: ``unim2_lifecycle_node``.

Same parameters, topics and diagnostics as ``unim2_node`` (:mod:`unim2_ros.segmentation_node`,
whose logic it shares); what happens when is driven through the standard lifecycle services
(``~/change_state``, ``~/get_state``; ``ros2 lifecycle set /unim2_node configure``):

- configure: declares and checks the parameters, reads the checkpoint and loads the model
  (the slow step); a bad parameter or file fails the transition (back to unconfigured) with
  the reason logged;
- activate: subscribes to the inputs, creates the outputs and ``/diagnostics``, latches
  ``~/label_info``;
- deactivate: unsubscribes and removes the outputs; the model stays loaded, so activating
  again is immediate;
- cleanup: stops the inference thread and frees the model;
- shutdown: whatever of deactivate and cleanup is still needed.

It starts unconfigured, as every managed node does.
"""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from unim2_core.errors import Unim2Error
from unim2_ros.ros_cli import run_ros_cli
from unim2_ros.segmentation_node import SegmentationPipeline, run_until_shutdown


class LifecycleSegmentationNode(SegmentationPipeline, LifecycleNode):
    """Segments synchronised RGB + auxiliary images once configured and activated.

    Args:
        node_name: The node's name (remappable with ``__node``).
        **kwargs: Passed to ``rclpy.lifecycle.LifecycleNode`` (``context``,
            ``parameter_overrides``, ``cli_args``, ``namespace``...).
    """

    def __init__(self, node_name: str = "unim2_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._init_pipeline()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Loads the model; an unusable parameter or file fails the transition."""
        try:
            self._configure()
        except Unim2Error as err:
            self.get_logger().error(f"configure failed: {err}")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribes and publishes."""
        self._activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stops subscribing and publishing; the model stays loaded."""
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Frees the model."""
        self._cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Deactivates and cleans up as needed, from any primary state."""
        if self._active:
            self._deactivate()
        self._cleanup()
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        """Stops input and output if still active, frees the model, destroys the node."""
        if self._active:
            self._deactivate()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Runs the managed node until SIGINT / SIGTERM (configure it through its services)."""

    def body() -> int:
        with rclpy.init(args=args):
            try:
                node = LifecycleSegmentationNode()
            except (KeyboardInterrupt, ExternalShutdownException):
                return 0
            run_until_shutdown(node)
        return 0

    return run_ros_cli(body, prog="unim2_lifecycle_node")


if __name__ == "__main__":
    sys.exit(main())
