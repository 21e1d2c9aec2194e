"""Cross-modal correspondence distillation loss (CMCS, design.md §3).

For a modality m and an image pair (a, b), P x P random points are sampled in each image. F is
the cosine similarity of the frozen backbone features of modality m between every point of a
and every point of b (no gradient), centred per anchor point; S is the cosine similarity of the
codes (the code itself for RGB, the harmonised code for aligned modalities). The loss is
``mean(-(F - shift) * max(S, 0))``: feature pairs more similar than ``shift`` pull their codes
together, less similar ones push them apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from unim2_core.errors import ConfigError

PAIRS = ("self", "knn", "rand")


class PairValues(NamedTuple):
    """One value per pair type: the group with itself, a nearest neighbour, random groups."""

    self: float
    knn: float
    rand: float


AUTO = "auto"
"""Shift value that asks for calibration from the cached features (see
``unim2_core.training.calibration``)."""
_UNCALIBRATED = float("nan")
# The one NaN object standing for an ``auto`` shift: tuples compare items by identity first, so
# two configs with the same ``auto`` pairs compare equal (two distinct NaNs never would).


@dataclass(frozen=True)
class ModalityLossConfig:
    """Shifts, pair weights and the modality weight w_m of one modality's loss terms.

    Attributes:
        shift: Shift per pair type; NaN for a pair listed in ``auto`` until it is calibrated.
        weight: Pair weights.
        modality_weight: w_m.
        auto: Pair types whose shift is ``auto``: placed by ``unim2_core.training.calibration``
            from the data at training start (YAML ``shift: auto`` for all three, or ``knn: auto``).
    """

    shift: PairValues
    weight: PairValues
    modality_weight: float
    auto: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """Plain-type form for YAML and checkpoints (``auto`` shifts written as ``auto``)."""
        shift: object = {
            pair: AUTO if pair in self.auto else value
            for pair, value in self.shift._asdict().items()
        }
        if set(self.auto) == set(PAIRS):
            shift = AUTO
        return {
            "shift": shift,
            "weight": dict(self.weight._asdict()),
            "modality_weight": self.modality_weight,
        }

    def with_shifts(self, shifts: Mapping[str, float]) -> ModalityLossConfig:
        """This config with the ``auto`` shifts set to ``shifts[pair]`` (calibrated values).

        Raises:
            ConfigError: a value is missing for one of the ``auto`` pairs.
        """
        missing = [pair for pair in self.auto if pair not in shifts]
        if missing:
            raise ConfigError(f"no calibrated shift for pair(s) {missing}")
        values = {
            pair: float(shifts[pair]) if pair in self.auto else value
            for pair, value in self.shift._asdict().items()
        }
        return dataclasses.replace(self, shift=PairValues(**values), auto=())

    def all_auto(self) -> ModalityLossConfig:
        """This config with every shift ``auto`` (``unim2_train --calibrate``)."""
        unset = _UNCALIBRATED
        return dataclasses.replace(self, shift=PairValues(unset, unset, unset), auto=PAIRS)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str) -> ModalityLossConfig:
        """Parse ``{shift: {self, knn, rand} | auto, weight: {...}, modality_weight}``.

        A shift (all three, or one pair's) may be ``auto``.

        Raises:
            ConfigError: a missing, unknown or non-numeric key, named with its full path.
        """
        unknown = set(data) - {"shift", "weight", "modality_weight"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        shift_data = data.get("shift")
        if shift_data == AUTO:
            shift_data = dict.fromkeys(PAIRS, AUTO)
        shift = _pair_values(shift_data, where=f"{where}.shift", allow_auto=True)
        return cls(
            shift=shift,
            weight=_pair_values(data.get("weight"), where=f"{where}.weight"),
            modality_weight=_number(data.get("modality_weight"), where=f"{where}.modality_weight"),
            auto=tuple(pair for pair in PAIRS if math.isnan(getattr(shift, pair))),
        )


def _number(value: object, *, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    return float(value)


def _pair_values(value: object, *, where: str, allow_auto: bool = False) -> PairValues:
    if not isinstance(value, Mapping):
        expected = f"a mapping with keys {list(PAIRS)}" + (" or 'auto'" if allow_auto else "")
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    keys = set(value)
    if keys != set(PAIRS):
        raise ConfigError(
            f"{where}: expected keys {list(PAIRS)}; missing {sorted(set(PAIRS) - keys)}, "
            f"unknown {sorted(keys - set(PAIRS))}"
        )
    numbers = {}
    for pair in PAIRS:
        if allow_auto and value[pair] == AUTO:
            numbers[pair] = _UNCALIBRATED
        elif allow_auto and isinstance(value[pair], str):
            raise ConfigError(f"{where}.{pair} must be a number or 'auto', got {value[pair]!r}")
        else:
            numbers[pair] = _number(value[pair], where=f"{where}.{pair}")
    return PairValues(**numbers)


@dataclass(frozen=True)
class LossConfig:
    """Every modality's loss settings plus the sampling options shared by all terms.

    Attributes:
        modalities: Per modality (RGB included) shifts, pair weights and modality weight.
        points: P; P x P points are sampled per image.
        random_pairs: Number of random batch permutations (pairs without fixed points).
        pointwise: Centre the feature correlation per anchor point.
        zero_clamp: Clamp the code correlation at 0 (``max(S, 0)``).
    """

    modalities: Mapping[str, ModalityLossConfig]
    points: int = 11
    random_pairs: int = 5
    pointwise: bool = True
    zero_clamp: bool = True

    def __post_init__(self) -> None:
        if self.points < 1 or self.random_pairs < 0:
            raise ConfigError(
                f"points must be >= 1 and random_pairs >= 0, got {self.points}, {self.random_pairs}"
            )


def sample_coordinates(
    batch: int, points: int, *, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random sampling positions in [-1, 1]^2: [B, P, P, 2] (x, y) for grid_sample."""
    coords = torch.rand(batch, points, points, 2, generator=generator, device=device)
    return coords * 2 - 1


def sample_at(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample maps [B, C, h, w] at coords [B, P, P, 2] -> [B, C, P, P]."""
    return F.grid_sample(maps, coords, mode="bilinear", padding_mode="border", align_corners=True)


def cosine_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of each point of a [B, C, P, P] with each of b -> [B, P, P, P, P]."""
    return torch.einsum("bchw,bcij->bhwij", F.normalize(a, dim=1), F.normalize(b, dim=1))


@torch.no_grad()
def feature_correlation(feats_a: Tensor, feats_b: Tensor, *, pointwise: bool = True) -> Tensor:
    """F of the loss: cosine similarity of sampled features [B, C, P, P] -> [B, P, P, P, P].

    With ``pointwise`` each anchor point's mean over its partner points is subtracted and the
    global mean added back (the reference's centring). The shifts are compared with exactly
    these values, so shift calibration (``unim2_core.training.calibration``) measures them here too.
    """
    feature_corr = cosine_correlation(feats_a, feats_b)  # [B, P, P, P, P]
    if pointwise:
        global_mean = feature_corr.mean()
        feature_corr = feature_corr - feature_corr.mean(dim=(3, 4), keepdim=True)
        feature_corr = feature_corr + global_mean
    return feature_corr


def correspondence_loss(
    feats_a: Tensor,
    feats_b: Tensor,
    code_a: Tensor,
    code_b: Tensor,
    shift: float,
    *,
    pointwise: bool = True,
    zero_clamp: bool = True,
) -> Tensor:
    """Correspondence loss of one modality and one pair, on already sampled points.

    Args:
        feats_a, feats_b: Frozen backbone features at the sampled points, [B, C, P, P].
        code_a, code_b: Codes (harmonised where applicable) at the same points, [B, D, P, P].
        shift: The pair's shift b.
        pointwise: Subtract each anchor point's mean over partner points, then add back the
            global mean.
        zero_clamp: Use max(S, 0) instead of S.

    Returns:
        The scalar mean over all point pairs of -(F - shift) * max(S, 0).
    """
    feature_corr = feature_correlation(feats_a, feats_b, pointwise=pointwise)
    code_corr = cosine_correlation(code_a, code_b)
    if zero_clamp:
        code_corr = code_corr.clamp(min=0.0)
    return -(code_corr * (feature_corr - shift)).mean()


def derangement(
    size: int, *, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """A uniformly random permutation of range(size) without fixed points (size >= 2)."""
    if size < 2:
        raise ValueError(f"a permutation without fixed points needs at least 2 items, got {size}")
    identity = torch.arange(size)
    while True:
        perm = torch.randperm(size, generator=generator)
        if not (perm == identity).any():
            return perm.to(device)


class PairSample(NamedTuple):
    """The random choices of one batch: sampled points of both sides and random pairings.

    Attributes:
        coords_a: Points of the anchors, [B, P, P, 2].
        coords_b: Points of the partners (kNN and random), [B, P, P, 2].
        perms: One permutation without fixed points per random pair.
    """

    coords_a: Tensor
    coords_b: Tensor
    perms: list[Tensor]


def sample_pairs(
    batch: int,
    config: LossConfig,
    *,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> PairSample:
    """Draw a batch's sampled points and random pairings (on CPU, for reproducibility)."""
    cpu = torch.device("cpu")
    coords_a = sample_coordinates(batch, config.points, device=cpu, generator=generator)
    coords_b = sample_coordinates(batch, config.points, device=cpu, generator=generator)
    perms = [
        derangement(batch, device=device, generator=generator) for _ in range(config.random_pairs)
    ]
    return PairSample(coords_a.to(device), coords_b.to(device), perms)


class SampledFeatures(NamedTuple):
    """One modality's features at the sampled points, each [B, C, P, P].

    Attributes:
        anchor: Anchors at ``coords_a`` (both sides of the self pair).
        other: Anchors at ``coords_b`` (permuted by ``perms`` for the random pairs).
        knn: The sampled neighbours at ``coords_b``.
    """

    anchor: Tensor
    other: Tensor
    knn: Tensor


def sampled_features(feats: Tensor, feats_knn: Tensor, sample: PairSample) -> SampledFeatures:
    """Sample one modality's features [B, C, h, w] (and its neighbours') at a batch's points."""
    return SampledFeatures(
        anchor=sample_at(feats, sample.coords_a),
        other=sample_at(feats, sample.coords_b),
        knn=sample_at(feats_knn, sample.coords_b),
    )


HarmoniseFn = Callable[[Tensor, str], Tensor]
"""``(code, modality) -> code`` as compared with that modality's features (see UniM2Heads)."""


class LossTerms(NamedTuple):
    """The total loss and each weighted-in term, keyed ``"<modality>/<pair>"`` (unweighted)."""

    total: Tensor
    terms: dict[str, Tensor]


def cmcs_loss(
    harmonise: HarmoniseFn,
    config: LossConfig,
    feats: Tensor,
    code: Tensor,
    feats_knn: Tensor,
    code_knn: Tensor,
    *,
    modalities: tuple[str, ...],
    generator: torch.Generator | None = None,
) -> LossTerms:
    """The CMCS total: sum_m w_m (a_self L_self + a_knn L_knn + a_rand L_rand).

    Args:
        harmonise: ``harmonise(code, modality)``, the heads' harmoniser lookup.
        config: Loss weights and sampling options.
        feats: Frozen backbone features of the anchor groups, [B, M, C, h, w].
        code: Codes of the anchor groups, [B, D, h, w].
        feats_knn: Features of each anchor's sampled nearest neighbour, [B, M, C, h, w].
        code_knn: Codes of those neighbours, [B, D, h, w].
        modalities: Modality names in the order of the M axis.
        generator: Random source for the sampled points and permutations (CPU generator).

    Returns:
        The total and the unweighted per-modality, per-pair terms for logging.
    """
    missing = [m for m in modalities if m not in config.modalities]
    if missing:
        raise ConfigError(f"loss settings missing for modalities {missing}")
    uncalibrated = [m for m in modalities if config.modalities[m].auto]
    if uncalibrated:
        raise ConfigError(
            f"the shifts of {uncalibrated} are 'auto' and have not been calibrated yet "
            "(see unim2_core.training.calibration)"
        )
    sample = sample_pairs(feats.shape[0], config, device=feats.device, generator=generator)
    coords_a, coords_b, perms = sample
    options = {"pointwise": config.pointwise, "zero_clamp": config.zero_clamp}

    total = code.new_zeros(())
    terms: dict[str, Tensor] = {}
    for index, name in enumerate(modalities):
        settings = config.modalities[name]
        f_a, f_b, f_knn = sampled_features(feats[:, index], feats_knn[:, index], sample)
        harmonised = harmonise(code, name)
        c_a = sample_at(harmonised, coords_a)
        c_b = sample_at(harmonised, coords_b)
        c_knn = sample_at(harmonise(code_knn, name), coords_b)
        pair_losses = {
            "self": correspondence_loss(f_a, f_a, c_a, c_a, settings.shift.self, **options),
            "knn": correspondence_loss(f_a, f_knn, c_a, c_knn, settings.shift.knn, **options),
        }
        if perms:
            pair_losses["rand"] = torch.stack(
                [
                    correspondence_loss(f_a, f_b[p], c_a, c_b[p], settings.shift.rand, **options)
                    for p in perms
                ]
            ).mean()
        weighted = sum(
            getattr(settings.weight, pair) * value for pair, value in pair_losses.items()
        )
        total = total + settings.modality_weight * weighted
        terms.update({f"{name}/{pair}": value.detach() for pair, value in pair_losses.items()})
    return LossTerms(total=total, terms=terms)
