"""Label maps -> pictures: palette colouring and alpha-blended overlays.

The node publishes both pictures, and the replay tool writes them to image and video files, so
they are built here once, on plain numpy arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def colorize(labels: npt.ArrayLike, palette: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Paints every pixel with the colour of its label.

    Args:
        labels: HxW non-negative integer label ids (uint8 or uint16 label images).
        palette: [N, 3] uint8 RGB colours; ``palette[i]`` is the colour of label ``i``.

    Returns:
        HxWx3 uint8 RGB image, C-contiguous.

    Raises:
        ValueError: ``labels`` is not 2-D integer, ``palette`` is not [N, 3] uint8, or a label
            id has no colour (the largest id is named).
    """
    ids = np.asarray(labels)
    colours = np.asarray(palette)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {ids.dtype} {ids.shape}")
    if colours.ndim != 2 or colours.shape[1] != 3 or colours.dtype != np.uint8:
        raise ValueError(f"palette must be [N, 3] uint8, got {colours.dtype} {colours.shape}")
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= len(colours):
            bad = low if low < 0 else high
            raise ValueError(f"label id {bad} has no colour in a palette of {len(colours)}")
    return np.take(colours, ids, axis=0)


def overlay(rgb: npt.ArrayLike, colored: npt.ArrayLike, alpha: float) -> npt.NDArray[np.uint8]:
    """Blends a colour label image over the camera image.

    Each channel is ``round((1 - alpha) * rgb + alpha * colored)``, so ``alpha = 0`` gives the
    camera image and ``alpha = 1`` the label colours.

    Args:
        rgb: HxWx3 uint8 camera image.
        colored: HxWx3 uint8 image of the same size, e.g. from :func:`colorize`.
        alpha: Weight of ``colored``, in [0, 1].

    Returns:
        HxWx3 uint8 image, C-contiguous.

    Raises:
        ValueError: ``alpha`` is outside [0, 1] or the images are not equal-size HxWx3 uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    base = np.asarray(rgb)
    top = np.asarray(colored)
    for name, image in (("rgb", base), ("colored", top)):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be HxWx3 uint8, got {image.dtype} {image.shape}")
    if base.shape != top.shape:
        raise ValueError(f"rgb {base.shape} and colored {top.shape} differ in size")
    blend = base.astype(np.float32)
    blend *= np.float32(1.0 - alpha)
    blend += top.astype(np.float32) * np.float32(alpha)
    np.rint(blend, out=blend)
    return blend.astype(np.uint8)
