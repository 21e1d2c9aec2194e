"""Baselines: spherical k-means on raw features, derived variant configs, the comparison table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from tiny_setup import tiny_config, write_tiny_config, write_tiny_dataset

from unim2_core.errors import ConfigError, DataError
from unim2_core.training.baselines import (
    VARIANTS,
    ComparisonRow,
    ComparisonTable,
    compare,
    evaluate_centroids,
    format_comparison,
    kmeans_features,
    sample_pixels,
    spherical_kmeans,
    variant_config,
    with_modalities,
)
from unim2_core.training.feature_cache import FeatureStore
from unim2_train.evaluate import main

PATCH = 2


def _store(seed: int, *, labelled: bool = True) -> FeatureStore:
    """Six 4x4 feature maps of two modalities over three classes; labels at 8x8 (patch 2).

    RGB gives classes 0 and 1 the same direction; depth tells them apart. Features carry a
    little noise.
    """
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, size=(6, 4, 4))
    eye = np.eye(8)
    rgb_dirs = np.stack([eye[0], eye[0], eye[1]])  # classes 0 and 1 alike in RGB
    depth_dirs = np.stack([eye[2], eye[3], eye[4]])

    def maps(directions: np.ndarray) -> np.ndarray:
        values = directions[classes] + 0.01 * rng.standard_normal((6, 4, 4, 8))
        return values.transpose(0, 3, 1, 2).astype(np.float16)  # [V, C, h, w]

    labels = classes.repeat(PATCH, axis=1).repeat(PATCH, axis=2).astype(np.uint8)
    return FeatureStore(
        path=Path(f"/fake/{seed}"),
        modalities=("rgb", "depth"),
        features={"rgb": maps(rgb_dirs), "depth": maps(depth_dirs)},
        labels=labels if labelled else None,
        stems=tuple(f"{i}" for i in range(6)),
        views_per_frame=1,
    )


def _rgb_only(store: FeatureStore) -> FeatureStore:
    return store._replace(modalities=("rgb",), features={"rgb": store.features["rgb"]})


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_spherical_kmeans_recovers_obvious_clusters(init: str) -> None:
    generator = torch.Generator().manual_seed(3)
    directions = torch.eye(6)[:4] * torch.tensor([1.0, 2.0, 3.0, 0.5])[:, None]  # norms differ
    truth = torch.randint(4, (400,), generator=generator)
    points = directions[truth] + 0.05 * torch.randn(400, 6, generator=generator)
    centroids = spherical_kmeans(points, 4, init=init, seed=0)  # type: ignore[arg-type]
    assert torch.allclose(centroids.norm(dim=1), torch.ones(4), atol=1e-5)
    assigned = (torch.nn.functional.normalize(points, dim=1) @ centroids.T).argmax(dim=1)
    table = np.zeros((4, 4), dtype=int)
    np.add.at(table, (assigned.numpy(), truth.numpy()), 1)
    assert ((table > 0).sum(axis=1) == 1).all() and ((table > 0).sum(axis=0) == 1).all()


def test_spherical_kmeans_is_seeded() -> None:
    points = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    first = spherical_kmeans(points, 3, seed=7)
    assert torch.equal(first, spherical_kmeans(points, 3, seed=7))
    assert not torch.equal(first, spherical_kmeans(points, 3, seed=8))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.randn(2, 3), 3), {}, r"need \[N >= 3, D\] points"),
        ((torch.randn(5, 3), 0), {}, "n_clusters >= 1"),
        ((torch.randn(5, 3), 2), {"iterations": 0}, "iterations >= 1"),
        ((torch.randn(5, 3), 2), {"init": "farthest"}, "init must be"),
    ],
)
def test_spherical_kmeans_rejects_impossible_requests(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        spherical_kmeans(*args, **kwargs)


def test_kmeans_features_normalise_each_modality_then_concatenate() -> None:
    features = torch.randn(2, 2, 8, 3, 3) * torch.tensor([1.0, 50.0])[None, :, None, None, None]
    out = kmeans_features(features)
    assert out.shape == (2, 16, 3, 3)
    torch.testing.assert_close(out[:, :8].norm(dim=1), torch.ones(2, 3, 3))
    torch.testing.assert_close(out[:, 8:].norm(dim=1), torch.ones(2, 3, 3))


def test_sample_pixels_takes_every_pixel_when_few() -> None:
    store = _store(0)
    samples = sample_pixels(store, max_pixels=10_000, seed=0, device=torch.device("cpu"))
    every = kmeans_features(store.load(np.arange(6))).permute(0, 2, 3, 1).reshape(-1, 16)
    assert samples.shape == (96, 16)
    torch.testing.assert_close(samples, every)


def test_sample_pixels_draws_distinct_pixels_from_every_view() -> None:
    store = _store(0)
    samples = sample_pixels(store, max_pixels=12, seed=1, device=torch.device("cpu"))
    every = kmeans_features(store.load(np.arange(6))).permute(0, 2, 3, 1).reshape(6, 16, 16)
    assert samples.shape == (12, 16)
    for view in range(6):
        rows = samples[2 * view : 2 * view + 2]
        matches = (torch.cdist(rows, every[view]) < 1e-6).nonzero()[:, 1]
        assert len(set(matches.tolist())) == 2  # two distinct pixels of that very view


def test_kmeans_on_concatenated_modalities_separates_what_rgb_cannot() -> None:
    train, evaluation = _store(0), _store(1)
    cpu = torch.device("cpu")
    scores = {}
    for name, pick in (("rgb", _rgb_only), ("rgbx", lambda s: s)):
        points = sample_pixels(pick(train), max_pixels=1000, seed=0, device=cpu)
        centroids = spherical_kmeans(points, 3, seed=0)
        scores[name] = evaluate_centroids(
            centroids, pick(evaluation), n_classes=3, patch_size=PATCH, device=cpu
        )
    assert scores["rgbx"].miou == pytest.approx(100.0)
    assert scores["rgbx"].accuracy == pytest.approx(100.0)
    assert scores["rgb"].miou < 80.0  # classes 0 and 1 share the RGB direction


def test_evaluate_centroids_needs_labels() -> None:
    with pytest.raises(DataError, match="has no labels"):
        evaluate_centroids(
            torch.eye(3, 16),
            _store(0, labelled=False),
            n_classes=3,
            patch_size=PATCH,
            device=torch.device("cpu"),
        )


# --- derived configs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("baselines")
    return {"base": base, "root": write_tiny_dataset(base / "data"), "cache": base / "cache"}


def test_variant_configs_derive_from_the_given_config(tiny: dict[str, Path]) -> None:
    config = tiny_config(tiny["root"], tiny["base"] / "run")
    out, cache = Path("/runs/cmp"), Path("/runs/cache")
    derived = {v: variant_config(config, v, output_dir=out / v, cache_dir=cache) for v in VARIANTS}
    for variant, cfg in derived.items():
        assert (cfg.output_dir, cfg.cache_dir) == (str(out / variant), str(cache))
    for variant in ("kmeans_rgb", "rgb_only"):
        assert list(derived[variant].modalities) == ["rgb"]
        assert list(derived[variant].loss.modalities) == ["rgb"]
        assert derived[variant].loss.modalities["rgb"] == config.loss.modalities["rgb"]
    assert derived["naive"].model.align == "none"
    assert derived["unim2"].model == config.model
    assert derived["unim2"].modalities == config.modalities


def test_multimodal_variants_refuse_an_rgb_only_config(tiny: dict[str, Path]) -> None:
    config = with_modalities(tiny_config(tiny["root"], tiny["base"] / "run"), ["rgb"])
    for variant in ("kmeans_rgbx", "naive", "unim2"):
        with pytest.raises(ConfigError, match=f"'{variant}' needs an auxiliary modality"):
            variant_config(config, variant, output_dir=Path("o"), cache_dir=Path("c"))
    with pytest.raises(ConfigError, match="unknown baseline variant 'stego'"):
        variant_config(config, "stego", output_dir=Path("o"), cache_dir=Path("c"))  # type: ignore[arg-type]


def test_with_modalities_rejects_unknown_names(tiny: dict[str, Path]) -> None:
    config = tiny_config(tiny["root"], tiny["base"] / "run")
    with pytest.raises(ConfigError, match=r"\['thermal'\] are not in the config"):
        with_modalities(config, ["rgb", "thermal"])


def test_compare_refuses_repeated_or_no_variants(tiny: dict[str, Path]) -> None:
    config = tiny_config(tiny["root"], tiny["base"] / "run")
    with pytest.raises(ConfigError, match="repeated"):
        compare(config, ["unim2", "unim2"], tiny["base"] / "x")
    with pytest.raises(ConfigError, match="no baseline variant"):
        compare(config, [], tiny["base"] / "x")


# --- end to end ------------------------------------------------------------------------------


def test_cli_runs_every_variant_and_tabulates_their_metrics(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny["base"] / "cmp"
    config_path = write_tiny_config(
        tiny["base"] / "cfg.yaml", tiny["root"], tiny["base"] / "run", tiny["cache"]
    )
    assert (
        main(["--config", str(config_path), "--baselines", "--out", str(out), "--no-progress"]) == 0
    )
    printed = capsys.readouterr().out
    markdown = (out / "comparison.md").read_text()
    assert markdown in printed
    assert "Model selection on: val." in markdown
    assert (
        "| val mIoU | val Acc | test mIoU | test Acc | selected by | largest cluster | collapsed |"
        in markdown
    )
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == list(VARIANTS)
    for row in rows:
        metrics = json.loads((out / row["variant"] / "metrics.json").read_text())
        cells = [
            metrics["selection"]["miou"],
            metrics["selection"]["accuracy"],
            metrics["test"]["miou"],
            metrics["test"]["accuracy"],
        ]
        assert [row["selection_miou"], row["selection_accuracy"]] == cells[:2]
        assert [row["test_miou"], row["test_accuracy"]] == cells[2:]
        assert (metrics["selection"]["split"], metrics["test"]["split"]) == ("val", "test")
        line = next(x for x in markdown.splitlines() if f"(`{row['variant']}`)" in x)
        share = f"{100 * metrics['health']['largest_cluster_share']:.0f}%"
        flag = "**COLLAPSED**" if metrics["collapsed"] else "no"
        by = metrics["selection"].get("criterion", "-")
        assert line.endswith(" | ".join([*(f"{v:.2f}" for v in cells), by, share, flag]) + " |"), (
            line
        )
        assert row["collapsed"] is metrics["collapsed"]
    trained = {v: yaml.safe_load((out / v / "config.yaml").read_text()) for v in VARIANTS[2:]}
    assert list(trained["rgb_only"]["modalities"]) == ["rgb"]
    assert trained["naive"]["model"]["align"] == "none"
    assert trained["unim2"]["model"]["align"] == "aux"
    # one shared cache: each split's features extracted once, one file per modality
    caches = sorted(p.name.split("-")[0] for p in tiny["cache"].iterdir())
    assert caches == ["selection", "test", "train"]
    for split_dir in tiny["cache"].iterdir():
        maps = [p.name for p in split_dir.glob("*.npy") if ".done-" not in p.name]
        prefixes = [name.split("-")[0] for name in maps]
        assert (prefixes.count("rgb"), prefixes.count("depth")) == (1, 1)


def test_selection_on_test_is_flagged_in_the_table(tiny: dict[str, Path]) -> None:
    config = tiny_config(tiny["root"], tiny["base"] / "run", tiny["cache"])
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, selection_split="test")
    )
    table = compare(config, ["kmeans_rgb"], tiny["base"] / "on-test", progress=False)
    assert table.selected_on_test
    assert table.rows[0].selection_split == "test (selected on test)"
    assert table.rows[0].test_split is None  # the test split is the selection split
    text = format_comparison(table)
    assert "(SELECTED ON TEST)" in text and "**Selected on test**" in text


def test_cli_rejects_unknown_variants(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_tiny_config(tiny["base"] / "c2.yaml", tiny["root"], tiny["base"], None)
    assert main(["--config", str(config_path), "--baselines", "--variants", "kmeans,unim2"]) == 1
    assert "ERROR: --variants 'kmeans,unim2': unknown ['kmeans']" in capsys.readouterr().err


def test_baselines_run_with_an_unlabelled_selection_split(tiny: dict[str, Path]) -> None:
    unlabelled = tiny["base"] / "unlabelled"
    unlabelled.mkdir()
    for sub in ("rgb", "depth"):
        (unlabelled / sub).symlink_to(tiny["root"] / sub)
    raw = tiny_config(tiny["root"], tiny["base"] / "run")
    config = dataclasses.replace(
        raw,
        dataset=dataclasses.replace(
            raw.dataset, root=str(unlabelled), val_split=None, test_split=None
        ),
        model=dataclasses.replace(raw.model, n_clusters=4, linear_probe=False),
    )
    out = tiny["base"] / "cmp-unlabelled"
    table = compare(config, ["kmeans_rgb", "rgb_only"], out, progress=False)
    kmeans, trained = table.rows
    assert kmeans.selection_miou is None and trained.selection_miou is None
    assert (kmeans.selected_by, trained.selected_by) == (None, "kmeans_nmi")
    assert kmeans.largest_cluster_share is not None and not kmeans.collapsed
    metrics = json.loads((out / "rgb_only" / "metrics.json").read_text())
    assert metrics["selection"]["labelled"] is False
    assert trained.collapsed is metrics["collapsed"]
    text = format_comparison(table)
    assert "| - | - | kmeans_nmi |" in text and "selected by their label-free criterion" in text


def test_collapsed_variants_are_flagged_in_the_table() -> None:
    row = ComparisonRow(
        "naive",
        "naive fusion",
        ("rgb", "depth"),
        "val",
        3.5,
        38.2,
        None,
        None,
        None,
        Path("m.json"),
        "miou",
        0.93,
        True,
    )
    healthy = row._replace(variant="unim2", collapsed=False, largest_cluster_share=0.2)
    text = format_comparison(ComparisonTable((row, healthy), "val", False, "paper"))
    assert "| 3.50 | 38.20 | miou | 93% | **COLLAPSED** |" in text
    assert "| miou | 20% | no |" in text
    assert "**Collapsed**: `naive` put most pixels into one cluster" in text
