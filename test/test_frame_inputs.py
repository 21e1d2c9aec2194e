"""Input messages -> modality arrays: accepted encodings per checkpoint encoding, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image

from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_ros.errors import InputRejectedError
from unim2_ros.frame_inputs import accepted_encodings, modality_array
from unim2_ros.image_conversion import ENCODINGS, array_to_image

RGB = ModalityEncoding.default("rgb")
DEPTH = ModalityEncoding.default("depth")
THERMAL8 = ModalityEncoding.default("thermal")
THERMAL16 = ModalityEncoding.default("thermal", "uint16")
THERMAL_F = ModalityEncoding.default("thermal", "float32")
RNG = np.random.default_rng(3)


@pytest.mark.parametrize("kind", list(EncodingKind))
def test_every_encoding_kind_accepts_only_known_ros_encodings(kind: EncodingKind) -> None:
    accepted = accepted_encodings(ModalityEncoding.default(kind))
    assert accepted and accepted <= set(ENCODINGS)


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        (RGB, {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}),
        (ModalityEncoding.default("hha"), {"rgb8", "bgr8", "rgba8", "bgra8"}),
        (DEPTH, {"16UC1", "mono16", "32FC1"}),
        (THERMAL8, {"mono8", "8UC1"}),
        (THERMAL16, {"mono16", "16UC1"}),
        (THERMAL_F, {"32FC1"}),
    ],
)
def test_accepted_encodings_follow_the_trained_input_dtype(
    encoding: ModalityEncoding, expected: set[str]
) -> None:
    assert accepted_encodings(encoding) == expected


def test_rgb_message_becomes_rgb_array_and_bgr_is_reordered() -> None:
    pixels = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        modality_array(array_to_image(pixels, "rgb8"), "rgb", RGB), pixels
    )
    bgr = modality_array(array_to_image(pixels[:, :, ::-1], "bgr8"), "rgb", RGB)
    np.testing.assert_array_equal(bgr, pixels)


@pytest.mark.parametrize(
    ("encoding", "dtype"), [("16UC1", np.uint16), ("mono16", np.uint16), ("32FC1", np.float32)]
)
def test_depth_message_becomes_a_read_only_view(encoding: str, dtype: type) -> None:
    pixels: np.ndarray = (RNG.random((6, 7)) * 5000).astype(dtype)
    array = modality_array(array_to_image(pixels, encoding), "depth", DEPTH)
    np.testing.assert_array_equal(array, pixels)
    assert array.dtype == dtype and not array.flags.writeable


@pytest.mark.parametrize(
    ("modality", "encoding", "msg_encoding", "pixels"),
    [
        ("depth", DEPTH, "rgb8", np.zeros((2, 2, 3), np.uint8)),
        ("depth", DEPTH, "mono8", np.zeros((2, 2), np.uint8)),
        ("thermal", THERMAL8, "mono16", np.zeros((2, 2), np.uint16)),
        ("thermal", THERMAL16, "32FC1", np.zeros((2, 2), np.float32)),
        ("rgb", RGB, "16UC1", np.zeros((2, 2), np.uint16)),
    ],
)
def test_wrong_encoding_for_the_modality_is_refused(
    modality: str, encoding: ModalityEncoding, msg_encoding: str, pixels: np.ndarray
) -> None:
    with pytest.raises(InputRejectedError, match=rf"^{modality}: encoding '{msg_encoding}'") as err:
        modality_array(array_to_image(pixels, msg_encoding), modality, encoding)
    assert err.value.reason == "wrong_encoding"


def test_unknown_encoding_is_refused_as_wrong_encoding() -> None:
    msg = Image(height=1, width=1, encoding="yuv422", step=2, data=b"\x00\x00")
    with pytest.raises(InputRejectedError, match="'yuv422' is not accepted") as err:
        modality_array(msg, "rgb", RGB)
    assert err.value.reason == "wrong_encoding"


@pytest.mark.parametrize(("height", "width", "data"), [(0, 0, b""), (4, 4, b""), (0, 4, b"")])
def test_empty_images_are_refused_as_empty(height: int, width: int, data: bytes) -> None:
    msg = Image(height=height, width=width, encoding="16UC1", step=width * 2, data=data)
    with pytest.raises(InputRejectedError, match=r"^depth: empty '16UC1' image") as err:
        modality_array(msg, "depth", DEPTH)
    assert err.value.reason == "empty"


@pytest.mark.parametrize(
    ("step", "n_bytes", "match"),
    [
        (6, 6 * 3, r"step 6 is shorter than a row"),
        (9, 9 * 3, r"step 9 is not a multiple"),
        (8, 8 * 3 - 2, r"data holds 22 bytes, expected step \* height"),
    ],
)
def test_inconsistent_sizes_are_refused_as_malformed(step: int, n_bytes: int, match: str) -> None:
    msg = Image(height=3, width=4, encoding="16UC1", step=step, data=bytes(n_bytes))
    with pytest.raises(InputRejectedError, match=match) as err:
        modality_array(msg, "depth", DEPTH)
    assert err.value.reason == "malformed"


def test_malformed_rgb_is_refused_as_malformed() -> None:
    msg = Image(height=2, width=2, encoding="rgb8", step=5, data=bytes(10))
    with pytest.raises(InputRejectedError, match=r"^rgb: 'rgb8' image step 5") as err:
        modality_array(msg, "rgb", RGB)
    assert err.value.reason == "malformed"
