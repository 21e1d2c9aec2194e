"""Tests of unim2_import_bag: synthetic recordings in, the folder layout out.

Each recording is written with BagImageWriter from synthetic RGB-D frames with known labels;
the imported folder is read back with FolderDataset and compared with the frames themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.datasets.folder import FolderDataset, write_frame_group
from unim2_demo.synthetic_scenes import CLASS_NAMES, SceneFrame, generate_sequence
from unim2_ros.bag_import import IMPORT_RECORD, main
from unim2_ros.bag_io import IMAGE_TYPE, BagImageWriter, StorageFormat, typestore

RGB = "/camera/color/image_raw"
DEPTH = "/camera/depth/image_rect_raw"
DEPTH_INFO = "/camera/depth/camera_info"
LABELS = "/camera/labels"
N_FRAMES = 5
JITTER_NS = (1_000_000, 4_000_000, -6_000_000)
TOPIC_ARGS = ["--topic", f"rgb={RGB}", "--topic", f"depth={DEPTH}"]
LABEL_ARGS = ["--labels", LABELS, "--class-names", ",".join(CLASS_NAMES)]
K = np.array([[50.5, 0, 31.5], [0, 51.0, 23.5], [0, 0, 1]])
CAMERA = CameraIntrinsics(50.5, 51.0, 31.5, 23.5, 64, 48)


@pytest.fixture(scope="module")
def frames() -> list[SceneFrame]:
    return list(generate_sequence(N_FRAMES, width=64, height=48, seed=11))


def _metres(depth_mm: np.ndarray) -> np.ndarray:
    return np.where(depth_mm > 0, depth_mm / 1000.0, np.nan).astype(np.float32)


def write_bag(
    path: Path,
    frames: list[SceneFrame],
    *,
    storage: StorageFormat = "sqlite3",
    float_depth: bool = False,
    short_depth: int | None = None,
    depth_k: list[np.ndarray] | None = None,
) -> Path:
    """rgb8 colour, jittered depth logged 5 ms later (16UC1 or 32FC1), mono8 labels.

    ``short_depth`` names a frame followed by a second depth Image holding one byte too few;
    with ``depth_k`` each depth image has a CameraInfo beside it (the matrices in turn).
    """
    with BagImageWriter(path, storage=storage) as writer:
        writer.write_string("/label_info", "{}", frames[0].stamp_ns)
        for index, frame in enumerate(frames):
            stamp = frame.stamp_ns + JITTER_NS[index % len(JITTER_NS)]
            log_time = frame.stamp_ns + 5_000_000
            writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "color")
            writer.write_image(LABELS, frame.labels, "mono8", frame.stamp_ns, "color")
            if float_depth:
                writer.write_image(
                    DEPTH, _metres(frame.depth_mm), "32FC1", stamp, "depth", timestamp_ns=log_time
                )
            else:
                writer.write_image(
                    DEPTH, frame.depth_mm, "16UC1", stamp, "depth", timestamp_ns=log_time
                )
            if depth_k is not None:
                k = depth_k[index % len(depth_k)]
                writer.write_camera_info(
                    DEPTH_INFO, width=64, height=48, k=k, stamp_ns=stamp, frame_id="depth"
                )
            if index == short_depth:
                writer.write(DEPTH, log_time + 1, _short_depth_message(frame, stamp))
    return path


def _short_depth_message(frame: SceneFrame, stamp: int) -> Any:
    """A depth Image of ``frame`` at ``stamp`` whose data is one byte short."""
    store = typestore()
    data = frame.depth_mm.astype("<u2").view(np.uint8).reshape(-1)[:-1].copy()
    time = store.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)
    header = store.types["std_msgs/msg/Header"](stamp=time, frame_id="depth")
    return store.types[IMAGE_TYPE](
        header=header,
        height=48,
        width=64,
        encoding="16UC1",
        is_bigendian=0,
        step=128,
        data=data,
    )


def _stems(frames: list[SceneFrame], indices: list[int]) -> list[str]:
    return [f"{i:06d}_{frames[i].stamp_ns}" for i in indices]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_import_writes_the_recorded_arrays_into_the_folder_layout(
    tmp_path: Path,
    frames: list[SceneFrame],
    storage: StorageFormat,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bag = write_bag(tmp_path / "bag", frames, storage=storage)
    out = tmp_path / "data"
    argv = [str(bag), "--out", str(out), *TOPIC_ARGS, *LABEL_ARGS, "--split", "train"]
    assert main([*argv, "--no-progress"]) == 0

    dataset = FolderDataset(out, split="train")
    assert dataset.info.modalities == ("rgb", "depth")
    assert dataset.info.class_names == CLASS_NAMES
    assert list(dataset.stems) == _stems(frames, list(range(N_FRAMES)))
    for group, frame in zip(dataset, frames, strict=True):
        np.testing.assert_array_equal(group.arrays["rgb"], frame.rgb)
        assert group.arrays["depth"].dtype == np.uint16
        np.testing.assert_array_equal(group.arrays["depth"], frame.depth_mm)
        np.testing.assert_array_equal(group.labels, frame.labels)
    assert (out / "splits" / "train.txt").read_text().split() == list(dataset.stems)
    output = capsys.readouterr()
    assert f"wrote {N_FRAMES} of {N_FRAMES} synchronised frame groups" in output.out
    assert f"depth    {DEPTH}: {N_FRAMES} messages, 0 not in a group" in output.out
    assert "WARNING" not in output.err


def test_import_reports_and_records_the_depth_calibration_beside_its_topic(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames, depth_k=[K])
    out = tmp_path / "data"
    assert main([str(bag), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 0
    assert (
        f"depth    intrinsics [50.5, 51.0, 31.5, 23.5, 64.0, 48.0] (fx fy cx cy w h) from "
        f"{DEPTH_INFO}\n"
    ) in capsys.readouterr().out
    (record,) = json.loads((out / IMPORT_RECORD).read_text())
    assert record["camera_info"] == {
        "depth": {"topic": DEPTH_INFO, "intrinsics": [[50.5, 51.0, 31.5, 23.5, 64, 48]]}
    }
    dataset = FolderDataset(out, split="all")
    assert len(dataset) == N_FRAMES
    assert dict(dataset.info.intrinsics) == {"depth": CAMERA}
    written = (out / "dataset.yaml").read_bytes()
    assert main([str(bag), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 0  # re-run
    assert (out / "dataset.yaml").read_bytes() == written
    assert f"depth    intrinsics recorded in '{out}/dataset.yaml'" in capsys.readouterr().out


def test_import_adds_the_camera_to_a_dataset_yaml_and_keeps_its_keys(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.yaml").write_text(f"name: yard\nclass_names: {list(CLASS_NAMES)}\n")
    bag = write_bag(tmp_path / "bag", frames, depth_k=[K])
    assert (
        main([str(bag), "--out", str(out), *TOPIC_ARGS, "--labels", LABELS, "--no-progress"]) == 0
    )
    assert yaml.safe_load((out / "dataset.yaml").read_text()) == {
        "name": "yard",
        "class_names": list(CLASS_NAMES),
        "intrinsics": {"depth": [50.5, 51.0, 31.5, 23.5, 64, 48]},
    }


def test_appending_a_bag_of_another_camera_is_refused_and_of_the_same_camera_is_not(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    first = write_bag(tmp_path / "first", frames[:2], depth_k=[K])
    assert main([str(first), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = write_bag(tmp_path / "other", frames[2:4], depth_k=[2 * K])
    assert main([str(other), "--out", str(out), *TOPIC_ARGS, "--append", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"ERROR: the depth camera of this bag ({DEPTH_INFO}: [101.0, 102.0, 63.0, 47.0, " in err
    assert f"differs from key 'intrinsics.depth' of '{out}/dataset.yaml'" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    same = write_bag(tmp_path / "same", frames[2:4], depth_k=[K])
    assert main([str(same), "--out", str(out), *TOPIC_ARGS, "--append", "--no-progress"]) == 0
    dataset = FolderDataset(out, split="all")
    assert len(dataset) == 4
    assert dict(dataset.info.intrinsics) == {"depth": CAMERA}


def test_import_names_every_calibration_and_an_uncalibrated_camera_info(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    k = np.array([[50.0, 0, 32.0], [0, 50.0, 24.0], [0, 0, 1]])
    not_recorded = (
        "depth    intrinsics not recorded (not one calibrated camera): a depth_hha encoding of "
        "depth needs 'intrinsics' in the training config\n"
    )
    bag = write_bag(tmp_path / "bag", frames, depth_k=[k, 2 * k])
    assert main([str(bag), "--out", str(tmp_path / "a"), *TOPIC_ARGS, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "from /camera/depth/camera_info; 2 calibrations in the bag, this is the first" in out
    assert not_recorded in out
    assert not (tmp_path / "a" / "dataset.yaml").exists()
    assert dict(FolderDataset(tmp_path / "a", split="all").info.intrinsics) == {}
    bag = write_bag(tmp_path / "zero", frames, depth_k=[np.zeros((3, 3))])
    assert main([str(bag), "--out", str(tmp_path / "b"), *TOPIC_ARGS, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"depth    {DEPTH_INFO}: no calibrated camera (all-zero K)\n  {not_recorded}" in out
    assert not (tmp_path / "b" / "dataset.yaml").exists()


def test_import_keeps_float_depth_in_metres(tmp_path: Path, frames: list[SceneFrame]) -> None:
    bag = write_bag(tmp_path / "bag", frames, float_depth=True, storage="mcap")
    out = tmp_path / "data"
    assert main([str(bag), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 0
    dataset = FolderDataset(out, split="all")
    assert len(dataset) == N_FRAMES
    for group, frame in zip(dataset, frames, strict=True):
        assert group.arrays["depth"].dtype == np.float32
        np.testing.assert_array_equal(group.arrays["depth"], _metres(frame.depth_mm))
        assert group.labels is None
    assert not (out / "labels").exists()


def test_every_keeps_the_stems_of_the_full_import(tmp_path: Path, frames: list[SceneFrame]) -> None:
    bag = write_bag(tmp_path / "bag", frames)
    out = tmp_path / "data"
    args = [str(bag), "--out", str(out), *TOPIC_ARGS, "--every", "2", "--split", "val"]
    assert main([*args, "--no-progress"]) == 0
    assert list(FolderDataset(out, split="val").stems) == _stems(frames, [0, 2, 4])


def test_bad_message_is_skipped_and_reported(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames, short_depth=1)
    out = tmp_path / "data"
    assert main([str(bag), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 0
    assert len(FolderDataset(out, split="all")) == N_FRAMES
    output = capsys.readouterr()
    stamp = frames[1].stamp_ns + 5_000_001
    assert "WARNING: skipped 1 undecodable message(s):" in output.err
    assert f"{DEPTH} at {stamp} ns: '16UC1' image data holds 6143 bytes" in output.err
    assert f"depth    {DEPTH}: {N_FRAMES} messages, 0 not in a group" in output.out


def test_rerun_overwrites_the_same_stems_identically(
    tmp_path: Path, frames: list[SceneFrame]
) -> None:
    bag = write_bag(tmp_path / "bag", frames)
    out = tmp_path / "data"
    args = [str(bag), "--out", str(out), *TOPIC_ARGS, *LABEL_ARGS, "--no-progress"]
    assert main(args) == 0
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main(args) == 0
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first == second
    assert len(first) == 3 * N_FRAMES + 2  # rgb, depth, labels per frame, dataset.yaml, record


def test_interrupted_import_keeps_the_frames_written(
    tmp_path: Path,
    frames: list[SceneFrame],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bag = write_bag(tmp_path / "bag", frames)
    out = tmp_path / "data"
    written: list[str] = []

    def write_then_interrupt(root: Path, group: Any) -> None:
        if len(written) == 2:
            raise KeyboardInterrupt
        write_frame_group(root, group)
        written.append(group.stem)

    monkeypatch.setattr("unim2_ros.bag_import.write_frame_group", write_then_interrupt)
    args = [str(bag), "--out", str(out), *TOPIC_ARGS, "--split", "train", "--no-progress"]
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(FolderDataset(out, split="all").stems) == _stems(frames, [0, 1])
    assert not (out / "splits").exists()


def test_missing_topic_is_an_error_naming_it(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:2])
    args = [str(bag), "--out", str(tmp_path / "data"), *TOPIC_ARGS, "--topic", "thermal=/lwir"]
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: topic '/lwir' is not in bag")
    assert f"its image topics: {RGB}, {DEPTH}, {LABELS}" in err
    assert not (tmp_path / "data").exists()


def test_missing_bag_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tmp_path / "none"), "--out", str(tmp_path / "data"), *TOPIC_ARGS]
    assert main(args) == 1
    assert "ERROR: bag '" in capsys.readouterr().err


def test_labels_without_class_names_are_an_error(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:2])
    args = [str(bag), "--out", str(tmp_path / "data"), *TOPIC_ARGS, "--labels", LABELS]
    assert main([*args, "--no-progress"]) == 1
    assert "ERROR: labels need class names: pass --class-names" in capsys.readouterr().err


def test_labels_use_class_names_of_an_existing_dataset_yaml(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:2])
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset.yaml").write_text(yaml.safe_dump({"class_names": list(CLASS_NAMES)}))
    args = [str(bag), "--out", str(out), *TOPIC_ARGS, "--labels", LABELS, "--no-progress"]
    assert main(args) == 0
    assert FolderDataset(out, split="all").info.class_names == CLASS_NAMES
    disagreeing = [*args, "--class-names", "floor,wall"]
    assert main(disagreeing) == 1
    assert "ERROR: class names ['floor', 'wall'] disagree with" in capsys.readouterr().err


def test_bag_without_any_group_is_an_error(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:3])
    args = [str(bag), "--out", str(tmp_path / "data"), *TOPIC_ARGS, "--slop", "0.0005"]
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"ERROR: no synchronised frame group in bag '{bag}'" in err
    assert f"{RGB}: 3, {DEPTH}: 3" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--topic", "polar=/pol"], "unknown modality 'polar'"),
        (["--topic", "depth"], "expected MODALITY=TOPIC"),
        (["--topic", "depth=/other"], "each modality may be given one --topic"),
        (["--every", "0"], "must be >= 1"),
        (["--slop", "-1"], "must be a finite number > 0"),
        (["--class-names", "a,b"], "--class-names needs --labels"),
    ],
)
def test_bad_arguments_exit_with_usage(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--out", str(tmp_path / "data"), *TOPIC_ARGS, *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_rgb_topic_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "d"), "--topic", f"depth={DEPTH}"])
    assert "an rgb topic is required" in capsys.readouterr().err


def test_folder_with_other_files_is_refused_and_left_as_it_was(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    bag = write_bag(tmp_path / "bag", frames[:2])
    out = tmp_path / "data"
    (out / "rgb").mkdir(parents=True)
    (out / "rgb" / "mine.png").write_bytes(b"not from a bag")
    args = [str(bag), "--out", str(out), *TOPIC_ARGS, "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: --out '{out}' already holds files (rgb) that no import wrote")
    assert sorted(p.name for p in out.rglob("*")) == ["mine.png", "rgb"]


def test_another_bag_needs_append_and_then_adds_its_frames(
    tmp_path: Path, frames: list[SceneFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_bag(tmp_path / "first", frames[:2])
    second = write_bag(tmp_path / "second", frames[2:4])
    out = tmp_path / "data"
    assert main([str(first), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([str(second), "--out", str(out), *TOPIC_ARGS, "--no-progress"]) == 1
    assert f"holds frames imported from '{first.resolve()}'" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    args = [str(second), "--out", str(out), *TOPIC_ARGS, "--append", "--no-progress"]
    assert main(args) == 0
    assert len(FolderDataset(out, split="all")) == 4
    assert all(p.read_bytes() == content for p, content in before.items() if p.suffix == ".png")


def test_aolp_angle_topic_is_imported_as_sin_cos(tmp_path: Path, frames: list[SceneFrame]) -> None:
    """AoLP, a node input, is readable from a bag: 32FC1 radians become the folder's (sin, cos)."""
    rng = np.random.default_rng(3)
    angles = [rng.uniform(0, np.pi, (48, 64)).astype(np.float32) for _ in frames[:2]]
    with BagImageWriter(tmp_path / "bag") as writer:
        for frame, angle in zip(frames[:2], angles, strict=True):
            writer.write_image(RGB, frame.rgb, "rgb8", frame.stamp_ns, "color")
            writer.write_image("/pol/aolp", angle, "32FC1", frame.stamp_ns, "pol")
    out = tmp_path / "data"
    args = [str(tmp_path / "bag"), "--out", str(out), "--topic", f"rgb={RGB}"]
    assert main([*args, "--topic", "aolp=/pol/aolp", "--no-progress"]) == 0
    dataset = FolderDataset(out, split="all")
    for index, angle in enumerate(angles):
        pair = dataset[index].arrays["aolp"]
        assert pair.dtype == np.float32 and pair.shape == (48, 64, 2)
        np.testing.assert_allclose(pair[..., 0], np.sin(angle), atol=1e-6)
        np.testing.assert_allclose(pair[..., 1], np.cos(angle), atol=1e-6)
