"""Collapse and degeneracy detection: how a model's clusters and codes use their space.

A clustering head can "succeed" at its loss while putting nearly every pixel into one cluster
or mapping every pixel to nearly the same code (issue 10 saw naive fusion do so on real NYU
frames). Nothing in the loss flags that, and without labels no score does either, so every
validation measures it directly on the selection split:

- cluster usage of the cluster-probe assignments: normalised entropy of the cluster sizes
  (1 = all K clusters equally large, 0 = one cluster), the share of the largest cluster, and
  the number of clusters holding at least ``USED_SHARE`` of the pixels;
- code similarity: mean and quantiles of the cosine similarity of random pixel pairs' codes
  (a collapsed code has all of them near 1).

The same usage is measured once per run for spherical k-means on the same frozen features
(fitted on the training split), the reference of what a balanced partition of these features
looks like. A run is *collapsed* when its largest cluster holds more than ``MAX_SHARE`` of the
pixels while k-means' largest holds at most that much (the data are not simply dominated by one
region). Code similarity is reported beside it but is not a verdict on its own: codes of
healthy heads can share one large common direction (freshly initialised heads give pixel codes
with cosine > 0.99 to each other and still three balanced, correct clusters in
``test/test_cluster_health.py``), since the cluster probe only compares directions relative to
its centroids.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MAX_SHARE = 0.6
"""Largest-cluster share above which a run is collapsed (when k-means' is not above it)."""
USED_SHARE = 0.01
"""A cluster counts as used when it holds at least this share of the pixels."""


class ClusterUsage(NamedTuple):
    """How evenly pixels spread over K clusters.

    Attributes:
        n_clusters: K.
        entropy: Entropy of the cluster sizes divided by log K (1 = uniform, 0 = one cluster).
        largest_share: Share of the pixels in the largest cluster.
        used: Clusters holding at least ``USED_SHARE`` of the pixels.
        n_pixels: Pixels counted.
    """

    n_clusters: int
    entropy: float
    largest_share: float
    used: int
    n_pixels: int


class CodeSimilarity(NamedTuple):
    """Cosine similarity of the codes of random pixel pairs."""

    mean: float
    q05: float
    q50: float
    q95: float


class ClusterHealth(NamedTuple):
    """Usage and code statistics of a model, the k-means reference, and the verdict.

    Attributes:
        usage: The model's cluster usage.
        codes: The model's code similarity (None when not measured, e.g. for k-means).
        reference: k-means' usage on the same features (None when not measured).
        collapsed: True when the verdict is collapse (see the module docstring).
        reason: Why it is collapsed, in one sentence (None when it is not).
    """

    usage: ClusterUsage
    codes: CodeSimilarity | None
    reference: ClusterUsage | None
    collapsed: bool
    reason: str | None

    def to_record(self) -> dict[str, Any]:
        """Flat plain-type form for ``metrics.jsonl``, ``metrics.json`` and the bundle."""
        record: dict[str, Any] = {
            "collapsed": self.collapsed,
            "collapse_reason": self.reason,
            "cluster_entropy": self.usage.entropy,
            "largest_cluster_share": self.usage.largest_share,
            "clusters_used": self.usage.used,
            "n_clusters": self.usage.n_clusters,
        }
        if self.codes is not None:
            record.update(
                {
                    "code_cosine_mean": self.codes.mean,
                    "code_cosine_q05": self.codes.q05,
                    "code_cosine_q50": self.codes.q50,
                    "code_cosine_q95": self.codes.q95,
                }
            )
        if self.reference is not None:
            record.update(
                {
                    "kmeans_cluster_entropy": self.reference.entropy,
                    "kmeans_largest_cluster_share": self.reference.largest_share,
                    "kmeans_clusters_used": self.reference.used,
                }
            )
        return record


def cluster_usage(assignments: np.ndarray | Tensor, n_clusters: int) -> ClusterUsage:
    """Usage statistics of cluster ids in 0..K-1 (any shape).

    Raises:
        ValueError: K < 1, no ids, or an id outside 0..K-1.
    """
    ids = np.asarray(
        assignments.cpu().numpy() if isinstance(assignments, Tensor) else assignments
    ).ravel()
    if n_clusters < 1 or ids.size == 0:
        raise ValueError(f"need K >= 1 and some cluster ids, got K={n_clusters}, {ids.size} ids")
    if ids.min() < 0 or ids.max() >= n_clusters:
        raise ValueError(
            f"cluster ids must lie in 0..{n_clusters - 1}, got {ids.min()}..{ids.max()}"
        )
    counts = np.bincount(ids.astype(np.int64), minlength=n_clusters)
    shares = counts / ids.size
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    return ClusterUsage(
        n_clusters=n_clusters,
        entropy=entropy / math.log(n_clusters) if n_clusters > 1 else 1.0,
        largest_share=float(shares.max()),
        used=int((shares >= USED_SHARE).sum()),
        n_pixels=int(ids.size),
    )


def code_similarity(codes: Tensor, *, pairs: int = 20_000, seed: int = 0) -> CodeSimilarity:
    """Cosine similarity statistics of ``pairs`` random pairs of distinct rows of [N, D] codes.

    Raises:
        ValueError: fewer than two codes, or ``pairs`` < 1.
    """
    if codes.ndim != 2 or codes.shape[0] < 2 or pairs < 1:
        raise ValueError(f"need [N >= 2, D] codes and pairs >= 1, got {list(codes.shape)}, {pairs}")
    generator = torch.Generator().manual_seed(seed)
    n = codes.shape[0]
    first = torch.randint(n, (pairs,), generator=generator)
    second = (first + torch.randint(1, n, (pairs,), generator=generator)) % n  # never first
    unit = F.normalize(codes.float(), dim=1)
    cosine = (unit[first.to(codes.device)] * unit[second.to(codes.device)]).sum(dim=1).cpu()
    q05, q50, q95 = torch.quantile(cosine.double(), torch.tensor([0.05, 0.5, 0.95]).double())
    return CodeSimilarity(float(cosine.mean()), float(q05), float(q50), float(q95))


def assess(
    usage: ClusterUsage,
    codes: CodeSimilarity | None,
    reference: ClusterUsage | None,
    *,
    max_share: float = MAX_SHARE,
) -> ClusterHealth:
    """The collapse verdict of a model's usage against k-means' usage (``codes`` is carried
    along for the record; see the module docstring)."""
    reason = None
    reference_balanced = reference is None or reference.largest_share <= max_share
    if usage.largest_share > max_share and reference_balanced:
        against = (
            ""
            if reference is None
            else f" while k-means on the same features puts at most "
            f"{100 * reference.largest_share:.0f}% in one"
        )
        reason = (
            f"the largest cluster holds {100 * usage.largest_share:.0f}% of the pixels "
            f"({usage.used} of {usage.n_clusters} clusters used){against}"
        )
    return ClusterHealth(usage, codes, reference, reason is not None, reason)
