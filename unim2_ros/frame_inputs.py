"""Input image messages -> the raw modality arrays the Segmenter takes, refusing unusable ones.

Each modality accepts only the ``sensor_msgs/Image`` encodings whose pixels mean what its
checkpoint encoding expects (see ``unim2_core.data.encoding``): colour encodings for ``rgb`` /
``hha``,
and for single-channel modalities the encodings of the trained ``input_dtype`` (depth: 16UC1 /
mono16 millimetres or 32FC1 metres). Anything else is refused here, before synchronisation, with
a reason the node counts in its diagnostics. Importable without rclpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_ros.errors import ImageConversionError, InputRejectedError
from unim2_ros.image_conversion import ImageMessage, image_to_array, to_rgb8

WRONG_ENCODING = "wrong_encoding"
MALFORMED = "malformed"
EMPTY = "empty"

_COLOR_KINDS = (EncodingKind.RGB, EncodingKind.HHA)
_COLOR_ENCODINGS: Mapping[EncodingKind, frozenset[str]] = MappingProxyType(
    {
        EncodingKind.RGB: frozenset({"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}),
        EncodingKind.HHA: frozenset({"rgb8", "bgr8", "rgba8", "bgra8"}),
    }
)
_CHANNEL_ENCODINGS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "uint8": frozenset({"mono8", "8UC1"}),
        "uint16": frozenset({"mono16", "16UC1"}),
        "float32": frozenset({"32FC1"}),
        "any": frozenset({"mono16", "16UC1", "32FC1"}),
    }
)


def accepted_encodings(encoding: ModalityEncoding) -> frozenset[str]:
    """The ``sensor_msgs/Image`` encodings a modality with this checkpoint encoding accepts."""
    if encoding.kind in _COLOR_KINDS:
        return _COLOR_ENCODINGS[encoding.kind]
    return _CHANNEL_ENCODINGS[encoding.input_dtype]


def modality_array(msg: ImageMessage, modality: str, encoding: ModalityEncoding) -> np.ndarray:
    """The raw array of one input message, in the conventions of ``unim2_core.data.encoding``.

    Colour modalities come out as HxWx3 RGB (a copy unless the message is dense rgb8);
    single-channel ones as a read-only HxW view of the message data.

    Args:
        msg: An rclpy (or rosbags) ``sensor_msgs/Image``.
        modality: The modality's name, for messages.
        encoding: The modality's checkpoint encoding.

    Raises:
        InputRejectedError: ``reason`` is ``wrong_encoding`` (not an accepted encoding),
            ``empty`` (no pixels or no data) or ``malformed`` (step or data size inconsistent).
    """
    accepted = accepted_encodings(encoding)
    if msg.encoding not in accepted:
        raise InputRejectedError(
            WRONG_ENCODING,
            f"{modality}: encoding {msg.encoding!r} is not accepted; the checkpoint's "
            f"{encoding.kind.value} ({encoding.input_dtype}) input takes "
            f"{', '.join(sorted(accepted))}",
        )
    if msg.height == 0 or msg.width == 0 or _byte_length(msg.data) == 0:
        raise InputRejectedError(
            EMPTY,
            f"{modality}: empty {msg.encoding!r} image ({msg.width}x{msg.height}, "
            f"{_byte_length(msg.data)} data bytes)",
        )
    try:
        pixels = image_to_array(msg)
        if encoding.kind in _COLOR_KINDS:
            return to_rgb8(pixels, msg.encoding)
    except ImageConversionError as err:
        raise InputRejectedError(MALFORMED, f"{modality}: {err}") from err
    return pixels


def _byte_length(data: Any) -> int:
    return len(data) if hasattr(data, "__len__") else 0
