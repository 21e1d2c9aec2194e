"""Resizing and normalisation shared by trainer, evaluator and node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unim2_core.encoding import ModalityEncoding
from unim2_core.errors import ConfigError, EncodingError
from unim2_core.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    encode_group,
    processing_size,
    to_backbone_batch,
)


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
    with pytest.raises(EncodingError, match="differ in size"):
        encode_group({"rgb": rgb, "depth": depth[:, :2]}, encodings)


def test_preprocess_config_validates_and_round_trips() -> None:
    config = PreprocessConfig(shorter_side=224, interpolation="nearest")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="interpolation must be"):
        PreprocessConfig(interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"preprocess: unknown key\(s\) \['size'\]"):
        PreprocessConfig.from_dict({"size": 3})
