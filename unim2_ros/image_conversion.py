"""sensor_msgs/Image <-> numpy conversions (and a CameraInfo's intrinsics, a Header's stamp),
importable without rclpy.

Two kinds of Image objects pass through here: rclpy's generated ``sensor_msgs.msg.Image`` (live
topics; ``data`` is an ``array.array('B')``) and the dataclasses of the ``rosbags`` library
(bag files; ``data`` is a uint8 numpy array). Reading is duck-typed on the fields ``height``,
``width``, ``encoding``, ``is_bigendian``, ``step`` and ``data``; writing builds either kind.

Message validation follows cv_bridge's C++ ``matFromImage``, which most ROS image consumers go
through: ``step`` must cover a row and ``data`` must hold exactly ``step * height`` bytes. A
longer buffer is rejected too (cv_bridge's Python ``imgmsg_to_cv2`` would silently ignore the
excess), since it means the producer's sizes are wrong and the pixels cannot be trusted.
"""

from __future__ import annotations

import array as array_module
import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from unim2_core.data.camera import CameraIntrinsics
from unim2_ros.errors import ImageConversionError


class ImageLayout(NamedTuple):
    """How one pixel of an encoding is stored.

    Attributes:
        dtype: Element type, native byte order.
        channels: Elements per pixel.
    """

    dtype: np.dtype[Any]
    channels: int


ENCODINGS: Mapping[str, ImageLayout] = MappingProxyType(
    {
        "rgb8": ImageLayout(np.dtype(np.uint8), 3),
        "bgr8": ImageLayout(np.dtype(np.uint8), 3),
        "rgba8": ImageLayout(np.dtype(np.uint8), 4),
        "bgra8": ImageLayout(np.dtype(np.uint8), 4),
        "mono8": ImageLayout(np.dtype(np.uint8), 1),
        "8UC1": ImageLayout(np.dtype(np.uint8), 1),
        "8UC3": ImageLayout(np.dtype(np.uint8), 3),
        "mono16": ImageLayout(np.dtype(np.uint16), 1),
        "16UC1": ImageLayout(np.dtype(np.uint16), 1),
        "32FC1": ImageLayout(np.dtype(np.float32), 1),
    }
)
"""Supported ``sensor_msgs/Image`` encodings (names as in sensor_msgs/image_encodings.hpp)."""

RGB8_SOURCES = frozenset({"rgb8", "bgr8", "rgba8", "bgra8", "mono8"})
"""Encodings with a known colour meaning, accepted by :func:`to_rgb8`."""


class ImageMessage(Protocol):
    """The fields of sensor_msgs/Image that :func:`image_to_array` reads."""

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def encoding(self) -> str: ...

    @property
    def is_bigendian(self) -> int: ...

    @property
    def step(self) -> int: ...

    @property
    def data(self) -> Any: ...


def image_to_array(msg: ImageMessage) -> npt.NDArray[Any]:
    """Returns the pixels of an Image message as an array, without copying where possible.

    When the message's byte order is the host's (always for 8-bit encodings), the result is a
    view of ``msg.data``: rows padded beyond ``width`` pixels (``step`` larger than needed) are
    handled with strides, so such a view is not C-contiguous. Otherwise the values are
    byte-swapped into a new array in host order.

    The result is always read-only, so a callback cannot modify a received message through it
    (and a copy behaves like a view); call ``.copy()`` for a writable array. While a view of an
    rclpy message's ``array.array`` is alive, that array cannot be resized.

    Args:
        msg: An rclpy or rosbags sensor_msgs/Image, or any object with the same fields whose
            ``data`` is a uint8 numpy array or exposes the buffer protocol (array.array, bytes).

    Returns:
        ``[H, W]`` for one-channel encodings, ``[H, W, C]`` otherwise, dtype as in
        :data:`ENCODINGS`.

    Raises:
        ImageConversionError: If the encoding is unsupported, ``step`` is shorter than a row or
            not a multiple of the element size, ``data`` is not ``step * height`` bytes long or
            not a byte buffer, or the image is empty but ``data`` is not.
    """
    encoding = msg.encoding
    layout = _layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = layout.dtype.itemsize
    buffer = _byte_buffer(msg.data, encoding)
    shape = (height, width) if layout.channels == 1 else (height, width, layout.channels)
    if height == 0 or width == 0:
        if buffer.size:
            raise ImageConversionError(
                f"{encoding!r} image is {width}x{height} but data holds {buffer.size} bytes"
            )
        empty = np.empty(shape, dtype=layout.dtype)
        empty.flags.writeable = False
        return empty
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"{encoding!r} image step {step} is shorter than a row of {width} pixels "
            f"({row_bytes} bytes)"
        )
    if step % itemsize:
        raise ImageConversionError(
            f"{encoding!r} image step {step} is not a multiple of its {itemsize}-byte element"
        )
    if buffer.size != step * height:
        raise ImageConversionError(
            f"{encoding!r} image data holds {buffer.size} bytes, expected step * height = "
            f"{step} * {height} = {step * height}"
        )
    dtype = layout.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    strides = (
        (step, itemsize) if layout.channels == 1 else (step, layout.channels * itemsize, itemsize)
    )
    pixels: npt.NDArray[Any] = np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)
    if not dtype.isnative:
        pixels = pixels.astype(layout.dtype)
    pixels.flags.writeable = False
    return pixels


def array_to_image(
    array: npt.ArrayLike,
    encoding: str,
    *,
    header: Any = None,
    msg_class: type[Any] | None = None,
) -> Any:
    """Builds a sensor_msgs/Image holding a copy of ``array``.

    The message is dense (``step = width * channels * itemsize``) and little-endian
    (``is_bigendian = 0``) whatever the host. The pixels are copied once, with ``frombytes``
    into the empty ``array.array('B')`` of a new rclpy message: a memcpy (0.03 ms for
    640x480x3). Assigning ``msg.data`` instead goes through rclpy's generated setter, which
    converts an ndarray or memoryview element by element (50-90 ms) and, when
    ``ROS_PYTHON_CHECK_FIELDS=1``, checks every byte of a bytes object too (~70 ms).

    Args:
        array: ``[H, W]`` (or ``[H, W, 1]``) for one-channel encodings, ``[H, W, C]``
            otherwise, with the encoding's element type in either byte order.
        encoding: A key of :data:`ENCODINGS`.
        header: The message header, stored as given (not copied); rclpy's default empty
            header when None.
        msg_class: The Image class to instantiate: rclpy's ``sensor_msgs.msg.Image`` (the
            default, imported on first use) or a rosbags dataclass such as
            ``typestore.types['sensor_msgs/msg/Image']``, which needs ``header``.

    Returns:
        An instance of ``msg_class``.

    Raises:
        ImageConversionError: If the encoding is unsupported or the array's dtype or shape
            does not match it.
        ValueError: If ``msg_class`` is a dataclass and ``header`` is None.
        TypeError: If ``msg_class`` is neither a dataclass nor an rclpy-style message whose
            ``data`` is an ``array.array``.
    """
    layout = _layout(encoding)
    pixels = _checked_pixels(array, encoding, layout)
    height, width = pixels.shape[:2]
    little_endian = np.ascontiguousarray(pixels, dtype=layout.dtype.newbyteorder("<"))
    data = little_endian.reshape(-1).view(np.uint8)
    fields = {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * layout.channels * layout.dtype.itemsize,
    }
    cls: Any = msg_class
    if cls is None:
        from sensor_msgs.msg import Image

        cls = Image
    is_rosbags_class = dataclasses.is_dataclass(cls)
    if is_rosbags_class:
        if header is None:
            raise ValueError(f"header is required to build a {cls.__name__} (dataclass)")
        owned = data.copy() if np.shares_memory(data, pixels) else data
        return cls(header=header, data=owned, **fields)
    msg = cls(**fields) if header is None else cls(header=header, **fields)
    buffer = msg.data
    if not isinstance(buffer, array_module.array):
        raise TypeError(
            f"{cls.__name__}.data is a {type(buffer).__name__}, expected the "
            f"array.array('B') of an rclpy message (or pass a rosbags dataclass)"
        )
    buffer.frombytes(data.data)
    return msg


def to_rgb8(array: npt.ArrayLike, encoding: str) -> npt.NDArray[np.uint8]:
    """Returns ``array`` as ``[H, W, 3]`` uint8 RGB, the input the segmenter expects.

    BGR channels are reversed, alpha is dropped and mono8 is replicated into three channels.
    For ``rgb8`` input that is already C-contiguous, ``array`` itself is returned (no copy);
    every other case returns a new C-contiguous array.

    Args:
        array: Pixels as returned by :func:`image_to_array` for ``encoding``.
        encoding: One of :data:`RGB8_SOURCES`.

    Raises:
        ImageConversionError: If the encoding has no colour meaning (generic ``8UC3``, depth,
            16-bit or float encodings) or the array does not match it.
    """
    layout = _layout(encoding)
    if encoding not in RGB8_SOURCES:
        raise ImageConversionError(
            f"{encoding!r} is not a colour or mono8 encoding; to_rgb8 accepts "
            f"{', '.join(sorted(RGB8_SOURCES))}"
        )
    pixels = _checked_pixels(array, encoding, layout)
    if encoding == "rgb8":
        rgb = pixels
    elif encoding in ("bgr8", "bgra8"):
        rgb = pixels[:, :, 2::-1]
    elif encoding == "rgba8":
        rgb = pixels[:, :, :3]
    else:
        mono = pixels.reshape(pixels.shape[:2])
        rgb = np.repeat(mono[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(rgb)


def _layout(encoding: str) -> ImageLayout:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        ) from None


def _byte_buffer(data: Any, encoding: str) -> npt.NDArray[np.uint8]:
    """Views a message's ``data`` as a flat uint8 array without copying."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ImageConversionError(
                f"{encoding!r} image data must be a 1-D uint8 array, got {data.dtype} "
                f"with shape {data.shape}"
            )
        return np.ascontiguousarray(data)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageConversionError(
            f"{encoding!r} image data of type {type(data).__name__} is not a byte buffer"
        ) from exc


def _checked_pixels(array: npt.ArrayLike, encoding: str, layout: ImageLayout) -> npt.NDArray[Any]:
    """Returns ``array`` as an ndarray after checking its dtype and shape against ``encoding``."""
    pixels = np.asarray(array)
    if pixels.dtype.newbyteorder("=") != layout.dtype:
        raise ImageConversionError(f"{encoding!r} needs {layout.dtype} pixels, got {pixels.dtype}")
    if layout.channels == 1:
        shape_ok = pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1)
        expected = "[H, W] or [H, W, 1]"
    else:
        shape_ok = pixels.ndim == 3 and pixels.shape[2] == layout.channels
        expected = f"[H, W, {layout.channels}]"
    if not shape_ok:
        raise ImageConversionError(
            f"{encoding!r} needs an array of shape {expected}, got {pixels.shape}"
        )
    return pixels


def header_stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp in integer nanoseconds (rclpy messages and bag dataclasses).

    The one conversion the node (synchroniser, latency) and the bag tools (frame names, replay
    matching) share, so a frame's stamp is the same number everywhere.
    """
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def camera_info_intrinsics(msg: Any) -> CameraIntrinsics:
    """The intrinsics of a ``sensor_msgs/CameraInfo`` (its ``k`` and image size).

    Raises:
        EncodingError: an uncalibrated (all-zero) camera matrix or an empty image size.
    """
    return CameraIntrinsics.from_matrix(list(msg.k), int(msg.width), int(msg.height))
