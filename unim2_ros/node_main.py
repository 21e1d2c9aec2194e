"""``unim2_node``: the node's command, light enough to answer Ctrl-C while it is still loading.

Importing the node pulls in rclpy, torch and the model code, which takes seconds; a Ctrl-C in
that time would otherwise end in a ``KeyboardInterrupt`` traceback from deep inside an import
(or, inside rclpy's C extension, an ``ImportError``). This module imports the node only inside
:func:`main`, where such an interruption is a quiet exit.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


class _Interrupts:
    """Counts SIGINTs while the node's modules load, and raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, number: int, frame: FrameType | None) -> None:
        self.count += 1
        raise KeyboardInterrupt


def main(args: list[str] | None = None) -> int:
    """Loads the node's modules and runs :func:`unim2_ros.segmentation_node.main`.

    A Ctrl-C while they load exits quietly with status 0, as a Ctrl-C while the node runs does.
    """
    interrupts = _Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts)
    try:
        from unim2_ros.segmentation_node import main as run_node
    except KeyboardInterrupt:
        return 0
    except ImportError:
        if interrupts.count:
            return 0  # the interrupt landed in a C extension's initialisation
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return run_node(args)


if __name__ == "__main__":
    sys.exit(main())
