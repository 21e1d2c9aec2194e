"""Correspondence loss and CMCS total (design.md §3)."""

from __future__ import annotations

import math

import pytest
import torch

from unim2_core.errors import ConfigError
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_core.model.loss import (
    LossConfig,
    ModalityLossConfig,
    PairValues,
    cmcs_loss,
    correspondence_loss,
    cosine_correlation,
    derangement,
    sample_at,
)


def _points(*vectors: tuple[float, ...]) -> torch.Tensor:
    """Points as a [1, C, 1, N] map (one row of N sampled points)."""
    return torch.tensor(vectors, dtype=torch.float32).T.reshape(1, len(vectors[0]), 1, len(vectors))


def test_tiny_case_matches_hand_computation() -> None:
    # F = [[1, 1/sqrt2], [0, 1/sqrt2]]; centred per anchor point and shifted back by the global
    # mean: F01 = 0.45711, F10 = 0.25. S = [[0, 1], [1, 0]]. With shift 0.5:
    # loss = -((0.45711 - 0.5) + (0.25 - 0.5)) / 4 = (2 - sqrt2) / 8.
    feats_a = _points((1.0, 0.0), (0.0, 1.0))
    feats_b = _points((1.0, 0.0), (1.0, 1.0))
    code_a = _points((1.0, 0.0), (0.0, 1.0))
    code_b = _points((0.0, 1.0), (1.0, 0.0))
    loss = correspondence_loss(feats_a, feats_b, code_a, code_b, 0.5)
    assert loss.item() == pytest.approx((2 - math.sqrt(2)) / 8, abs=1e-6)


def test_without_pointwise_centring_the_raw_similarity_is_used() -> None:
    feats_a = _points((1.0, 0.0), (0.0, 1.0))
    feats_b = _points((1.0, 0.0), (1.0, 1.0))
    code_a = _points((1.0, 0.0), (0.0, 1.0))
    code_b = _points((0.0, 1.0), (1.0, 0.0))
    loss = correspondence_loss(feats_a, feats_b, code_a, code_b, 0.5, pointwise=False)
    # -((1/sqrt2 - 0.5) + (0 - 0.5)) / 4
    assert loss.item() == pytest.approx(-((1 / math.sqrt(2) - 0.5) - 0.5) / 4, abs=1e-6)


def test_pointwise_centring_replaces_each_anchor_points_mean_by_the_global_mean() -> None:
    torch.manual_seed(0)
    feats_a, feats_b = torch.randn(1, 8, 1, 4), torch.randn(1, 8, 1, 4)
    corr = cosine_correlation(feats_a, feats_b)[0, 0, :, 0, :]  # [4 anchor, 4 partner]
    # Codes give S = 1 for anchor point 1 against every partner and S = 0 elsewhere, so the loss
    # only sees row 1 of F: -(sum_j F[1, j] - 4 * shift) / 16.
    code_a = _points((0.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 1.0))
    code_b = _points((1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (1.0, 0.0))
    shift = 0.1
    centred = correspondence_loss(feats_a, feats_b, code_a, code_b, shift)
    plain = correspondence_loss(feats_a, feats_b, code_a, code_b, shift, pointwise=False)
    assert centred.item() == pytest.approx(-(corr.mean().item() - shift) / 4, abs=1e-6)
    assert plain.item() == pytest.approx(-(corr[1].mean().item() - shift) / 4, abs=1e-6)


def test_zero_clamp_ignores_negative_code_similarity() -> None:
    feats = _points((1.0, 0.0), (1.0, 0.0))
    code_a = _points((1.0, 0.0), (1.0, 0.0))
    code_b = _points((-1.0, 0.0), (-1.0, 0.0))  # S = -1 everywhere
    clamped = correspondence_loss(feats, feats, code_a, code_b, 0.0)
    unclamped = correspondence_loss(feats, feats, code_a, code_b, 0.0, zero_clamp=False)
    assert clamped.item() == 0.0
    assert unclamped.item() == pytest.approx(1.0)


def test_feature_side_carries_no_gradient() -> None:
    feats = torch.randn(1, 4, 2, 2, requires_grad=True)
    code = torch.randn(1, 3, 2, 2, requires_grad=True)
    correspondence_loss(feats, feats, code, code, 0.3).backward()
    assert feats.grad is None
    assert code.grad is not None and code.grad.abs().sum() > 0


def test_sample_at_uses_align_corners_true() -> None:
    maps = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)
    corners = torch.tensor([[[[-1.0, -1.0], [1.0, 1.0]]]])  # [1, 1, 2, 2]
    np_values = sample_at(maps, corners).flatten().tolist()
    assert np_values == [0.0, 5.0]


@pytest.mark.parametrize("size", [2, 3, 7, 32])
def test_derangement_has_no_fixed_point_and_is_a_permutation(size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    for _ in range(20):
        perm = derangement(size, device=torch.device("cpu"), generator=gen)
        assert sorted(perm.tolist()) == list(range(size))
        assert not (perm == torch.arange(size)).any()


def test_derangement_of_one_item_is_impossible() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, device=torch.device("cpu"))


def _loss_config(modalities: tuple[str, ...], *, rand_weight: float = 1.0) -> LossConfig:
    return LossConfig(
        modalities={
            m: ModalityLossConfig(
                shift=PairValues(0.3, 0.2, 0.1),
                weight=PairValues(1.0, 0.5, rand_weight),
                modality_weight=0.7 if m == "rgb" else 0.9,
            )
            for m in modalities
        },
        points=5,
    )


def _batch(heads: UniM2Heads, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    m, c = len(heads.config.modalities), heads.config.channels
    return torch.randn(batch, m, c, 6, 6), torch.randn(batch, m, c, 6, 6)


def test_cmcs_total_is_the_weighted_sum_of_its_terms() -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb", "depth"), channels=16, code_dim=8)).eval()
    feats, feats_knn = _batch(heads)
    config = _loss_config(heads.config.modalities)
    out = cmcs_loss(
        heads.harmonise,
        config,
        feats,
        heads(feats),
        feats_knn,
        heads(feats_knn),
        modalities=heads.config.modalities,
        generator=torch.Generator().manual_seed(0),
    )
    expected = 0.0
    for m, w in (("rgb", 0.7), ("depth", 0.9)):
        expected += w * (
            out.terms[f"{m}/self"] + 0.5 * out.terms[f"{m}/knn"] + out.terms[f"{m}/rand"]
        )
    assert set(out.terms) == {f"{m}/{p}" for m in ("rgb", "depth") for p in ("self", "knn", "rand")}
    assert out.total.item() == pytest.approx(float(expected), abs=1e-6)


def test_cmcs_is_reproducible_with_a_seeded_generator() -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb", "depth"), channels=16, code_dim=8)).eval()
    feats, feats_knn = _batch(heads)
    config = _loss_config(heads.config.modalities)
    totals = [
        cmcs_loss(
            heads.harmonise,
            config,
            feats,
            heads(feats),
            feats_knn,
            heads(feats_knn),
            modalities=heads.config.modalities,
            generator=torch.Generator().manual_seed(5),
        ).total.item()
        for _ in range(2)
    ]
    assert totals[0] == totals[1]


def test_gradients_reach_modality_nets_fusion_head_and_harmoniser_only() -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb", "depth"), channels=16, code_dim=8)).train()
    feats, feats_knn = _batch(heads)
    feats.requires_grad_(True)
    config = _loss_config(heads.config.modalities)
    out = cmcs_loss(
        heads.harmonise,
        config,
        feats,
        heads(feats),
        feats_knn,
        heads(feats_knn),
        modalities=heads.config.modalities,
    )
    out.total.backward()
    for prefix in (
        "modality_nets.rgb",
        "modality_nets.depth",
        "fusion",
        "head",
        "harmonisers.depth",
    ):
        grads = [p.grad for n, p in heads.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix
    assert heads.cluster_probe.centroids.grad is None
    assert "harmonisers.rgb" not in dict(heads.named_modules())


def test_cmcs_requires_settings_for_every_modality() -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb", "depth"), channels=16, code_dim=8))
    feats, feats_knn = _batch(heads)
    with pytest.raises(ConfigError, match=r"missing for modalities \['depth'\]"):
        cmcs_loss(
            heads.harmonise,
            _loss_config(("rgb",)),
            feats,
            heads(feats),
            feats_knn,
            heads(feats_knn),
            modalities=heads.config.modalities,
        )


def test_modality_loss_config_parses_and_names_bad_keys() -> None:
    data = {
        "shift": {"self": 0.1, "knn": 0.2, "rand": 0.3},
        "weight": {"self": 1, "knn": 2, "rand": 3},
        "modality_weight": 0.5,
    }
    parsed = ModalityLossConfig.from_dict(data, where="loss.rgb")
    assert parsed.shift == PairValues(0.1, 0.2, 0.3) and parsed.weight.rand == 3.0
    assert ModalityLossConfig.from_dict(parsed.to_dict(), where="x") == parsed
    bad = {**data, "shift": {"self": 0.1, "knn": 0.2}}
    with pytest.raises(ConfigError, match=r"loss.rgb.shift: expected keys .* missing \['rand'\]"):
        ModalityLossConfig.from_dict(bad, where="loss.rgb")
    with pytest.raises(ConfigError, match=r"loss\.rgb\.modality_weight must be a number"):
        ModalityLossConfig.from_dict({**data, "modality_weight": "high"}, where="loss.rgb")
