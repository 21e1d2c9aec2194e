"""MCubeS multimodal material segmentation (Liang et al., CVPR 2022).

Layout under ``root`` (the original ``multimodal_dataset/``, the UniM2 archive's
``data/MCUBES/MCubeS``)::

    root/
      polL_color/<stem>.png        RGB image, 8- or 16-bit
      NIR_warped/<stem>.png        near-infrared image warped onto the RGB view, 8- or 16-bit
      polL_aolp_sin/<stem>.npy     sin of the angle of linear polarisation, float HxW
      polL_aolp_cos/<stem>.npy     cos of the angle of linear polarisation, float HxW
      polL_dolp/<stem>.npy         degree of linear polarisation, float HxW
      GT/<stem>.png                material labels 0..19, 255 = ignore
      list_folder/train.txt, val.txt, test.txt [, all.txt]
                                   one stem per line, e.g. ``outscene1208_2_0000000150``

Any subset of rgb, nir, aolp and dolp can be read (rgb always). Arrays follow the raw
conventions of :mod:`unim2_core.data.datasets.base`: 16-bit RGB keeps its high byte, NIR keeps its
bit depth (a grey NIR stored with three equal channels gives one), AoLP becomes float32 HxWx2
(sin, cos), DoLP float32 HxW clipped to [0, 1] (DoLP computed from noisy Stokes parameters can
exceed 1 slightly). Labels are already class ids and are only checked.

Every array and the labels lose their ``crop_left`` leftmost columns (default 192), as in both
reference readers: the warped NIR image does not cover that band. Without a ``GT/`` folder
frames carry no labels.

Sources: kyotovision-public/multimodal-material-segmentation ``README.md`` (layout) and
``dataloaders/datasets/multimodal_dataset.py`` (``_left_offset = 192``, sin/cos stacking,
16-bit handling); Hatins/UniM2 ``src/data.py`` (``MCubeSDataset``: same folders, class order,
``LEFT_OFFSET``, 16-bit -> 8-bit by ``>> 8``).
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
    class_lookup,
    default_palette,
    index_directory,
    read_split_list,
    remap_labels,
    select_modalities,
)
from unim2_core.data.image_io import read_image, read_npy, rgb8, single_channel
from unim2_core.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "asphalt",
    "concrete",
    "metal",
    "road_marking",
    "fabric",
    "glass",
    "plaster",
    "plastic",
    "rubber",
    "sand",
    "gravel",
    "ceramic",
    "cobblestone",
    "brick",
    "grass",
    "wood",
    "leaf",
    "water",
    "human",
    "sky",
)
"""The 20 material classes, in the order of their ids 0..19."""

DEFAULT_CROP_LEFT = 192
"""Columns dropped on the left by the reference readers (outside the warped NIR view)."""

# file sets read for each modality: (folder, suffix) per file
_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "rgb": (("polL_color", ".png"),),
    "nir": (("NIR_warped", ".png"),),
    "aolp": (("polL_aolp_sin", ".npy"), ("polL_aolp_cos", ".npy")),
    "dolp": (("polL_dolp", ".npy"),),
    "labels": (("GT", ".png"),),
}
_LABEL_LOOKUP = class_lookup(len(CLASS_NAMES), IGNORE_INDEX)


class MCubeS(SplitReader):
    """Reader of MCubeS RGB + NIR / AoLP / DoLP with 20 material classes."""

    OPTIONS: ClassVar[frozenset[str]] = frozenset({"crop_left"})

    def __init__(
        self,
        root: str | Path,
        *,
        split: str,
        modalities: Sequence[str] | None = None,
        crop_left: int = DEFAULT_CROP_LEFT,
    ) -> None:
        """Open one split.

        Args:
            root: Dataset root (layout in the module docstring).
            split: "train", "val" or "test" (any name with a ``list_folder/<split>.txt``).
            modalities: Subset of ("rgb", "nir", "aolp", "dolp"), "rgb" included; None for all.
            crop_left: Leftmost columns to drop from every array; 0 keeps the full frame.

        Raises:
            ValueError: ``crop_left`` is negative.
            DataError: A missing split list, folder or file, or an unknown modality.
        """
        if crop_left < 0:
            raise ValueError(f"crop_left must be >= 0, got {crop_left}")
        self.root = Path(root)
        self.split = split
        self.crop_left = crop_left
        modalities = select_modalities(modalities, ("rgb", "nir", "aolp", "dolp"), dataset="MCubeS")
        list_path = self.root / "list_folder" / f"{split}.txt"
        self.stems = read_split_list(list_path)

        wanted = list(modalities)
        if (self.root / "GT").is_dir():
            wanted.append("labels")
        self._paths: dict[str, list[dict[str, Path]]] = {}
        for name in wanted:
            self._paths[name] = []
            for folder, suffix in _FILES[name]:
                files = index_directory(self.root / folder, (suffix,))
                for stem in self.stems:
                    if stem not in files:
                        raise DataError(
                            f"missing file {str(self.root / folder / (stem + suffix))!r} "
                            f"(frame listed in {str(list_path)!r})"
                        )
                self._paths[name].append(files)

        self.info = DatasetInfo(
            name="mcubes",
            modalities=modalities,
            class_names=CLASS_NAMES,
            palette=default_palette(len(CLASS_NAMES)),
            ignore_index=IGNORE_INDEX,
        )

    def _crop(self, array: np.ndarray, path: Path) -> np.ndarray:
        if self.crop_left == 0:
            return array
        if array.ndim < 2 or array.shape[1] <= self.crop_left:
            raise DataError(
                f"{str(path)!r} has shape {array.shape}; too narrow to drop "
                f"crop_left={self.crop_left} columns"
            )
        return np.ascontiguousarray(array[:, self.crop_left :])

    def _read_frame(self, stem: str) -> FrameGroup:
        paths = {
            name: [files[stem] for files in per_file] for name, per_file in self._paths.items()
        }
        arrays: dict[str, np.ndarray] = {}
        for name in self.info.modalities:
            arrays[name] = self._read_modality(name, paths[name])
        labels = None
        if "labels" in paths:
            path = paths["labels"][0]
            raw = self._crop(single_channel(read_image(path), source=path), path)
            labels = remap_labels(
                raw, _LABEL_LOOKUP, source=path, expected="material ids 0..19 or 255 (ignore)"
            )
        sources = {name: files[0] for name, files in paths.items()}
        return assemble_group(stem, arrays, labels, sources=sources)

    def _read_modality(self, name: str, paths: list[Path]) -> np.ndarray:
        path = paths[0]
        if name == "rgb":
            return rgb8(self._crop(read_image(path), path), source=path)
        if name == "nir":
            return single_channel(self._crop(read_image(path), path), source=path)
        if name == "aolp":
            sin, cos = (self._float_plane(p) for p in paths)
            if sin.shape != cos.shape:
                raise DataError(
                    f"aolp sin {str(paths[0])!r} {sin.shape} and cos {str(paths[1])!r} "
                    f"{cos.shape} differ in shape"
                )
            return np.stack([sin, cos], axis=-1)
        dolp: np.ndarray = np.clip(self._float_plane(path), 0.0, 1.0)
        return dolp

    def _float_plane(self, path: Path) -> np.ndarray:
        array = read_npy(path)
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{str(path)!r} is {array.dtype} {array.shape}; expected float HxW")
        return self._crop(array, path).astype(np.float32)
