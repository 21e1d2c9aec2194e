"""Ground truth of a replay: a label topic of the bag or a folder of label PNGs named by stamp.

A replay (``unim2_ros.replay``) scores its label maps against ground truth from one of two
sources: a label topic in the bag (mono8 / mono16 class ids, synchronised with the other topics
as one more input) or a :class:`LabelFolder` of PNGs matched to frames by RGB header stamp.
:func:`resolve_ground_truth` picks the source and names its classes: ``class_names`` when given,
else the label folder's ``dataset.yaml``, else the model's (the checkpoint's class mapping
offline; the node's ``label_info`` when its labels are classes), else ``class 0 ..`` up to the
largest id seen.

The folder is read with the dataset folder reader's pieces (``index_directory``,
``load_dataset_yaml``, ``read_label_image``), so a label folder and a dataset's ``labels/``
accept the same files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from unim2_core.data.datasets.base import index_directory
from unim2_core.data.datasets.folder import DATASET_YAML, LABELS_DIR, load_dataset_yaml
from unim2_core.data.image_io import read_label_image
from unim2_core.errors import ConfigError, DataError
from unim2_core.evaluation.metrics import IGNORE_INDEX

__all__ = ["GroundTruth", "LabelFolder", "resolve_ground_truth"]

_LABEL_STEM = re.compile(r"(?:\d+_)?(\d+)")


class LabelFolder:
    """Ground-truth label PNGs, matched to frames by the RGB header stamp.

    A file belongs to the frame whose RGB header stamp, in nanoseconds, ends its stem:
    ``<stamp>.png`` or ``<index>_<stamp>.png``, the names ``unim2_import_bag`` and the replay
    give frames (the index is ignored: it depends on the synchroniser settings, the stamp does
    not). ``path`` is the PNG folder itself or a dataset folder holding ``labels/``, whose
    ``dataset.yaml`` may name the classes and the ignore index. Frames without a file are not
    scored; files that match no frame are counted.

    Args:
        path: The folder.

    Raises:
        DataError: The folder is missing or holds no PNG, a PNG's name does not end in a stamp,
            two files name the same stamp, or ``dataset.yaml`` is invalid.
    """

    def __init__(self, path: str | Path) -> None:
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"label folder {str(root)!r} does not exist")
        folder = root / LABELS_DIR if (root / LABELS_DIR).is_dir() else root
        self.path = folder
        self._files: dict[int, Path] = {}
        for stem, file in sorted(index_directory(folder, (".png",)).items()):
            match = _LABEL_STEM.fullmatch(stem)
            if match is None:
                raise DataError(
                    f"label file {str(file)!r} is not named <rgb stamp ns>.png or "
                    f"<index>_<rgb stamp ns>.png"
                )
            stamp = int(match.group(1))
            if stamp in self._files:
                raise DataError(
                    f"label files {str(self._files[stamp])!r} and {str(file)!r} are both for "
                    f"RGB stamp {stamp}"
                )
            self._files[stamp] = file
        if not self._files:
            raise DataError(f"label folder {str(folder)!r} holds no .png file")
        meta = load_dataset_yaml(root / DATASET_YAML) if (root / DATASET_YAML).is_file() else {}
        names = meta.get("class_names")
        self.class_names: tuple[str, ...] | None = None if names is None else tuple(names)
        """Class names from the folder's ``dataset.yaml``, if it names them."""
        ignore = meta.get("ignore_index")
        self.ignore_index: int | None = None if ignore is None else int(ignore)
        """Ignore index from the folder's ``dataset.yaml``, if it sets one."""
        self._used: set[int] = set()

    def __len__(self) -> int:
        return len(self._files)

    @property
    def unused(self) -> int:
        """Files not read so far (after a replay: files that matched no frame)."""
        return len(self._files) - len(self._used)

    def read(self, stamp_ns: int, shape: tuple[int, ...]) -> npt.NDArray[Any] | None:
        """The ground truth of the frame with RGB stamp ``stamp_ns``, or None without a file.

        Args:
            stamp_ns: The frame's RGB header stamp.
            shape: The frame's (height, width), which the labels must have.

        Raises:
            DataError: The file cannot be decoded, is not a single-channel 8 or 16 bit image,
                or has another size than the frame.
        """
        file = self._files.get(stamp_ns)
        if file is None:
            return None
        self._used.add(stamp_ns)
        labels = read_label_image(file)
        if labels.shape != tuple(shape[:2]):
            raise DataError(
                f"label file {str(file)!r} is {labels.shape[1]}x{labels.shape[0]}, its frame "
                f"{shape[1]}x{shape[0]}"
            )
        return labels


class GroundTruth(NamedTuple):
    """Where a replay's ground truth comes from and how its classes are named.

    Attributes:
        topic: The bag's label topic, or None.
        folder: The label folder, or None.
        class_names: Names of the ground-truth classes; None for ``class i`` names.
        ignore_index: Ground-truth value of unlabelled pixels.
        description: One line for the report, or None without ground truth.
    """

    topic: str | None
    folder: LabelFolder | None
    class_names: tuple[str, ...] | None
    ignore_index: int
    description: str | None

    @property
    def enabled(self) -> bool:
        """Whether there is ground truth (then frames are scored)."""
        return self.topic is not None or self.folder is not None

    def labels(
        self, stamp_ns: int, topic_labels: npt.NDArray[Any] | None, rgb: np.ndarray
    ) -> npt.NDArray[Any] | None:
        """The frame's ground truth: from the label topic, or read from the folder."""
        if self.folder is not None:
            return self.folder.read(stamp_ns, rgb.shape)
        return topic_labels


def resolve_ground_truth(
    label_topic: str | None,
    label_dir: str | Path | None,
    class_names: Sequence[str] | None,
    ignore_index: int | None,
    model_names: tuple[tuple[str, ...], str] | None,
) -> GroundTruth:
    """Resolves the ground-truth source, its class names and ignore index (module docstring).

    Args:
        label_topic: The bag's label topic, or None.
        label_dir: A label folder (:class:`LabelFolder`), or None.
        class_names: Class names as given, or None.
        ignore_index: Ignore index as given; None for the folder's, else 255.
        model_names: The model's class names and where they come from, or None.

    Raises:
        ValueError: Both a label topic and a label folder.
        DataError: As :class:`LabelFolder`.
        ConfigError: Empty or repeated class names, or an ignore index that is a class id.
    """
    if label_topic is not None and label_dir is not None:
        raise ValueError("give a label topic or a label folder, not both")
    folder = LabelFolder(label_dir) if label_dir is not None else None
    if label_topic is None and folder is None:
        return GroundTruth(None, None, None, IGNORE_INDEX, None)
    names: tuple[str, ...] | None
    if class_names is not None:
        names, origin = tuple(class_names), "class names as given"
    elif folder is not None and folder.class_names is not None:
        names, origin = folder.class_names, f"class names from {DATASET_YAML}"
    elif model_names is not None:
        names, origin = model_names
    else:
        names, origin = None, "generic class names (class 0 .. the largest id seen)"
    if ignore_index is None:
        ignore_index = (
            folder.ignore_index if folder and folder.ignore_index is not None else IGNORE_INDEX
        )
    if names is not None:
        if not names or not all(names) or len(set(names)) != len(names):
            raise ConfigError(f"class names must be non-empty and distinct, got {list(names)}")
        if 0 <= ignore_index < len(names):
            raise ConfigError(
                f"ignore index {ignore_index} is a class id of the {len(names)} classes"
            )
    source = (
        f"label topic {label_topic!r}"
        if folder is None
        else f"label folder {str(folder.path)!r} ({len(folder)} files)"
    )
    return GroundTruth(
        label_topic,
        folder,
        names,
        ignore_index,
        f"{source}; {origin}; ignore index {ignore_index}",
    )
