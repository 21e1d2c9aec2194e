"""Cross-modal correspondence distillation loss (CMCS, design.md §3).

For a modality m and an image pair (a, b), P x P random points are sampled in each image. F is
the cosine similarity of the frozen backbone features of modality m between every point of a
and every point of b (no gradient), centred per anchor point; S is the cosine similarity of the
codes (the code itself for RGB, the harmonised code for aligned modalities). The loss is
``mean(-(F - shift) * max(S, 0))``: feature pairs more similar than ``shift`` pull their codes
together, less similar ones push them apart.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class ModalityLossConfig:
    """Shifts, pair weights and the modality weight w_m of one modality's loss terms."""

    shift: PairValues
    weight: PairValues
    modality_weight: float

    def to_dict(self) -> dict[str, object]:
        """Plain-type form for YAML and checkpoints."""
        return {
            "shift": dict(self.shift._asdict()),
            "weight": dict(self.weight._asdict()),
            "modality_weight": self.modality_weight,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str) -> ModalityLossConfig:
        """Parse ``{shift: {self, knn, rand}, weight: {...}, modality_weight}``.

        Raises:
            ConfigError: a missing, unknown or non-numeric key, named with its full path.
        """
        unknown = set(data) - {"shift", "weight", "modality_weight"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        pairs = {
            key: _pair_values(data.get(key), where=f"{where}.{key}") for key in ("shift", "weight")
        }
        return cls(
            shift=pairs["shift"],
            weight=pairs["weight"],
            modality_weight=_number(data.get("modality_weight"), where=f"{where}.modality_weight"),
        )


def _number(value: object, *, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _pair_values(value: object, *, where: str) -> PairValues:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys {list(PAIRS)}, got {value!r}")
    keys = set(value)
    if keys != set(PAIRS):
        raise ConfigError(
            f"{where}: expected keys {list(PAIRS)}; missing {sorted(set(PAIRS) - keys)}, "
            f"unknown {sorted(keys - set(PAIRS))}"
        )
    return PairValues(**{k: _number(value[k], where=f"{where}.{k}") for k in PAIRS})


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
    with torch.no_grad():
        feature_corr = cosine_correlation(feats_a, feats_b)  # [B, P, P, P, P]
        if pointwise:
            global_mean = feature_corr.mean()
            feature_corr = feature_corr - feature_corr.mean(dim=(3, 4), keepdim=True)
            feature_corr = feature_corr + global_mean
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
    batch, device = feats.shape[0], feats.device
    coords_a = sample_coordinates(
        batch, config.points, device=torch.device("cpu"), generator=generator
    ).to(device)
    coords_b = sample_coordinates(
        batch, config.points, device=torch.device("cpu"), generator=generator
    ).to(device)
    perms = [
        derangement(batch, device=device, generator=generator) for _ in range(config.random_pairs)
    ]
    options = {"pointwise": config.pointwise, "zero_clamp": config.zero_clamp}

    total = code.new_zeros(())
    terms: dict[str, Tensor] = {}
    for index, name in enumerate(modalities):
        settings = config.modalities[name]
        f_a = sample_at(feats[:, index], coords_a)
        f_knn = sample_at(feats_knn[:, index], coords_b)
        f_b = sample_at(feats[:, index], coords_b)
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
