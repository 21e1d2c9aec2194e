"""Trainer: schedule, outputs, exact resume after interruption, model selection."""

from __future__ import annotations

import dataclasses
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
import yaml
from synthetic_data import tiny_config, write_synthetic_folder
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.datasets import DatasetInfo
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.errors import ConfigError, Interrupted, TrainingError
from unim2_core.model.checkpoint import load_bundle
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.training.config import TrainConfig, parse_config
from unim2_core.training.feature_cache import entry_name
from unim2_core.training.trainer import (
    Trainer,
    batch_indices,
    config_differences,
    holdout_split,
    train,
    with_dataset_intrinsics,
)

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
    from unim2_core.data.datasets import open_dataset

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
    with pytest.raises(
        TrainingError, match=r"different configuration \(train.lr: 0.0005 -> 0.001\).*--restart"
    ):
        Trainer(changed, progress=False)
    result = Trainer(changed, restart=True, progress=False).run()
    assert result.metrics["steps"] == 2


def test_resume_may_extend_steps_but_not_go_below_the_step_reached(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    steps = {"steps": 4, "val_every": 2, "checkpoint_every": 2}
    train(_config(data_root, tmp_path / "run", cache_dir, train=steps), progress=False)
    longer = _config(data_root, tmp_path / "run", cache_dir, train={**steps, "steps": 6})
    trainer = Trainer(longer, progress=False)
    assert trainer.resumed_step == 4
    assert trainer.run().metrics["steps"] == 6
    shorter = _config(data_root, tmp_path / "run", cache_dir, train={**steps, "steps": 5})
    with pytest.raises(TrainingError, match=r"already at step 6, beyond train.steps=5"):
        Trainer(shorter, progress=False)


def test_config_differences_name_every_changed_key() -> None:
    old = {"train": {"steps": 2, "lr": 0.1}, "cache_dir": None, "loss": {"points": 11}}
    new = {"train": {"steps": 3, "lr": 0.1}, "cache_dir": "c", "model": {"code_dim": 8}}
    assert config_differences(old, new) == {
        "train.steps": "train.steps: 2 -> 3",
        "cache_dir": "cache_dir: None -> 'c'",
        "loss": "loss: {'points': 11} -> (absent)",
        "model": "model: (absent) -> {'code_dim': 8}",
    }


def test_sigint_saves_the_step_reached_and_resumes_exactly(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Ctrl-C between checkpoints: the state holds the step reached, not the last checkpoint."""
    steps = {"steps": 8, "val_every": 3, "checkpoint_every": 100}
    reference = train(
        _config(data_root, tmp_path / "straight", cache_dir, train=steps), progress=False
    )

    def ctrl_c(step: int) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    config = _config(data_root, tmp_path / "resumed", cache_dir, train=steps)
    with pytest.raises(Interrupted, match=r"stopped at step 5 of 8; the state is saved") as info:
        Trainer(config, progress=False, step_hook=ctrl_c).run()
    assert info.value.signal_number == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    state = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert state["step"] == 5
    resumed = Trainer(config, progress=False)
    assert resumed.resumed_step == 5
    result = resumed.run()
    expected, got = load_bundle(reference.bundle_path), load_bundle(result.bundle_path)
    for key, value in expected.heads_state.items():
        torch.testing.assert_close(got.heads_state[key], value, rtol=0, atol=0)
    assert _log_records(tmp_path / "resumed") == _log_records(tmp_path / "straight")


def test_sigterm_stops_the_command_with_a_saved_state_and_a_resume_line(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    import yaml

    raw = tiny_config(
        data_root, tmp_path / "run", train={"steps": 100000, "checkpoint_every": 10**6}
    )
    raw["cache_dir"] = str(cache_dir)
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    command = [sys.executable, "-m", "unim2_train.train", "--config", str(config_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [*command, "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not log.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert process.returncode == 128 + signal.SIGTERM, err.decode()
    assert len(lines) == 1 and lines[0].startswith("interrupted: training stopped at step ")
    step = int(lines[0].split("step ")[1].split()[0])
    assert step >= 1
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["step"] == step
    again = subprocess.run(
        [*command, "--no-progress", "--set", f"train.steps={step + 1}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert f"resuming from step {step} of {step + 1}" in again.stderr


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
    selection = result.metrics["selection"]
    assert (selection["split"], selection["labelled"]) == ("train held-out 0.25", False)
    assert selection["criterion"] == "kmeans_nmi" and "label-free" in selection["note"]


def test_selection_without_labels_picks_the_best_checkpoint_by_the_named_criterion(
    data_root: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for sub in ("rgb", "depth"):
        (unlabelled / sub).symlink_to(data_root / sub)
    config = _config(
        unlabelled,
        tmp_path / "run",
        cache_dir,
        model={"n_clusters": 6, "linear_probe": False},
        train={"steps": 8, "val_every": 2, "label_free_criterion": "code_stability"},
    )
    with caplog.at_level("INFO", logger="unim2_core.training.trainer"):
        result = train(config, progress=False)
    val = [r for r in _log_records(tmp_path / "run") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [2, 4, 6, 8]
    assert all("miou" not in r for r in val)
    healthy = [r for r in val if not r["health/collapsed"]] or val
    best = max(healthy, key=lambda r: float(r["criterion/code_stability"]))  # type: ignore[arg-type]
    selection = result.metrics["selection"]
    assert selection["criterion"] == "code_stability"
    assert selection["step"] == best["step"]
    assert selection["value"] == pytest.approx(best["criterion/code_stability"])
    assert load_bundle(result.bundle_path).metrics["selection"] == selection
    assert "selected on train held-out 0.25 by code_stability" in caplog.text
    assert not (tmp_path / "run" / "val_miou.png").exists()  # nothing labelled to plot


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


def test_mixed_labelled_and_unlabelled_folder_trains_and_evaluates_its_labelled_frames(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    from unim2_train.evaluate import main as eval_main

    mixed = tmp_path / "mixed"
    (mixed / "labels").mkdir(parents=True)
    for sub in ("rgb", "depth"):
        (mixed / sub).symlink_to(data_root / sub)
    (mixed / "dataset.yaml").symlink_to(data_root / "dataset.yaml")
    labelled = ["0000", "0002", "0004", "0006", "0009", "0010"]
    for stem in labelled:
        (mixed / "labels" / f"{stem}.png").symlink_to(data_root / "labels" / f"{stem}.png")
    (mixed / "splits").mkdir()
    (mixed / "splits" / "train.txt").write_text("\n".join(f"{i:04d}" for i in range(9)))
    (mixed / "splits" / "val.txt").write_text("0009\n0010\n0011\n")
    raw = tiny_config(mixed, tmp_path / "run", dataset={"val_split": "val"})
    raw["cache_dir"] = str(cache_dir)
    config = parse_config(raw)
    trainer = Trainer(config, progress=False)
    selection_labels = np.asarray(trainer.data.selection.labels)
    assert (selection_labels[2] == 255).all()  # '0011' has no labels: ignored everywhere
    assert (selection_labels[:2] != 255).any(axis=(1, 2)).all()
    train_labels = np.asarray(trainer.data.train.labels).reshape(9, 5, -1)
    assert [bool((train_labels[i] != 255).any()) for i in range(9)] == [
        f"{i:04d}" in labelled for i in range(9)
    ]
    result = trainer.run()
    assert result.metrics["selection"]["criterion"] == "miou"
    assert 0.0 < result.metrics["selection"]["miou"] <= 100.0
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "eval"
    args = ["--config", str(config_path), "--checkpoint", str(result.bundle_path)]
    assert eval_main([*args, "--split", "val", "--out", str(out), "--no-progress"]) == 0
    written = json.loads((out / "metrics.json").read_text())
    assert (written["n_frames"], written["n_unlabelled_frames"]) == (2, 1)
    assert written["miou"] == pytest.approx(result.metrics["selection"]["miou"], abs=0.5)
    assert "2 labelled (1 unlabelled skipped)" in (out / "report.md").read_text()


def test_a_collapsed_model_is_flagged_in_the_log_and_metrics(
    data_root: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = Trainer(
        _config(data_root, tmp_path / "run", cache_dir, train={"steps": 2, "val_every": 2}),
        progress=False,
    )
    with torch.no_grad():
        for module in trainer.heads.head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                module.bias.fill_(0.1)  # one code for every pixel
    with caplog.at_level("WARNING", logger="unim2_core.training.trainer"):
        record = trainer._validate()
    assert record["health/collapsed"] is True
    assert record["health/largest_cluster_share"] == 1.0
    assert record["health/kmeans_largest_cluster_share"] <= 0.6
    assert "clusters COLLAPSED" in caplog.text and "100% of the pixels" in caplog.text
    warnings = [r for r in _log_records(tmp_path / "run") if r["kind"] == "warning"]
    assert len(warnings) == 1 and "COLLAPSED" in str(warnings[0]["message"])


def test_kmeans_cluster_fit_sets_unit_centroids_from_the_codes(
    data_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    fitted = train(
        _config(data_root, tmp_path / "km", cache_dir, model={"cluster_fit": "kmeans"}),
        progress=False,
    )
    learned = train(_config(data_root, tmp_path / "probe", cache_dir), progress=False)
    centroids = load_bundle(fitted.bundle_path).heads_state["cluster_probe.centroids"]
    probe = load_bundle(learned.bundle_path).heads_state["cluster_probe.centroids"]
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(len(centroids)))
    assert not torch.allclose(probe.norm(dim=1), torch.ones(len(probe)), atol=1e-3)


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


SYNTHETIC_CAMERA = CameraIntrinsics(110.0, 112.0, 63.5, 47.5, 128, 96)


def _folder_with_camera(data_root: Path, root: Path, camera: CameraIntrinsics | None) -> Path:
    """The synthetic frames (linked) with a dataset.yaml giving ``camera`` for depth."""
    root.mkdir()
    for sub in ("rgb", "depth", "labels"):
        (root / sub).symlink_to(data_root / sub)
    config = yaml.safe_load((data_root / "dataset.yaml").read_text())
    if camera is not None:
        config["intrinsics"] = {"depth": camera.to_list()}
    (root / "dataset.yaml").write_text(yaml.safe_dump(config))
    return root


def test_depth_hha_without_intrinsics_trains_with_the_dataset_yaml_camera(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _folder_with_camera(data_root, tmp_path / "data", SYNTHETIC_CAMERA)
    config = _config(
        root,
        tmp_path / "run",
        tmp_path / "cache",
        modalities={"rgb": {"kind": "rgb"}, "depth": {"kind": "depth_hha"}},
        train={"steps": 2},
    )
    assert config.modalities["depth"].intrinsics is None
    with caplog.at_level("INFO", logger="unim2_core.training.trainer"):
        result = train(config, progress=False)
    assert (
        f"modalities.depth: depth_hha intrinsics {SYNTHETIC_CAMERA.to_list()} taken from "
        f"'{root}/dataset.yaml' (key 'intrinsics.depth')"
    ) in caplog.text
    resolved = dataclasses.replace(
        ModalityEncoding.default("depth_hha"), intrinsics=SYNTHETIC_CAMERA
    )
    bundle = load_bundle(result.bundle_path)
    assert bundle.encodings["depth"] == resolved  # the node's fallback camera
    assert bundle.training["modalities"]["depth"]["intrinsics"] == SYNTHETIC_CAMERA.to_list()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["modalities"]["depth"]["intrinsics"] == SYNTHETIC_CAMERA.to_list()
    entries = {p.name for p in (tmp_path / "cache").rglob("depth-*.npy")}
    assert f"{entry_name('depth', resolved)}.npy" in entries  # the cache knows the camera


def test_depth_hha_without_intrinsics_anywhere_names_dataset_yaml(
    data_root: Path, tmp_path: Path
) -> None:
    config = _config(
        data_root,
        tmp_path / "run",
        tmp_path / "cache",
        modalities={"rgb": {"kind": "rgb"}, "depth": {"kind": "depth_hha"}},
    )
    with pytest.raises(
        ConfigError,
        match=r"modalities\.depth: the depth_hha encoding needs the camera's intrinsics: give "
        r"'intrinsics' .* in this encoding or, for a folder dataset, key 'intrinsics\.depth' in "
        rf"'{data_root}/dataset\.yaml', which unim2_import_bag writes",
    ):
        Trainer(config, progress=False)
    assert not (tmp_path / "cache").exists()  # refused before any feature is extracted


def _info(intrinsics: dict[str, CameraIntrinsics]) -> DatasetInfo:
    return DatasetInfo("t", ("rgb", "depth"), (), np.zeros((0, 3), np.uint8), 255, intrinsics)


def test_config_intrinsics_win_over_the_dataset_camera_with_a_warning(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    given = [100.0, 100.0, 64.0, 48.0, 128, 96]
    config = _config(
        data_root,
        tmp_path / "run",
        tmp_path / "cache",
        modalities={"rgb": {"kind": "rgb"}, "depth": {"kind": "depth_hha", "intrinsics": given}},
    )
    with caplog.at_level("INFO", logger="unim2_core.training.trainer"):
        resolved = with_dataset_intrinsics(config, _info({"depth": SYNTHETIC_CAMERA}))
    assert resolved == config
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"modalities.depth: the config's intrinsics {[float(v) for v in given]} differ from "
        f"{SYNTHETIC_CAMERA.to_list()} in '{data_root}/dataset.yaml'; the config's are used"
    )
    caplog.clear()
    with caplog.at_level("INFO", logger="unim2_core.training.trainer"):
        same = _info({"depth": CameraIntrinsics.from_values(given)})
        assert with_dataset_intrinsics(config, same) == config
    assert caplog.records == []


def test_encodings_other_than_depth_hha_ignore_the_dataset_camera(
    data_root: Path, tmp_path: Path
) -> None:
    config = _config(data_root, tmp_path / "run", tmp_path / "cache")
    assert with_dataset_intrinsics(config, _info({"depth": SYNTHETIC_CAMERA})) == config
