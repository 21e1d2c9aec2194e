"""Shift calibration: quantiles recovered on features of known similarity, ``shift: auto``
in configs, and training runs that calibrate and record their shifts."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synthetic_data import tiny_config, write_synthetic_folder

from unim2_core.errors import ConfigError
from unim2_core.model.checkpoint import load_bundle
from unim2_core.model.loss import (
    LossConfig,
    ModalityLossConfig,
    PairValues,
    cmcs_loss,
    feature_correlation,
    sample_pairs,
    sampled_features,
)
from unim2_core.training.batches import batch_indices
from unim2_core.training.calibration import (
    REFERENCE_QUANTILES,
    all_shifts_auto,
    calibrate,
    measure_similarities,
    needs_calibration,
    place_shifts,
    quantile_of,
)
from unim2_core.training.config import parse_config
from unim2_core.training.feature_cache import FeatureStore
from unim2_core.training.knn import cached_neighbours
from unim2_core.training.trainer import Trainer, calibrate_run, train
from unim2_train.calibrate import main as calibrate_main
from unim2_train.train import main as train_main

LOSS_BLOCK = {
    "shift": {"self": 0.7, "knn": 0.6, "rand": 0.5},
    "weight": {"self": 0.1, "knn": 0.2, "rand": 0.9},
    "modality_weight": 0.2,
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_folder(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _angle_store(tmp_path: Path, angles: dict[str, np.ndarray]) -> FeatureStore:
    """Views whose features are one 2-D unit vector each (1x1 maps) at the given angles.

    Every sampled point of a view then carries that vector, so F of views v and w is exactly
    cos(angle_v - angle_w), and the self pair's F is 1.
    """
    features = {
        name: np.stack([np.cos(a), np.sin(a)], axis=1)[:, :, None, None].astype(np.float16)
        for name, a in angles.items()
    }
    count = len(next(iter(angles.values())))
    return FeatureStore(
        path=tmp_path,
        modalities=tuple(angles),
        features=features,
        labels=None,
        stems=tuple(f"{i:04d}" for i in range(count)),
        views_per_frame=1,
    )


def test_place_shifts_puts_each_auto_shift_at_its_quantile_of_a_known_distribution() -> None:
    rng = np.random.default_rng(0)
    laws = {
        "self": statistics.NormalDist(0.4, 0.2),
        "knn": statistics.NormalDist(0.1, 0.1),
        "rand": statistics.NormalDist(-0.2, 0.3),
    }
    samples = {pair: rng.normal(law.mean, law.stdev, 200_000) for pair, law in laws.items()}
    settings = ModalityLossConfig.from_dict(
        {**LOSS_BLOCK, "shift": {"self": "auto", "knn": 0.25, "rand": "auto"}}, where="loss.x"
    )
    target = PairValues(self=0.9, knn=0.5, rand=0.3)
    result = place_shifts(samples, settings, target)
    assert result.calibrated == ("self", "rand")
    assert result.shifts.self == pytest.approx(laws["self"].inv_cdf(0.9), abs=0.005)
    assert result.shifts.rand == pytest.approx(laws["rand"].inv_cdf(0.3), abs=0.005)
    assert result.shifts.knn == 0.25, "a fixed shift is kept"
    assert result.quantiles.self == pytest.approx(0.9, abs=0.002)
    assert result.quantiles.rand == pytest.approx(0.3, abs=0.002)
    assert result.quantiles.knn == pytest.approx(laws["knn"].cdf(0.25), abs=0.005)
    assert result.distribution["knn"][2] == pytest.approx(0.1, abs=0.005)  # median


def test_place_shifts_refuses_an_auto_pair_that_was_not_measured() -> None:
    settings = ModalityLossConfig.from_dict({**LOSS_BLOCK, "shift": "auto"}, where="loss.x")
    samples = {"self": np.ones(10), "knn": np.ones(10)}
    with pytest.raises(ConfigError, match="shift 'rand' is 'auto' but no rand pairs"):
        place_shifts(samples, settings, PairValues(0.5, 0.5, 0.5))


def test_quantile_of_is_the_empirical_distribution_function() -> None:
    values = np.arange(10, dtype=np.float64)
    assert quantile_of(values, 2.0) == 0.3
    assert quantile_of(values, -1.0) == 0.0
    assert quantile_of(values, 9.0) == 1.0


def test_calibration_recovers_quantiles_of_features_with_known_similarities(
    tmp_path: Path, data_root: Path
) -> None:
    # RGB angles spread evenly over the circle: the cosine of a uniformly random pair of views
    # is arcsine-distributed, P(F <= x) = 1 - arccos(x) / pi, so its q quantile is
    # cos(pi (1 - q)). Depth angles are random on a quarter circle: their quantile is checked
    # against that of the exact pairwise cosines.
    count = 240
    angles = {
        "rgb": np.linspace(0, 2 * np.pi, count, endpoint=False),
        "depth": np.random.default_rng(1).uniform(0, np.pi / 2, count),
    }
    store = _angle_store(tmp_path, angles)
    raw = tiny_config(data_root, tmp_path / "run", train={"batch_size": 32})
    for block in raw["loss"]["modalities"].values():
        block["shift"] = "auto"
    # Without per-point centring F is the plain cosine (centring would replace every F of a
    # pair of constant views by the batch mean).
    raw["loss"].update(calibration_batches=40, knn_keep=5, knn_neighbours=5, pointwise=False)
    config = parse_config(raw)
    plan = cached_neighbours(store, keep=5, draw=5)
    quantiles = {
        "rgb": PairValues(self=0.5, knn=0.5, rand=0.2),
        "aux": PairValues(self=0.5, knn=0.5, rand=0.7),
    }
    result = calibrate(config, store, plan, quantiles=quantiles)
    rgb, depth = result.modalities["rgb"], result.modalities["depth"]
    assert rgb.shifts.self == pytest.approx(1.0, abs=1e-3), "F of a view with itself is 1"
    assert rgb.shifts.rand == pytest.approx(math.cos(math.pi * 0.8), abs=0.04)
    assert rgb.quantiles.rand == pytest.approx(0.2, abs=0.01)
    pairwise = np.cos(angles["depth"][:, None] - angles["depth"][None, :])
    off_diagonal = pairwise[~np.eye(count, dtype=bool)]
    assert depth.shifts.rand == pytest.approx(np.quantile(off_diagonal, 0.7), abs=0.02)
    assert depth.quantiles.rand == pytest.approx(0.7, abs=0.01)
    # The nearest of 240 evenly spread angles lie within 5 steps: F >= cos(5 * 2 pi / 240).
    assert rgb.shifts.knn >= math.cos(5 * 2 * math.pi / count) - 1e-3
    resolved = result.config.loss.modalities
    assert not needs_calibration(result.config)
    assert resolved["rgb"].shift == rgb.shifts and resolved["depth"].shift == depth.shifts


def test_measured_similarities_are_the_loss_features_correlations(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(12, 4, 3, 3)).astype(np.float16)
    store = FeatureStore(tmp_path, ("rgb",), {"rgb": features}, None, ("a", "b", "c"), 4)
    plan = cached_neighbours(store, keep=3, draw=2)
    loss = LossConfig(
        modalities={"rgb": ModalityLossConfig.from_dict(LOSS_BLOCK, where="x")},
        points=3,
        random_pairs=2,
    )
    samples = measure_similarities(
        store, plan, loss, batch_size=4, batches=1, seed=5, values_per_batch=10**6
    )
    # Replay the same draws by hand with the loss's own functions.
    generator = torch.Generator().manual_seed(5)
    anchors = batch_indices(0, n_views=12, batch_size=4, seed=5)
    ranks = torch.randint(2, (4,), generator=generator).numpy()
    feats = store.load(anchors)[:, 0]
    feats_knn = store.load(plan.table[anchors, ranks])[:, 0]
    sample = sample_pairs(4, loss, device=torch.device("cpu"), generator=generator)
    f_a, f_b, f_knn = sampled_features(feats, feats_knn, sample)
    expected_knn = feature_correlation(f_a, f_knn).flatten().numpy()
    np.testing.assert_allclose(samples["rgb"]["knn"], expected_knn, atol=1e-6)
    expected_rand = torch.stack([feature_correlation(f_a, f_b[p]) for p in sample.perms])
    np.testing.assert_allclose(samples["rgb"]["rand"], expected_rand.flatten().numpy(), atol=1e-6)
    assert samples["rgb"]["self"].size == expected_knn.size


def test_shift_auto_parses_per_modality_and_per_pair() -> None:
    whole = ModalityLossConfig.from_dict({**LOSS_BLOCK, "shift": "auto"}, where="loss.depth")
    assert whole.auto == ("self", "knn", "rand")
    assert whole.to_dict()["shift"] == "auto"
    partial = ModalityLossConfig.from_dict(
        {**LOSS_BLOCK, "shift": {"self": 0.3, "knn": "auto", "rand": 0.1}}, where="loss.depth"
    )
    assert partial.auto == ("knn",)
    assert partial.to_dict()["shift"] == {"self": 0.3, "knn": "auto", "rand": 0.1}
    resolved = partial.with_shifts({"knn": 0.55})
    assert resolved.shift == PairValues(0.3, 0.55, 0.1) and resolved.auto == ()
    assert ModalityLossConfig.from_dict(partial.to_dict(), where="x").to_dict() == (
        partial.to_dict()
    )


@pytest.mark.parametrize(
    ("shift", "message"),
    [
        ("automatic", r"loss\.depth\.shift must be a mapping with keys .* or 'auto'"),
        (
            {"self": "auto", "knn": "guess", "rand": 0.1},
            r"loss\.depth\.shift\.knn must be a "
            r"number or 'auto', got 'guess'",
        ),
        ({"self": "auto", "knn": 0.2}, r"loss\.depth\.shift: expected keys .*missing \['rand'\]"),
        (
            {"self": float("nan"), "knn": 0.2, "rand": 0.1},
            r"loss\.depth\.shift\.self must be "
            "finite",
        ),
    ],
)
def test_shift_auto_errors_name_the_key(shift: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModalityLossConfig.from_dict({**LOSS_BLOCK, "shift": shift}, where="loss.depth")


def test_pair_weights_cannot_be_auto() -> None:
    with pytest.raises(ConfigError, match=r"loss\.rgb\.weight must be a mapping .*got 'auto'"):
        ModalityLossConfig.from_dict({**LOSS_BLOCK, "weight": "auto"}, where="loss.rgb")


def test_config_with_auto_shift_validates_with_full_key_paths(
    tmp_path: Path, data_root: Path
) -> None:
    raw = tiny_config(data_root, tmp_path / "run")
    raw["loss"]["modalities"]["depth"]["shift"] = "auto"
    config = parse_config(raw)
    assert config.loss.modalities["depth"].auto == ("self", "knn", "rand")
    assert needs_calibration(config)
    raw["loss"]["modalities"]["depth"]["shift"] = {"self": "auto", "knn": "x", "rand": 0.2}
    with pytest.raises(
        ConfigError, match=r"config key 'loss\.modalities\.depth'.*shift\.knn must be a number"
    ):
        parse_config(raw)
    raw["loss"]["modalities"]["depth"]["shift"] = "auto"
    raw["loss"]["calibration_batchs"] = 3
    with pytest.raises(ConfigError, match=r"'loss\.calibration_batchs' \(did you mean "):
        parse_config(raw)


def test_loss_refuses_uncalibrated_auto_shifts() -> None:
    settings = ModalityLossConfig.from_dict({**LOSS_BLOCK, "shift": "auto"}, where="x")
    config = LossConfig(modalities={"rgb": settings}, points=2)
    feats = torch.randn(2, 1, 4, 3, 3)
    code = torch.randn(2, 5, 3, 3)
    with pytest.raises(ConfigError, match=r"shifts of \['rgb'\] are 'auto' and have not been"):
        cmcs_loss(lambda c, _: c, config, feats, code, feats, code, modalities=("rgb",))


def test_all_shifts_auto_marks_every_modality() -> None:
    settings = ModalityLossConfig.from_dict(LOSS_BLOCK, where="x").all_auto()
    assert settings.auto == ("self", "knn", "rand") and math.isnan(settings.shift.rand)


def test_run_with_auto_shifts_writes_the_calibrated_values(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    raw = tiny_config(data_root, tmp_path / "run")
    raw["cache_dir"] = str(cache_dir)
    raw["loss"]["modalities"]["depth"]["shift"] = "auto"
    raw["loss"]["calibration_batches"] = 3
    result = train(parse_config(raw), progress=False)
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    depth_shift = saved["loss"]["modalities"]["depth"]["shift"]
    assert set(depth_shift) == {"self", "knn", "rand"}
    assert all(isinstance(v, float) for v in depth_shift.values())
    assert saved["loss"]["modalities"]["rgb"]["shift"] == {"self": 0.7, "knn": 0.6, "rand": 0.5}
    report = json.loads((run / "calibration.json").read_text())
    assert report["modalities"]["depth"]["shift"] == depth_shift
    assert report["modalities"]["depth"]["calibrated"] == ["self", "knn", "rand"]
    assert report["modalities"]["rgb"]["calibrated"] == []
    assert report["reference_quantiles"]["aux"] == dict(REFERENCE_QUANTILES["aux"]._asdict())
    for pair, value in depth_shift.items():
        assert report["modalities"]["depth"]["quantile"][pair] == pytest.approx(
            getattr(REFERENCE_QUANTILES["aux"], pair), abs=0.02
        )
        assert -1.0 <= value <= 1.0
    assert result.metrics["calibration"]["modalities"]["depth"]["shift"] == depth_shift
    bundle = load_bundle(result.bundle_path)
    assert bundle.training["loss"]["modalities"]["depth"]["shift"] == depth_shift
    setup = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert setup["kind"] == "setup" and setup["calibration"]["modalities"]["depth"]
    # Started again with the same 'auto' config, the run recalibrates identically and resumes.
    again = train(parse_config(raw), progress=False)
    assert again.metrics["steps"] == result.metrics["steps"]


def test_unim2_train_calibrate_flag_calibrates_every_shift(
    tmp_path: Path, data_root: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tiny_config(data_root, tmp_path / "run", train={"steps": 2})
    raw["cache_dir"] = str(cache_dir)
    raw["loss"]["calibration_batches"] = 2
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert train_main(["--config", str(path), "--calibrate", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "shifts rgb: self" in out and "shifts depth: self" in out and "kNN pairs:" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["loss"]["modalities"]["rgb"]["shift"] != {"self": 0.7, "knn": 0.6, "rand": 0.5}
    report = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert report["modalities"]["rgb"]["calibrated"] == ["self", "knn", "rand"]


def test_unim2_calibrate_prints_the_table_and_writes_a_config(
    tmp_path: Path, data_root: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tiny_config(data_root, tmp_path / "run")
    raw["cache_dir"] = str(cache_dir)
    raw["loss"]["calibration_batches"] = 2
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out_path = tmp_path / "calibrated.yaml"
    assert calibrate_main(["--config", str(path), "--out", str(out_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| depth | knn |" in out and "| rgb | rand |" in out
    written = parse_config(yaml.safe_load(out_path.read_text()))
    assert not needs_calibration(written)
    expected = calibrate_run(all_shifts_auto(parse_config(raw)), progress=False)
    assert written.loss.modalities == expected.config.loss.modalities
    assert not (tmp_path / "run" / "model.unim2.pt").exists(), "calibration does not train"


def test_unim2_calibrate_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("dataset: {kind: folder, root: x}\nlos: {}\n")
    assert calibrate_main(["--config", str(path)]) == 1
    assert "ERROR: " in capsys.readouterr().err


def test_trainer_notes_say_what_the_knn_pairs_use(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    raw = tiny_config(data_root, tmp_path / "run")
    raw["cache_dir"] = str(cache_dir)
    trainer = Trainer(parse_config(raw), progress=False)
    # 9 training frames x 5 crops; other frames' crops give 40 candidates (>= knn_keep 30).
    assert trainer.neighbour_plan.candidates == "other_frames"
    assert trainer.neighbour_plan.keep == 30 and trainer.neighbour_plan.draw == 7
    assert trainer.notes[0].startswith("kNN pairs: 45 views of 9 frames; neighbours from other")
    assert trainer.calibration is None
