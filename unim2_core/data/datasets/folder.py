"""A plain folder of aligned frames: the layout for your own data and for bag exports.

Layout::

    <root>/
      rgb/<stem>.png              uint8 RGB image (.jpg / .jpeg also accepted); required
      depth/<stem>.png            uint8 3-channel HHA image, or uint16 depth in millimetres
      depth/<stem>.npy            or float32 depth in metres (NaN = invalid), as 32FC1 topics
      thermal/<stem>.png          uint8 or uint16 grey image (.npy: float32, e.g. degrees)
      nir/<stem>.png              uint8 or uint16 grey image (.npy: float32)
      aolp/<stem>.npy             float32 HxWx2: (sin, cos) of the angle of linear polarisation
      dolp/<stem>.npy             float32 HxW degree of linear polarisation in [0, 1]
      labels/<stem>.png           optional: uint8/uint16 class ids, ignore index (255) unlabelled
      splits/<split>.txt          optional: one stem per line
      dataset.yaml                optional: see below

Files: one file per stem and folder; integer images are PNG (8 or 16 bit, lossless), float
arrays are ``.npy``; any folder may hold ``.npy`` files whose arrays follow the modality's
convention. A grey image (thermal, NIR) saved with three equal channels is read as one channel;
``.npy`` AoLP / DoLP of another float type are converted to float32. Hidden files (names
starting with ``.``) are ignored: :func:`write_frame_group` writes through them.

Modalities: those requested, or by default every modality folder present (``rgb/`` required),
in the order rgb, depth, thermal, nir, aolp, dolp. Other folders are ignored.

Splits: ``splits/<split>.txt`` when it exists; every frame it lists needs a file in every
requested modality folder. Without it, split "all" is every stem found in all requested
modality folders (sorted); split "train" is the same when there is no ``splits/`` folder at all
(so that "train" can never swallow frames listed for "val" or "test"); any other split without
a list is an error.

Labels: ``labels/<stem>.png`` is read when it exists (frames without one have no labels);
labels need a ``dataset.yaml`` that names the classes, and hold ids 0..n_classes-1 or the
ignore index. A split may mix labelled and unlabelled frames: training uses every frame, and
evaluation scores the labelled ones (the feature cache stores unlabelled frames' labels as the
ignore index).

``dataset.yaml`` (all keys optional; any other key is an error)::

    name: my_robot              # dataset name (default: the root folder's name)
    class_names: [road, grass, tree]
    palette: [[128, 64, 128], [0, 255, 0], [0, 128, 0]]   # RGB per class (default generated)
    ignore_index: 255           # label value of unlabelled pixels; not a class id (default 255)
    intrinsics:                 # camera of a modality: [fx, fy, cx, cy, width, height]
      depth: [525.0, 525.0, 319.5, 239.5, 640, 480]

``intrinsics`` (pixels, for images of ``width`` x ``height``) is what training gives a
``depth_hha`` encoding whose config has none (the config's own value wins);
``unim2_import_bag`` writes it from the ``camera_info`` recorded beside an image topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypedDict

import numpy as np
import yaml

from unim2_core.atomic import atomic_write_text
from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.datasets.base import (
    IGNORE_INDEX,
    MODALITIES,
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
from unim2_core.data.image_io import (
    read_image,
    read_label_image,
    read_npy,
    rgb8,
    single_channel,
    write_npy,
    write_png,
)
from unim2_core.errors import ConfigError, DataError
from unim2_core.schema import Field, check_keys

DATASET_YAML = "dataset.yaml"
LABELS_DIR = "labels"
SPLITS_DIR = "splits"

_IMAGE_SUFFIXES = (".png",)
_RGB_SUFFIXES = (".png", ".jpg", ".jpeg")
_ARRAY_SUFFIX = ".npy"
_YAML_KEYS = ("name", "class_names", "palette", "ignore_index", "intrinsics")
_MAX_LABEL_VALUE = int(np.iinfo(np.uint16).max)


class DatasetYaml(TypedDict, total=False):
    """Parsed ``dataset.yaml``."""

    name: str
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int
    intrinsics: dict[str, CameraIntrinsics]


def _name_problem(name: str) -> str | None:
    return None if name.strip() else f"must be a non-empty string, got {name!r}"


def _class_names_problem(names: list[str]) -> str | None:
    if not names or not all(name.strip() for name in names):
        return f"must be a non-empty list of non-empty strings, got {names!r}"
    repeated = sorted({name for name in names if names.count(name) > 1})
    return f"repeats {', '.join(repeated)}" if repeated else None


def _colour_problem(colour: list[int]) -> str | None:
    if len(colour) == 3 and all(0 <= channel <= 255 for channel in colour):
        return None
    return f"must be 3 integers in 0..255, got {colour!r}"


_COLOUR = Field(list, items=int, check=_colour_problem)


def _palette_field(n_classes: int) -> Field:
    """``palette``: one RGB colour (3 integers in 0..255) per class."""

    def problem(palette: list[object]) -> str | None:
        if len(palette) != n_classes:
            return f"must list one colour per class ({n_classes}), got {palette!r}"
        for index, colour in enumerate(palette):
            problem = _COLOUR.problem(colour)
            if problem is not None:
                return f"entry {index} {problem}"
        return None

    return Field(list, check=problem)


def _ignore_index_field(n_classes: int) -> Field:
    """``ignore_index``: a label value above every class id."""
    return Field(
        int,
        check=lambda ignore: (
            None
            if n_classes <= ignore <= _MAX_LABEL_VALUE
            else f"must be an integer in {n_classes}..{_MAX_LABEL_VALUE} (not a class id), "
            f"got {ignore!r}"
        ),
    )


_NAME = Field(str, check=_name_problem)
_CLASS_NAMES = Field(list, items=str, check=_class_names_problem)
_INTRINSICS = Field(dict)


def _parse_intrinsics(cameras: Mapping[str, object], where: str) -> dict[str, CameraIntrinsics]:
    """``intrinsics``: modality -> ``[fx, fy, cx, cy, width, height]``.

    Raises:
        DataError: A key that is not a modality, or a value that is not such a list; the
            message starts with ``where`` and names the key ``intrinsics.<modality>``.
    """
    check_keys(
        cameras, MODALITIES, where=where, prefix="intrinsics", list_known=True, error=DataError
    )
    parsed: dict[str, CameraIntrinsics] = {}
    for modality, values in cameras.items():
        key = f"{where}key 'intrinsics.{modality}'"
        if not isinstance(values, list):
            raise DataError(f"{key} must be a list [fx, fy, cx, cy, width, height], got {values!r}")
        try:
            parsed[modality] = CameraIntrinsics.from_values(values, where=key)
        except ConfigError as err:
            raise DataError(str(err)) from err
    return parsed


def load_dataset_yaml(path: Path) -> DatasetYaml:
    """Read and validate a folder dataset's ``dataset.yaml``.

    Raises:
        DataError: The file is unreadable or not YAML, has an unknown key, or a value of the
            wrong type or range; the message names the key.
    """
    try:
        loaded: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {str(path)!r}: {err}") from err
    except yaml.YAMLError as err:
        raise DataError(f"{str(path)!r} is not valid YAML: {err}") from err
    if loaded is None:
        return DatasetYaml()
    if not isinstance(loaded, dict):
        raise DataError(f"{str(path)!r} must hold a mapping of keys, got {type(loaded).__name__}")
    where = f"{str(path)!r}: "
    check_keys(loaded, _YAML_KEYS, where=where, list_known=True, error=DataError)

    def parse(key: str, field: Field) -> Any:
        return field.parse(loaded[key], f"{where}key {key!r}", DataError)

    parsed = DatasetYaml()
    if "name" in loaded:
        parsed["name"] = parse("name", _NAME)
    if "class_names" in loaded:
        parsed["class_names"] = list(parse("class_names", _CLASS_NAMES))
    n_classes = len(parsed.get("class_names", []))
    if "palette" in loaded:
        if "class_names" not in parsed:
            raise DataError(f"{where}key 'palette' needs key 'class_names'")
        parsed["palette"] = [list(colour) for colour in parse("palette", _palette_field(n_classes))]
    if "ignore_index" in loaded:
        parsed["ignore_index"] = parse("ignore_index", _ignore_index_field(n_classes))
    if "intrinsics" in loaded:
        parsed["intrinsics"] = _parse_intrinsics(parse("intrinsics", _INTRINSICS), where)
    return parsed


def write_dataset_yaml(path: Path, config: DatasetYaml) -> None:
    """Write ``config`` as a ``dataset.yaml`` that :func:`load_dataset_yaml` reads back.

    The file is replaced atomically; comments of an earlier file are not kept.

    Raises:
        DataError: The file cannot be written.
    """
    plain: dict[str, object] = {key: value for key, value in config.items() if key != "intrinsics"}
    if "intrinsics" in config:
        plain["intrinsics"] = {
            modality: [*camera.to_list()[:4], camera.width, camera.height]
            for modality, camera in config["intrinsics"].items()
        }
    try:
        atomic_write_text(path, yaml.safe_dump(plain, sort_keys=False, default_flow_style=None))
    except OSError as err:
        raise DataError(f"cannot write {str(path)!r}: {err}") from err


def _suffixes(modality: str) -> tuple[str, ...]:
    return (*(_RGB_SUFFIXES if modality == "rgb" else _IMAGE_SUFFIXES), _ARRAY_SUFFIX)


def _read_array(modality: str, path: Path) -> np.ndarray:
    """Read one modality file and bring it to the modality's raw convention."""
    if path.suffix.lower() == _ARRAY_SUFFIX:
        array = read_npy(path)
        if modality in ("aolp", "dolp") and np.issubdtype(array.dtype, np.floating):
            return array.astype(np.float32, copy=False)
        return array
    image = read_image(path)
    if modality == "rgb":
        return rgb8(image, source=path)
    if modality in ("thermal", "nir"):
        return single_channel(image, source=path)
    return image


class FolderDataset(SplitReader):
    """Reader of the plain folder layout described in the module docstring."""

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
            root: The folder (layout in the module docstring).
            split: A name with a ``splits/<split>.txt``, or "all" (or "train" when there is
                no ``splits/`` folder) for every complete frame.
            modalities: Modalities to read, "rgb" included; None for every modality folder.

        Raises:
            DataError: Missing ``rgb/``, split list, modality folder or file, an unknown
                modality, an invalid ``dataset.yaml`` (intrinsics included), or labels
                without class names.
        """
        self.root = Path(root)
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"missing dataset folder {str(self.root)!r}")
        present = tuple(name for name in MODALITIES if (self.root / name).is_dir())
        if "rgb" not in present:
            raise DataError(f"missing directory {str(self.root / 'rgb')!r}")
        modalities = select_modalities(modalities, present, dataset=f"folder {str(self.root)!r}")
        self._files = {
            name: index_directory(self.root / name, _suffixes(name)) for name in modalities
        }
        self.stems = self._split_stems(modalities)

        label_dir = self.root / LABELS_DIR
        self._labels = index_directory(label_dir, (".png",)) if label_dir.is_dir() else {}
        config_path = self.root / DATASET_YAML
        config = load_dataset_yaml(config_path) if config_path.is_file() else DatasetYaml()
        class_names = tuple(config.get("class_names", ()))
        if self._labels and not class_names:
            raise DataError(
                f"{str(label_dir)!r} holds labels but no class names are given: add "
                f"'class_names' to {str(config_path)!r}"
            )
        if "palette" in config:
            palette = np.array(config["palette"], dtype=np.uint8).reshape(-1, 3)
        else:
            palette = default_palette(len(class_names))
        ignore_index = config.get("ignore_index", IGNORE_INDEX)
        self._label_lookup = class_lookup(len(class_names), ignore_index)
        self.info = DatasetInfo(
            name=config.get("name", self.root.resolve().name),
            modalities=modalities,
            class_names=class_names,
            palette=palette,
            ignore_index=ignore_index,
            intrinsics=MappingProxyType(config.get("intrinsics", {})),
        )

    def has_labels(self, index: int) -> bool:
        """Whether frame ``index`` has a label file (without reading anything)."""
        return self.stems[index] in self._labels

    def _split_stems(self, modalities: tuple[str, ...]) -> tuple[str, ...]:
        splits_dir = self.root / SPLITS_DIR
        list_path = splits_dir / f"{self.split}.txt"
        if list_path.is_file() or not (
            self.split == "all" or (self.split == "train" and not splits_dir.exists())
        ):
            stems = read_split_list(list_path)
            for stem in stems:
                for name in modalities:
                    if stem not in self._files[name]:
                        raise DataError(
                            f"missing file for frame {stem!r} in {str(self.root / name)!r} "
                            f"(frame listed in {str(list_path)!r})"
                        )
            return stems
        complete = set(self._files["rgb"])
        for name in modalities[1:]:
            complete &= set(self._files[name])
        if not complete:
            raise DataError(
                f"no frame of {str(self.root)!r} has a file in every folder of "
                f"{', '.join(modalities)}"
            )
        return tuple(sorted(complete))

    def _read_frame(self, stem: str) -> FrameGroup:
        sources: dict[str, Path] = {name: self._files[name][stem] for name in self.info.modalities}
        arrays = {name: _read_array(name, path) for name, path in sources.items()}
        labels = None
        label_path = self._labels.get(stem)
        if label_path is not None:
            sources["labels"] = label_path
            raw = read_label_image(label_path)
            n_classes = len(self.info.class_names)
            labels = remap_labels(
                raw,
                self._label_lookup,
                source=label_path,
                expected=f"class ids 0..{n_classes - 1} or {self.info.ignore_index} (ignore)",
            )
        return assemble_group(stem, arrays, labels, sources=sources)


def _check_stem(stem: str) -> None:
    if (
        not stem
        or stem.startswith(".")
        or any(char in stem for char in "/\\")
        or any(char.isspace() for char in stem)
    ):
        raise DataError(
            f"frame stem {stem!r} cannot name a file in the folder layout: it must be "
            "non-empty, without '/', '\\' or whitespace, and not start with '.'"
        )


def write_frame_group(root: Path, group: FrameGroup) -> None:
    """Write one frame group into the folder layout (the module docstring's).

    Each file is written to a hidden temporary file and renamed into place, so a reader never
    sees a partial file. Labels are written first and RGB last; an interrupted call can leave
    some of the frame's files, but the frame then lacks ``rgb/`` and is not yet a complete
    frame for split "all". Existing files of the same stem are replaced.

    Args:
        root: The dataset folder (created if needed).
        group: Frame to write; arrays follow the raw conventions, labels are 2-D uint8/uint16.

    Raises:
        DataError: The stem cannot be a file name, a modality is unknown or an array breaks
            its convention, sizes differ, or a file cannot be written.
    """
    _check_stem(group.stem)
    if "rgb" not in group.arrays:
        raise DataError(f"frame {group.stem!r} has no 'rgb' array")
    sources = {name: f"frame {group.stem!r} {name}" for name in group.arrays}
    if group.labels is not None:
        labels = group.labels
        if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
            raise DataError(
                f"frame {group.stem!r} labels are {labels.dtype} {labels.shape}; "
                "expected 2-D uint8 or uint16"
            )
        sources["labels"] = f"frame {group.stem!r} labels"
    assemble_group(group.stem, group.arrays, group.labels, sources=sources)

    if group.labels is not None:
        write_png(root / LABELS_DIR / f"{group.stem}.png", group.labels)
    for name in sorted(group.arrays, key=lambda modality: modality == "rgb"):
        array = group.arrays[name]
        if np.issubdtype(array.dtype, np.floating):
            write_npy(root / name / f"{group.stem}{_ARRAY_SUFFIX}", array)
        else:
            write_png(root / name / f"{group.stem}.png", array)
