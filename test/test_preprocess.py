"""Resizing and normalisation shared by trainer, evaluator and node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    encode_group,
    five_crop_boxes,
    label_views,
    paper_protocol_view,
    processing_size,
    to_backbone_batch,
    training_views,
)
from unim2_core.errors import ConfigError, EncodingError


@pytest.mark.parametrize(
    ("height", "width", "side", "patch", "expected"),
    [
        (480, 640, 320, 16, (320, 432)),
        (480, 640, 320, 14, (322, 420)),
        (480, 640, 224, 14, (224, 294)),
        (640, 480, 224, 16, (304, 224)),
        (10, 1000, 8, 16, (16, 800)),
    ],
)
def test_processing_size_keeps_aspect_and_snaps_to_patches(
    height: int, width: int, side: int, patch: int, expected: tuple[int, int]
) -> None:
    size = processing_size(height, width, shorter_side=side, patch_size=patch)
    assert size == expected
    assert size[0] % patch == 0 and size[1] % patch == 0


def test_backbone_batch_is_imagenet_normalised() -> None:
    encoded = np.full((2, 4, 4, 3), 0.5, dtype=np.float32)
    batch = to_backbone_batch(encoded, (4, 4))
    assert batch.shape == (2, 3, 4, 4) and batch.dtype == torch.float32
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(batch[1, :, 2, 2], torch.tensor(expected))


def test_nearest_resizing_picks_pixel_centres() -> None:
    encoded = np.random.default_rng(0).random((1, 6, 6, 3)).astype(np.float32)
    out = to_backbone_batch(encoded, (3, 3), interpolation="nearest")
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    values = (out * std + mean)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(values, encoded[0, 1::2, 1::2], atol=1e-6)


def test_bilinear_resizing_averages_when_downscaling() -> None:
    encoded = np.zeros((1, 4, 4, 3), dtype=np.float32)
    encoded[0, ::2, ::2] = 1.0  # checkerboard-like: a quarter of pixels lit
    out = to_backbone_batch(encoded, (1, 1))
    unnormalised = out[0, 0, 0, 0].item() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert unnormalised == pytest.approx(0.25, abs=1e-5)


def test_encode_group_follows_encoding_order_and_checks_sizes() -> None:
    encodings = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
    rgb = np.full((2, 3, 3), 255, np.uint8)
    depth = np.full((2, 3), 5000, np.uint16)
    out = encode_group({"depth": depth, "rgb": rgb}, encodings)
    assert out.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1], 0.5)
    with pytest.raises(EncodingError, match="differ in size") as differing:
        encode_group({"rgb": rgb, "depth": depth[:, :2]}, encodings)
    assert differing.value.modality == "depth"
    with pytest.raises(EncodingError, match="^depth: depth image has no valid pixel") as invalid:
        encode_group({"rgb": rgb, "depth": np.zeros_like(depth)}, encodings)
    assert invalid.value.modality == "depth"


def test_preprocess_config_validates_and_round_trips() -> None:
    config = PreprocessConfig(shorter_side=224, interpolation="nearest")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="interpolation must be"):
        PreprocessConfig(interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"preprocess: unknown key\(s\) \['size'\]"):
        PreprocessConfig.from_dict({"size": 3})


def test_five_crop_boxes_follow_torchvision_rule() -> None:
    assert five_crop_boxes(480, 640) == [
        (0, 0, 240, 320),
        (0, 320, 240, 320),
        (240, 0, 240, 320),
        (240, 320, 240, 320),
        (120, 160, 240, 320),
    ]


def test_training_views_cut_resize_and_centre_crop_each_quadrant() -> None:
    encoded = np.zeros((2, 48, 64, 3), dtype=np.float32)
    encoded[:, :24, :32] = 1.0  # top-left quadrant lit in both modalities
    views = to_unit(training_views(encoded, crop_size=16))
    assert views.shape == (5, 2, 3, 16, 16)
    np.testing.assert_allclose(views[0], 1.0, atol=1e-5)
    np.testing.assert_allclose(views[1:4], 0.0, atol=1e-5)
    centre = views[4, 0, 0]  # covers rows 12..36, cols 16..48: top-left quarter is lit
    assert centre[:6, :6].min() > 0.99 and centre[10:, 10:].max() < 1e-5
    whole = training_views(encoded, crop_size=16, five_crop=False)
    assert whole.shape == (1, 2, 3, 16, 16)


def test_label_views_use_nearest_and_match_image_views() -> None:
    labels = np.zeros((48, 64), dtype=np.uint8)
    labels[:24, :32] = 7
    labels[0, 0] = 255
    views = label_views(labels, crop_size=16)
    assert views.shape == (5, 16, 16) and views.dtype == np.uint8
    assert set(np.unique(views[0])) <= {7, 255} and (views[1:4] == 0).all()
    assert set(np.unique(views)) <= {0, 7, 255}


def test_paper_protocol_resizes_shorter_side_and_centre_crops() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, 320:] = 200
    depth = np.arange(480 * 640, dtype=np.uint16).reshape(480, 640)
    labels = np.zeros((480, 640), np.uint8)
    labels[:, 320:] = 3
    arrays, view_labels = paper_protocol_view({"rgb": rgb, "depth": depth}, labels, size=320)
    assert arrays["rgb"].shape == (320, 320, 3) and arrays["depth"].shape == (320, 320)
    assert view_labels is not None and view_labels.shape == (320, 320)
    # 640 wide -> 426 wide, crop starts at column 53: the boundary (column 213 of 426) is at 160.
    assert (view_labels[:, :160] == 0).all() and (view_labels[:, 161:] == 3).all()
    assert set(np.unique(arrays["depth"])) <= set(np.unique(depth))  # nearest: no new values
    assert arrays["depth"].dtype == np.uint16


def to_unit(batch: torch.Tensor) -> np.ndarray:
    """Undo ImageNet normalisation of a [..., 3, H, W] batch."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (batch * std + mean).numpy()
