"""Feature cache: frozen-backbone features of every view of a split, computed once, on disk.

The backbone is frozen and training uses no augmentation, so the features of every training
view (and of every evaluation frame) never change: they are extracted once into fp16
memory-mapped arrays, and training then only touches the heads.

Layout: one directory per (backbone identity incl. weights hash, view settings, dataset, exact
frame list), named by a digest of those, so a cache made with another backbone or other settings
is never reused. Inside it, one memory map per modality and encoding
(``<modality>-<digest>.npy``), so an RGB-only run reuses the RGB features of an RGB-D run, plus
``labels.npy``. Each of these "entries" has per-rank progress masks (``.done-<rank>.npy``)
written atomically after its rows are flushed, so an interrupted extraction resumes where it
stopped; ``meta.json`` is compared in full before anything is reused.

Extraction shards frames over processes (``torchrun``): rank r takes frames r, r+W, r+2W, ...
and writes disjoint rows of the same memory maps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from unim2_core.atomic import atomic_output, atomic_write_bytes
from unim2_core.data.datasets.base import IGNORE_INDEX
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import (
    Interpolation,
    encode_group,
    label_views,
    paper_protocol_view,
    processing_size,
    to_backbone_batch,
    training_views,
)
from unim2_core.errors import CacheError, DataError, EncodingError
from unim2_core.model.backbone import Backbone

CACHE_VERSION = 2
ViewKind = Literal["train", "paper", "full"]
LABELS = "labels"


class FrameSource(Protocol):
    """What the cache needs of a dataset reader (see ``unim2_core.data.datasets``)."""

    stems: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclass(frozen=True)
class ViewSpec:
    """How the backbone sees each frame of a split.

    Attributes:
        kind: ``train`` (the paper's five-crop views at ``size``), ``paper`` (evaluation: resize
            the shorter side to ``size`` and centre-crop, nearest) or ``full`` (evaluation at full
            label resolution, backbone at shorter side ``size``).
        size: Crop size (train, paper) or processing shorter side (full).
        five_crop: Train views only: five crops per frame instead of the whole frame.
        interpolation: Image resampling before the backbone.
    """

    kind: ViewKind
    size: int
    five_crop: bool = True
    interpolation: Interpolation = "bilinear"

    @property
    def views_per_frame(self) -> int:
        """Number of cached views per frame."""
        return 5 if self.kind == "train" and self.five_crop else 1

    def to_dict(self) -> dict[str, object]:
        """Plain-type form used in the cache key."""
        return {
            "kind": self.kind,
            "size": self.size,
            "five_crop": self.five_crop,
            "interpolation": self.interpolation,
        }


class FeatureStore(NamedTuple):
    """An opened, complete cache of one split for a set of modalities.

    Attributes:
        path: Cache directory.
        modalities: Modality names in model order.
        features: Modality name -> [V, C, h, w] float16 memory map (V = frames x views).
        labels: [V, Hl, Wl] memory map of the views' labels, or None.
        stems: Frame stems; view v belongs to frame ``v // views_per_frame``.
        views_per_frame: Views per frame.
    """

    path: Path
    modalities: tuple[str, ...]
    features: dict[str, np.ndarray]
    labels: np.ndarray | None
    stems: tuple[str, ...]
    views_per_frame: int

    @property
    def n_views(self) -> int:
        """Number of cached views."""
        return int(self.features[self.modalities[0]].shape[0])

    @property
    def feature_size(self) -> tuple[int, int]:
        """Feature map size (h, w)."""
        shape = self.features[self.modalities[0]].shape
        return int(shape[-2]), int(shape[-1])

    def load(self, indices: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows ``indices`` (any order, repeats allowed) as float32 [B, M, C, h, w] on device."""
        order = np.argsort(indices, kind="stable")
        sorted_rows = indices[order]
        per_modality = []
        for name in self.modalities:
            rows = np.empty((len(indices), *self.features[name].shape[1:]), dtype=np.float16)
            rows[order] = self.features[name][sorted_rows]
            per_modality.append(rows)
        stacked = np.stack(per_modality, axis=1)  # [B, M, C, h, w]
        return torch.from_numpy(stacked).to(device=device, dtype=torch.float32)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through the atomic writer."""
    with atomic_output(path) as stream:
        np.save(stream, array)


def _digest(value: object, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _dist_ready():
        dist.barrier()


def entry_name(modality: str, encoding: ModalityEncoding) -> str:
    """File stem of a modality's feature map: its name and a digest of its encoding."""
    return f"{modality}-{_digest(encoding.to_dict(), 10)}"


class _Entry(NamedTuple):
    name: str  # file stem
    modality: str | None  # None for labels


def _load_done(directory: Path, entry: str, n_frames: int) -> np.ndarray:
    done = np.zeros(n_frames, dtype=bool)
    for path in directory.glob(f"{entry}.done-*.npy"):
        try:
            mask = np.load(path)
        except (OSError, ValueError) as err:
            raise CacheError(f"unreadable progress file {str(path)!r}: {err}") from err
        if mask.shape != (n_frames,):
            raise CacheError(
                f"progress file {str(path)!r} has shape {mask.shape}, expected {n_frames}"
            )
        done |= mask
    return done


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data


def _frame_view(
    group: Any, spec: ViewSpec, modalities: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    missing = [m for m in modalities if m not in group.arrays]
    if missing:
        raise DataError(f"frame lacks modality {missing}")
    arrays = {name: group.arrays[name] for name in modalities}
    if spec.kind == "paper":
        return paper_protocol_view(arrays, group.labels, size=spec.size)
    return arrays, group.labels


def _backbone_input(
    arrays: Mapping[str, np.ndarray],
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    patch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """One frame's backbone input [V * M, 3, h, w] for ``spec`` (M = len(encodings))."""
    encoded = encode_group(arrays, encodings)  # [M, H, W, 3]
    if spec.kind == "train":
        views = training_views(
            encoded,
            crop_size=spec.size,
            five_crop=spec.five_crop,
            interpolation=spec.interpolation,
            device=device,
        )  # [V, M, 3, S, S]
        return views.flatten(0, 1)
    height, width = encoded.shape[1:3]
    size = processing_size(height, width, shorter_side=spec.size, patch_size=patch_size)
    return to_backbone_batch(encoded, size, device=device, interpolation=spec.interpolation)


def _view_labels(labels: np.ndarray, spec: ViewSpec) -> np.ndarray:
    if spec.kind == "train":
        return label_views(labels, crop_size=spec.size, five_crop=spec.five_crop)
    return labels[None]


def cache_directory(
    cache_root: Path,
    *,
    split_name: str,
    dataset_id: Mapping[str, object],
    stems: tuple[str, ...],
    backbone: Backbone,
    spec: ViewSpec,
) -> tuple[Path, dict[str, Any]]:
    """The cache directory for these settings and the key metadata stored in it."""
    key = {
        "version": CACHE_VERSION,
        "backbone": backbone.identity.to_dict(),
        "view": spec.to_dict(),
        "dataset": dict(dataset_id),
        "stems_sha256": hashlib.sha256("\n".join(stems).encode()).hexdigest(),
        "n_frames": len(stems),
    }
    safe_split = "".join(c if c.isalnum() or c in "-_" else "_" for c in split_name)
    return cache_root / f"{safe_split}-{spec.kind}-{_digest(key)}", key


def extract_features(
    source: FrameSource,
    *,
    split_name: str,
    dataset_id: Mapping[str, object],
    backbone: Backbone,
    encodings: Mapping[str, ModalityEncoding],
    spec: ViewSpec,
    cache_root: str | Path,
    device: torch.device | str = "cpu",
    batch_frames: int = 4,
    progress: bool = True,
) -> FeatureStore:
    """Extract (or reuse, or resume) the cached features of one split.

    Only the modalities (and labels) not cached yet are computed. Safe to call from every rank
    of a ``torchrun`` job with the default process group initialised: frames are sharded
    across ranks, and every rank returns the complete store.

    Args:
        source: The split's frames (each item has ``arrays`` and ``labels``).
        split_name: Used in the directory name.
        dataset_id: What identifies the dataset (kind, resolved root, reader options).
        backbone: The frozen backbone, already on ``device``.
        encodings: Modality encodings in model order.
        spec: View settings.
        cache_root: Parent directory of all caches.
        device: Where the backbone runs.
        batch_frames: Frames per backbone batch.
        progress: Show a progress bar (rank 0 only).

    Raises:
        DataError: a frame cannot be read or encoded (the message names its stem); frames
            already extracted stay cached.
        CacheError: the cache directory is unusable.
    """
    rank = dist.get_rank() if _dist_ready() else 0
    world = dist.get_world_size() if _dist_ready() else 1
    device = torch.device(device)
    stems = tuple(source.stems)
    if not stems:
        raise DataError(f"split {split_name!r} has no frames")
    directory, key = cache_directory(
        Path(cache_root),
        split_name=split_name,
        dataset_id=dataset_id,
        stems=stems,
        backbone=backbone,
        spec=spec,
    )
    entries = [_Entry(entry_name(m, e), m) for m, e in encodings.items()]
    if rank == 0:
        _prepare(directory, key, source, spec, encodings, backbone, entries)
    _barrier()
    meta = _read_json(directory / "meta.json")
    if meta is None or meta.get("key") != key:
        raise CacheError(f"cache {str(directory)!r} was not created properly")
    if meta["label_shape"] is not None:
        entries.append(_Entry(LABELS, None))
    pending = [e for e in entries if not _entry_meta(directory, e.name).get("complete")]
    if pending:
        _fill(
            directory,
            meta,
            source,
            spec,
            encodings,
            backbone,
            pending,
            device,
            rank,
            world,
            batch_frames,
            progress,
        )
        _barrier()
        if rank == 0:
            for entry in pending:
                done = _load_done(directory, entry.name, len(stems))
                if not done.all():
                    raise CacheError(
                        f"cache {str(directory)!r}: {int((~done).sum())} frames of "
                        f"{entry.name} missing"
                    )
                info = _entry_meta(directory, entry.name)
                info["complete"] = True
                atomic_write_bytes(directory / f"{entry.name}.json", json.dumps(info).encode())
        _barrier()
    return open_store(directory, encodings)


def _entry_meta(directory: Path, entry: str) -> dict[str, Any]:
    return _read_json(directory / f"{entry}.json") or {}


def _prepare(
    directory: Path,
    key: dict[str, Any],
    source: FrameSource,
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    backbone: Backbone,
    entries: list[_Entry],
) -> None:
    """Create the directory's metadata and the memory maps of entries that do not exist yet.

    A directory whose ``meta.json`` does not match the key exactly is emptied and rebuilt.
    """
    directory.mkdir(parents=True, exist_ok=True)
    meta = _read_json(directory / "meta.json")
    if meta is not None and meta.get("key") != key:
        for stale in directory.iterdir():
            if stale.is_file():
                stale.unlink()
        meta = None
    if meta is None:
        try:
            arrays, labels = _frame_view(source[0], spec, list(encodings))
            labelled = _first_labelled(source)
            if labels is None and labelled is not None:
                labels = _frame_view(source[labelled], spec, list(encodings))[1]
        except DataError as err:
            raise DataError(f"frame {source.stems[0]!r}: {err}") from err
        height, width = arrays[next(iter(encodings))].shape[:2]
        if spec.kind == "train":
            feature_size = [spec.size // backbone.patch_size] * 2
            label_size = [spec.size, spec.size]
        else:
            proc = processing_size(
                height, width, shorter_side=spec.size, patch_size=backbone.patch_size
            )
            feature_size = [proc[0] // backbone.patch_size, proc[1] // backbone.patch_size]
            label_size = [height, width]
        n_views = len(source) * spec.views_per_frame
        meta = {
            "key": key,
            "stems": list(source.stems),
            "views_per_frame": spec.views_per_frame,
            "feature_shape": [n_views, backbone.channels, *feature_size],
            "label_shape": None if labels is None else [n_views, *label_size],
            "label_dtype": None if labels is None else str(labels.dtype),
        }
        if labels is not None:
            _create_entry(directory, LABELS, meta["label_shape"], meta["label_dtype"], {})
        atomic_write_bytes(directory / "meta.json", json.dumps(meta, indent=1).encode())
    for entry in entries:
        if not (directory / f"{entry.name}.json").is_file():
            encoding = encodings[entry.modality].to_dict() if entry.modality else {}
            _create_entry(
                directory, entry.name, meta["feature_shape"], "float16", {"encoding": encoding}
            )


def _first_labelled(source: FrameSource) -> int | None:
    """Index of the first frame with labels, or None. Readers with ``has_labels`` answer without
    reading frames; other sources are judged by their first frame alone."""
    has_labels = getattr(source, "has_labels", None)
    if has_labels is None:
        return 0 if source[0].labels is not None else None
    return next((i for i in range(len(source)) if has_labels(i)), None)


def _ignore_index(source: FrameSource) -> int:
    info = getattr(source, "info", None)
    return int(info.ignore_index) if info is not None else IGNORE_INDEX


def _create_entry(
    directory: Path, name: str, shape: list[int], dtype: str, info: dict[str, Any]
) -> None:
    for stale in directory.glob(f"{name}.done-*.npy"):
        stale.unlink()
    np.lib.format.open_memmap(
        directory / f"{name}.npy", mode="w+", dtype=dtype, shape=tuple(shape)
    ).flush()
    atomic_write_bytes(directory / f"{name}.json", json.dumps({**info, "complete": False}).encode())


def _fill(
    directory: Path,
    meta: Mapping[str, Any],
    source: FrameSource,
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    backbone: Backbone,
    pending: list[_Entry],
    device: torch.device,
    rank: int,
    world: int,
    batch_frames: int,
    progress: bool,
) -> None:
    """Extract this rank's frames for the pending entries."""
    stems = meta["stems"]
    n_frames = len(stems)
    views = int(meta["views_per_frame"])
    done = {e.name: _load_done(directory, e.name, n_frames) for e in pending}
    maps = {e.name: np.load(directory / f"{e.name}.npy", mmap_mode="r+") for e in pending}
    todo = [i for i in range(rank, n_frames, world) if not all(done[e.name][i] for e in pending)]
    bar = tqdm(
        total=len(todo),
        desc=f"features {directory.name}",
        unit="frame",
        disable=not progress or rank != 0,
        leave=False,
    )
    with bar:
        for start in range(0, len(todo), batch_frames):
            chunk = todo[start : start + batch_frames]
            needed = [e for e in pending if e.modality and not all(done[e.name][i] for i in chunk)]
            wants_labels = any(e.modality is None for e in pending)
            sub = {e.modality: encodings[e.modality] for e in needed if e.modality}
            inputs, frame_labels = [], []
            for index in chunk:
                try:
                    arrays, labels = _frame_view(source[index], spec, list(encodings))
                    if sub:
                        inputs.append(
                            _backbone_input(arrays, spec, sub, backbone.patch_size, device)
                        )
                except (EncodingError, DataError) as err:
                    raise DataError(f"frame {stems[index]!r} of {directory.name}: {err}") from err
                if wants_labels:
                    if labels is None:  # an unlabelled frame of a mixed split: all ignored
                        shape = tuple(maps[LABELS].shape[1:])
                        labels = np.full(shape, _ignore_index(source), dtype=maps[LABELS].dtype)
                        frame_labels.append(np.repeat(labels[None], views, axis=0))
                    else:
                        frame_labels.append(_view_labels(labels, spec))
            if sub:
                with torch.no_grad():
                    out = backbone(torch.cat(inputs)).float()  # [F * V * m, C, h, w]
                out = out.reshape(len(chunk), views, len(sub), *out.shape[1:]).cpu().numpy()
                expected = tuple(maps[needed[0].name].shape[2:])
                if tuple(out.shape[-2:]) != expected[-2:]:
                    raise DataError(
                        f"frames {[stems[i] for i in chunk]} give features of size "
                        f"{tuple(out.shape[-2:])}, expected {expected[-2:]}: the frames of a split "
                        "must share one size"
                    )
                for k, entry in enumerate(needed):
                    for j, index in enumerate(chunk):
                        maps[entry.name][index * views : (index + 1) * views] = out[j, :, k]
            if wants_labels:
                for j, index in enumerate(chunk):
                    maps[LABELS][index * views : (index + 1) * views] = frame_labels[j]
            for entry in pending:
                if entry.modality is None and not wants_labels:
                    continue
                if entry.modality is not None and entry not in needed:
                    continue
                maps[entry.name].flush()
                done[entry.name][chunk] = True
                atomic_save_npy(directory / f"{entry.name}.done-{rank}.npy", done[entry.name])
            bar.update(len(chunk))


def open_store(directory: str | Path, encodings: Mapping[str, ModalityEncoding]) -> FeatureStore:
    """Open the complete entries of ``encodings`` (and labels) of a cache directory, read-only.

    Raises:
        CacheError: the directory is missing, an entry is incomplete or inconsistent.
    """
    directory = Path(directory)
    meta = _read_json(directory / "meta.json")
    if meta is None:
        raise CacheError(f"no feature cache at {str(directory)!r}")
    features = {}
    try:
        for modality, encoding in encodings.items():
            name = entry_name(modality, encoding)
            if not _entry_meta(directory, name).get("complete"):
                raise CacheError(f"feature cache {str(directory)!r}: {name} is incomplete")
            features[modality] = np.load(directory / f"{name}.npy", mmap_mode="r")
            if list(features[modality].shape) != list(meta["feature_shape"]):
                raise CacheError(
                    f"feature cache {str(directory)!r}: {name}.npy has shape "
                    f"{list(features[modality].shape)}, meta.json says {meta['feature_shape']}"
                )
        labels = None
        if meta["label_shape"] is not None:
            if not _entry_meta(directory, LABELS).get("complete"):
                raise CacheError(f"feature cache {str(directory)!r}: labels are incomplete")
            labels = np.load(directory / f"{LABELS}.npy", mmap_mode="r")
    except (OSError, ValueError) as err:
        raise CacheError(f"cannot open feature cache {str(directory)!r}: {err}") from err
    return FeatureStore(
        path=directory,
        modalities=tuple(encodings),
        features=features,
        labels=labels,
        stems=tuple(meta["stems"]),
        views_per_frame=int(meta["views_per_frame"]),
    )
