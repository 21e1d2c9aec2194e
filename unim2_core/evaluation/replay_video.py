"""The replay's overlay video: frame rate from the RGB stamps, MPEG-4 (``mp4v``) writing.

``overlays.mp4`` holds the overlays of the frames with output, at the mean frame rate of their
RGB header stamps, padded to even sides (the encoder crops odd ones) and written atomically.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from unim2_core.atomic import atomic_path
from unim2_core.errors import DataError

__all__ = ["DEFAULT_FPS", "fps_from_stamps", "write_video"]

DEFAULT_FPS = 10.0
"""Video frame rate when the stamps cannot give one (fewer than two distinct stamps)."""

_VIDEO_CODEC = "mp4v"


def fps_from_stamps(stamps_ns: Sequence[int], *, default: float = DEFAULT_FPS) -> float:
    """Mean frame rate of the distinct stamps: (n - 1) / (last - first); ``default`` without two.

    Raises:
        ValueError: ``default`` is not a positive finite number.
    """
    if not (math.isfinite(default) and default > 0):
        raise ValueError(f"default fps must be a finite number > 0, got {default!r}")
    distinct = sorted(set(int(s) for s in stamps_ns))
    if len(distinct) < 2:
        return default
    return (len(distinct) - 1) * 1e9 / (distinct[-1] - distinct[0])


def write_video(frames: Iterable[npt.ArrayLike], path: str | Path, *, fps: float) -> int:
    """Writes HxWx3 uint8 RGB frames as an MPEG-4 (``mp4v``) video, atomically.

    The video takes the first frame's size, padded by repeating the last row / column to even
    sides (the encoder crops odd ones); later frames of another size are resized to it.
    Nothing is written for no frame.

    Args:
        frames: RGB frames in order.
        path: The ``.mp4`` file; replaced only once the video is complete.
        fps: Frame rate.

    Returns:
        Number of frames written.

    Raises:
        ValueError: ``fps`` is not positive and finite, or a frame is not HxWx3 uint8.
        DataError: The encoder cannot be opened or the file cannot be written.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    path = Path(path)
    writer: Any = None
    size: tuple[int, int] = (0, 0)
    count = 0
    try:
        with contextlib.ExitStack() as stack:
            for frame in frames:
                image = np.asarray(frame)
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise ValueError(
                        f"video frames must be HxWx3 uint8, got {image.dtype} {image.shape}"
                    )
                if writer is None:
                    size = _even_size(image)
                    temporary = stack.enter_context(atomic_path(path, suffix=".mp4"))
                    fourcc = cv2.VideoWriter.fourcc(*_VIDEO_CODEC)
                    writer = cv2.VideoWriter(str(temporary), fourcc, float(fps), size)
                    stack.callback(writer.release)  # runs before the rename
                    if not writer.isOpened():
                        raise DataError(
                            f"cannot open an {_VIDEO_CODEC} video encoder for {str(path)!r}"
                        )
                writer.write(_video_frame(image, size))
                count += 1
    except OSError as err:
        raise DataError(f"cannot write video {str(path)!r}: {err}") from err
    return count


def _video_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` as a BGR frame of ``size`` (width, height): padded to even sides or resized."""
    if _even_size(image) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    pad_y, pad_x = size[1] - image.shape[0], size[0] - image.shape[1]
    if pad_y or pad_x:
        image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
    return np.ascontiguousarray(image[:, :, ::-1])


def _even_size(image: np.ndarray) -> tuple[int, int]:
    """(width, height) of ``image`` rounded up to even numbers."""
    height, width = image.shape[:2]
    return width + width % 2, height + height % 2
