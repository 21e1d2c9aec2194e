"""Image and array files: decoding in the file's own channel order, atomic writing.

OpenCV decodes colour images as BGR(A); every function here converts at the boundary so
callers only ever see arrays in the channel order the file stores (RGB, RGBA), as PIL and
torchvision present them. Reading goes through ``cv2.imdecode`` with ``IMREAD_UNCHANGED`` so
8- and 16-bit depths and the channel count are kept, and an unreadable file is an error instead
of ``None``.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from unim2_core.atomic import atomic_write_bytes
from unim2_core.errors import DataError

_PNG_DTYPES = (np.uint8, np.uint16)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file exactly as stored: HxW, HxWx3 (RGB) or HxWx4 (RGBA), 8 or 16 bit.

    Raises:
        DataError: The file is missing or unreadable, or its content cannot be decoded
            (for example a truncated PNG).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise DataError(f"missing file {str(path)!r}") from err
    except OSError as err:
        raise DataError(f"cannot read {str(path)!r}: {err.strerror}") from err
    image = None
    if data:
        try:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error as err:
            raise DataError(f"cannot decode image {str(path)!r}: {err}") from err
    if image is None:
        raise DataError(f"cannot decode image {str(path)!r} (empty, truncated or not an image)")
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, [2, 1, 0, 3]])
    return np.asarray(image)


def read_label_image(path: Path) -> np.ndarray:
    """Decode a label image of ids: HxW, 8 or 16 bit (grey stored as RGB reduced to one channel).

    Dataset readers and the replay's label folders read ground truth through this one function,
    so both accept and refuse the same files.

    Raises:
        DataError: The file cannot be decoded, is not single-channel, or is not 8 or 16 bit.
    """
    labels = single_channel(read_image(path), source=path)
    if labels.dtype not in _PNG_DTYPES:
        raise DataError(f"label file {str(path)!r} is {labels.dtype}; expected 8 or 16 bit")
    return labels


def read_npy(path: Path) -> np.ndarray:
    """Load a ``.npy`` array (pickles refused).

    Raises:
        DataError: The file is missing, unreadable or not a valid ``.npy`` file.
    """
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except FileNotFoundError as err:
        raise DataError(f"missing file {str(path)!r}") from err
    except OSError as err:
        raise DataError(f"cannot read {str(path)!r}: {err}") from err
    except ValueError as err:
        raise DataError(f"cannot load array {str(path)!r}: {err}") from err


def single_channel(image: np.ndarray, *, source: Path) -> np.ndarray:
    """Reduce a grey image stored with replicated channels to HxW.

    A 2-D image is returned as is; a 3- or 4-channel image whose first three channels are
    identical (grey saved as RGB, possibly with alpha) gives its first channel.

    Raises:
        DataError: The colour channels differ, so the image is not grey.
    """
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        first = image[:, :, 0]
        if np.array_equal(first, image[:, :, 1]) and np.array_equal(first, image[:, :, 2]):
            return np.ascontiguousarray(first)
        raise DataError(
            f"{str(source)!r} has {image.shape[2]} differing channels; "
            "expected a single-channel (grey) image"
        )
    raise DataError(f"{str(source)!r} has shape {image.shape}; expected a single-channel image")


def rgb8(image: np.ndarray, *, source: Path) -> np.ndarray:
    """Bring a decoded colour image to uint8 HxWx3 RGB.

    Alpha is dropped; 16-bit images keep their high byte (``value >> 8``), which is how the
    MCubeS reference readers reduce 16-bit ``polL_color`` images.

    Raises:
        DataError: The image is not a 3- or 4-channel 8- or 16-bit image.
    """
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"{str(source)!r} has shape {image.shape}; expected a colour image")
    rgb = image[:, :, :3]
    if rgb.dtype == np.uint16:
        return np.ascontiguousarray((rgb >> 8).astype(np.uint8))
    if rgb.dtype != np.uint8:
        raise DataError(f"{str(source)!r} has dtype {rgb.dtype}; expected 8 or 16 bit")
    return np.ascontiguousarray(rgb)


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise DataError(f"cannot write {str(path)!r}: {err}") from err


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8/uint16 HxW, HxWx3 (RGB) or HxWx4 (RGBA) array as PNG, atomically.

    Raises:
        ValueError: The array cannot be stored losslessly in a PNG.
        DataError: The file cannot be written.
    """
    if image.dtype not in _PNG_DTYPES:
        raise ValueError(f"PNG stores uint8 or uint16, got {image.dtype} for {str(path)!r}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[:, :, ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, [2, 1, 0, 3]]
    elif image.ndim != 2:
        raise ValueError(f"PNG stores HxW, HxWx3 or HxWx4 arrays, got shape {image.shape}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise DataError(f"cannot encode {str(path)!r} as PNG")
    _write_atomic(path, encoded.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as ``.npy``, atomically.

    Raises:
        ValueError: The array holds Python objects (it could only be stored as a pickle).
        DataError: The file cannot be written.
    """
    if array.dtype.hasobject:
        raise ValueError(f"refusing to store an object array in {str(path)!r}")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    _write_atomic(path, buffer.getvalue())
