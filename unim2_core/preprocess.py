"""Second half of the one preprocessing path: encoded frames -> normalised backbone batches.

The trainer (on its crops), the replay evaluator and the node (through ``Segmenter``) all call
``encode_group`` and then ``to_backbone_batch``; only the target size differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from unim2_core.encoding import ModalityEncoding, check_group
from unim2_core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["bilinear", "nearest"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Resizing settings stored in the checkpoint and the feature-cache key.

    Attributes:
        shorter_side: Inference resolution: the shorter image side is resized to this, and both
            sides are rounded to the backbone's patch size.
        interpolation: Image resampling. ``bilinear`` (antialiased) by default; ``nearest``
            reproduces the reference implementation, which resizes images like labels.
    """

    shorter_side: int = 320
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        if isinstance(self.shorter_side, bool) or not isinstance(self.shorter_side, int):
            raise ConfigError(f"shorter_side must be an integer, got {self.shorter_side!r}")
        if self.shorter_side < 1:
            raise ConfigError(f"shorter_side must be positive, got {self.shorter_side}")
        if self.interpolation not in ("bilinear", "nearest"):
            raise ConfigError(
                f"interpolation must be 'bilinear' or 'nearest', got {self.interpolation!r}"
            )

    def to_dict(self) -> dict[str, int | str]:
        """Plain-type form stored in checkpoints and cache keys."""
        return {"shorter_side": self.shorter_side, "interpolation": self.interpolation}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, object], *, where: str = "preprocess"
    ) -> PreprocessConfig:
        """Parse ``to_dict`` output; unknown keys raise ConfigError naming ``where``."""
        unknown = set(data) - {"shorter_side", "interpolation"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err


def processing_size(
    height: int, width: int, *, shorter_side: int, patch_size: int
) -> tuple[int, int]:
    """Size (h, w) with the shorter side near ``shorter_side``, each a multiple of the patch.

    The aspect ratio is kept as well as rounding to whole patches allows; no side goes below one
    patch.
    """
    scale = shorter_side / min(height, width)

    def snap(side: int) -> int:
        return max(patch_size, round(side * scale / patch_size) * patch_size)

    return snap(height), snap(width)


def encode_group(
    arrays: Mapping[str, np.ndarray], encodings: Mapping[str, ModalityEncoding]
) -> np.ndarray:
    """Encode every modality of one frame group (in ``encodings`` order) -> float32 [M, H, W, 3].

    Raises:
        EncodingError: a modality is missing, sizes differ, or an array cannot be encoded.
    """
    names = list(encodings)
    height, width = check_group(arrays, names)
    out = np.empty((len(names), height, width, 3), dtype=np.float32)
    for index, name in enumerate(names):
        out[index] = encodings[name].encode(arrays[name], name=name)
    return out


def to_backbone_batch(
    encoded: np.ndarray | torch.Tensor,
    size: tuple[int, int],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    interpolation: Interpolation = "bilinear",
) -> torch.Tensor:
    """Resize encoded images [N, H, W, 3] in [0, 1] and ImageNet-normalise -> [N, 3, h, w].

    Resizing runs on ``device`` (the GPU in the node), in float32, before the cast to ``dtype``.
    """
    images = torch.as_tensor(encoded).to(device=device, dtype=torch.float32)
    images = images.permute(0, 3, 1, 2)  # [N, 3, H, W]
    if tuple(images.shape[-2:]) != tuple(size):
        if interpolation == "nearest":
            images = F.interpolate(images, size=size, mode="nearest-exact")
        else:
            images = F.interpolate(
                images, size=size, mode="bilinear", align_corners=False, antialias=True
            )
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std).to(dtype).contiguous()
