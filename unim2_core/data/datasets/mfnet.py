"""MFNet RGB-thermal urban scenes (Ha et al., IROS 2017) in the layout of MFNet / RTFNet.

Layout under ``root`` (RTFNet's ``dataset/``, the UniM2 archive's ``data/MFNet/mfnet``)::

    root/
      images/<stem>.png     4-channel 8-bit PNG, channels R, G, B, thermal (PNG order)
      labels/<stem>.png     8-bit labels: 0 = unlabelled, 1..8 = the classes below
      train.txt, val.txt, test.txt
                            one stem per line, e.g. ``00001D`` (day) or ``00001N`` (night)

Stems ending in ``_flip`` (the UniM2 archive's lists use them for mirrored copies) are read
from ``images/<stem>.png`` when that file exists, else from the file without the suffix,
mirrored left-right together with its labels.

Labels are shifted once, on reading: 0 -> 255 (ignore) and k -> k - 1, giving the 8 classes
car, person, bike, curve, car_stop, guardrail, color_cone, bump. The palette is the dataset's
own (MFNet-pytorch). Without a ``labels/`` folder frames carry no labels.

OpenCV decodes PNGs as BGRA; :func:`unim2_core.data.image_io.read_image` restores the file's
R, G, B, thermal order before the channels are split.

Sources: yuxiangsun/RTFNet ``util/MF_dataset.py`` (``images/``, ``labels/``, ``<split>.txt``);
haqishen/MFNet-pytorch (class list and colours); Hatins/UniM2 ``src/data.py`` (``MFNetDataset``:
first three channels RGB, fourth thermal, label - 1 with 0 -> ignore, ``_flip`` stems).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from unim2_core.data.datasets.base import (
    IGNORE_INDEX,
    DatasetInfo,
    FrameGroup,
    SplitReader,
    assemble_group,
    index_directory,
    read_split_list,
    remap_labels,
    select_modalities,
)
from unim2_core.data.image_io import read_image, rgb8, single_channel
from unim2_core.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "car",
    "person",
    "bike",
    "curve",
    "car_stop",
    "guardrail",
    "color_cone",
    "bump",
)
"""The 8 classes, in the order of their ids 0..7 (stored as 1..8)."""

PALETTE = np.array(
    [
        [64, 0, 128],
        [64, 64, 0],
        [0, 128, 192],
        [0, 0, 192],
        [128, 128, 0],
        [64, 64, 128],
        [192, 128, 128],
        [192, 64, 0],
    ],
    dtype=np.uint8,
)
"""MFNet's class colours (RGB), in class order."""

_LABEL_LOOKUP = np.array([IGNORE_INDEX, *range(len(CLASS_NAMES))], dtype=np.int32)
_FLIP_SUFFIX = "_flip"


class MFNet(SplitReader):
    """Reader of MFNet RGB + thermal with 8-class labels."""

    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        root: str | Path,
        *,
        split: str,
        modalities: Sequence[str] | None = None,
    ) -> None:
        """Open one split.

        Args:
            root: Dataset root (layout in the module docstring).
            split: "train", "val" or "test" (any name with a ``<split>.txt``).
            modalities: Subset of ("rgb", "thermal"), "rgb" included; None for both.

        Raises:
            DataError: A missing split list, folder or file, or an unknown modality.
        """
        self.root = Path(root)
        self.split = split
        modalities = select_modalities(modalities, ("rgb", "thermal"), dataset="MFNet")
        list_path = self.root / f"{split}.txt"
        self.stems = read_split_list(list_path)

        images = index_directory(self.root / "images", (".png",))
        label_dir = self.root / "labels"
        labels = index_directory(label_dir, (".png",)) if label_dir.is_dir() else None
        self._frames: dict[str, tuple[Path, Path | None, bool]] = {}
        for stem in self.stems:
            name, flip = self._file_name(stem, images)
            if name not in images:
                raise DataError(
                    f"missing file {str(self.root / 'images' / (stem + '.png'))!r} "
                    f"(frame listed in {str(list_path)!r})"
                )
            label_path = None
            if labels is not None:
                if name not in labels:
                    raise DataError(
                        f"missing file {str(label_dir / (name + '.png'))!r} "
                        f"(frame listed in {str(list_path)!r})"
                    )
                label_path = labels[name]
            self._frames[stem] = (images[name], label_path, flip)

        self.info = DatasetInfo(
            name="mfnet",
            modalities=modalities,
            class_names=CLASS_NAMES,
            palette=PALETTE.copy(),
            ignore_index=IGNORE_INDEX,
        )

    @staticmethod
    def _file_name(stem: str, images: dict[str, Path]) -> tuple[str, bool]:
        """File stem holding frame ``stem`` and whether it must be mirrored."""
        if stem in images or not stem.endswith(_FLIP_SUFFIX):
            return stem, False
        return stem[: -len(_FLIP_SUFFIX)], True

    def _read_frame(self, stem: str) -> FrameGroup:
        image_path, label_path, flip = self._frames[stem]
        image = read_image(image_path)
        if image.ndim != 3 or image.shape[2] != 4:
            raise DataError(
                f"{str(image_path)!r} has shape {image.shape}; MFNet images hold 4 channels "
                "(R, G, B, thermal)"
            )
        arrays = {"rgb": rgb8(image[:, :, :3], source=image_path)}
        if "thermal" in self.info.modalities:
            arrays["thermal"] = np.ascontiguousarray(image[:, :, 3])
        labels = None
        if label_path is not None:
            raw = single_channel(read_image(label_path), source=label_path)
            labels = remap_labels(
                raw, _LABEL_LOOKUP, source=label_path, expected="0 (unlabelled) .. 8"
            )
        if flip:
            arrays = {name: np.ascontiguousarray(array[:, ::-1]) for name, array in arrays.items()}
            labels = None if labels is None else np.ascontiguousarray(labels[:, ::-1])
        sources = {name: image_path for name in arrays}
        if label_path is not None:
            sources["labels"] = label_path
        return assemble_group(stem, arrays, labels, sources=sources)
