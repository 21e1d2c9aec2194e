"""The registry of dataset readers: a kind name to its reader class, and ``open_dataset``.

It sits above every reader (readers import only ``base``), so no import circle is needed to
find a reader by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unim2_core.data.datasets.base import DatasetKind, FrameDataset, SplitReader
from unim2_core.data.datasets.folder import FolderDataset
from unim2_core.data.datasets.mcubes import MCubeS
from unim2_core.data.datasets.mfnet import MFNet
from unim2_core.data.datasets.nyu import NYUDepthV2

READERS: dict[str, type[SplitReader]] = {
    "nyu": NYUDepthV2,
    "mfnet": MFNet,
    "mcubes": MCubeS,
    "folder": FolderDataset,
}


def open_dataset(
    kind: DatasetKind,
    root: str | Path,
    *,
    split: str,
    modalities: Sequence[str] | None = None,
    **options: Any,
) -> FrameDataset:
    """Open one split of a dataset.

    Args:
        kind: "nyu" (:class:`~unim2_core.data.datasets.nyu.NYUDepthV2`), "mfnet"
            (:class:`~unim2_core.data.datasets.mfnet.MFNet`), "mcubes"
            (:class:`~unim2_core.data.datasets.mcubes.MCubeS`) or "folder"
            (:class:`~unim2_core.data.datasets.folder.FolderDataset`).
        root: The dataset's root folder (layouts in each reader's module docstring).
        split: Split name, for example "train", "val", "test" ("all" for folders).
        modalities: Modalities to yield, "rgb" included; None yields all the dataset has.
        **options: Reader-specific keyword options (for example ``depth_format`` for NYU).

    Raises:
        ValueError: Unknown ``kind`` or an option the reader does not accept.
        DataError: The dataset is missing files or inconsistent.
    """
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(READERS)}")
    reader = READERS[kind]
    unknown = sorted(set(options) - reader.OPTIONS)
    if unknown:
        accepted = ", ".join(sorted(reader.OPTIONS)) or "none"
        raise ValueError(f"{kind} accepts no option {', '.join(unknown)}; accepted: {accepted}")
    factory: Callable[..., SplitReader] = reader
    return factory(Path(root), split=split, modalities=modalities, **options)
