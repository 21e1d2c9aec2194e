"""``unim2_import_bag``: turn a robot's rosbag2 recording into training data in one command.

    unim2_import_bag my_bags/run1 --out data/my_robot \\
        --topic rgb=/camera/color/image_raw --topic depth=/camera/depth/image_rect_raw

Reads the named Image topics (sqlite3 or MCAP bag), groups them with the node's approximate-time
synchroniser and writes each group into the plain folder layout of
``unim2_core.data.datasets.folder`` as frame ``<group index>_<rgb stamp ns>`` (e.g.
``000123_1700000012300000000``), so a training config with ``dataset.kind: folder`` reads it.

The group index counts every synchronised group of the bag, also those ``--every`` skips, so a
frame keeps its stem whatever the subsampling. Each file is written atomically: an interrupted
import keeps the frames already written, and running it again overwrites the same stems with
the same content. ``--split NAME`` writes ``splits/NAME.txt`` listing the frames of this run.

The output folder must be new, empty, hold only a ``dataset.yaml``, or be an earlier import of
the same bag with the same settings (recorded in the hidden ``.unim2_import.json``): importing
into any other folder would overwrite its files or mix two recordings, so it is refused unless
``--append`` asks to add this bag's frames to an earlier import.

Messages that cannot be decoded are skipped and counted (a warning lists them); a named topic
missing from the bag, or of another type than sensor_msgs/msg/Image, is an error. An AoLP topic
(32FC1 angle in radians, as the node takes it) is stored as the folder layout's (sin, cos) pair.

Calibration: the ``camera_info`` topic beside each imported image topic
(``/cam/depth/image_raw`` -> ``/cam/depth/camera_info``, as ``unim2_record`` records it) is read
when the bag has it. Its distinct calibrations are kept in the import record, returned
(:attr:`ImportSummary.cameras`) and printed as ``[fx, fy, cx, cy, width, height]``. A topic
with exactly one calibrated camera is written into ``dataset.yaml`` as
``intrinsics.<modality>``, where training finds it for a ``depth_hha`` encoding whose config
gives none. ``dataset.yaml`` is created when absent and keeps its other keys (not its
comments: it is rewritten only when a key is added); a different camera already recorded there
for the modality is refused (importing another bag with the same camera, ``--append``, is
fine). Several calibrations, or a camera_info topic without a calibrated camera (all-zero
matrix), write nothing: the printout says so, and a ``depth_hha`` training config must then
give the intrinsics itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from unim2_core.atomic import atomic_write_text
from unim2_core.cli import add_progress_argument, positive_float, positive_int, run_cli
from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.datasets.base import FrameGroup
from unim2_core.data.datasets.folder import (
    DATASET_YAML,
    SPLITS_DIR,
    DatasetYaml,
    load_dataset_yaml,
    write_dataset_yaml,
    write_frame_group,
)
from unim2_core.errors import DataError
from unim2_ros.bag_io import (
    DEFAULT_QUEUE_SIZE,
    DEFAULT_SLOP,
    BagReader,
    CameraInfoTrack,
    FrameStats,
    add_topic_argument,
    camera_info_topic,
    class_names_argument,
    parsed_topics,
)

_LISTED_SKIPS = 5
IMPORT_RECORD = ".unim2_import.json"
"""Hidden file (the dataset reader ignores it) listing the imports written into a folder."""


class ImportedCamera(NamedTuple):
    """The calibration found beside one imported image topic.

    Attributes:
        topic: The ``camera_info`` topic.
        calibrations: Its distinct calibrations in stamp order; empty when it holds no
            calibrated camera.
    """

    topic: str
    calibrations: tuple[CameraIntrinsics, ...]


class ImportSummary(NamedTuple):
    """What an import wrote.

    Attributes:
        stems: Frames written, in bag order.
        stats: What the bag reader did with each topic's messages.
        cameras: Modality -> the calibration beside its image topic, for the modalities whose
            ``camera_info`` topic is in the bag.
        recorded: The modalities of ``cameras`` whose intrinsics ``dataset.yaml`` gives
            (written by this import or an earlier one of the same camera).
    """

    stems: tuple[str, ...]
    stats: FrameStats
    cameras: Mapping[str, ImportedCamera]
    recorded: tuple[str, ...]


def import_bag(
    bag: Path,
    out: Path,
    topics: Mapping[str, str],
    *,
    label_topic: str | None = None,
    class_names: Sequence[str] | None = None,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    slop: float = DEFAULT_SLOP,
    every: int = 1,
    split: str | None = None,
    append: bool = False,
    progress: bool = False,
) -> ImportSummary:
    """Write every ``every``-th synchronised frame group of ``bag`` into the folder ``out``.

    Args:
        bag: rosbag2 folder, ``.db3`` or ``.mcap``.
        out: Dataset folder (created if needed; existing frames of other stems are kept).
        topics: Modality -> Image topic, "rgb" required.
        label_topic: Image topic of class ids, written to ``labels/``.
        class_names: Names of the label ids, written to ``dataset.yaml`` (needed with
            labels unless ``out/dataset.yaml`` already names the classes).
        queue_size: Synchroniser queue size per topic.
        slop: Largest stamp spread of a group, in seconds.
        every: Keep one group in ``every``.
        split: Write ``splits/<split>.txt`` listing the frames written.
        append: Add the frames to an earlier import of another bag in ``out``.
        progress: Show a progress bar on stderr.

    Raises:
        ValueError: ``every`` below 1, or a topic mapping or synchroniser argument the bag
            reader refuses.
        BagError: The bag cannot be read or lacks a named topic, or the ``camera_info``
            topic beside an image topic holds another type or an undecodable message.
        DataError: ``out`` holds other files (see the module docstring), class names missing
            or disagreeing with ``dataset.yaml``, a calibration differing from the
            ``intrinsics`` there, no group found, frames whose modalities differ in size, or a
            file that cannot be written.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every!r}")
    source: dict[str, object] = {
        "bag": str(Path(bag).resolve()),
        "topics": dict(topics),
        "labels": label_topic,
        "slop": slop,
        "queue_size": queue_size,
        "every": every,
    }
    with BagReader(bag) as reader:
        stream = reader.frame_groups(
            topics, label_topic=label_topic, queue_size=queue_size, slop=slop
        )
        cameras = _cameras(reader, topics)
        if cameras:
            source["camera_info"] = {
                modality: {
                    "topic": camera.topic,
                    "intrinsics": [c.to_list() for c in camera.calibrations],
                }
                for modality, camera in cameras.items()
            }
        earlier = _check_output_folder(out, source, append=append)
        recorded = _prepare_dataset_yaml(
            out,
            labelled=label_topic is not None or class_names is not None,
            class_names=class_names,
            cameras=cameras,
        )
        rgb_count = reader.info.topics[topics["rgb"]].message_count
        stems: list[str] = []
        groups = tqdm(stream, total=rgb_count, unit="group", disable=not progress)
        for index, frame in enumerate(groups):
            if index % every:
                continue
            stem = f"{index:06d}_{frame.stamp_ns}"
            if append and source not in earlier and (out / "rgb" / f"{stem}.png").exists():
                raise DataError(
                    f"frame {stem!r} of bag {str(bag)!r} is already in {str(out)!r} from "
                    "another import; import this bag into its own folder"
                )
            if not stems and source not in earlier:
                _write_text(out / IMPORT_RECORD, json.dumps([*earlier, source], indent=2) + "\n")
            write_frame_group(out, FrameGroup(stem, _folder_arrays(frame.arrays), frame.labels))
            stems.append(stem)
        stats = stream.stats()
    if not stems:
        counts = ", ".join(f"{topic}: {n}" for topic, n in stats.received.items())
        raise DataError(
            f"no synchronised frame group in bag {str(bag)!r} (messages read per topic: "
            f"{counts}); check the topics and try a larger slop than {slop} s"
        )
    if split is not None:
        _write_text(out / SPLITS_DIR / f"{split}.txt", "".join(f"{s}\n" for s in stems))
    return ImportSummary(tuple(stems), stats, cameras, recorded)


def _cameras(reader: BagReader, topics: Mapping[str, str]) -> dict[str, ImportedCamera]:
    """The calibration beside each image topic whose ``camera_info`` topic is in the bag.

    Raises:
        BagError: Such a topic is not a CameraInfo topic, or a message cannot be decoded.
    """
    cameras: dict[str, ImportedCamera] = {}
    for modality, image_topic in topics.items():
        topic = camera_info_topic(image_topic)
        if topic not in reader.info.topics:
            continue
        try:
            calibrations = tuple(CameraInfoTrack(reader, topic).calibrations)
        except DataError:  # only uncalibrated messages: reported, not fatal
            calibrations = ()
        cameras[modality] = ImportedCamera(topic, calibrations)
    return cameras


def _folder_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The bag's arrays in the folder convention: an AoLP angle (32FC1, radians in [0, pi])
    becomes the float32 HxWx2 (sin, cos) pair the folder layout stores."""
    converted = dict(arrays)
    angle = converted.get("aolp")
    if angle is not None and angle.ndim == 2:
        converted["aolp"] = np.stack([np.sin(angle), np.cos(angle)], axis=-1).astype(np.float32)
    return converted


def _check_output_folder(out: Path, source: dict[str, object], *, append: bool) -> list[Any]:
    """The imports recorded in ``out``, after refusing a folder this import would damage.

    Raises:
        DataError: ``out`` is a file, holds files but no import record (other data), or
            holds an import of something else and ``append`` is not set.
    """
    if not out.exists():
        return []
    if not out.is_dir():
        raise DataError(f"--out {str(out)!r} is a file, not a folder")
    record = out / IMPORT_RECORD
    if record.is_file():
        try:
            earlier = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read the import record {str(record)!r}: {err}") from err
        if not isinstance(earlier, list):
            raise DataError(f"{str(record)!r} is not an import record (a list)")
        if source in earlier or append:
            return earlier
        raise DataError(
            f"--out {str(out)!r} holds frames imported from {earlier[-1].get('bag')!r} (or "
            "with other topics or settings); pass --append to add this bag's frames to them, "
            "or choose a new folder"
        )
    others = sorted(p.name for p in out.iterdir() if p.name != DATASET_YAML)
    if others:
        shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
        raise DataError(
            f"--out {str(out)!r} already holds files ({shown}) that no import wrote; importing "
            "would overwrite or mix with them. Choose a new or empty folder"
        )
    return []


def _prepare_dataset_yaml(
    out: Path,
    *,
    labelled: bool,
    class_names: Sequence[str] | None,
    cameras: Mapping[str, ImportedCamera],
) -> tuple[str, ...]:
    """Make sure ``out/dataset.yaml`` names the label classes (when ``labelled``) and records
    each camera that is the one calibration of its topic; the file is written (created when
    absent, other keys kept) only when it lacks one of them.

    Returns:
        The modalities of ``cameras`` whose intrinsics ``dataset.yaml`` now gives.

    Raises:
        DataError: Labels without class names, class names disagreeing with the file's, or
            a calibration differing from the file's ``intrinsics`` of its modality.
    """
    path = out / DATASET_YAML
    existing = load_dataset_yaml(path) if path.is_file() else DatasetYaml()
    config = DatasetYaml(**existing)
    if labelled:
        _add_class_names(config, class_names, path)
    known = dict(config.get("intrinsics", {}))
    for modality, camera in cameras.items():
        recorded = known.get(modality)
        if recorded is not None and any(c != recorded for c in camera.calibrations):
            found = ", ".join(str(c.to_list()) for c in camera.calibrations)
            raise DataError(
                f"the {modality} camera of this bag ({camera.topic}: {found}) differs from "
                f"key 'intrinsics.{modality}' of {str(path)!r} ({recorded.to_list()}), the camera "
                "of the frames already there; import this bag into its own folder"
            )
        if recorded is None and len(camera.calibrations) == 1:
            known[modality] = camera.calibrations[0]
    if known:
        config["intrinsics"] = known
    if config != existing:
        write_dataset_yaml(path, config)
    return tuple(modality for modality in cameras if modality in known)


def _add_class_names(config: DatasetYaml, class_names: Sequence[str] | None, path: Path) -> None:
    """Put ``class_names`` into ``config`` (the parsed ``path``), or check them against its own.

    Raises:
        DataError: No class names on either side, names that disagree with the file's, or
            names that are empty or repeated.
    """
    if class_names is None:
        if "class_names" not in config:
            raise DataError(
                f"labels need class names: pass --class-names or list class_names in {str(path)!r}"
            )
        return
    names = list(class_names)
    if "class_names" in config:
        if config["class_names"] != names:
            raise DataError(
                f"class names {names} disagree with {str(path)!r} "
                f"({config['class_names']}); fix or remove that file"
            )
        return
    if not names or not all(name for name in names) or len(set(names)) != len(names):
        raise DataError(f"class names must be non-empty and distinct, got {names}")
    config["class_names"] = names


def _write_text(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise DataError(f"cannot write {str(path)!r}: {err}") from err


def _format_summary(
    summary: ImportSummary, bag: Path, out: Path, topics: Mapping[str, str], split: str | None
) -> str:
    """What was written, per topic, and where each camera's intrinsics went."""
    stats = summary.stats
    lines = [
        f"wrote {len(summary.stems)} of {stats.groups} synchronised frame groups from "
        f"{str(bag)!r} into {str(out)!r}" + (f", listed in split {split!r}" if split else "")
    ]
    roles = {topic: role for role, topic in topics.items()}
    for topic, received in stats.received.items():
        role = roles.get(topic, "labels")
        lines.append(
            f"  {role:8s} {topic}: {received} messages, {stats.dropped[topic]} not in a group"
        )
    for modality, camera in summary.cameras.items():
        if not camera.calibrations:
            lines.append(f"  {modality:8s} {camera.topic}: no calibrated camera (all-zero K)")
        else:
            first = [round(value, 6) for value in camera.calibrations[0].to_list()]
            several = len(camera.calibrations)
            lines.append(
                f"  {modality:8s} intrinsics {first} (fx fy cx cy w h) from {camera.topic}"
                + (f"; {several} calibrations in the bag, this is the first" if several > 1 else "")
            )
        if modality in summary.recorded:
            lines.append(
                f"  {modality:8s} intrinsics recorded in {str(out / DATASET_YAML)!r} "
                f"(key 'intrinsics.{modality}'), where training finds them"
            )
        else:
            lines.append(
                f"  {modality:8s} intrinsics not recorded (not one calibrated camera): a "
                f"depth_hha encoding of {modality} needs 'intrinsics' in the training config"
            )
    return "\n".join(lines)


def _format_skipped(stats: FrameStats) -> str:
    skipped = stats.skipped
    lines = [f"WARNING: skipped {len(skipped)} undecodable message(s):"]
    lines += [
        f"  {item.topic} at {item.timestamp_ns} ns: {item.reason}"
        for item in skipped[:_LISTED_SKIPS]
    ]
    if len(skipped) > _LISTED_SKIPS:
        lines.append(f"  ... and {len(skipped) - _LISTED_SKIPS} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, import the bag and print a summary."""
    parser = argparse.ArgumentParser(
        prog="unim2_import_bag",
        description="Turn a robot's rosbag2 recording into training data: synchronised frame "
        "groups written into the folder layout (dataset.kind: folder).",
    )
    parser.add_argument("bag", type=Path, help="rosbag2 folder, .db3 or .mcap file")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    add_topic_argument(parser)
    parser.add_argument("--labels", metavar="TOPIC", help="Image topic of class ids")
    parser.add_argument(
        "--class-names",
        type=class_names_argument,
        metavar="A,B,...",
        help="comma-separated names of the label ids, for dataset.yaml",
    )
    parser.add_argument(
        "--slop",
        type=positive_float,
        default=DEFAULT_SLOP,
        help="largest stamp spread within a group, seconds (default %(default)s)",
    )
    parser.add_argument(
        "--queue-size",
        type=positive_int,
        default=DEFAULT_QUEUE_SIZE,
        help="synchroniser queue per topic (default %(default)s)",
    )
    parser.add_argument("--every", type=positive_int, default=1, help="keep every N-th group")
    parser.add_argument("--split", help="write splits/SPLIT.txt listing the imported frames")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add this bag's frames to an earlier import in --out (default: --out must be new, "
        "empty, or an earlier import of the same bag)",
    )
    add_progress_argument(parser)
    args = parser.parse_args(argv)
    topics = parsed_topics(parser, args)
    if args.class_names is not None and args.labels is None:
        parser.error("--class-names needs --labels")

    def body() -> int:
        summary = import_bag(
            args.bag,
            args.out,
            topics,
            label_topic=args.labels,
            class_names=args.class_names,
            queue_size=args.queue_size,
            slop=args.slop,
            every=args.every,
            split=args.split,
            append=args.append,
            progress=not args.no_progress,
        )
        print(_format_summary(summary, args.bag, args.out, topics, args.split))
        if summary.stats.skipped:
            print(_format_skipped(summary.stats), file=sys.stderr)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
