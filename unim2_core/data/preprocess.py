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

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding, check_group
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
    arrays: Mapping[str, np.ndarray],
    encodings: Mapping[str, ModalityEncoding],
    *,
    intrinsics: Mapping[str, CameraIntrinsics] | None = None,
) -> np.ndarray:
    """Encode every modality of one frame group (in ``encodings`` order) -> float32 [M, H, W, 3].

    Args:
        arrays: Raw arrays by modality name.
        encodings: Encodings by modality name, in model order.
        intrinsics: Per-modality camera intrinsics of this frame (the node's ``camera_info``);
            a modality without an entry uses its encoding's stored intrinsics, if it needs any.

    Raises:
        EncodingError: a modality is missing, sizes differ, or an array cannot be encoded.
    """
    names = list(encodings)
    height, width = check_group(arrays, names)
    cameras = intrinsics or {}
    out = np.empty((len(names), height, width, 3), dtype=np.float32)
    for index, name in enumerate(names):
        out[index] = encodings[name].encode(arrays[name], name=name, intrinsics=cameras.get(name))
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


def shorter_side_size(height: int, width: int, shorter_side: int) -> tuple[int, int]:
    """Size with the shorter side exactly ``shorter_side`` (torchvision ``Resize(int)`` rule)."""
    if height <= width:
        return shorter_side, int(shorter_side * width / height)
    return int(shorter_side * height / width), shorter_side


def centre_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner of a centred ``size`` x ``size`` crop (torchvision ``CenterCrop`` rule)."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


def five_crop_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """The four corner crops and the centre crop at half height and width: (top, left, h, w)."""
    crop_h, crop_w = height // 2, width // 2
    centre_top, centre_left = round((height - crop_h) / 2.0), round((width - crop_w) / 2.0)
    return [
        (0, 0, crop_h, crop_w),
        (0, width - crop_w, crop_h, crop_w),
        (height - crop_h, 0, crop_h, crop_w),
        (height - crop_h, width - crop_w, crop_h, crop_w),
        (centre_top, centre_left, crop_h, crop_w),
    ]


def view_boxes(height: int, width: int, *, five_crop: bool) -> list[tuple[int, int, int, int]]:
    """Training views of a frame: its five crops, or the whole frame."""
    return five_crop_boxes(height, width) if five_crop else [(0, 0, height, width)]


def training_views(
    encoded: np.ndarray,
    *,
    crop_size: int,
    five_crop: bool = True,
    interpolation: Interpolation = "bilinear",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The paper's training views of one encoded group [M, H, W, 3] -> [V, M, 3, S, S].

    Each view (five-crop at half height and width, or the whole frame) is resized so its
    shorter side is ``crop_size`` and centre-cropped to ``crop_size`` squared.
    """
    height, width = encoded.shape[1:3]
    views = []
    for top, left, crop_h, crop_w in view_boxes(height, width, five_crop=five_crop):
        crop = encoded[:, top : top + crop_h, left : left + crop_w]
        resized = shorter_side_size(crop_h, crop_w, crop_size)
        batch = to_backbone_batch(
            crop, resized, device=device, dtype=dtype, interpolation=interpolation
        )  # [M, 3, h, w]
        y0, x0 = centre_crop_box(resized[0], resized[1], crop_size)
        views.append(batch[:, :, y0 : y0 + crop_size, x0 : x0 + crop_size])
    return torch.stack(views)  # [V, M, 3, S, S]


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW or HxWxC array of any dtype to ``size`` = (h, w)."""
    if tuple(array.shape[:2]) == tuple(size):
        return array
    height, width = array.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    resized: np.ndarray = array[rows[:, None], cols[None, :]]
    return resized


def label_views(labels: np.ndarray, *, crop_size: int, five_crop: bool = True) -> np.ndarray:
    """Label maps of the training views (nearest neighbour) -> [V, S, S]."""
    height, width = labels.shape
    out = []
    for top, left, crop_h, crop_w in view_boxes(height, width, five_crop=five_crop):
        resized = shorter_side_size(crop_h, crop_w, crop_size)
        crop = resize_nearest(labels[top : top + crop_h, left : left + crop_w], resized)
        y0, x0 = centre_crop_box(resized[0], resized[1], crop_size)
        out.append(crop[y0 : y0 + crop_size, x0 : x0 + crop_size])
    return np.stack(out)


def paper_protocol_view(
    arrays: Mapping[str, np.ndarray], labels: np.ndarray | None, *, size: int
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The paper's evaluation view: resize the shorter side to ``size`` and centre-crop it.

    Raw arrays and labels are resized with nearest neighbour, as the reference implementation
    does (this also keeps invalid depth pixels from blending into valid ones).
    """
    first = next(iter(arrays.values()))
    height, width = first.shape[:2]
    resized = shorter_side_size(height, width, size)
    y0, x0 = centre_crop_box(resized[0], resized[1], size)

    def view(array: np.ndarray) -> np.ndarray:
        out = resize_nearest(array, resized)[y0 : y0 + size, x0 : x0 + size]
        return np.ascontiguousarray(out)

    return {name: view(a) for name, a in arrays.items()}, None if labels is None else view(labels)
