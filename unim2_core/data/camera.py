"""Pinhole camera intrinsics and metric depth: what the point cloud and online HHA share.

Pixel coordinates are 0-based with pixel centres at integers (the ``sensor_msgs/CameraInfo``
convention): a pixel (u, v) with depth z back-projects to ``((u - cx) z / fx, (v - cy) z / fy, z)``
in the camera's optical frame (x right, y down, z forward, REP 103).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from unim2_core.errors import ConfigError, EncodingError


class CameraIntrinsics(NamedTuple):
    """Focal lengths and principal point, in pixels, of an image of ``width`` x ``height``.

    Attributes:
        fx: Focal length along x (K[0, 0]).
        fy: Focal length along y (K[1, 1]).
        cx: Principal point x (K[0, 2]).
        cy: Principal point y (K[1, 2]).
        width: Image width the values refer to.
        height: Image height the values refer to.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_values(
        cls, values: Sequence[object], *, where: str = "intrinsics"
    ) -> CameraIntrinsics:
        """Parse ``[fx, fy, cx, cy, width, height]`` (YAML or checkpoint form).

        Raises:
            ConfigError: wrong length, non-numeric values, non-positive focal lengths or sizes,
                or a principal point that is not finite; the message names ``where``.
        """
        if isinstance(values, (str, bytes)) or len(values) != 6:
            raise ConfigError(
                f"{where} must be a list [fx, fy, cx, cy, width, height], got {values!r}"
            )
        numbers: list[float] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must hold numbers, got {value!r}")
            numbers.append(float(value))
        fx, fy, cx, cy, width, height = numbers
        if not all(math.isfinite(v) for v in numbers):
            raise ConfigError(f"{where} must be finite, got {list(values)!r}")
        if fx <= 0 or fy <= 0:
            raise ConfigError(f"{where}: focal lengths must be positive, got fx={fx} fy={fy}")
        if width < 1 or height < 1 or width != int(width) or height != int(height):
            raise ConfigError(
                f"{where}: width and height must be positive integers, got {width} x {height}"
            )
        return cls(fx, fy, cx, cy, int(width), int(height))

    @classmethod
    def from_matrix(cls, k: Sequence[float], width: int, height: int) -> CameraIntrinsics:
        """From a row-major 3x3 camera matrix (``CameraInfo.k``) and the image size.

        Raises:
            EncodingError: the matrix has no positive focal lengths or the size is empty (an
                uncalibrated camera publishes zeros).
        """
        if len(k) != 9:
            raise EncodingError(f"camera matrix must have 9 values, got {len(k)}")
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
        if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
            raise EncodingError(
                f"camera matrix has no positive focal lengths (fx={fx}, fy={fy}): is the "
                "camera calibrated?"
            )
        if width < 1 or height < 1:
            raise EncodingError(f"camera info has an empty image size {width} x {height}")
        return cls(fx, fy, cx, cy, int(width), int(height))

    def to_list(self) -> list[float]:
        """``[fx, fy, cx, cy, width, height]``: the form stored in checkpoints and YAML."""
        return [
            float(self.fx),
            float(self.fy),
            float(self.cx),
            float(self.cy),
            float(self.width),
            float(self.height),
        ]

    def fitted(self, height: int, width: int) -> CameraIntrinsics:
        """The intrinsics of this image resized to cover ``height`` x ``width`` and centre-cropped.

        This is exactly what happens to an image that is resized by a factor (same aspect
        ratio), or resized on its shorter side and centre-cropped as the paper's evaluation view
        does; so intrinsics stored for full frames stay right for those views.
        """
        if (height, width) == (self.height, self.width):
            return self
        scale = max(height / self.height, width / self.width)
        off_x = (self.width * scale - width) / 2.0
        off_y = (self.height * scale - height) / 2.0
        return CameraIntrinsics(
            self.fx * scale,
            self.fy * scale,
            (self.cx + 0.5) * scale - 0.5 - off_x,
            (self.cy + 0.5) * scale - 0.5 - off_y,
            width,
            height,
        )


def metric_depth(array: np.ndarray, *, name: str = "depth") -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (float32, 0 where invalid) and the validity mask of a raw depth image.

    Args:
        array: uint16 HxW millimetres with 0 = invalid (16UC1), or float32 HxW metres with
            NaN / Inf / <= 0 = invalid (32FC1); an HxWx1 array is accepted too.
        name: The modality's name, used in error messages.

    Raises:
        EncodingError: another dtype or shape.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise EncodingError(
            f"{name}: expected a single-channel HxW depth image, got {array.shape}", modality=name
        )
    if array.dtype == np.uint16:
        valid = array > 0
        return array.astype(np.float32) * np.float32(0.001), valid
    if array.dtype == np.float32:
        valid = np.isfinite(array) & (array > 0)
        return np.where(valid, array, np.float32(0.0)), valid
    raise EncodingError(
        f"{name}: depth must be uint16 millimetres (16UC1) or float32 metres (32FC1), "
        f"got {array.dtype}",
        modality=name,
    )
