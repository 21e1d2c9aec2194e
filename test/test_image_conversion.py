"""Tests of unim2_ros.image_conversion with real rclpy and rosbags Image messages.

Messages with padded rows and big-endian data are built by hand; colour conversions are checked
against OpenCV's cvtColor; round trips go through both libraries' CDR serialisation, the form in
which messages arrive from DDS or from a bag file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import timeit
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from unim2_ros.errors import ImageConversionError
from unim2_ros.image_conversion import (
    ENCODINGS,
    RGB8_SOURCES,
    array_to_image,
    image_to_array,
    to_rgb8,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
BagImage = TYPESTORE.types["sensor_msgs/msg/Image"]
BagHeader = TYPESTORE.types["std_msgs/msg/Header"]
BagTime = TYPESTORE.types["builtin_interfaces/msg/Time"]
BAG_HEADER = BagHeader(stamp=BagTime(sec=12, nanosec=345), frame_id="camera")

EXAMPLES = settings(max_examples=25, deadline=None)


def _pixels(encoding: str) -> st.SearchStrategy[np.ndarray]:
    """Random arrays of the encoding's layout, 1x1 up to 9x11."""
    layout = ENCODINGS[encoding]
    dims = [st.integers(1, 9), st.integers(1, 11)]
    if layout.channels > 1:
        dims.append(st.just(layout.channels))
    return hnp.arrays(layout.dtype, st.tuples(*dims))


def _byte_view(data: Any) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)


def _hand_built(
    encoding: str, pixels: np.ndarray, *, pad: int = 0, big_endian: bool = False
) -> Image:
    """An rclpy Image assembled field by field, rows followed by ``pad`` bytes of 0xAB."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    padding = np.full((height, pad), 0xAB, dtype=np.uint8)
    data = np.concatenate([rows, padding], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, step=data.shape[1])
    msg.is_bigendian = int(big_endian)
    msg.data.frombytes(data.tobytes())
    return msg


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@EXAMPLES
@given(data=st.data())
def test_rclpy_round_trip_is_exact_and_reads_without_copy(
    encoding: str, data: st.DataObject
) -> None:
    pixels = data.draw(_pixels(encoding))
    msg = deserialize_message(serialize_message(array_to_image(pixels, encoding)), Image)
    layout = ENCODINGS[encoding]
    assert msg.encoding == encoding
    assert (msg.height, msg.width) == pixels.shape[:2]
    assert msg.step == pixels.shape[1] * layout.channels * layout.dtype.itemsize
    assert msg.is_bigendian == 0
    result = image_to_array(msg)
    assert result.shape == pixels.shape
    assert result.dtype == layout.dtype
    assert result.tobytes() == pixels.tobytes()
    assert np.shares_memory(result, _byte_view(msg.data))
    assert not result.flags.writeable


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@EXAMPLES
@given(data=st.data())
def test_rosbags_round_trip_is_exact_and_reads_without_copy(
    encoding: str, data: st.DataObject
) -> None:
    pixels = data.draw(_pixels(encoding))
    built = array_to_image(pixels, encoding, header=BAG_HEADER, msg_class=BagImage)
    assert not np.shares_memory(built.data, pixels)
    raw = TYPESTORE.serialize_cdr(built, BagImage.__msgtype__)
    msg: Any = TYPESTORE.deserialize_cdr(raw, BagImage.__msgtype__)
    assert msg.header == BAG_HEADER
    result = image_to_array(msg)
    assert result.tobytes() == pixels.tobytes()
    assert result.shape == pixels.shape
    assert np.shares_memory(result, msg.data)
    assert not result.flags.writeable


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@EXAMPLES
@given(data=st.data(), pad_elements=st.integers(1, 7))
def test_padded_rows_are_read_through_strides_without_copy(
    encoding: str, data: st.DataObject, pad_elements: int
) -> None:
    pixels = data.draw(_pixels(encoding))
    msg = _hand_built(encoding, pixels, pad=pad_elements * pixels.dtype.itemsize)
    result = image_to_array(msg)
    np.testing.assert_array_equal(result, pixels)
    assert result.shape == pixels.shape
    assert np.shares_memory(result, _byte_view(msg.data))
    assert result.strides[0] == msg.step


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
@EXAMPLES
@given(data=st.data(), pad_elements=st.integers(0, 3))
def test_big_endian_multibyte_data_is_swapped_into_host_order(
    encoding: str, data: st.DataObject, pad_elements: int
) -> None:
    pixels = data.draw(_pixels(encoding))
    msg = _hand_built(encoding, pixels, pad=pad_elements * pixels.dtype.itemsize, big_endian=True)
    result = image_to_array(msg)
    assert result.dtype == ENCODINGS[encoding].dtype
    assert result.dtype.isnative
    assert result.tobytes() == np.ascontiguousarray(pixels).tobytes()
    assert not np.shares_memory(result, _byte_view(msg.data))
    assert not result.flags.writeable


def test_big_endian_values_are_read_from_known_bytes() -> None:
    msg = Image(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4)
    msg.data.frombytes(bytes([0x01, 0x02, 0xFF, 0x00]))
    np.testing.assert_array_equal(image_to_array(msg), [[0x0102, 0xFF00]])
    msg.is_bigendian = 0
    np.testing.assert_array_equal(image_to_array(msg), [[0x0201, 0x00FF]])
    depth = Image(height=1, width=1, encoding="32FC1", is_bigendian=1, step=4)
    depth.data.frombytes(bytes([0x3F, 0xC0, 0x00, 0x00]))
    assert image_to_array(depth)[0, 0] == np.float32(1.5)


def test_big_endian_flag_is_ignored_for_8_bit_encodings() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    msg = _hand_built("rgb8", pixels, big_endian=True)
    result = image_to_array(msg)
    np.testing.assert_array_equal(result, pixels)
    assert np.shares_memory(result, _byte_view(msg.data))


@pytest.mark.parametrize(("height", "width"), [(0, 0), (0, 5), (4, 0)])
def test_empty_image_with_empty_data_gives_empty_array(height: int, width: int) -> None:
    msg = Image(height=height, width=width, encoding="rgb8", step=3 * width)
    assert image_to_array(msg).shape == (height, width, 3)
    built = array_to_image(np.zeros((height, width, 3), np.uint8), "rgb8")
    assert (built.height, built.width, len(built.data)) == (height, width, 0)
    assert image_to_array(built).shape == (height, width, 3)


def _raw(
    encoding: str, height: int, width: int, step: int, n_bytes: int, **extra: Any
) -> SimpleNamespace:
    return SimpleNamespace(
        encoding=encoding,
        height=height,
        width=width,
        step=step,
        is_bigendian=0,
        data=extra.pop("data", bytes(n_bytes)),
    )


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (_raw("bayer_rggb8", 2, 2, 2, 4), r"unsupported image encoding 'bayer_rggb8'"),
        (_raw("", 2, 2, 2, 4), r"unsupported image encoding ''; supported: rgb8, bgr8"),
        (_raw("rgb8", 2, 4, 11, 22), r"'rgb8' image step 11 is shorter than a row of 4 pixels"),
        (_raw("mono16", 2, 3, 4, 8), r"step 4 is shorter than a row of 3 pixels \(6 bytes\)"),
        (_raw("mono16", 2, 3, 7, 14), r"'mono16' image step 7 is not a multiple of its 2-byte"),
        (_raw("32FC1", 1, 1, 6, 6), r"'32FC1' image step 6 is not a multiple of its 4-byte"),
        (_raw("mono8", 3, 4, 4, 11), r"holds 11 bytes, expected step \* height = 4 \* 3 = 12"),
        (_raw("bgr8", 2, 2, 8, 17), r"'bgr8' image data holds 17 bytes, expected .* = 16"),
        (_raw("mono8", 0, 4, 4, 4), r"'mono8' image is 4x0 but data holds 4 bytes"),
        (_raw("mono8", 3, 0, 0, 1), r"image is 0x3 but data holds 1 bytes"),
        (_raw("mono8", 1, 2, 2, 0, data=[1, 2]), r"data of type list is not a byte buffer"),
        (
            _raw("mono8", 1, 2, 2, 0, data=np.zeros(2, np.uint16)),
            r"must be a 1-D uint8 array, got uint16",
        ),
        (
            _raw("mono8", 1, 2, 2, 0, data=np.zeros((1, 2), np.uint8)),
            r"must be a 1-D uint8 array, got uint8 with shape \(1, 2\)",
        ),
    ],
)
def test_inconsistent_messages_are_rejected_naming_encoding_and_sizes(
    msg: SimpleNamespace, match: str
) -> None:
    with pytest.raises(ImageConversionError, match=match):
        image_to_array(msg)


def test_exact_size_counterparts_of_rejected_messages_are_accepted() -> None:
    assert image_to_array(_raw("rgb8", 2, 4, 12, 24)).shape == (2, 4, 3)
    assert image_to_array(_raw("mono16", 2, 3, 8, 16)).shape == (2, 3)
    assert image_to_array(_raw("bgr8", 2, 2, 8, 16)).shape == (2, 2, 3)
    assert image_to_array(_raw("mono8", 1, 2, 2, 0, data=bytearray(2))).shape == (1, 2)


@pytest.mark.parametrize(
    ("pixels", "encoding", "match"),
    [
        (np.zeros((2, 2), np.uint8), "yuv422", r"unsupported image encoding 'yuv422'"),
        (np.zeros((2, 2), np.float64), "32FC1", r"'32FC1' needs float32 pixels, got float64"),
        (np.zeros((2, 2, 3), np.uint16), "rgb8", r"'rgb8' needs uint8 pixels, got uint16"),
        (np.zeros((2, 2), np.int16), "16UC1", r"'16UC1' needs uint16 pixels, got int16"),
        (np.zeros((2, 2), np.uint8), "rgb8", r"shape \[H, W, 3\], got \(2, 2\)"),
        (np.zeros((2, 2, 4), np.uint8), "bgr8", r"'bgr8' needs an array of shape \[H, W, 3\]"),
        (np.zeros((2, 2, 3), np.uint8), "mono8", r"shape \[H, W\] or \[H, W, 1\], got \(2, 2, 3\)"),
        (np.zeros(4, np.uint8), "mono8", r"got \(4,\)"),
    ],
)
def test_array_to_image_rejects_arrays_not_matching_the_encoding(
    pixels: np.ndarray, encoding: str, match: str
) -> None:
    with pytest.raises(ImageConversionError, match=match):
        array_to_image(pixels, encoding)


def test_array_to_image_accepts_single_channel_with_trailing_axis() -> None:
    pixels = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    np.testing.assert_array_equal(image_to_array(array_to_image(pixels, "mono8")), pixels[:, :, 0])


def test_array_to_image_writes_little_endian_from_any_byte_order() -> None:
    values = np.array([[0x0102, 0xA0B0]], dtype=">u2")
    msg = array_to_image(values, "mono16")
    assert msg.is_bigendian == 0
    assert bytes(msg.data) == bytes([0x02, 0x01, 0xB0, 0xA0])


def test_array_to_image_copies_non_contiguous_input_and_owns_its_data() -> None:
    source = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    view = source[::2, 1::3, ::-1]
    msg = array_to_image(view, "bgr8")
    expected = view.copy()
    source[:] = 0
    np.testing.assert_array_equal(image_to_array(msg), expected)


def test_array_to_image_sets_given_header_or_default() -> None:
    header = Header(frame_id="camera")
    header.stamp.sec = 7
    assert array_to_image(np.zeros((1, 1), np.uint8), "mono8", header=header).header is header
    assert array_to_image(np.zeros((1, 1), np.uint8), "mono8").header == Header()


def test_array_to_image_needs_header_for_rosbags_class() -> None:
    with pytest.raises(ValueError, match="header is required to build a sensor_msgs__msg__Image"):
        array_to_image(np.zeros((1, 1), np.uint8), "mono8", msg_class=BagImage)


def test_array_to_image_rejects_class_without_byte_array_data() -> None:
    class ListImage:
        def __init__(self, **fields: Any) -> None:
            self.__dict__.update(fields)
            self.data: list[int] = []

    with pytest.raises(TypeError, match=r"ListImage.data is a list, expected the array.array"):
        array_to_image(np.zeros((1, 1), np.uint8), "mono8", msg_class=ListImage)


def test_array_to_image_is_fast_and_correct_when_rclpy_checks_fields(tmp_path: Path) -> None:
    # With ROS_PYTHON_CHECK_FIELDS=1, assigning bytes to msg.data validates every element
    # (~100 ms for 640x480x3); filling the message's own array.array must stay a memcpy.
    script = tmp_path / "check_fields.py"
    script.write_text(
        textwrap.dedent(
            """
            import timeit
            import numpy as np
            from unim2_ros.image_conversion import array_to_image, image_to_array
            pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
            msg = array_to_image(pixels, "rgb8")
            assert msg._check_fields
            assert (image_to_array(msg) == pixels).all()
            best = min(timeit.repeat(lambda: array_to_image(pixels, "rgb8"), number=3, repeat=3))
            assert best / 3 < 0.02, best / 3
            """
        )
    )
    env = {"ROS_PYTHON_CHECK_FIELDS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, str(script)], check=True, env=env)


def test_array_to_image_fills_vga_frame_with_one_memcpy_not_per_element() -> None:
    # rclpy's data setter converts an ndarray element by element (~60 ms for 640x480x3).
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    best = min(timeit.repeat(lambda: array_to_image(pixels, "rgb8"), number=5, repeat=3)) / 5
    assert best < 0.02


@pytest.mark.parametrize(
    ("encoding", "code"),
    [
        ("rgb8", None),
        ("bgr8", cv2.COLOR_BGR2RGB),
        ("rgba8", cv2.COLOR_RGBA2RGB),
        ("bgra8", cv2.COLOR_BGRA2RGB),
        ("mono8", cv2.COLOR_GRAY2RGB),
    ],
)
@EXAMPLES
@given(data=st.data())
def test_to_rgb8_matches_opencv(encoding: str, code: int | None, data: st.DataObject) -> None:
    assert encoding in RGB8_SOURCES
    pixels = data.draw(_pixels(encoding))
    expected = pixels if code is None else cv2.cvtColor(pixels, code)
    rgb = to_rgb8(image_to_array(array_to_image(pixels, encoding)), encoding)
    assert rgb.shape == (*pixels.shape[:2], 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


def test_to_rgb8_returns_contiguous_rgb8_itself_and_copies_strided_views() -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert to_rgb8(pixels, "rgb8") is pixels
    padded = image_to_array(_hand_built("rgb8", pixels, pad=5))
    rgb = to_rgb8(padded, "rgb8")
    assert rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, pixels)


@pytest.mark.parametrize(
    ("pixels", "encoding", "match"),
    [
        (np.zeros((2, 2, 3), np.uint8), "8UC3", r"'8UC3' is not a colour or mono8 encoding"),
        (np.zeros((2, 2), np.uint8), "8UC1", r"'8UC1' is not a colour or mono8 encoding"),
        (np.zeros((2, 2), np.uint16), "mono16", r"'mono16' is not a colour or mono8"),
        (np.zeros((2, 2), np.float32), "32FC1", r"accepts bgr8, bgra8, mono8, rgb8, rgba8"),
        (np.zeros((2, 2, 3), np.uint8), "hsv8", r"unsupported image encoding 'hsv8'"),
        (np.zeros((2, 2, 3), np.uint8), "bgra8", r"'bgra8' needs an array of shape \[H, W, 4\]"),
    ],
)
def test_to_rgb8_rejects_encodings_without_colour_meaning_or_mismatched_arrays(
    pixels: np.ndarray, encoding: str, match: str
) -> None:
    with pytest.raises(ImageConversionError, match=match):
        to_rgb8(pixels, encoding)


def test_real_frames_survive_the_message_path(sample_data: Path) -> None:
    bgr = cv2.imread(str(sample_data / "nyu_rgbd_sample" / "rgb" / "0003.png"), cv2.IMREAD_COLOR)
    depth = cv2.imread(
        str(sample_data / "nyu_rgbd_sample" / "depth_mm" / "0003.png"), cv2.IMREAD_UNCHANGED
    )
    assert bgr is not None and depth is not None and depth.dtype == np.uint16
    colour_msg = deserialize_message(serialize_message(array_to_image(bgr, "bgr8")), Image)
    rgb = to_rgb8(image_to_array(colour_msg), colour_msg.encoding)
    np.testing.assert_array_equal(rgb, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    depth_msg = array_to_image(depth, "16UC1", header=BAG_HEADER, msg_class=BagImage)
    raw = TYPESTORE.serialize_cdr(depth_msg, BagImage.__msgtype__)
    depth_back: Any = TYPESTORE.deserialize_cdr(raw, BagImage.__msgtype__)
    np.testing.assert_array_equal(image_to_array(depth_back), depth)


def test_module_converts_rosbags_messages_without_rclpy() -> None:
    code = textwrap.dedent(
        """
        import sys
        for name in ("rclpy", "sensor_msgs", "sensor_msgs.msg", "std_msgs", "std_msgs.msg"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import numpy as np
        from rosbags.typesys import Stores, get_typestore
        from unim2_ros.image_conversion import array_to_image, image_to_array
        store = get_typestore(Stores.ROS2_KILTED)
        header = store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""
        )
        pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
        msg = array_to_image(
            pixels, "mono16", header=header, msg_class=store.types["sensor_msgs/msg/Image"]
        )
        assert (image_to_array(msg) == pixels).all()
        try:
            array_to_image(pixels, "mono16")
        except ImportError:
            pass
        else:
            raise AssertionError("the default message class needs rclpy")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
