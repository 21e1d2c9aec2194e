"""Trainable heads: modality nets, fusion variants, segmentation head, harmonisers, probes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unim2_core.errors import ConfigError
from unim2_core.model.heads import (
    ALIGN_KINDS,
    FUSION_KINDS,
    ClusterProbe,
    ConvFusion,
    HeadsConfig,
    LinearProbe,
    ModalityNet,
    ProgressiveFusion,
    SegmentationHead,
    UniM2Heads,
)

C, D = 16, 8


def test_modality_net_output_is_unit_norm_per_pixel() -> None:
    out = ModalityNet(C)(torch.randn(2, C, 3, 5))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 3, 5))


def test_modality_net_residual_adds_the_input_before_normalising() -> None:
    net = ModalityNet(C, residual=True)
    x = torch.randn(1, C, 2, 2)
    torch.testing.assert_close(net(x), F.normalize(net.net(x) + x, dim=1))


def test_conv_fusion_widths_follow_the_paper() -> None:
    fusion = ConvFusion(3, C)
    first, _, second = fusion.net
    assert (first.in_channels, first.out_channels) == (3 * C, (3 * C + C) // 2)
    assert (second.in_channels, second.out_channels) == ((3 * C + C) // 2, C)
    assert fusion(torch.randn(2, 3, C, 4, 4)).shape == (2, C, 4, 4)


def test_progressive_fusion_narrows_one_modality_width_per_conv() -> None:
    fusion = ProgressiveFusion(3, C)
    convs = [m for m in fusion.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3 * C, 2 * C), (2 * C, C), (C, C)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in fusion.net) == 2


@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
def test_elementwise_fusion_matches_torch_reduction(kind: str) -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb", "depth"), channels=C, fusion=kind))  # type: ignore[arg-type]
    x = torch.randn(2, 2, C, 3, 3)
    adapted = torch.stack(
        [heads.modality_nets["rgb"](x[:, 0]), heads.modality_nets["depth"](x[:, 1])], 1
    )
    expected = {"sum": adapted.sum(1), "mean": adapted.mean(1), "max": adapted.amax(1)}[kind]
    torch.testing.assert_close(heads.fuse(x), expected)


def test_segmentation_head_is_linear_plus_nonlinear_branch() -> None:
    head = SegmentationHead(C, D).eval()
    x = torch.randn(1, C, 4, 4)
    torch.testing.assert_close(head(x), head.linear(x) + head.nonlinear(x))
    assert isinstance(head.dropout, torch.nn.Dropout2d) and head.dropout.p == 0.1


@pytest.mark.parametrize("fusion", FUSION_KINDS)
def test_heads_map_features_to_codes(fusion: str) -> None:
    heads = UniM2Heads(
        HeadsConfig(modalities=("rgb", "depth", "thermal"), channels=C, code_dim=D, fusion=fusion)
    )  # type: ignore[arg-type]
    assert heads(torch.randn(2, 3, C, 5, 7)).shape == (2, D, 5, 7)


def test_rgb_only_model_has_no_modality_nets_and_no_fusion() -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb",), channels=C, code_dim=D)).eval()
    assert heads.config.is_rgb_only and heads.fusion is None and len(heads.modality_nets) == 0
    x = torch.randn(1, 1, C, 3, 3)
    torch.testing.assert_close(heads(x), heads.head(x[:, 0]))
    assert heads.config.aligned == ()


@pytest.mark.parametrize(
    ("align", "expected"),
    [
        ("none", ()),
        ("aux", ("depth", "thermal")),
        ("all", ("rgb", "depth", "thermal")),
        ("rgb", ("rgb",)),
    ],
)
def test_align_option_chooses_harmonised_modalities(align: str, expected: tuple[str, ...]) -> None:
    assert set(ALIGN_KINDS) == {"none", "aux", "all", "rgb"}
    heads = UniM2Heads(
        HeadsConfig(modalities=("rgb", "depth", "thermal"), channels=C, code_dim=D, align=align)
    )  # type: ignore[arg-type]
    assert heads.config.aligned == expected
    assert tuple(heads.harmonisers) == expected
    code = torch.randn(1, D, 2, 2)
    for name in ("rgb", "depth", "thermal"):
        out = heads.harmonise(code, name)
        if name in expected:
            torch.testing.assert_close(out, heads.harmonisers[name](code))
        else:
            assert out is code


def test_shared_harmoniser_is_one_module_for_all_aligned_modalities() -> None:
    heads = UniM2Heads(
        HeadsConfig(
            modalities=("rgb", "depth", "thermal"), channels=C, code_dim=D, share_harmoniser=True
        )
    )
    assert list(heads.harmonisers) == ["shared"]
    code = torch.randn(1, D, 2, 2)
    torch.testing.assert_close(heads.harmonise(code, "depth"), heads.harmonise(code, "thermal"))


def test_cluster_probe_assigns_by_cosine_not_distance() -> None:
    probe = ClusterProbe(2, 2)
    with torch.no_grad():
        probe.centroids.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.1]]))
    code = torch.tensor([[0.1, 0.0], [0.0, 5.0]]).T.reshape(1, 2, 1, 2)
    assert probe(code).tolist() == [[[0, 1]]]
    assert probe.loss(code).item() == pytest.approx(-1.0)


def test_cluster_probe_loss_does_not_reach_the_code() -> None:
    probe = ClusterProbe(3, D)
    code = torch.randn(1, D, 2, 2, requires_grad=True)
    probe.loss(code).backward()
    assert code.grad is None and probe.centroids.grad is not None


def test_linear_probe_ignores_label_255_and_the_code_gradient() -> None:
    probe = LinearProbe(D, 3)
    code = torch.randn(1, D, 2, 2, requires_grad=True)
    labels = torch.full((1, 4, 4), 255)
    labels[0, 0, 0] = 1
    loss = probe.loss(code, labels)
    logits = F.interpolate(probe(code.detach()), size=(4, 4), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits[:, :, 0, 0], torch.tensor([1]))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert code.grad is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modalities": ("depth", "rgb")}, "must start with 'rgb'"),
        ({"modalities": ("rgb", "depth", "depth")}, "repeated"),
        ({"channels": 15}, "even"),
        ({"code_dim": 0}, "code_dim must be a positive integer"),
        ({"fusion": "concat"}, "fusion must be one of"),
        ({"align": "both"}, "align must be one of"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_heads_config_rejects_impossible_settings(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"modalities": ("rgb", "depth"), "channels": C, **kwargs}
    with pytest.raises(ConfigError, match=match):
        HeadsConfig(**settings)  # type: ignore[arg-type]


def test_heads_config_round_trips_and_names_unknown_keys() -> None:
    config = HeadsConfig(modalities=("rgb", "depth"), channels=C, code_dim=D, n_classes=13)
    assert HeadsConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"heads: unknown key\(s\) \['codedim'\]"):
        HeadsConfig.from_dict({**config.to_dict(), "codedim": 3})


@pytest.mark.parametrize("fusion", FUSION_KINDS)
def test_absent_modality_enters_the_fusion_as_a_zero_modality_net_output(fusion: str) -> None:
    torch.manual_seed(0)
    heads = UniM2Heads(
        HeadsConfig(modalities=("rgb", "depth", "thermal"), channels=C, code_dim=D, fusion=fusion)  # type: ignore[arg-type]
    ).eval()
    features = torch.randn(2, 3, C, 4, 5)
    present = torch.tensor([[True, False, True], [True, True, False]])
    nets = list(heads.modality_nets.values())
    adapted = torch.stack([net(features[:, i]) for i, net in enumerate(nets)], dim=1)
    adapted[0, 1] = 0
    adapted[1, 2] = 0
    assert heads.fusion is not None
    torch.testing.assert_close(heads.fuse(features, present), heads.fusion(adapted))
    # Whatever the absent slots hold, the code is the same.
    scrambled = features.clone()
    scrambled[0, 1] = torch.randn(C, 4, 5) * 100
    scrambled[1, 2] = 0
    torch.testing.assert_close(heads(scrambled, present), heads(features, present))
    all_present = torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(heads(features, all_present), heads(features))
    assert not torch.allclose(heads(features, present), heads(features))


@pytest.mark.parametrize(
    ("present", "match"),
    [
        (torch.tensor([[False, True]]), "RGB"),
        (torch.tensor([[1, 1]]), "bool mask of shape"),
        (torch.tensor([[True, True, True]]), r"shape \(1, 2\)"),
        (torch.tensor([True, True]), r"shape \(1, 2\)"),
    ],
)
def test_present_mask_is_checked(present: torch.Tensor, match: str) -> None:
    heads = UniM2Heads(HeadsConfig(modalities=("rgb", "depth"), channels=C, code_dim=D))
    with pytest.raises(ValueError, match=match):
        heads(torch.randn(1, 2, C, 3, 3), present)
