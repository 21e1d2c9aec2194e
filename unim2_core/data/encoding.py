"""Modality encodings: raw robot / dataset arrays -> 3-channel images in [0, 1].

This is the first half of the one preprocessing path shared by the trainer, the replay evaluator
and the node (the second half, resizing and ImageNet normalisation, is in ``preprocess.py``).
Each modality keeps its normalisation constants in a ``ModalityEncoding`` that is stored in the
checkpoint, so the node cannot silently disagree with the trainer.

Raw array conventions (what every dataset reader and the node hand over):

- ``rgb``: uint8 HxWx3, RGB order.
- ``hha``: uint8 HxWx3 precomputed HHA image (how the benchmarks feed depth).
- ``depth_hha``: raw depth as for ``depth``, turned into HHA on the fly (``unim2_core.data.hha``)
  with the camera's intrinsics: those passed with the frame (the node's ``camera_info``), else the
  ones stored in the encoding (the training camera's). ``low`` / ``high`` are in the 8-bit units
  of published HHA images (default 0 / 255, as for ``hha``), so the encoded image equals the
  ``hha`` encoding of the same frame's precomputed HHA image.
- ``depth``: uint16 HxW millimetres with 0 = invalid (REP 118 16UC1), or float32 HxW metres with
  NaN / Inf / <= 0 = invalid (32FC1). ``low`` / ``high`` are in metres; invalid pixels encode
  as 0. A frame without a single valid pixel is refused.
- ``thermal`` / ``nir``: one channel of ``input_dtype`` (uint8 mono8, uint16 counts, float32
  e.g. degrees Celsius); ``low`` / ``high`` are in input units.
- ``dolp``: one channel, float32 in [0, 1] by default.
- ``aolp``: float32 HxW angle (``low`` / ``high`` are the input values of angle 0 and pi), or
  float32 HxWx2 holding (sin, cos) of the angle as MCubeS stores it. Encoded as
  (sin, cos, sin) mapped from [-1, 1] to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.hha import hha_from_depth
from unim2_core.errors import ConfigError, EncodingError


class EncodingKind(str, Enum):
    """How a modality's raw array is turned into three channels."""

    RGB = "rgb"
    HHA = "hha"
    DEPTH = "depth"
    DEPTH_HHA = "depth_hha"
    THERMAL = "thermal"
    NIR = "nir"
    AOLP = "aolp"
    DOLP = "dolp"


InputDtype = str
"""One of ``"uint8"``, ``"uint16"``, ``"float32"``, or ``"any"`` (depth: uint16 mm or float m)."""

_DTYPES = ("uint8", "uint16", "float32", "any")

_DEFAULT_DTYPE: dict[EncodingKind, InputDtype] = {
    EncodingKind.RGB: "uint8",
    EncodingKind.HHA: "uint8",
    EncodingKind.DEPTH: "any",
    EncodingKind.DEPTH_HHA: "any",
    EncodingKind.THERMAL: "uint8",
    EncodingKind.NIR: "uint8",
    EncodingKind.AOLP: "float32",
    EncodingKind.DOLP: "float32",
}

_DEFAULT_RANGE: dict[tuple[EncodingKind, InputDtype], tuple[float, float]] = {
    (EncodingKind.RGB, "uint8"): (0.0, 255.0),
    (EncodingKind.HHA, "uint8"): (0.0, 255.0),
    (EncodingKind.DEPTH, "any"): (0.0, 10.0),
    (EncodingKind.DEPTH_HHA, "any"): (0.0, 255.0),
    (EncodingKind.THERMAL, "uint8"): (0.0, 255.0),
    (EncodingKind.THERMAL, "uint16"): (0.0, 65535.0),
    (EncodingKind.THERMAL, "float32"): (-20.0, 60.0),
    (EncodingKind.NIR, "uint8"): (0.0, 255.0),
    (EncodingKind.NIR, "uint16"): (0.0, 65535.0),
    (EncodingKind.NIR, "float32"): (0.0, 1.0),
    (EncodingKind.AOLP, "uint8"): (0.0, 255.0),
    (EncodingKind.AOLP, "uint16"): (0.0, 65535.0),
    (EncodingKind.AOLP, "float32"): (0.0, math.pi),
    (EncodingKind.DOLP, "uint8"): (0.0, 255.0),
    (EncodingKind.DOLP, "uint16"): (0.0, 65535.0),
    (EncodingKind.DOLP, "float32"): (0.0, 1.0),
}

_THREE_CHANNEL_KINDS = (EncodingKind.RGB, EncodingKind.HHA)


@dataclass(frozen=True)
class ModalityEncoding:
    """Normalisation of one modality: ``(value - low) / (high - low)`` clipped to [0, 1].

    Build with ``ModalityEncoding.default(kind)`` and override ``low`` / ``high`` /
    ``input_dtype`` for a particular sensor; the values travel inside the checkpoint.
    ``intrinsics`` (``depth_hha`` only) are the camera the training frames were recorded with;
    a frame that brings its own intrinsics (the node's ``camera_info``) uses those instead.
    """

    kind: EncodingKind
    input_dtype: InputDtype
    low: float
    high: float
    intrinsics: CameraIntrinsics | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EncodingKind):
            raise ConfigError(f"unknown encoding kind {self.kind!r}")
        if (self.kind, self.input_dtype) not in _DEFAULT_RANGE:
            allowed = sorted(d for k, d in _DEFAULT_RANGE if k is self.kind)
            raise ConfigError(
                f"{self.kind.value} encoding does not take input_dtype {self.input_dtype!r}; "
                f"allowed: {allowed}"
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise ConfigError(
                f"{self.kind.value} encoding needs finite low < high, got "
                f"low={self.low!r} high={self.high!r}"
            )
        if self.intrinsics is not None and self.kind is not EncodingKind.DEPTH_HHA:
            raise ConfigError(
                f"{self.kind.value} encoding takes no intrinsics (only depth_hha does)"
            )

    @classmethod
    def default(
        cls, kind: EncodingKind | str, input_dtype: InputDtype | None = None
    ) -> ModalityEncoding:
        """Default constants of ``kind`` for ``input_dtype`` (the usual dtype if None)."""
        try:
            kind = EncodingKind(kind)
        except ValueError as err:
            allowed = [k.value for k in EncodingKind]
            raise ConfigError(f"unknown encoding kind {kind!r}; allowed: {allowed}") from err
        dtype = _DEFAULT_DTYPE[kind] if input_dtype is None else input_dtype
        if (kind, dtype) not in _DEFAULT_RANGE:
            allowed = sorted(d for k, d in _DEFAULT_RANGE if k is kind)
            raise ConfigError(
                f"{kind.value} encoding does not take input_dtype {dtype!r}; allowed: {allowed}"
            )
        low, high = _DEFAULT_RANGE[(kind, dtype)]
        return cls(kind=kind, input_dtype=dtype, low=low, high=high)

    def to_dict(self) -> dict[str, str | float | list[float]]:
        """Plain-type form stored in checkpoints and YAML (``intrinsics`` only when set)."""
        data: dict[str, str | float | list[float]] = {
            "kind": self.kind.value,
            "input_dtype": self.input_dtype,
            "low": float(self.low),
            "high": float(self.high),
        }
        if self.intrinsics is not None:
            data["intrinsics"] = self.intrinsics.to_list()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str = "encoding") -> ModalityEncoding:
        """Parse ``to_dict`` output (or a YAML mapping); missing constants take the defaults.

        Raises:
            ConfigError: unknown key, unknown kind or dtype, or non-numeric constants; the
                message names ``where`` and the key.
        """
        unknown = set(data) - {"kind", "input_dtype", "low", "high", "intrinsics"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        if "kind" not in data:
            raise ConfigError(f"{where}: missing key 'kind'")
        dtype = data.get("input_dtype")
        if dtype is not None and not isinstance(dtype, str):
            raise ConfigError(f"{where}.input_dtype must be a string, got {dtype!r}")
        try:
            base = cls.default(str(data["kind"]), dtype)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err
        bounds = {}
        for key in ("low", "high"):
            value = data.get(key, getattr(base, key))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
            bounds[key] = float(value)
        intrinsics = None
        if data.get("intrinsics") is not None:
            values = data["intrinsics"]
            if not isinstance(values, (list, tuple)):
                raise ConfigError(
                    f"{where}.intrinsics must be a list [fx, fy, cx, cy, width, height], "
                    f"got {values!r}"
                )
            intrinsics = CameraIntrinsics.from_values(values, where=f"{where}.intrinsics")
        try:
            return cls(
                kind=base.kind, input_dtype=base.input_dtype, intrinsics=intrinsics, **bounds
            )
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err

    def encode(
        self,
        array: np.ndarray,
        *,
        name: str | None = None,
        intrinsics: CameraIntrinsics | None = None,
    ) -> np.ndarray:
        """Encode one raw array into a float32 HxWx3 image in [0, 1].

        Args:
            array: The raw modality array, in the conventions of this module's docstring.
            name: The modality's name, used in error messages (defaults to the kind).
            intrinsics: The frame's camera intrinsics (``depth_hha``; other kinds ignore
                them); None uses the encoding's stored ones.

        Raises:
            EncodingError: wrong dtype or shape, empty array, non-finite values where they
                are not allowed, a depth frame without any valid pixel, or a ``depth_hha``
                frame without intrinsics.
        """
        label = name or self.kind.value
        if not isinstance(array, np.ndarray):
            raise EncodingError(
                f"{label}: expected a numpy array, got {type(array).__name__}", modality=label
            )
        if array.size == 0:
            raise EncodingError(f"{label}: empty array of shape {array.shape}", modality=label)
        if self.kind in _THREE_CHANNEL_KINDS:
            return self._encode_color(array, label)
        if self.kind is EncodingKind.AOLP and array.ndim == 3:
            return self._encode_sin_cos(array, label)
        channel = _single_channel(array, label)
        if self.kind is EncodingKind.DEPTH:
            return self._encode_depth(channel, label)
        if self.kind is EncodingKind.DEPTH_HHA:
            return self._encode_depth_hha(channel, label, intrinsics or self.intrinsics)
        self._check_dtype(channel, label)
        values = channel.astype(np.float32)
        if not np.isfinite(values).all():
            raise EncodingError(f"{label}: contains NaN or Inf values", modality=label)
        unit = (values - np.float32(self.low)) / np.float32(self.high - self.low)
        np.clip(unit, 0.0, 1.0, out=unit)
        if self.kind is EncodingKind.AOLP:
            angle = unit * np.float32(math.pi)
            return _sin_cos_image(np.sin(angle), np.cos(angle))
        return _repeat3(unit)

    def _check_dtype(self, array: np.ndarray, label: str) -> None:
        if array.dtype != np.dtype(self.input_dtype):
            raise EncodingError(
                f"{label}: the {self.kind.value} encoding expects {self.input_dtype} input, got "
                f"{array.dtype} (check the sensor's encoding or the checkpoint's constants)",
                modality=label,
            )

    def _encode_color(self, array: np.ndarray, label: str) -> np.ndarray:
        if array.ndim != 3 or array.shape[2] != 3:
            raise EncodingError(
                f"{label}: expected an HxWx3 image, got shape {array.shape}", modality=label
            )
        self._check_dtype(array, label)
        unit = (array.astype(np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)
        return np.clip(unit, 0.0, 1.0, out=unit)

    def _encode_depth(self, array: np.ndarray, label: str) -> np.ndarray:
        if array.dtype == np.uint16:
            valid = array > 0
            metres = array.astype(np.float32) * np.float32(0.001)
        elif array.dtype == np.float32:
            valid = np.isfinite(array) & (array > 0)
            metres = np.where(valid, array, np.float32(0.0))
        else:
            raise EncodingError(
                f"{label}: depth must be uint16 millimetres (16UC1) or float32 metres (32FC1), "
                f"got {array.dtype}",
                modality=label,
            )
        if not valid.any():
            raise EncodingError(f"{label}: depth image has no valid pixel", modality=label)
        unit = (metres - np.float32(self.low)) / np.float32(self.high - self.low)
        np.clip(unit, 0.0, 1.0, out=unit)
        unit[~valid] = 0.0
        return _repeat3(unit)

    def _encode_depth_hha(
        self, array: np.ndarray, label: str, intrinsics: CameraIntrinsics | None
    ) -> np.ndarray:
        if intrinsics is None:
            raise EncodingError(
                f"{label}: the depth_hha encoding needs the camera's intrinsics (camera_info in "
                "the node; in training, 'intrinsics' in the config's encoding or in the folder "
                "dataset's dataset.yaml, which unim2_import_bag writes from the bag's camera_info)",
                modality=label,
            )
        hha = hha_from_depth(array, intrinsics, name=label)
        unit = (hha - np.float32(self.low)) / np.float32(self.high - self.low)
        return np.clip(unit, 0.0, 1.0, out=unit)

    def _encode_sin_cos(self, array: np.ndarray, label: str) -> np.ndarray:
        if array.shape[2] != 2 or array.dtype != np.float32:
            raise EncodingError(
                f"{label}: AoLP as (sin, cos) must be float32 HxWx2, got {array.dtype} "
                f"{array.shape}",
                modality=label,
            )
        if not np.isfinite(array).all():
            raise EncodingError(f"{label}: contains NaN or Inf values", modality=label)
        return _sin_cos_image(np.clip(array[..., 0], -1, 1), np.clip(array[..., 1], -1, 1))


def _single_channel(array: np.ndarray, label: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        return array[..., 0]
    if array.ndim != 2:
        raise EncodingError(
            f"{label}: expected a single-channel HxW image, got shape {array.shape}",
            modality=label,
        )
    return array


def _repeat3(unit: np.ndarray) -> np.ndarray:
    return np.repeat(unit[..., None], 3, axis=2)


def _sin_cos_image(sin: np.ndarray, cos: np.ndarray) -> np.ndarray:
    sin01 = (sin.astype(np.float32) + 1.0) * 0.5
    cos01 = (cos.astype(np.float32) + 1.0) * 0.5
    return np.stack([sin01, cos01, sin01], axis=2)


def check_group(arrays: Mapping[str, np.ndarray], modalities: Sequence[str]) -> tuple[int, int]:
    """Check that a frame group holds every modality at one size; return that (height, width).

    Raises:
        EncodingError: a modality is missing (``modality`` is the first missing one) or the
            sizes differ (all sizes are listed; ``modality`` is the first that differs from the
            first modality's size).
    """
    missing = [m for m in modalities if m not in arrays]
    if missing:
        raise EncodingError(
            f"frame group lacks modality {missing} (has {sorted(arrays)})", modality=missing[0]
        )
    sizes = {m: tuple(np.shape(arrays[m])[:2]) for m in modalities}
    if len(set(sizes.values())) != 1:
        listed = ", ".join(f"{m} {h}x{w}" for m, (h, w) in sizes.items())
        odd = next(m for m in modalities if sizes[m] != sizes[modalities[0]])
        raise EncodingError(f"modalities differ in size (height x width): {listed}", modality=odd)
    height, width = sizes[modalities[0]]
    return int(height), int(width)
