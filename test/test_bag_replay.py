"""Tests of unim2_ros.replay (offline, live, CLI) and its ground truth: real rosbag2 files, the
real Segmenter and the real node.

Bags are written with BagImageWriter from synthetic RGB-D frames (64x48) with known labels.
Offline replays are compared with calling the Segmenter directly on the same frames, scores with
a confusion matrix counted here with numpy. Live replays go through the segmentation node
running in its own rclpy context of this process, over Fast DDS on loopback, in a DDS domain of
their own.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import torch
import yaml
from conftest import make_bundle
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.datasets.base import default_palette
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.image_io import read_image, write_png
from unim2_core.errors import ConfigError, DataError
from unim2_core.evaluation.metrics import SegmentationScores, score
from unim2_core.evaluation.replay_report import (
    JSON_FILE,
    LABELS_DIR,
    OVERLAYS_DIR,
    REPORT_FILE,
    VIDEO_FILE,
)
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import Bundle, ClassMapping, save_bundle
from unim2_core.runtime.segmenter import Segmenter
from unim2_demo.synthetic_scenes import CLASS_NAMES, IGNORE_LABEL, SceneFrame, generate_sequence
from unim2_ros.bag_io import (
    IMAGE_TYPE,
    STRING_TYPE,
    BagImageWriter,
    BagReader,
    CameraInfoTrack,
    StorageFormat,
    camera_info_topic,
)
from unim2_ros.errors import BagError, ReplayError
from unim2_ros.image_conversion import image_to_array
from unim2_ros.label_info import parse_label_info
from unim2_ros.replay import (
    OUTPUT_BAG,
    LabelFolder,
    main,
    replay_live,
    replay_offline,
)
from unim2_ros.segmentation_node import SegmentationNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RGB, DEPTH, LABELS = "/cam/rgb", "/cam/depth", "/cam/labels"
TOPICS = {"rgb": RGB, "depth": DEPTH}
RGBD = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
N_FRAMES = 6
SIDE = 112
MAPPING = ClassMapping(
    cluster_to_class=(0, 1, 2, 3, -1),
    class_names=CLASS_NAMES,
    palette=default_palette(len(CLASS_NAMES)),
)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core test machine two OpenMP threads can wait on a
    busy core for seconds per frame."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames() -> list[SceneFrame]:
    return list(generate_sequence(N_FRAMES, width=64, height=48, seed=5))


@pytest.fixture(scope="module")
def bundle(imgfocus_backbone: Backbone) -> Bundle:
    return make_bundle(imgfocus_backbone, RGBD, n_clusters=5, shorter_side=SIDE)


@pytest.fixture(scope="module")
def segmenter(bundle: Bundle, imgfocus_backbone: Backbone) -> Segmenter:
    return Segmenter(bundle, imgfocus_backbone, device="cpu")


@pytest.fixture(scope="module")
def mapped_bundle(imgfocus_backbone: Backbone) -> Bundle:
    return make_bundle(
        imgfocus_backbone, RGBD, n_clusters=5, shorter_side=SIDE, class_mapping=MAPPING
    )


@pytest.fixture(scope="module")
def mapped_segmenter(mapped_bundle: Bundle, imgfocus_backbone: Backbone) -> Segmenter:
    return Segmenter(mapped_bundle, imgfocus_backbone, device="cpu")


def direct_labels(segmenter: Segmenter, frames: Sequence[SceneFrame]) -> list[np.ndarray]:
    return [segmenter({"rgb": f.rgb, "depth": f.depth_mm}).labels for f in frames]


@pytest.fixture(scope="module")
def expected(segmenter: Segmenter, frames: list[SceneFrame]) -> list[np.ndarray]:
    return direct_labels(segmenter, frames)


def write_bag(
    path: Path,
    frames: Sequence[SceneFrame],
    *,
    storage: StorageFormat = "sqlite3",
    corrupt_at: int | None = None,
) -> Path:
    """RGB, depth (logged 3 ms later) and mono8 labels of every frame, plus a String topic.

    With ``corrupt_at``, the RGB message of that frame is replaced by bytes that are not CDR.
    """
    with BagImageWriter(path, storage=storage) as writer:
        writer.add_topic(RGB, qos="sensor_data")
        writer.add_topic(DEPTH, qos="sensor_data")
        writer.write_string("/cam/status", "recording", frames[0].stamp_ns)
        for index, frame in enumerate(frames):
            if index == corrupt_at:
                writer.write_raw(RGB, frame.stamp_ns, b"\x00\x01\x00\x00garbage")
            else:
                writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "camera")
            writer.write_image(
                DEPTH,
                frame.depth_mm,
                "16UC1",
                frame.stamp_ns,
                "camera",
                timestamp_ns=frame.stamp_ns + 3_000_000,
            )
            writer.write_image(LABELS, frame.labels, "mono8", frame.stamp_ns, "camera")
    return path


def stems(frames: Sequence[SceneFrame]) -> list[str]:
    return [f"{i:06d}_{f.stamp_ns}" for i, f in enumerate(frames)]


def reference_scores(
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    *,
    n_predicted: int,
    n_classes: int | None = None,
) -> SegmentationScores:
    """Scores of one confusion matrix counted here, pixel by pixel, with numpy; classes
    ``0 .. n_classes - 1``, by default up to the largest ground-truth id."""
    if n_classes is None:
        n_classes = 1 + int(max(t[t != IGNORE_LABEL].max() for t in truths))
    confusion = np.zeros((n_predicted, n_classes), np.int64)
    for predicted, truth in zip(predictions, truths, strict=True):
        keep = truth != IGNORE_LABEL
        np.add.at(confusion, (predicted[keep].astype(np.int64), truth[keep].astype(np.int64)), 1)
    return score(confusion)


def read_labels(out: Path, names: Sequence[str]) -> list[np.ndarray]:
    return [read_image(out / LABELS_DIR / f"{name}.png") for name in names]


def video_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


# --- offline --------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_offline_replay_gives_the_segmenter_labels_and_scores_the_label_topic(
    tmp_path: Path,
    frames: list[SceneFrame],
    segmenter: Segmenter,
    expected: list[np.ndarray],
    storage: StorageFormat,
) -> None:
    bag = write_bag(tmp_path / "bag", frames, storage=storage)
    out = tmp_path / "out"
    result = replay_offline(bag, segmenter, TOPICS, out, label_topic=LABELS)

    assert (result.n_frames, result.missing, result.output_bag) == (N_FRAMES, 0, None)
    for labels, direct in zip(read_labels(out, stems(frames)), expected, strict=True):
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, direct)
    assert len(list((out / OVERLAYS_DIR).glob("*.png"))) == N_FRAMES
    assert result.video == out / VIDEO_FILE and video_frames(out / VIDEO_FILE) == N_FRAMES
    assert result.latency.n == N_FRAMES and result.latency.max_ms > 0

    truths = [f.labels for f in frames]
    reference = reference_scores(expected, truths, n_predicted=5)
    assert result.scores is not None
    assert result.scores.miou == pytest.approx(reference.miou)
    assert result.scores.accuracy == pytest.approx(reference.accuracy)
    np.testing.assert_allclose(result.scores.per_class_iou, reference.per_class_iou)
    n_seen = len(reference.per_class_iou)
    assert result.class_names == tuple(f"class {i}" for i in range(n_seen))

    document = json.loads(result.json.read_text())
    assert document["frames"] == N_FRAMES and document["mode"] == "offline"
    assert document["topics"] == TOPICS
    assert document["video_fps"] == pytest.approx(10.0)  # generate_sequence's frame rate
    assert document["latency"]["n"] == N_FRAMES
    assert document["scores"]["miou"] == pytest.approx(reference.miou)
    assert [f["stamp_ns"] for f in document["per_frame"]] == [f.stamp_ns for f in frames]
    shown = document["shown_frames"]
    assert [f["title"] for f in shown] == ["best #1", "best #2", "worst #1", "worst #2"]
    assert all((out / f["comparison"]).is_file() for f in shown)
    report = result.report.read_text()
    assert f"**mIoU {reference.miou:.2f}**" in report and "Segmenter call time" in report
    assert f"]({shown[0]['comparison']})" in report


def test_offline_replay_scores_a_label_folder_matched_by_rgb_stamp(
    tmp_path: Path, frames: list[SceneFrame], segmenter: Segmenter, expected: list[np.ndarray]
) -> None:
    dataset = tmp_path / "imported"
    labelled = [0, 2, 5]
    for index in labelled:  # named as unim2_import_bag names frames: <index>_<stamp>
        write_png(
            dataset / "labels" / f"{index + 100:06d}_{frames[index].stamp_ns}.png",
            frames[index].labels,
        )
    write_png(dataset / "labels" / "42.png", frames[1].labels)  # matches no frame
    (dataset / "dataset.yaml").write_text(yaml.safe_dump({"class_names": list(CLASS_NAMES)}))
    bag = write_bag(tmp_path / "bag", frames)

    result = replay_offline(bag, segmenter, TOPICS, tmp_path / "out", label_dir=dataset)

    reference = reference_scores(
        [expected[i] for i in labelled],
        [frames[i].labels for i in labelled],
        n_predicted=5,
        n_classes=len(CLASS_NAMES),
    )
    assert result.scores is not None and result.n_frames == N_FRAMES
    assert result.class_names == CLASS_NAMES
    assert result.scores.miou == pytest.approx(reference.miou)
    assert result.scores.accuracy == pytest.approx(reference.accuracy)
    np.testing.assert_allclose(result.scores.per_class_iou, reference.per_class_iou)
    document = json.loads(result.json.read_text())
    assert document["frames_with_ground_truth"] == 3
    assert document["scores"]["scored_frames"] == 3
    assert document["counts"]["label files matching no frame"] == 1
    assert [f["ground_truth"] for f in document["per_frame"]] == [
        i in labelled for i in range(N_FRAMES)
    ]
    assert "class names from dataset.yaml" in document["ground_truth"]


def test_offline_replay_names_ground_truth_classes_from_the_checkpoint_mapping(
    tmp_path: Path, frames: list[SceneFrame], mapped_segmenter: Segmenter
) -> None:
    bag = write_bag(tmp_path / "bag", frames)
    result = replay_offline(bag, mapped_segmenter, TOPICS, tmp_path / "out", label_topic=LABELS)
    assert result.class_names == CLASS_NAMES
    assert result.scores is not None and len(result.scores.per_class_iou) == len(CLASS_NAMES)
    labels = read_labels(tmp_path / "out", stems(frames))
    np.testing.assert_array_equal(labels, direct_labels(mapped_segmenter, frames))
    assert max(int(label.max()) for label in labels) < len(mapped_segmenter.labels_table)


HHA_DEPTH = "/cam/depth/image_raw"
HHA_INFO = "/cam/depth/camera_info"


def write_hha_bag(
    path: Path,
    frames: Sequence[SceneFrame],
    calibrations: Sequence[np.ndarray],
    *,
    every_frame: bool = False,
) -> Path:
    """RGB and depth beside a camera_info topic: ``calibrations[0]`` for the first three
    frames, ``calibrations[1]`` from the fourth (a recalibration mid-bag); written once each,
    or with every frame (as a camera driver publishes it) with ``every_frame``."""
    with BagImageWriter(path) as writer:
        for index, frame in enumerate(frames):
            writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "camera")
            writer.write_image(HHA_DEPTH, frame.depth_mm, "16UC1", frame.stamp_ns, "camera")
            if every_frame or index in (0, 3):
                writer.write_camera_info(
                    HHA_INFO,
                    width=64,
                    height=48,
                    k=calibrations[index // 3],
                    stamp_ns=frame.stamp_ns,
                    frame_id="camera",
                )
    return path


CALIBRATIONS = [
    np.array([[40.0, 0, 31.5], [0, 42.0, 23.5], [0, 0, 1]]),
    np.array([[20.0, 0, 10.0], [0, 20.0, 40.0], [0, 0, 1]]),
]
HHA_ENCODINGS = {
    "rgb": ModalityEncoding.default("rgb"),
    "depth": ModalityEncoding.default("depth_hha"),
}


@pytest.fixture(scope="module")
def hha_bundle(imgfocus_backbone: Backbone) -> Bundle:
    return make_bundle(imgfocus_backbone, HHA_ENCODINGS, n_clusters=5, shorter_side=SIDE)


def test_offline_replay_of_a_depth_hha_model_uses_the_bags_camera_info_per_frame(
    tmp_path: Path, frames: list[SceneFrame], hha_bundle: Bundle, imgfocus_backbone: Backbone
) -> None:
    hha = Segmenter(hha_bundle, imgfocus_backbone, device="cpu")
    cameras = [CameraIntrinsics.from_matrix(k.ravel().tolist(), 64, 48) for k in CALIBRATIONS]
    bag = write_hha_bag(tmp_path / "bag", frames, CALIBRATIONS)
    topics = {"rgb": RGB, "depth": HHA_DEPTH}

    result = replay_offline(bag, hha, topics, tmp_path / "out")

    def direct(frame: SceneFrame, camera: CameraIntrinsics) -> np.ndarray:
        arrays = {"rgb": frame.rgb, "depth": frame.depth_mm}
        return hha(arrays, intrinsics={"depth": camera}).labels

    assert result.n_frames == N_FRAMES
    for index, labels in enumerate(read_labels(tmp_path / "out", stems(frames))):
        np.testing.assert_array_equal(labels, direct(frames[index], cameras[index // 3]))
    document = json.loads(result.json.read_text())
    assert document["settings"]["intrinsics"] == f"depth: {HHA_INFO} of the bag"

    # Without camera_info in the bag, the model's stored intrinsics would be used; this one
    # stores none, so every frame is refused with the encoding's reason.
    no_info = tmp_path / "no_info"
    with BagImageWriter(no_info) as writer:
        for frame in frames:
            writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "camera")
            writer.write_image(HHA_DEPTH, frame.depth_mm, "16UC1", frame.stamp_ns, "camera")
    with pytest.raises(DataError, match="depth_hha encoding needs the camera's"):
        replay_offline(no_info, hha, topics, tmp_path / "refused")


def test_camera_info_track_gives_each_stamp_the_calibration_in_force(tmp_path: Path) -> None:
    # Random heads barely listen to depth (the labels of both calibrations are equal), so the
    # track that picks each frame's calibration is checked here on its own.
    bag = tmp_path / "bag"
    with BagImageWriter(bag) as writer:
        writer.write_image(RGB, np.zeros((48, 64, 3), np.uint8), "rgb8", 100, "camera")
        for stamp, fx in ((100, 40.0), (200, 0.0), (300, 20.0)):  # fx 0: uncalibrated
            k = np.array([[fx, 0, 31.5], [0, fx, 23.5], [0, 0, 1]])
            writer.write_camera_info(
                HHA_INFO, width=64, height=48, k=k, stamp_ns=stamp, frame_id="camera"
            )
    with BagReader(bag) as reader:
        track = CameraInfoTrack(reader, HHA_INFO)
        with pytest.raises(BagError, match="topic '/cam/rgb' .* not sensor_msgs/msg/CameraInfo"):
            CameraInfoTrack(reader, RGB)
    assert track.unusable == 1
    assert [track.at(stamp).fx for stamp in (0, 100, 250, 299, 300, 10**12)] == [
        40.0,
        40.0,
        40.0,
        40.0,
        20.0,
        20.0,
    ]
    assert camera_info_topic("/cam/depth/image_raw") == HHA_INFO

    zeros = tmp_path / "zeros"
    with BagImageWriter(zeros) as writer:
        writer.write_camera_info(
            HHA_INFO, width=64, height=48, k=np.zeros((3, 3)), stamp_ns=1, frame_id="camera"
        )
    with BagReader(zeros) as reader, pytest.raises(DataError, match="holds no calibrated camera"):
        CameraInfoTrack(reader, HHA_INFO)


def test_label_folder_refuses_files_not_named_by_stamp(tmp_path: Path) -> None:
    write_png(tmp_path / "frame_a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"label file '.*frame_a.png' is not named <rgb stamp"):
        LabelFolder(tmp_path)
    with pytest.raises(DataError, match=r"label folder '.*nowhere' does not exist"):
        LabelFolder(tmp_path / "nowhere")


def test_label_folder_refuses_labels_of_another_size(
    tmp_path: Path, frames: list[SceneFrame], segmenter: Segmenter
) -> None:
    write_png(tmp_path / "labels" / f"{frames[1].stamp_ns}.png", np.zeros((5, 7), np.uint8))
    bag = write_bag(tmp_path / "bag", frames)
    with pytest.raises(DataError, match=r"label file '.*\.png' is 7x5, its frame 64x48"):
        replay_offline(bag, segmenter, TOPICS, tmp_path / "out", label_dir=tmp_path / "labels")


def test_missing_topic_is_an_error_listing_the_bag_image_topics(
    tmp_path: Path, frames: list[SceneFrame], segmenter: Segmenter
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:2])
    with pytest.raises(
        BagError,
        match=r"topic '/cam/nothing' is not in bag '.*bag'; its image topics: "
        r"/cam/depth, /cam/labels, /cam/rgb",
    ):
        replay_offline(bag, segmenter, {"rgb": RGB, "depth": "/cam/nothing"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"the model needs modality 'depth'; topics were given"):
        replay_offline(bag, segmenter, {"rgb": RGB}, tmp_path / "out")


def test_undecodable_message_is_an_error_naming_it_or_skipped_leniently(
    tmp_path: Path, frames: list[SceneFrame], segmenter: Segmenter, expected: list[np.ndarray]
) -> None:
    bag = write_bag(tmp_path / "bag", frames, corrupt_at=3)
    stamp = frames[3].stamp_ns
    with pytest.raises(BagError, match=rf"cannot decode the message on '/cam/rgb' at {stamp} ns"):
        replay_offline(bag, segmenter, TOPICS, tmp_path / "strict")

    result = replay_offline(bag, segmenter, TOPICS, tmp_path / "lenient", strict=False)
    assert result.n_frames == N_FRAMES - 1
    kept = [i for i in range(N_FRAMES) if i != 3]
    names = [f"{n:06d}_{frames[i].stamp_ns}" for n, i in enumerate(kept)]
    np.testing.assert_array_equal(
        read_labels(tmp_path / "lenient", names), [expected[i] for i in kept]
    )
    document = json.loads(result.json.read_text())
    ((skipped),) = document["skipped_messages"]
    assert (skipped["topic"], skipped["timestamp_ns"]) == (RGB, stamp)
    assert document["not_in_group"] == {RGB: 0, DEPTH: 1}
    assert f"`/cam/rgb` at {stamp} ns: corrupt message" in result.report.read_text()


# --- command line ---------------------------------------------------------------------------


def test_cli_offline_replay_prints_a_summary_and_writes_the_report(
    tmp_path: Path,
    frames: list[SceneFrame],
    bundle: Bundle,
    imgfocus_weights: Path,
    expected: list[np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bag = write_bag(tmp_path / "bag", frames, storage="mcap")
    checkpoint = save_bundle(bundle, tmp_path / "model.pt")
    out = tmp_path / "out"
    options = {
        "--topic": f"rgb={RGB}",
        "--out": str(out),
        "--checkpoint": str(checkpoint),
        "--backbone-weights": str(imgfocus_weights),
        "--device": "cpu",
        "--label-topic": LABELS,
        "--class-names": ",".join(CLASS_NAMES),
    }
    argv = [str(bag / "bag.mcap"), "--topic", f"depth={DEPTH}", "--no-video", "--no-progress"]
    code = main(argv + [item for pair in options.items() for item in pair])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"replayed {N_FRAMES} frames into '{out}'" in captured.out
    assert "mIoU" in captured.out and str(out / REPORT_FILE) in captured.out
    np.testing.assert_array_equal(read_labels(out, stems(frames)), expected)
    assert not (out / VIDEO_FILE).exists()
    document = json.loads((out / JSON_FILE).read_text())
    assert list(document["scores"]["per_class_iou"]) == list(CLASS_NAMES)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{tmp}/nothing", "--checkpoint", "{tmp}/model.pt"], r"bag '.*nothing' does not exist"),
        (["{bag}", "--checkpoint", "{tmp}/missing.pt"], r"checkpoint not found: '.*missing.pt'"),
        (
            [
                "{bag}",
                "--checkpoint",
                "{checkpoint}",
                "--topic",
                "rgb=/cam/rgb",
                "--topic",
                "depth=/cam/nope",
            ],
            r"topic '/cam/nope' is not in bag '.*bag'; its image topics: /cam/depth, ",
        ),
        (
            ["{corrupt}", "--checkpoint", "{checkpoint}"],
            r"cannot decode the message on '/cam/rgb' at \d+ ns in bag '.*corrupt'",
        ),
        (["{bag}", "--live", "--connect-timeout", "0.5"], r"node '/unim2_node' not found"),
    ],
    ids=["missing-bag", "missing-checkpoint", "missing-topic", "undecodable", "no-node"],
)
def test_cli_errors_exit_2_with_one_line_naming_the_culprit(
    tmp_path: Path,
    frames: list[SceneFrame],
    bundle: Bundle,
    imgfocus_weights: Path,
    ros_domain_id: int,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    places = {
        "tmp": str(tmp_path),
        "bag": str(write_bag(tmp_path / "bag", frames[:2])),
        "corrupt": str(write_bag(tmp_path / "corrupt", frames[:2], corrupt_at=1)),
        "checkpoint": str(save_bundle(bundle, tmp_path / "model.pt")),
    }
    argv = [argument.format(**places) for argument in arguments]
    if "--topic" not in argv:
        argv += ["--topic", f"rgb={RGB}", "--topic", f"depth={DEPTH}"]
    argv += ["--out", str(tmp_path / "out"), "--no-progress"]
    if "--live" not in argv:
        argv += ["--backbone-weights", str(imgfocus_weights), "--device", "cpu"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), captured.err
    assert re.search(message, lines[0]), lines[0]


def test_cli_refuses_a_label_topic_that_is_also_an_input(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:1])
    with pytest.raises(SystemExit) as exit_info:
        main([str(bag), "--topic", f"rgb={RGB}", "--label-topic", RGB, "--out", "out", "--live"])
    assert exit_info.value.code == 2
    assert "topic '/cam/rgb' is named more than once" in capsys.readouterr().err


def test_cli_refuses_options_of_the_other_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bag", "--topic", f"rgb={RGB}", "--out", "o", "--checkpoint", "m.pt", "--lockstep"])
    assert exit_info.value.code == 2
    assert "--lockstep only applies with --live" in capsys.readouterr().err


# --- live -----------------------------------------------------------------------------------


@contextlib.contextmanager
def running_node(
    domain_id: int, checkpoint: Path, weights: Path, *remaps: str
) -> Iterator[list[float]]:
    """The segmentation node spinning in its own context of this process, with a probe node
    beside it; yields the monotonic arrival times of the RGB images the probe sees on ``RGB``."""
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    node: SegmentationNode | None = None
    probe = Node("camera_probe", context=context)
    arrivals: list[float] = []
    probe.create_subscription(
        Image, RGB, lambda _: arrivals.append(time.monotonic()), qos_profile_sensor_data
    )
    parameters = {
        "model.checkpoint": str(checkpoint),
        "model.backbone_weights": str(weights),
        "model.device": "cpu",
        "model.input_size": SIDE,
    }
    cli_args = ["--ros-args", *(arg for remap in remaps for arg in ("-r", remap))]
    try:
        node = SegmentationNode(
            context=context,
            parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()],
            cli_args=cli_args if remaps else None,
        )
        executor.add_node(node)
        executor.add_node(probe)
        thread.start()
        yield arrivals
    finally:
        executor.shutdown()
        if thread.is_alive():
            thread.join(timeout=5)
        if node is not None:
            node.destroy_node()
        probe.destroy_node()
        context.try_shutdown()


def test_live_lockstep_replay_through_the_node_reproduces_the_offline_labels(
    tmp_path: Path,
    ros_domain_id: int,
    frames: list[SceneFrame],
    mapped_bundle: Bundle,
    mapped_segmenter: Segmenter,
    imgfocus_weights: Path,
) -> None:
    bag = write_bag(tmp_path / "bag", frames)
    checkpoint = save_bundle(mapped_bundle, tmp_path / "model.pt")
    offline = replay_offline(
        bag, mapped_segmenter, TOPICS, tmp_path / "offline", label_topic=LABELS
    )
    out = tmp_path / "live"
    with running_node(ros_domain_id, checkpoint, imgfocus_weights):
        result = replay_live(
            bag, TOPICS, out, lockstep=True, rate=math.inf, label_topic=LABELS, timeout=20
        )

    assert (result.n_frames, result.missing) == (N_FRAMES, 0)
    np.testing.assert_array_equal(
        read_labels(out, stems(frames)), read_labels(tmp_path / "offline", stems(frames))
    )
    assert result.class_names == CLASS_NAMES  # from the node's label_info
    assert result.scores is not None and offline.scores is not None
    assert result.scores.miou == pytest.approx(offline.scores.miou)
    assert result.scores.accuracy == pytest.approx(offline.scores.accuracy)
    assert result.latency.n == N_FRAMES and result.latency.median_ms > 0

    assert result.output_bag == out / OUTPUT_BAG
    with BagReader(result.output_bag) as reader:
        counts = {name: topic.message_count for name, topic in reader.info.topics.items()}
        assert counts == {"/unim2_node/labels": N_FRAMES, "/unim2_node/label_info": 1}
        assert reader.info.topics["/unim2_node/labels"].msgtype == IMAGE_TYPE
        assert reader.info.topics["/unim2_node/label_info"].msgtype == STRING_TYPE
        messages = list(reader.messages(["/unim2_node/labels"]))
        (info,) = reader.messages(["/unim2_node/label_info"])
    assert [m.msg.header.stamp.sec * 10**9 + m.msg.header.stamp.nanosec for m in messages] == [
        f.stamp_ns for f in frames
    ]
    assert all(m.msg.header.frame_id == "camera" for m in messages)
    log_times = [m.timestamp_ns for m in messages]
    assert log_times == sorted(log_times) and abs(log_times[0] - time.time_ns()) < 120e9
    np.testing.assert_array_equal(
        [image_to_array(m.msg) for m in messages], direct_labels(mapped_segmenter, frames)
    )
    document = parse_label_info(info.msg.data)
    assert [label.name for label in document.labels] == [*CLASS_NAMES, "cluster_4"]
    assert document.modalities == ("rgb", "depth")

    replay = json.loads(result.json.read_text())
    assert replay["mode"] == "live" and replay["settings"]["slop_s"] == 0.05  # node's default
    assert replay["settings"]["rate"] == "inf" and replay["settings"]["lockstep"] is True
    assert replay["counts"]["groups sent (as the node groups them)"] == N_FRAMES
    assert replay["counts"]["label outputs received"] == N_FRAMES
    assert replay["counts"]["lockstep waits timed out"] == 0
    assert replay["output_bag"] == OUTPUT_BAG
    assert "labels arrived here minus the time the RGB message was published" in (
        result.report.read_text()
    )


def test_live_replay_publishes_the_bags_camera_info_to_a_depth_hha_node(
    tmp_path: Path,
    ros_domain_id: int,
    frames: list[SceneFrame],
    hha_bundle: Bundle,
    imgfocus_backbone: Backbone,
    imgfocus_weights: Path,
) -> None:
    # A depth_hha node groups each frame with its camera_info: without the bag's camera_info
    # on its depth/camera_info it would never output a label.
    bag = write_hha_bag(tmp_path / "bag", frames, CALIBRATIONS, every_frame=True)
    topics = {"rgb": RGB, "depth": HHA_DEPTH}
    offline = replay_offline(
        bag, Segmenter(hha_bundle, imgfocus_backbone, device="cpu"), topics, tmp_path / "offline"
    )
    checkpoint = save_bundle(hha_bundle, tmp_path / "model.pt")
    with running_node(ros_domain_id, checkpoint, imgfocus_weights):
        result = replay_live(
            bag, topics, tmp_path / "live", lockstep=True, rate=math.inf, timeout=20
        )

    assert (result.n_frames, result.missing) == (N_FRAMES, 0)
    np.testing.assert_array_equal(
        read_labels(tmp_path / "live", stems(frames)),
        read_labels(tmp_path / "offline", stems(frames)),
    )
    assert offline.n_frames == N_FRAMES
    counts = json.loads(result.json.read_text())["counts"]
    assert counts["input messages published"] == 3 * N_FRAMES  # rgb, depth, camera_info
    # Lockstep waits for each group once its camera_info is out too, not for the timeout.
    assert counts["groups sent (as the node groups them)"] == N_FRAMES
    assert counts["lockstep waits timed out"] == 0


def test_live_replay_at_the_recorded_rate_publishes_on_the_remapped_bag_topics(
    tmp_path: Path,
    ros_domain_id: int,
    frames: list[SceneFrame],
    bundle: Bundle,
    expected: list[np.ndarray],
    imgfocus_weights: Path,
) -> None:
    bag = write_bag(tmp_path / "bag", frames, storage="mcap")
    checkpoint = save_bundle(bundle, tmp_path / "model.pt")
    out = tmp_path / "live"
    remaps = (f"rgb/image:={RGB}", f"depth/image:={DEPTH}")
    with running_node(ros_domain_id, checkpoint, imgfocus_weights, *remaps) as arrivals:
        result = replay_live(bag, TOPICS, out, rate=2.0, storage="mcap", timeout=2, slop=0.01)

    assert len(arrivals) == N_FRAMES  # seen on the bag's topic, as the remapped node sees them
    span = arrivals[-1] - arrivals[0]
    assert 0.9 * (N_FRAMES - 1) * 0.05 <= span < 2.0, span  # 0.1 s apart, played twice as fast
    assert result.scores is None and result.n_frames == N_FRAMES
    document = json.loads(result.json.read_text())
    received = [f for f in document["per_frame"] if f["output"]]
    assert received, "no output: the inputs were not published on the node's remapped topics"
    assert result.missing == N_FRAMES - len(received)
    assert result.latency.n == len(received)
    for frame in received:
        labels = read_image(out / LABELS_DIR / f"{frame['stem']}.png")
        np.testing.assert_array_equal(labels, expected[frame["index"]])
    assert document["settings"]["slop_s"] == 0.01
    with BagReader(out / OUTPUT_BAG) as reader:
        assert reader.info.topics["/unim2_node/labels"].message_count == len(received)
    assert (out / OUTPUT_BAG / f"{OUTPUT_BAG}.mcap").is_file()


def test_live_replay_without_the_node_fails_naming_it(
    tmp_path: Path, ros_domain_id: int, frames: list[SceneFrame]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:2])
    with pytest.raises(
        ReplayError, match=r"node '/robot/unim2_node' not found within 0.5 s \(nodes seen: none\)"
    ):
        replay_live(bag, TOPICS, tmp_path / "out", node="/robot/unim2_node", connect_timeout=0.5)
    with pytest.raises(ValueError, match=r"'/robot/' is not a node name"):
        replay_live(bag, TOPICS, tmp_path / "out", node="/robot/")
    with pytest.raises(ValueError, match="rate must be > 0"):
        replay_live(bag, TOPICS, tmp_path / "out", rate=0.0)
