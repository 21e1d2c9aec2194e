"""NYU-Depth-v2 (labelled set) in the layout of the UniM2 and DFormer reference code.

Layout under ``root`` (the UniM2 archive's ``data/NYU_Depth/nyu``, DFormer's
``datasets/NYUDepthv2``)::

    root/
      RGB/<stem>.jpg or <stem>.png      colour image
      HHA/<stem>.png                    HHA image, 8-bit 3-channel      (depth_format="hha")
      Depth/<stem>.png                  depth in millimetres, 16-bit    (depth_format="mm")
      Labels/<stem>.png or Label/<stem>.png
                                        40-class labels, 8-bit: 0 = unlabelled, 1..40
      train.txt, test.txt [, val.txt]   the split lists

Split lists: one frame per line; the first whitespace-separated token names it, with any
directory and image extension removed, so ``0003``, ``RGB/0003.jpg`` and DFormer's
``RGB/0003.jpg Label/0003.png`` all name frame ``0003``. A purely numeric name that has no
RGB file is looked up zero-padded to four digits (the UniM2 reader pads every name this way).

Labels: the 40 classes of Gupta et al. (CVPR 2013) are mapped once, on reading, to the
standard 13-class protocol (Couprie et al., ICLR 2013), with 0 -> 255 (ignore). Without a
``Labels/`` (or ``Label/``) folder frames carry no labels; with one, every frame needs its file.

Splits: "train" (795 frames) and "test" (654). NYU has no validation split: "val" needs a
``val.txt`` (for example frames held out of ``train.txt``); it is never replaced by "test"
(the UniM2 reader silently does that, which selects models on the test set).

RGB orientation: the UniM2 archive stores ``RGB/`` images transposed (W x H; its reader
transposes them back) while HHA and labels are stored upright. ``rgb_transposed="auto"``
transposes the RGB image exactly when its height and width are swapped with respect to the
frame's other arrays (never for square frames or RGB-only frames without labels);
True / False force it.

Depth in millimetres must be 16-bit: the 8-bit greyscale ``Depth/`` images distributed with
DFormer (a colour-mapped rendering) are not metric and are refused.

Sources: Hatins/UniM2 ``src/data.py`` (``NYUDataset``: folders, zero padding, transposed RGB,
label - 1 then 40 -> 13); VCIP-RGBD/DFormer ``local_configs/_base_/datasets/NYUDepthv2.py`` and
``utils/dataloader/RGBXDataset.py`` (``RGB/``, ``Depth/``, ``Label/``, list line format);
ankurhanda/nyuv2-meta-data ``class13Mapping.mat`` (the 40 -> 13 table, identical to UniM2's
``MAPPING_40_TO_13``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from unim2_core.data.datasets.base import (
    IGNORE_INDEX,
    DatasetInfo,
    FrameGroup,
    SplitReader,
    assemble_group,
    default_palette,
    index_directory,
    read_split_list,
    remap_labels,
    select_modalities,
)
from unim2_core.data.image_io import read_image, rgb8, single_channel
from unim2_core.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "bed",
    "books",
    "ceiling",
    "chair",
    "floor",
    "furniture",
    "objects",
    "painting",
    "sofa",
    "table",
    "tv",
    "wall",
    "window",
)
"""The 13 classes, in the order of their ids 0..12."""

# NYU 40-class label (1..40, Gupta et al.) -> 13-class name. Table of class13Mapping.mat in
# ankurhanda/nyuv2-meta-data; UniM2's NYUDataset.MAPPING_40_TO_13 encodes the same table.
NYU40_TO_13: tuple[tuple[str, str], ...] = (
    ("wall", "wall"),
    ("floor", "floor"),
    ("cabinet", "furniture"),
    ("bed", "bed"),
    ("chair", "chair"),
    ("sofa", "sofa"),
    ("table", "table"),
    ("door", "wall"),
    ("window", "window"),
    ("bookshelf", "furniture"),
    ("picture", "painting"),
    ("counter", "furniture"),
    ("blinds", "window"),
    ("desk", "table"),
    ("shelves", "furniture"),
    ("curtain", "window"),
    ("dresser", "furniture"),
    ("pillow", "objects"),
    ("mirror", "objects"),
    ("floor mat", "floor"),
    ("clothes", "objects"),
    ("ceiling", "ceiling"),
    ("books", "books"),
    ("refrigerator", "furniture"),
    ("television", "tv"),
    ("paper", "objects"),
    ("towel", "objects"),
    ("shower curtain", "objects"),
    ("box", "objects"),
    ("whiteboard", "objects"),
    ("person", "objects"),
    ("night stand", "furniture"),
    ("toilet", "objects"),
    ("sink", "objects"),
    ("lamp", "objects"),
    ("bathtub", "objects"),
    ("bag", "objects"),
    ("otherstructure", "objects"),
    ("otherfurniture", "furniture"),
    ("otherprop", "objects"),
)

_LABEL_LOOKUP = np.array(
    [IGNORE_INDEX, *(CLASS_NAMES.index(name13) for _, name13 in NYU40_TO_13)], dtype=np.int32
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _list_token_stem(token: str) -> str:
    name = token.replace("\\", "/").rsplit("/", 1)[-1]
    path = Path(name)
    return path.stem if path.suffix.lower() in _IMAGE_SUFFIXES else name


class NYUDepthV2(SplitReader):
    """Reader of NYU-Depth-v2 RGB + depth (HHA or millimetres) with 13-class labels."""

    OPTIONS: ClassVar[frozenset[str]] = frozenset({"depth_format", "rgb_transposed"})

    def __init__(
        self,
        root: str | Path,
        *,
        split: str,
        modalities: Sequence[str] | None = None,
        depth_format: Literal["hha", "mm"] = "hha",
        rgb_transposed: bool | Literal["auto"] = "auto",
    ) -> None:
        """Open one split.

        Args:
            root: Dataset root (layout in the module docstring).
            split: "train", "test", or "val" when a ``val.txt`` exists.
            modalities: Subset of ("rgb", "depth"), "rgb" included; None for both.
            depth_format: "hha" reads ``HHA/``, "mm" reads ``Depth/`` (16-bit millimetres).
            rgb_transposed: Whether ``RGB/`` images are stored transposed; "auto" decides
                per frame from the other arrays' size.

        Raises:
            ValueError: An option value outside its choices.
            DataError: A missing split list, folder or file, or an unknown modality.
        """
        if depth_format not in ("hha", "mm"):
            raise ValueError(f"depth_format must be 'hha' or 'mm', got {depth_format!r}")
        if rgb_transposed not in (True, False, "auto"):
            raise ValueError(
                f"rgb_transposed must be True, False or 'auto', got {rgb_transposed!r}"
            )
        self.root = Path(root)
        self.split = split
        self.depth_format = depth_format
        self.rgb_transposed = rgb_transposed
        modalities = select_modalities(modalities, ("rgb", "depth"), dataset="NYU-Depth-v2")

        list_path = self.root / f"{split}.txt"
        if split == "val" and not list_path.is_file():
            raise DataError(
                f"NYU-Depth-v2 has no validation split: missing {str(list_path)!r}. Hold frames "
                "out of train.txt into val.txt, or select on 'test' explicitly"
            )
        tokens = read_split_list(list_path)
        rgb_files = index_directory(self.root / "RGB", _IMAGE_SUFFIXES)
        self.stems = tuple(self._resolve_stem(token, rgb_files, list_path) for token in tokens)

        self._files: dict[str, dict[str, Path]] = {"rgb": rgb_files}
        if "depth" in modalities:
            folder = "HHA" if depth_format == "hha" else "Depth"
            self._files["depth"] = self._require_all(self.root / folder, list_path)
        label_dir = self._label_directory()
        if label_dir is not None:
            self._files["labels"] = self._require_all(label_dir, list_path)

        self.info = DatasetInfo(
            name="nyu",
            modalities=modalities,
            class_names=CLASS_NAMES,
            palette=default_palette(len(CLASS_NAMES)),
            ignore_index=IGNORE_INDEX,
        )

    @staticmethod
    def _resolve_stem(token: str, rgb_files: dict[str, Path], list_path: Path) -> str:
        stem = _list_token_stem(token)
        if stem in rgb_files:
            return stem
        if stem.isdigit() and stem.zfill(4) in rgb_files:
            return stem.zfill(4)
        raise DataError(
            f"{str(list_path)!r} lists {token!r} but {str(list_path.parent / 'RGB')!r} "
            f"holds no {stem}.jpg or {stem}.png"
        )

    def _label_directory(self) -> Path | None:
        candidates = [
            self.root / name for name in ("Labels", "Label") if (self.root / name).is_dir()
        ]
        if len(candidates) > 1:
            raise DataError(
                f"both {str(candidates[0])!r} and {str(candidates[1])!r} exist; keep one"
            )
        return candidates[0] if candidates else None

    def _require_all(self, directory: Path, list_path: Path) -> dict[str, Path]:
        files = index_directory(directory, (".png",))
        for stem in self.stems:
            if stem not in files:
                raise DataError(
                    f"missing file {str(directory / (stem + '.png'))!r} "
                    f"(frame listed in {str(list_path)!r})"
                )
        return files

    def _read_frame(self, stem: str) -> FrameGroup:
        sources: dict[str, Path] = {name: files[stem] for name, files in self._files.items()}
        rgb = rgb8(read_image(sources["rgb"]), source=sources["rgb"])
        arrays = {"rgb": rgb}
        if "depth" in sources:
            arrays["depth"] = self._read_depth(sources["depth"])
        labels = None
        if "labels" in sources:
            raw = single_channel(read_image(sources["labels"]), source=sources["labels"])
            labels = remap_labels(
                raw,
                _LABEL_LOOKUP,
                source=sources["labels"],
                expected="NYU 40-class labels 0 (unlabelled) .. 40",
            )
        reference = labels if labels is not None else arrays.get("depth")
        if self._should_transpose(rgb, reference):
            arrays["rgb"] = np.ascontiguousarray(rgb.transpose(1, 0, 2))
        return assemble_group(stem, arrays, labels, sources=sources)

    def _read_depth(self, path: Path) -> np.ndarray:
        image = read_image(path)
        if self.depth_format == "hha":
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise DataError(
                    f"{str(path)!r} is {image.dtype} {image.shape}; an HHA image is 8-bit 3-channel"
                )
            return image
        if image.dtype != np.uint16 or image.ndim != 2:
            raise DataError(
                f"{str(path)!r} is {image.dtype} {image.shape}; depth_format='mm' expects "
                "16-bit single-channel depth in millimetres"
            )
        return image

    def _should_transpose(self, rgb: np.ndarray, reference: np.ndarray | None) -> bool:
        if self.rgb_transposed != "auto":
            return bool(self.rgb_transposed)
        if reference is None:
            return False
        height, width = reference.shape[:2]
        return height != width and rgb.shape[:2] == (width, height)
