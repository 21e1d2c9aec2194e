"""Records, raw-array conventions and shared checks of the dataset readers.

Every reader yields :class:`FrameGroup` records whose arrays follow one convention per modality
(the model's encoders consume exactly these; nothing here normalises):

========  ==========================================================================
rgb       uint8 HxWx3, RGB order
depth     uint8 HxWx3 HHA image, uint16 HxW millimetres (0 = invalid) or float32 HxW metres
thermal   uint8, uint16 or float32 HxW
nir       uint8, uint16 or float32 HxW
aolp      float32 HxWx2: (sin, cos) of the angle of linear polarisation
dolp      float32 HxW in [0, 1] (NaN allowed, meaning invalid)
========  ==========================================================================

Labels are HxW uint8 (uint16 when there are more than 255 classes) class ids, with
``ignore_index`` (255) on pixels without ground truth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Literal, NamedTuple, Protocol

import numpy as np

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.errors import DataError

IGNORE_INDEX = 255
"""Label value of pixels without ground truth."""

Modality = Literal["rgb", "depth", "thermal", "nir", "aolp", "dolp"]
MODALITIES: tuple[Modality, ...] = ("rgb", "depth", "thermal", "nir", "aolp", "dolp")
"""Every modality name a reader may yield, in canonical order ("rgb", the anchor, first)."""

DatasetKind = Literal["nyu", "mfnet", "mcubes", "folder"]

_MAX_LISTED_VALUES = 8


class FrameGroup(NamedTuple):
    """One aligned multi-modal frame.

    Attributes:
        stem: The frame's name in its dataset (file name without extension).
        arrays: Modality name -> raw array following the module's conventions, "rgb" first.
        labels: HxW uint8 (uint16 for > 255 classes) class ids with the ignore index on
            unlabelled pixels, or None when the frame has no ground truth.
    """

    stem: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None


class DatasetInfo(NamedTuple):
    """What a reader yields.

    Attributes:
        name: Short dataset name ("nyu", "mfnet", "mcubes", or the folder's name).
        modalities: Modalities of every frame, "rgb" first.
        class_names: Ground-truth class names; label id i names ``class_names[i]``.
        palette: [n_classes, 3] uint8 RGB colour of each class.
        ignore_index: Label value of unlabelled pixels.
        intrinsics: Modality -> the camera it was recorded with, where the dataset says
            (a folder's ``dataset.yaml``); training takes a ``depth_hha`` encoding's
            intrinsics from here when its config gives none. Empty by default.
    """

    name: str
    modalities: tuple[str, ...]
    class_names: tuple[str, ...]
    palette: np.ndarray
    ignore_index: int
    intrinsics: Mapping[str, CameraIntrinsics] = MappingProxyType({})


class FrameDataset(Protocol):
    """A split of a dataset: an indexable sequence of frame groups (every reader implements it)."""

    info: DatasetInfo
    split: str
    stems: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> FrameGroup: ...


def validate_modality_array(modality: str, array: np.ndarray, *, source: str | Path) -> None:
    """Check that ``array`` follows the raw convention of ``modality``.

    Args:
        modality: One of :data:`MODALITIES`.
        array: The raw array.
        source: File or key the array came from, named in the error message.

    Raises:
        DataError: Unknown modality, or wrong dtype, shape or (DoLP) value range.
    """
    name = str(source)
    if modality not in MODALITIES:
        raise DataError(
            f"unknown modality {modality!r} for {name!r}; known: {', '.join(MODALITIES)}"
        )
    dtype, shape = array.dtype, array.shape
    ok = False
    expected = ""
    if modality == "rgb":
        ok = dtype == np.uint8 and array.ndim == 3 and shape[2] == 3
        expected = "uint8 HxWx3 RGB"
    elif modality == "depth":
        hha = dtype == np.uint8 and array.ndim == 3 and shape[2] == 3
        ok = hha or (dtype in (np.uint16, np.float32) and array.ndim == 2)
        expected = "uint8 HxWx3 HHA, uint16 HxW millimetres or float32 HxW metres"
    elif modality in ("thermal", "nir"):
        ok = dtype in (np.uint8, np.uint16, np.float32) and array.ndim == 2
        expected = "uint8, uint16 or float32 HxW"
    elif modality == "aolp":
        ok = dtype == np.float32 and array.ndim == 3 and shape[2] == 2
        expected = "float32 HxWx2 (sin, cos)"
    elif modality == "dolp":
        ok = dtype == np.float32 and array.ndim == 2
        expected = "float32 HxW in [0, 1]"
    if not ok:
        raise DataError(f"{modality} from {name!r} is {dtype} {shape}; expected {expected}")
    if modality == "dolp" and ((array < 0) | (array > 1)).any():
        raise DataError(
            f"dolp from {name!r} has values outside [0, 1] "
            f"(min {np.nanmin(array):.4g}, max {np.nanmax(array):.4g})"
        )
    if min(shape[:2]) == 0:
        raise DataError(f"{modality} from {name!r} is empty (shape {shape})")


def remap_labels(
    raw: np.ndarray, lookup: np.ndarray, *, source: str | Path, expected: str
) -> np.ndarray:
    """Translate on-disk label values to class ids through a lookup table.

    Args:
        raw: HxW uint8 or uint16 label image as stored.
        lookup: 1-D integer table, stored value -> class id (or the ignore index); -1 marks
            values that must not occur. Values beyond the table must not occur either.
        source: File the labels came from, named in the error message.
        expected: Human description of the valid stored values, for the error message.

    Returns:
        HxW class ids: uint8 when every id in ``lookup`` fits, else uint16.

    Raises:
        DataError: ``raw`` is not a 2-D 8/16-bit image or holds values that must not occur.
    """
    name = str(source)
    if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        raise DataError(f"labels {name!r} are {raw.dtype} {raw.shape}; expected 8/16-bit HxW")
    table = np.full(np.iinfo(raw.dtype).max + 1, -1, dtype=np.int32)
    usable = min(table.size, lookup.size)
    table[:usable] = lookup[:usable]
    mapped = table[raw]
    invalid = mapped < 0
    if invalid.any():
        values = np.unique(raw[invalid])[:_MAX_LISTED_VALUES].tolist()
        raise DataError(f"labels {name!r} hold values {values}; expected {expected}")
    out_dtype = np.uint8 if int(lookup.max()) <= np.iinfo(np.uint8).max else np.uint16
    labels: np.ndarray = mapped.astype(out_dtype)
    return labels


def class_lookup(n_classes: int, ignore_index: int) -> np.ndarray:
    """Identity lookup for labels stored as class ids 0..n_classes-1 plus ``ignore_index``."""
    lookup = np.full(max(n_classes, ignore_index + 1), -1, dtype=np.int32)
    lookup[:n_classes] = np.arange(n_classes)
    lookup[ignore_index] = ignore_index
    return lookup


def select_modalities(
    requested: Sequence[str] | None, supported: Sequence[str], *, dataset: str
) -> tuple[str, ...]:
    """Resolve the modalities a reader yields.

    Args:
        requested: Modalities asked for (None: all that ``dataset`` provides). "rgb" must be
            among them; it is moved first, the others keep their order.
        supported: Modalities ``dataset`` provides, "rgb" first.
        dataset: Dataset name for error messages.

    Raises:
        DataError: An unknown or unsupported modality, a repeated one, or "rgb" missing.
    """
    if requested is None:
        return tuple(supported)
    if isinstance(requested, str):
        raise DataError(f"modalities must be a sequence of names, got the string {requested!r}")
    for name in requested:
        if name not in MODALITIES:
            raise DataError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
        if name not in supported:
            raise DataError(
                f"{dataset} provides no {name!r} modality; it provides {', '.join(supported)}"
            )
    repeated = sorted({name for name in requested if list(requested).count(name) > 1})
    if repeated:
        raise DataError(f"modalities repeated: {', '.join(repeated)}")
    if "rgb" not in requested:
        raise DataError(f"modalities {list(requested)} lack 'rgb', the anchor modality")
    return ("rgb", *(name for name in requested if name != "rgb"))


def read_split_list(path: Path) -> tuple[str, ...]:
    """Read a split list: the first whitespace-separated token of every non-empty line.

    Lines starting with ``#`` are comments.

    Raises:
        DataError: The list is missing, unreadable or names no frame.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise DataError(f"missing split list {str(path)!r}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read split list {str(path)!r}: {err}") from err
    tokens = tuple(
        line.split()[0]
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not tokens:
        raise DataError(f"split list {str(path)!r} names no frame")
    return tokens


def index_directory(directory: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """Map file stem -> path for the files of ``directory`` with one of ``suffixes``.

    Hidden files (temporary files of an interrupted write) are skipped. Listing a directory
    once is much cheaper than probing every frame's candidate names.

    Raises:
        DataError: The directory is missing or unreadable, or two files share a stem
            (``a.png`` and ``a.jpg``), which would make the frame ambiguous.
    """
    if not directory.is_dir():
        raise DataError(f"missing directory {str(directory)!r}")
    wanted = {suffix.lower() for suffix in suffixes}
    index: dict[str, Path] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError as err:
        raise DataError(f"cannot list {str(directory)!r}: {err}") from err
    for path in entries:
        if path.name.startswith(".") or path.suffix.lower() not in wanted:
            continue
        if path.stem in index:
            raise DataError(
                f"ambiguous frame {path.stem!r}: both {str(index[path.stem])!r} and "
                f"{str(path)!r} exist"
            )
        index[path.stem] = path
    return index


def assemble_group(
    stem: str,
    arrays: dict[str, np.ndarray],
    labels: np.ndarray | None,
    *,
    sources: Mapping[str, str | Path],
) -> FrameGroup:
    """Check a frame's arrays against the conventions and each other, and build its record.

    Args:
        stem: Frame name.
        arrays: Modality -> raw array, "rgb" first.
        labels: Class ids or None.
        sources: Modality (and "labels") -> file the array came from, for error messages.

    Raises:
        DataError: An array breaks its convention, or the arrays and labels differ in height
            and width (the message lists every size and file).
    """
    for modality, array in arrays.items():
        validate_modality_array(modality, array, source=sources.get(modality, stem))
    sizes = {name: array.shape[:2] for name, array in arrays.items()}
    if labels is not None:
        sizes["labels"] = labels.shape[:2]
    if len(set(sizes.values())) > 1:
        listed = ", ".join(
            f"{name} {size[0]}x{size[1]} ({str(sources.get(name, '?'))!r})"
            for name, size in sizes.items()
        )
        raise DataError(f"frame {stem!r}: sizes differ: {listed}")
    return FrameGroup(stem=stem, arrays=arrays, labels=labels)


def default_palette(n_classes: int) -> np.ndarray:
    """Distinct colours for ``n_classes`` classes ([n, 3] uint8).

    The bit-interleaving colour map of PASCAL VOC, starting at entry 1 so that no class is
    black (black is left for ignored pixels).
    """
    palette = np.zeros((n_classes, 3), dtype=np.uint8)
    for index in range(n_classes):
        code = index + 1
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette[index] = rgb
    return palette


class SplitReader(ABC):
    """Shared sequence behaviour of the readers: indexing, length, iteration.

    Subclasses set ``info``, ``split`` and ``stems`` in their constructor, list their
    keyword options in ``OPTIONS`` (checked by :func:`open_dataset`) and implement
    :meth:`_read_frame`.
    """

    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    info: DatasetInfo
    split: str
    stems: tuple[str, ...]
    root: Path

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> FrameGroup:
        """Read frame ``index`` (negative indices count from the end).

        Raises:
            IndexError: ``index`` is out of range.
            DataError: A file of the frame is missing, unreadable or inconsistent.
        """
        if not isinstance(index, int | np.integer):
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}")
        count = len(self.stems)
        if not -count <= index < count:
            raise IndexError(f"frame index {index} out of range for {count} frames")
        return self._read_frame(self.stems[int(index)])

    def __iter__(self) -> Iterator[FrameGroup]:
        for stem in self.stems:
            yield self._read_frame(stem)

    def has_labels(self, index: int) -> bool:
        """Whether frame ``index`` has ground truth (readers that know it cheaply override this;
        the default reads the frame)."""
        return self[index].labels is not None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"frames={len(self.stems)}, modalities={self.info.modalities})"
        )

    @abstractmethod
    def _read_frame(self, stem: str) -> FrameGroup:
        """Read and check one frame."""
