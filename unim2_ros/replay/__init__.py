"""unim2_replay: the segmentation pipeline evaluated on a recorded rosbag2, offline or live.

- :mod:`~unim2_ros.replay.offline`: the bag's frame groups segmented in this process;
- :mod:`~unim2_ros.replay.live`: the bag played into the running ``unim2_node``, its outputs
  recorded and evaluated;
- :mod:`~unim2_ros.replay.common`: what both set up (model topics, ground truth, frame stream,
  output folder);
- :mod:`~unim2_ros.replay.cli`: the ``unim2_replay`` command.

Ground truth (``unim2_core.evaluation.ground_truth``), scoring, video, the output folder and the
report (``unim2_core.evaluation.replay_*``) are ROS-free and live in the core.
"""

from unim2_core.evaluation.ground_truth import LabelFolder
from unim2_core.evaluation.replay_writer import ReplayResult
from unim2_ros.replay.cli import EXIT_ERROR, main
from unim2_ros.replay.common import NODE_QUEUE_SIZE, NODE_SLOP
from unim2_ros.replay.live import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_NODE,
    DEFAULT_TIMEOUT_S,
    OUTPUT_BAG,
    replay_live,
    split_node_name,
)
from unim2_ros.replay.offline import replay_offline

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_NODE",
    "DEFAULT_TIMEOUT_S",
    "EXIT_ERROR",
    "NODE_QUEUE_SIZE",
    "NODE_SLOP",
    "OUTPUT_BAG",
    "LabelFolder",
    "ReplayResult",
    "main",
    "replay_live",
    "replay_offline",
    "split_node_name",
]
