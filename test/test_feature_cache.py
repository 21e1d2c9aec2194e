"""Feature cache: computed once, keyed by everything it depends on, resumable, shardable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from synthetic_data import tiny_config, write_synthetic_folder

from unim2_core.data.datasets import FrameGroup, open_dataset
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import encode_group, training_views
from unim2_core.errors import CacheError, DataError
from unim2_core.model.backbone import Backbone, load_backbone
from unim2_core.training.feature_cache import ViewSpec, extract_features, open_store
from unim2_core.training.knn import cached_neighbours, nearest_neighbours

REPO_ROOT = Path(__file__).resolve().parents[1]
ENCODINGS = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
TRAIN_VIEW = ViewSpec("train", 28)
DATASET_ID = {"kind": "folder", "root": "synthetic"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_folder(
        tmp_path_factory.mktemp("synthetic"), n_frames=6, width=96, height=72
    )


@pytest.fixture(scope="module")
def frames(data_root: Path) -> Any:
    return open_dataset("folder", data_root, split="all")


class CountingBackbone(torch.nn.Module):
    """Wraps a backbone and counts the images it sees."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.inner = backbone
        self.images = 0
        self.identity = backbone.identity
        self.patch_size = backbone.patch_size
        self.channels = backbone.channels

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images += pixels.shape[0]
        return self.inner(pixels)


def _extract(
    frames: Any,
    backbone: Any,
    root: Path,
    encodings: dict[str, ModalityEncoding] = ENCODINGS,
    spec: ViewSpec = TRAIN_VIEW,
) -> Any:
    return extract_features(
        frames,
        split_name="train",
        dataset_id=DATASET_ID,
        backbone=backbone,
        encodings=encodings,
        spec=spec,
        cache_root=root,
        progress=False,
    )


def test_cached_features_are_the_backbone_features_of_each_view(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    store = _extract(frames, imgfocus_backbone, tmp_path)
    assert store.modalities == ("rgb", "depth") and store.views_per_frame == 5
    assert store.n_views == 30 and store.feature_size == (2, 2)
    assert store.features["rgb"].dtype == np.float16 and store.labels is not None
    encoded = encode_group(frames[4].arrays, ENCODINGS)
    views = training_views(encoded, crop_size=28)  # [5, M, 3, 28, 28]
    expected = imgfocus_backbone(views.flatten(0, 1)).reshape(5, 2, 384, 2, 2)
    got = store.load(np.arange(20, 25))
    torch.testing.assert_close(got, expected.half().float(), rtol=0, atol=0)


def test_second_extraction_reuses_the_cache(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    first = _extract(frames, CountingBackbone(imgfocus_backbone), tmp_path)
    counting = CountingBackbone(imgfocus_backbone)
    second = _extract(frames, counting, tmp_path)
    assert counting.images == 0 and second.path == first.path


def test_rgb_only_run_reuses_rgb_features_of_an_rgbd_cache(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    both = _extract(frames, imgfocus_backbone, tmp_path)
    counting = CountingBackbone(imgfocus_backbone)
    rgb_only = _extract(frames, counting, tmp_path, {"rgb": ENCODINGS["rgb"]})
    assert counting.images == 0 and rgb_only.path == both.path
    np.testing.assert_array_equal(rgb_only.features["rgb"], both.features["rgb"])


def test_other_settings_never_reuse_a_cache(
    frames: Any, imgfocus_backbone: Backbone, imgfocus_weights: Path, tmp_path: Path
) -> None:
    base = _extract(frames, imgfocus_backbone, tmp_path)
    other_layer = load_backbone("dinov2_vits14", imgfocus_weights, feature_layer="last")
    counting = CountingBackbone(other_layer)
    store = _extract(frames, counting, tmp_path)
    assert store.path != base.path and counting.images == 30 * 2
    counting = CountingBackbone(imgfocus_backbone)
    other_depth = {**ENCODINGS, "depth": ModalityEncoding.from_dict({"kind": "depth", "high": 4.0})}
    _extract(frames, counting, tmp_path, other_depth)
    assert counting.images == 30, "only the depth entry with new constants is computed"
    counting = CountingBackbone(imgfocus_backbone)
    _extract(frames, counting, tmp_path, spec=ViewSpec("train", 42))
    assert counting.images == 60


def test_tampered_metadata_rebuilds_the_cache(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    store = _extract(frames, imgfocus_backbone, tmp_path)
    meta_path = store.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["key"]["n_frames"] = 999
    meta_path.write_text(json.dumps(meta))
    counting = CountingBackbone(imgfocus_backbone)
    rebuilt = _extract(frames, counting, tmp_path)
    assert counting.images == 60 and rebuilt.path == store.path


class FailingAt:
    """A frame source that fails on one frame, like a crash in the middle of an extraction."""

    def __init__(self, frames: Any, index: int) -> None:
        self.frames, self.index = frames, index
        self.stems = frames.stems

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> FrameGroup:
        if index == self.index:
            raise DataError("cannot read frame (simulated)")
        group: FrameGroup = self.frames[index]
        return group


def test_interrupted_extraction_resumes_and_keeps_finished_frames(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="frame '0004' of train-train-.*simulated"):
        extract_features(
            FailingAt(frames, 4),
            split_name="train",
            dataset_id=DATASET_ID,
            backbone=imgfocus_backbone,
            encodings=ENCODINGS,
            spec=TRAIN_VIEW,
            cache_root=tmp_path,
            progress=False,
            batch_frames=2,
        )
    counting = CountingBackbone(imgfocus_backbone)
    store = _extract(frames, counting, tmp_path)
    assert counting.images == 2 * 5 * 2, "only the batch of frames 4 and 5 is extracted again"
    reference = _extract(frames, imgfocus_backbone, tmp_path / "fresh")
    for name in ENCODINGS:
        np.testing.assert_array_equal(store.features[name], reference.features[name])


def test_nearest_neighbours_exclude_self_and_sort_by_similarity() -> None:
    descriptors = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.4]]), dim=1
    )
    table = nearest_neighbours(descriptors, keep=2)
    assert table.tolist() == [[1, 3], [0, 3], [3, 1], [1, 0]]
    cut = nearest_neighbours(descriptors, keep=5)
    assert cut.tolist() == [[1, 3, 2], [0, 3, 2], [3, 1, 0], [1, 0, 2]], "keep cut to V - 1"


def test_nearest_neighbours_skip_rows_of_the_same_group() -> None:
    descriptors = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5]]),
        dim=1,
    )
    groups = np.array([0, 0, 1, 1, 2, 2])
    table = nearest_neighbours(descriptors, keep=30, groups=groups)
    assert table.shape == (6, 4), "every row has 4 rows of other groups"
    assert table[0].tolist() == [3, 5, 4, 2]
    assert (groups[table] != groups[:, None]).all()
    with pytest.raises(ValueError, match="rows of at least 2 groups, got 3 rows"):
        nearest_neighbours(descriptors[:3], keep=2, groups=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"one id per row \(6\), got shape \(2,\)"):
        nearest_neighbours(descriptors, keep=2, groups=np.zeros(2, dtype=int))


def test_neighbour_table_is_cached_beside_the_features(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    store = _extract(frames, imgfocus_backbone, tmp_path)
    plan = cached_neighbours(store, keep=7)
    table = plan.table
    assert table.shape == (30, 7) and (table != np.arange(30)[:, None]).all()
    assert list(store.path.glob("knn-rgb-*-7-other_frames.npy"))
    np.testing.assert_array_equal(cached_neighbours(store, keep=7).table, table)


def test_small_recording_keeps_the_neighbours_that_exist(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    store = _extract(frames, imgfocus_backbone, tmp_path)  # 6 frames x 5 crops
    frame = np.arange(store.n_views) // store.views_per_frame
    plan = cached_neighbours(store, keep=30, draw=7)
    assert (plan.keep, plan.draw, plan.candidates) == (25, 7, "other_frames")
    assert (frame[plan.table] != frame[:, None]).all(), "no crop of the anchor's own frame"
    assert plan.describe() == (
        "kNN pairs: 30 views of 6 frames; neighbours from other frames, keep 25, drawn among "
        "the nearest 7 (requested keep 30 / draw 7; cut to the candidates available)"
    )
    assert plan.summary()["keep"] == 25 and plan.summary()["requested_keep"] == 30
    everything = cached_neighbours(store, keep=30, draw=40, candidates="all_views")
    assert (everything.keep, everything.draw) == (29, 29)
    assert (everything.table != np.arange(30)[:, None]).all()
    assert (frame[everything.table] == frame[:, None]).any(), "own crops are candidates"


def test_single_frame_falls_back_to_its_own_crops(
    frames: Any, imgfocus_backbone: Backbone, tmp_path: Path
) -> None:
    store = _extract(frames, imgfocus_backbone, tmp_path)
    single = store._replace(
        features={name: values[:5] for name, values in store.features.items()},
        stems=store.stems[:1],
    )
    plan = cached_neighbours(single, keep=30, draw=7)
    assert (plan.keep, plan.draw, plan.candidates) == (4, 4, "all_views")
    assert sorted(plan.table[0].tolist()) == [1, 2, 3, 4]
    assert "neighbours from all other views, keep 4, drawn among the nearest 4" in plan.describe()
    lone = single._replace(
        features={name: values[:1] for name, values in store.features.items()}, views_per_frame=1
    )
    with pytest.raises(CacheError, match="kNN pairs need at least 2 training views"):
        cached_neighbours(lone, keep=3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_process_torchrun_extraction_equals_single_process(
    data_root: Path, tmp_path: Path, imgfocus_weights: Path
) -> None:
    raw = tiny_config(
        data_root,
        tmp_path / "run",
        crops={"crop_size": 28, "shorter_side": 28},
        eval={"crop_size": 28},
    )
    raw["cache_dir"] = str(tmp_path / "cache-2proc")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "unim2_train.extract_features",
        "--config",
        str(config_path),
        "--no-progress",
    ]
    result = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = [
        sys.executable,
        "-m",
        "unim2_train.extract_features",
        "--config",
        str(config_path),
        "--no-progress",
        "--set",
        f"cache_dir={tmp_path / 'cache-1proc'}",
    ]
    result = subprocess.run(single, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = sorted((tmp_path / "cache-2proc").iterdir())
    one = sorted((tmp_path / "cache-1proc").iterdir())
    assert [p.name for p in two] == [p.name for p in one] and len(two) == 2  # train + selection
    for dir2, dir1 in zip(two, one, strict=True):
        assert sorted(p.name for p in dir2.glob("*.done-1.npy")), "rank 1 did its share"
        encodings = {
            "rgb": ModalityEncoding.default("rgb"),
            "depth": ModalityEncoding.from_dict({"kind": "depth", "low": 0.3, "high": 8.0}),
        }
        store2, store1 = open_store(dir2, encodings), open_store(dir1, encodings)
        for name in encodings:
            np.testing.assert_array_equal(store2.features[name], store1.features[name])
        np.testing.assert_array_equal(store2.labels, store1.labels)
