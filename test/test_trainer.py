"""Trainer: schedule, outputs, exact resume after interruption, model selection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_data import tiny_config, write_synthetic_folder
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from unim2_core.checkpoint import load_bundle
from unim2_core.config import TrainConfig, parse_config
from unim2_core.errors import ConfigError, TrainingError
from unim2_core.segmenter import Segmenter
from unim2_core.trainer import Trainer, batch_indices, holdout_split, train

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _config(data_root: Path, out: Path, cache_dir: Path, **sections: object) -> TrainConfig:
    raw = tiny_config(data_root, out, **sections)
    raw["cache_dir"] = str(cache_dir)
    return parse_config(raw)


def _log_records(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_bundle_metrics_log_and_config(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    config = _config(data_root, tmp_path / "run", cache_dir)
    result = train(config, progress=False)
    assert result.bundle_path == tmp_path / "run" / "model.unim2.pt"
    bundle = load_bundle(result.bundle_path)
    assert bundle.modalities == ("rgb", "depth")
    assert bundle.heads_config.n_clusters == 8  # one per class of the synthetic scenes
    assert bundle.heads_config.n_classes == 8  # linear probe on by default
    assert bundle.class_mapping is not None and len(bundle.class_mapping.class_names) == 8
    assert bundle.training["train"]["steps"] == 6
    selection = result.metrics["selection"]
    assert selection["split"] == "train held-out 0.25" and selection["step"] in (3, 6)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result.metrics
    records = _log_records(tmp_path / "run")
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert train_steps == [6]  # logged every 10 steps and at the last one
    assert [r["step"] for r in val] == [3, 6]
    assert {"loss/rgb/self", "loss/depth/knn", "loss/depth/rand"} <= set(
        records[-2] if records[-2]["kind"] == "train" else records[-3]
    )
    best = max(val, key=lambda r: r["miou"])
    assert selection["miou"] == best["miou"] and selection["step"] == best["step"]
    assert (tmp_path / "run" / "config.yaml").is_file()
    for plot in ("loss.png", "val_miou.png"):
        assert (tmp_path / "run" / plot).read_bytes().startswith(b"\x89PNG")


def test_tensorboard_logging_writes_train_and_val_scalars(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    config = _config(data_root, tmp_path / "run", cache_dir, logging={"tensorboard": True})
    train(config, progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/miou"} <= tags
    assert [e.step for e in events.Scalars("val/miou")] == [3, 6]


def test_bundle_serves_the_segmenter_with_class_ids(
    data_root: Path, cache_dir: Path, tmp_path: Path, imgfocus_weights: Path
) -> None:
    result = train(
        _config(data_root, tmp_path / "run", cache_dir, train={"steps": 3}), progress=False
    )
    segmenter = Segmenter.from_files(result.bundle_path, imgfocus_weights, device="cpu")
    from unim2_core.datasets import open_dataset

    frame = open_dataset("folder", data_root, split="all")[0]
    labels = segmenter(frame.arrays).labels
    assert labels.shape == frame.labels.shape
    assert labels.max() < len(segmenter.labels_table)
    assert segmenter.labels_table[0].name == "floor"


def test_interrupted_run_resumes_to_the_same_result(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    steps = {"steps": 8, "val_every": 3, "checkpoint_every": 2}
    reference = train(
        _config(data_root, tmp_path / "straight", cache_dir, train=steps), progress=False
    )

    def interrupt(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    config = _config(data_root, tmp_path / "resumed", cache_dir, train=steps)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, progress=False, step_hook=interrupt).run()
    state = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert state["step"] == 4  # the last checkpoint before the interruption
    resumed = train(config, progress=False)

    expected, got = load_bundle(reference.bundle_path), load_bundle(resumed.bundle_path)
    for key, value in expected.heads_state.items():
        torch.testing.assert_close(got.heads_state[key], value, rtol=0, atol=0)
    assert got.class_mapping is not None and expected.class_mapping is not None
    assert got.class_mapping.cluster_to_class == expected.class_mapping.cluster_to_class
    assert resumed.metrics["selection"] == reference.metrics["selection"]
    assert _log_records(tmp_path / "resumed") == _log_records(tmp_path / "straight")


def test_killed_process_resumes_to_the_same_result(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    import yaml

    steps = {"steps": 10, "val_every": 5, "checkpoint_every": 2}
    reference = train(
        _config(data_root, tmp_path / "straight", cache_dir, train=steps), progress=False
    )
    raw = tiny_config(data_root, tmp_path / "killed", train=steps)
    raw["cache_dir"] = str(cache_dir)
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    command = [
        sys.executable,
        "-m",
        "unim2_train.train",
        "--config",
        str(config_path),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_path = tmp_path / "killed" / "state.pt"
    deadline = time.monotonic() + 120
    while not state_path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert state_path.exists(), process.stderr.read().decode() if process.stderr else ""
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    expected, got = (
        load_bundle(reference.bundle_path),
        load_bundle(tmp_path / "killed" / "model.unim2.pt"),
    )
    for key, value in expected.heads_state.items():
        torch.testing.assert_close(got.heads_state[key], value, rtol=0, atol=0)


def test_changed_config_refuses_to_resume_unless_restarted(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    train(_config(data_root, tmp_path / "run", cache_dir, train={"steps": 2}), progress=False)
    changed = _config(data_root, tmp_path / "run", cache_dir, train={"steps": 2, "lr": 1e-3})
    with pytest.raises(TrainingError, match="different configuration.*--restart"):
        Trainer(changed, progress=False)
    result = Trainer(changed, restart=True, progress=False).run()
    assert result.metrics["steps"] == 2


def test_unlabelled_data_needs_a_cluster_count(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for sub in ("rgb", "depth"):
        (unlabelled / sub).symlink_to(data_root / sub)
    with pytest.raises(ConfigError, match="model.n_clusters must be set"):
        Trainer(
            _config(unlabelled, tmp_path / "run", cache_dir, model={"linear_probe": False}),
            progress=False,
        )
    result = train(
        _config(
            unlabelled,
            tmp_path / "run",
            cache_dir,
            model={"n_clusters": 5, "linear_probe": False},
            train={"steps": 2},
        ),
        progress=False,
    )
    bundle = load_bundle(result.bundle_path)
    assert bundle.class_mapping is None and bundle.heads_config.n_clusters == 5
    assert result.metrics["selection"]["split"] is None


def test_selecting_on_test_is_labelled_so(data_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    splits = data_root / "splits"
    splits.mkdir(exist_ok=True)
    (splits / "train.txt").write_text("\n".join(f"{i:04d}" for i in range(9)))
    (splits / "test.txt").write_text("\n".join(f"{i:04d}" for i in range(9, 12)))
    try:
        config = _config(
            data_root,
            tmp_path / "run",
            cache_dir,
            dataset={"test_split": "test"},
            train={"steps": 2, "selection_split": "test"},
        )
        result = train(config, progress=False)
    finally:
        for path in splits.iterdir():
            path.unlink()
        splits.rmdir()
    assert result.metrics["selection"]["split"] == "test (selected on test)"
    assert all(
        "selected on test" in r["split"]
        for r in _log_records(tmp_path / "run")
        if r["kind"] == "val"
    )


def test_batches_are_seeded_epoch_permutations() -> None:
    batches = [batch_indices(step, n_views=10, batch_size=4, seed=3) for step in range(5)]
    epoch0 = np.concatenate(batches)[:10]
    assert sorted(epoch0.tolist()) == list(range(10))
    np.testing.assert_array_equal(batch_indices(2, n_views=10, batch_size=4, seed=3), batches[2])
    assert not np.array_equal(batch_indices(0, n_views=10, batch_size=4, seed=4), batches[0])


def test_holdout_split_is_seeded_disjoint_and_non_empty() -> None:
    kept, held = holdout_split(20, 0.1, seed=0)
    assert len(held) == 2 and not set(kept) & set(held) and sorted(kept + held) == list(range(20))
    assert holdout_split(20, 0.1, seed=0) == (kept, held)
    assert holdout_split(3, 0.01, seed=0)[1] and holdout_split(3, 0.99, seed=0)[0]


def test_modality_dropout_hides_aux_modalities_at_its_rate_and_resumes_exactly(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    schedule = {"steps": 6, "val_every": 3, "checkpoint_every": 2, "modality_dropout": 0.5}
    config = _config(data_root, tmp_path / "straight", cache_dir, train=schedule)
    trainer = Trainer(config, progress=False)
    state = trainer.generator.get_state()
    present = trainer._dropout_mask(4000)
    assert present is not None and present.shape == (4000, 2) and present.dtype == torch.bool
    assert bool(present[:, 0].all())
    assert abs(float(present[:, 1].float().mean()) - 0.5) < 0.03
    trainer.generator.set_state(state)
    reference = trainer.run()

    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    resumed_config = _config(data_root, tmp_path / "resumed", cache_dir, train=schedule)
    with pytest.raises(KeyboardInterrupt):
        Trainer(resumed_config, progress=False, step_hook=interrupt).run()
    resumed = train(resumed_config, progress=False)
    expected, got = load_bundle(reference.bundle_path), load_bundle(resumed.bundle_path)
    for key, value in expected.heads_state.items():
        torch.testing.assert_close(got.heads_state[key], value, rtol=0, atol=0)
    assert got.training["train"]["modality_dropout"] == 0.5

    paper = train(
        _config(
            data_root, tmp_path / "paper", cache_dir, train={**schedule, "modality_dropout": 0}
        ),
        progress=False,
    )
    paper_heads = load_bundle(paper.bundle_path).heads_state
    assert any(
        not torch.equal(paper_heads[key], value) for key, value in expected.heads_state.items()
    )


def test_without_modality_dropout_no_mask_is_drawn(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    trainer = Trainer(_config(data_root, tmp_path / "run", cache_dir), progress=False)
    state = trainer.generator.get_state()
    assert trainer._dropout_mask(8) is None
    assert torch.equal(trainer.generator.get_state(), state)
