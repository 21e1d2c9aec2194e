"""Label-free measurements of a model on the selection split: cluster health and selection criteria.

Without a labelled selection split the trainer cannot pick the checkpoint by mIoU; it picks it by
one of these unsupervised criteria instead (``train.label_free_criterion``), each computed on
the cached selection features at every validation, with the same randomness for every
checkpoint so that they are comparable:

- ``kmeans_nmi``: normalised mutual information between the model's cluster assignment and
  the spherical k-means partition of the same frozen features (fitted once per run on the
  training features). Rewards partitions that keep the structure the backbone already sees;
  agreement with a reference clustering is the external-validity criterion of cluster
  validation (Vinh et al., JMLR 2010, for NMI).
- ``kmeans_ari``: the same agreement as adjusted Rand index (Hubert & Arabie, 1985).
- ``code_stability``: NMI between two k-means runs (different seeds) on the model's codes;
  stability-based validation (Ben-Hur et al., PSB 2002; Lange et al., Neural Comp. 2004):
  codes that form clear clusters give the same partition whatever the initialisation.
- ``heldout_loss``: the CMCS loss on the selection views (nearest selection neighbour as the
  kNN partner), lower is better; the held-out objective.
- ``usage_entropy``: normalised entropy of the model's cluster sizes.

BENCHMARKS.md ("Label-free model selection") gives how well each tracks labelled mIoU over
checkpoints of short runs on the synthetic world. That measurement (4 runs x 8 checkpoints) is
small and no criterion tracked mIoU well (pooled Spearman between -0.06 and +0.24); the default
``kmeans_nmi`` had the best mean per-run rank correlation (+0.35) and is kept until a larger
measurement says otherwise.
The same pass measures the cluster health of ``unim2_core.evaluation.cluster_health``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from unim2_core.evaluation.cluster_health import (
    ClusterHealth,
    assess,
    cluster_usage,
    code_similarity,
)
from unim2_core.model.heads import UniM2Heads
from unim2_core.model.loss import LossConfig, cmcs_loss
from unim2_core.training.feature_cache import FeatureStore
from unim2_core.training.kmeans import kmeans_features, sample_pixels, spherical_kmeans
from unim2_core.training.knn import nearest_neighbours, pooled_descriptors

Criterion = Literal["kmeans_nmi", "kmeans_ari", "code_stability", "heldout_loss", "usage_entropy"]
CRITERIA: tuple[Criterion, ...] = (
    "kmeans_nmi",
    "kmeans_ari",
    "code_stability",
    "heldout_loss",
    "usage_entropy",
)
HIGHER_IS_BETTER: dict[Criterion, bool] = {
    "kmeans_nmi": True,
    "kmeans_ari": True,
    "code_stability": True,
    "heldout_loss": False,
    "usage_entropy": True,
}
DEFAULT_CRITERION: Criterion = "kmeans_nmi"
"""Best mean per-run rank correlation with mIoU in BENCHMARKS.md's (small) measurement."""


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a_ids = np.unique(a.ravel(), return_inverse=True)[1]
    b_ids = np.unique(b.ravel(), return_inverse=True)[1]
    table = np.zeros((a_ids.max() + 1, b_ids.max() + 1), dtype=np.float64)
    np.add.at(table, (a_ids, b_ids), 1.0)
    return table


def normalized_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """NMI of two labelings, normalised by the arithmetic mean of their entropies (sklearn's
    default). 1 for identical partitions up to renaming; 1 as well when both are one cluster.

    Raises:
        ValueError: the labelings differ in size or are empty.
    """
    if a.size != b.size or a.size == 0:
        raise ValueError(f"labelings must be non-empty and of one size, got {a.size}, {b.size}")
    joint = _contingency(a, b) / a.size
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mutual = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa * np.log(pa)).sum())
    hb = float(-(pb * np.log(pb)).sum())
    if ha == 0.0 and hb == 0.0:
        return 1.0
    return max(0.0, mutual / ((ha + hb) / 2))


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (1 identical, about 0 for independent ones).

    Raises:
        ValueError: the labelings differ in size or are empty.
    """
    if a.size != b.size or a.size == 0:
        raise ValueError(f"labelings must be non-empty and of one size, got {a.size}, {b.size}")
    table = _contingency(a, b)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = a.size * (a.size - 1) / 2
    expected = rows * cols / total if total > 0 else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return (index - expected) / (maximum - expected)


class Measurement(NamedTuple):
    """One model measured on the selection split: health and every criterion's value."""

    health: ClusterHealth
    criteria: dict[str, float]


class SelectionProbe:
    """What the label-free measurements hold fixed over a run, built once from the caches.

    Args:
        train: Cached training features (k-means is fitted on a pixel sample of them).
        selection: Cached selection features (no labels needed).
        n_clusters: K of the heads (and of the k-means reference).
        loss_config: The run's CMCS loss settings (``heldout_loss``).
        modalities: Modality names in model order.
        seed: Seed of every sample and of k-means.
        device: Where the heads run.
        max_pixels: Pixels sampled from each split.
        batch_size: Selection views per held-out loss batch.
    """

    def __init__(
        self,
        train: FeatureStore,
        selection: FeatureStore,
        *,
        n_clusters: int,
        loss_config: LossConfig,
        modalities: tuple[str, ...],
        seed: int,
        device: torch.device,
        max_pixels: int = 20_000,
        batch_size: int = 16,
    ) -> None:
        self.selection = selection
        self.n_clusters = n_clusters
        self.loss_config = loss_config
        self.modalities = modalities
        self.seed = seed
        self.device = device
        self.batch_size = max(2, batch_size)
        points = sample_pixels(train, max_pixels=max_pixels, seed=seed, device=device)
        self.centroids = spherical_kmeans(points, min(n_clusters, points.shape[0]), seed=seed)
        height, width = selection.feature_size
        per_view = min(height * width, math.ceil(max_pixels / selection.n_views))
        generator = torch.Generator().manual_seed(seed)
        self.picks = torch.rand(selection.n_views, height * width, generator=generator).argsort(
            dim=1
        )[:, :per_view]  # [V, S] flat pixel positions sampled in every view
        features = self._gather(kmeans_features)  # [N, M*C]
        self.reference = (features @ self.centroids.T).argmax(dim=1).cpu().numpy()
        self.reference_usage = cluster_usage(self.reference, n_clusters)
        self.neighbours = (
            nearest_neighbours(pooled_descriptors(selection.features[modalities[0]]), keep=1)[:, 0]
            if selection.n_views >= 2
            else None
        )

    def _gather(self, transform: Callable[[Tensor], Tensor]) -> Tensor:
        """``transform`` ([B, M, C, h, w] -> [B, D, h, w]) of every view, at the sampled pixels."""
        parts = []
        for start in range(0, self.selection.n_views, 16):
            idx = np.arange(start, min(start + 16, self.selection.n_views))
            maps = transform(self.selection.load(idx, self.device)).flatten(2)  # [B, D, h*w]
            picks = self.picks[idx].to(maps.device)  # [B, S]
            chosen = maps.gather(2, picks[:, None].expand(-1, maps.shape[1], -1))
            parts.append(chosen.transpose(1, 2).reshape(-1, maps.shape[1]))  # [B*S, D]
        return torch.cat(parts)

    def _heldout_loss(self, heads: UniM2Heads) -> float:
        if self.neighbours is None:
            return math.nan
        generator = torch.Generator().manual_seed(self.seed)
        total, weight = 0.0, 0
        n_views = self.selection.n_views
        for start in range(0, n_views, self.batch_size):
            idx = np.arange(start, min(start + self.batch_size, n_views))
            if len(idx) < 2:
                continue
            feats = self.selection.load(idx, self.device)
            feats_knn = self.selection.load(self.neighbours[idx], self.device)
            terms = cmcs_loss(
                heads.harmonise,
                self.loss_config,
                feats,
                heads(feats),
                feats_knn,
                heads(feats_knn),
                modalities=self.modalities,
                generator=generator,
            )
            total += float(terms.total) * len(idx)
            weight += len(idx)
        return total / weight if weight else math.nan

    @torch.no_grad()
    def measure(self, heads: UniM2Heads) -> Measurement:
        """Health and every criterion of ``heads`` (evaluated in eval mode, state restored)."""
        was_training = heads.training
        heads.eval()
        codes = self._gather(heads)  # [N, D]
        centroids = heads.cluster_probe.centroids
        assigned = heads.cluster_probe.similarity(codes[:, :, None, None])[:, :, 0, 0]
        clusters = assigned.argmax(dim=1).cpu().numpy()  # [N]
        usage = cluster_usage(clusters, centroids.shape[0])
        health = assess(usage, code_similarity(codes, seed=self.seed), self.reference_usage)
        stability_sample = codes[:: max(1, codes.shape[0] // 5000)]
        k = min(self.n_clusters, stability_sample.shape[0])
        runs = [
            (stability_sample @ spherical_kmeans(stability_sample, k, seed=s).T).argmax(dim=1)
            for s in (self.seed, self.seed + 1)
        ]
        criteria = {
            "kmeans_nmi": normalized_mutual_info(clusters, self.reference),
            "kmeans_ari": adjusted_rand_index(clusters, self.reference),
            "code_stability": normalized_mutual_info(runs[0].cpu().numpy(), runs[1].cpu().numpy()),
            "heldout_loss": self._heldout_loss(heads),
            "usage_entropy": usage.entropy,
        }
        heads.train(was_training)
        return Measurement(health, criteria)


def better(criterion: Criterion, value: float, than: float | None) -> bool:
    """Whether ``value`` of ``criterion`` beats ``than`` (None or NaN: anything beats it)."""
    if math.isnan(value):
        return False
    if than is None or math.isnan(than):
        return True
    return value > than if HIGHER_IS_BETTER[criterion] else value < than
