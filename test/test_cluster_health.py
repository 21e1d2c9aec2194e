"""Cluster health (usage, code similarity, collapse verdict) and the label-free criteria."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unim2_core.evaluation.cluster_health import (
    ClusterUsage,
    CodeSimilarity,
    assess,
    cluster_usage,
    code_similarity,
)
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_core.model.loss import LossConfig, ModalityLossConfig
from unim2_core.training.feature_cache import FeatureStore
from unim2_core.training.label_free import (
    CRITERIA,
    SelectionProbe,
    adjusted_rand_index,
    better,
    normalized_mutual_info,
)

CHANNELS = 8


def test_cluster_usage_of_hand_counted_assignments() -> None:
    usage = cluster_usage(np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 3]), 5)
    shares = np.array([0.6, 0.2, 0.1, 0.1])
    assert usage.largest_share == pytest.approx(0.6)
    assert usage.entropy == pytest.approx(-(shares * np.log(shares)).sum() / math.log(5))
    assert (usage.used, usage.n_pixels, usage.n_clusters) == (4, 10, 5)
    assert cluster_usage(np.arange(4), 4).entropy == pytest.approx(1.0)
    assert cluster_usage(np.zeros(7, dtype=int), 4).entropy == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("ids", "k", "match"),
    [(np.array([0, 4]), 4, r"must lie in 0\.\.3"), (np.array([], dtype=int), 3, "some cluster")],
)
def test_cluster_usage_rejects_bad_ids(ids: np.ndarray, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cluster_usage(ids, k)


def test_code_similarity_is_one_for_a_constant_code_and_low_for_random_codes() -> None:
    constant = code_similarity(torch.ones(50, 6) * torch.tensor([1.0, 2, 3, 4, 5, 6]))
    assert constant.q05 == pytest.approx(1.0) and constant.mean == pytest.approx(1.0)
    spread = code_similarity(torch.randn(500, 64, generator=torch.Generator().manual_seed(0)))
    assert abs(spread.mean) < 0.05 and spread.q95 < 0.4
    with pytest.raises(ValueError, match=r"need \[N >= 2, D\] codes"):
        code_similarity(torch.ones(1, 3))


def _usage(largest: float) -> ClusterUsage:
    return ClusterUsage(n_clusters=4, entropy=0.5, largest_share=largest, used=2, n_pixels=100)


def test_collapse_verdict_compares_with_the_kmeans_reference() -> None:
    codes = CodeSimilarity(0.2, -0.3, 0.2, 0.7)
    flagged = assess(_usage(0.9), codes, _usage(0.3))
    assert flagged.collapsed and "90% of the pixels" in str(flagged.reason)
    assert "k-means on the same features puts at most 30%" in str(flagged.reason)
    assert not assess(_usage(0.5), codes, _usage(0.3)).collapsed
    # the features themselves are that imbalanced: not a collapse of the model
    assert not assess(_usage(0.9), codes, _usage(0.8)).collapsed
    # a shared code direction alone is no collapse while the clusters are balanced
    assert not assess(_usage(0.5), CodeSimilarity(0.99, 0.97, 0.99, 1.0), _usage(0.3)).collapsed
    record = flagged.to_record()
    assert record["collapsed"] is True and record["kmeans_largest_cluster_share"] == 0.3
    assert record["code_cosine_q05"] == -0.3


def test_nmi_and_ari_of_hand_computed_partitions() -> None:
    a = np.array([0, 0, 1, 1])
    assert normalized_mutual_info(a, np.array([5, 5, 7, 7])) == pytest.approx(1.0)
    assert adjusted_rand_index(a, np.array([5, 5, 7, 7])) == pytest.approx(1.0)
    # a vs b = [0, 1, 0, 1]: independent halves; MI = 0. Pairs together: 0 in both, 2 in each
    # alone, of 6; expected 2 * 2 / 6, so ARI = (0 - 2/3) / (2 - 2/3) = -0.5
    b = np.array([0, 1, 0, 1])
    assert normalized_mutual_info(a, b) == pytest.approx(0.0, abs=1e-12)
    assert adjusted_rand_index(a, b) == pytest.approx(-0.5)
    # c = [0, 0, 0, 1]: H(a) = ln 2, H(c) = 0.5623, I = H(c) - H(c|a) = 0.5623 - 0.5 ln 2
    c = np.array([0, 0, 0, 1])
    h_c = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mutual = h_c - 0.5 * math.log(2)
    assert normalized_mutual_info(a, c) == pytest.approx(mutual / ((math.log(2) + h_c) / 2))
    with pytest.raises(ValueError, match="one size"):
        normalized_mutual_info(a, c[:3])


def test_better_respects_each_criterions_direction() -> None:
    assert better("kmeans_nmi", 0.5, 0.4) and not better("kmeans_nmi", 0.3, 0.4)
    assert better("heldout_loss", -0.3, -0.2) and not better("heldout_loss", -0.1, -0.2)
    assert better("kmeans_nmi", 0.1, None) and not better("kmeans_nmi", math.nan, 0.1)


def _store(seed: int) -> FeatureStore:
    """Twelve 6x6 feature maps of RGB + depth over three equally frequent, separable classes."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.repeat(np.arange(3), 12 * 36 // 3)).reshape(12, 6, 6)
    eye = np.eye(CHANNELS)

    def maps(offset: int) -> np.ndarray:
        values = eye[classes + offset] + 0.05 * rng.standard_normal((12, 6, 6, CHANNELS))
        return values.transpose(0, 3, 1, 2).astype(np.float16)  # [V, C, h, w]

    return FeatureStore(
        path=Path(f"/fake/{seed}"),
        modalities=("rgb", "depth"),
        features={"rgb": maps(0), "depth": maps(3)},
        labels=None,
        stems=tuple(str(i) for i in range(12)),
        views_per_frame=1,
    )


def _probe() -> SelectionProbe:
    values = ModalityLossConfig.from_dict(
        {
            "shift": {"self": 0.5, "knn": 0.4, "rand": 0.3},
            "weight": {"self": 1, "knn": 1, "rand": 1},
            "modality_weight": 1,
        },
        where="test",
    )
    return SelectionProbe(
        _store(0),
        _store(1),
        n_clusters=3,
        loss_config=LossConfig(modalities={"rgb": values, "depth": values}, points=3),
        modalities=("rgb", "depth"),
        seed=0,
        device=torch.device("cpu"),
        batch_size=4,
    )


def _heads() -> UniM2Heads:
    torch.manual_seed(0)
    return UniM2Heads(
        HeadsConfig(modalities=("rgb", "depth"), channels=CHANNELS, code_dim=6, n_clusters=3)
    )


def test_a_model_whose_code_is_constant_is_flagged_collapsed() -> None:
    probe = _probe()
    heads = _heads()
    with torch.no_grad():
        for module in heads.head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                module.bias.fill_(0.3)  # every pixel gets the same code
    measured = probe.measure(heads)
    assert probe.reference_usage.largest_share < 0.4  # k-means on the features is balanced
    assert measured.health.collapsed
    assert measured.health.usage.largest_share == 1.0 and measured.health.usage.used == 1
    assert measured.health.codes is not None and measured.health.codes.q05 > 0.999
    assert measured.criteria["usage_entropy"] == 0.0
    assert measured.criteria["kmeans_nmi"] == pytest.approx(0.0, abs=1e-9)


def test_a_model_that_keeps_the_classes_apart_is_healthy() -> None:
    probe = _probe()
    heads = _heads()
    store = _store(0)
    code = heads.eval()(store.load(np.arange(1)))[0]  # [D, h, w]
    classes = store.features["rgb"][0].astype(np.float32).argmax(axis=0)  # [h, w]
    with torch.no_grad():
        for k in range(3):  # each centroid on the mean code of one class
            y, x = np.argwhere(classes == k).T
            heads.cluster_probe.centroids[k] = code[:, y, x].mean(dim=1)
    measured = probe.measure(heads)
    assert measured.health.codes is not None and measured.health.codes.q05 > 0.9
    assert not measured.health.collapsed and measured.health.reason is None
    assert measured.health.usage.largest_share < 0.45 and measured.health.usage.used == 3
    assert measured.criteria["kmeans_nmi"] > 0.9 and measured.criteria["kmeans_ari"] > 0.9
    assert set(measured.criteria) == set(CRITERIA)
    assert math.isfinite(measured.criteria["heldout_loss"])
    assert measured == probe.measure(heads)  # the same randomness for every checkpoint
