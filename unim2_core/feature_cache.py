"""Feature cache: frozen-backbone features of every view of a split, computed once, on disk.

The backbone is frozen and training uses no augmentation, so the features of every training
view (and of every validation frame) never change: they are extracted once into fp16
memory-mapped arrays and training then only touches the heads.

A cache directory is keyed by everything its content depends on (backbone identity including
the weights hash, modality encodings, view settings, dataset and the exact frame list), so a
cache made with another backbone or other settings is never reused: it simply lives elsewhere.
Within a directory, ``meta.json`` is compared in full before reuse, and frames are marked done
only after their rows are flushed, so an interrupted extraction resumes where it stopped.
Extraction shards frames over processes (``torchrun``): rank r takes frames r, r+W, r+2W, ...
and writes disjoint rows of the same memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from unim2_core.backbone import Backbone
from unim2_core.encoding import ModalityEncoding
from unim2_core.errors import CacheError, DataError, EncodingError
from unim2_core.preprocess import (
    Interpolation,
    encode_group,
    label_views,
    paper_protocol_view,
    processing_size,
    to_backbone_batch,
    training_views,
)

CACHE_VERSION = 1
ViewKind = Literal["train", "paper", "full"]


class FrameSource(Protocol):
    """What the cache needs of a dataset reader (see ``unim2_core.datasets``)."""

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
    """An opened, complete cache of one split.

    Attributes:
        path: Cache directory.
        features: [V, M, C, h, w] float16 memory map (V = frames x views per frame).
        labels: [V, Hl, Wl] uint8/uint16 memory map of the views' labels, or None.
        stems: Frame stems; view v belongs to frame ``v // views_per_frame``.
        views_per_frame: Views per frame.
    """

    path: Path
    features: np.ndarray
    labels: np.ndarray | None
    stems: tuple[str, ...]
    views_per_frame: int


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            np.save(stream, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _dist_ready():
        dist.barrier()


def _frame_view(
    group: Any, spec: ViewSpec, encodings: Mapping[str, ModalityEncoding]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    arrays = {name: group.arrays[name] for name in encodings if name in group.arrays}
    labels = group.labels
    if spec.kind == "paper":
        return paper_protocol_view(arrays, labels, size=spec.size)
    return arrays, labels


def _backbone_input(
    arrays: Mapping[str, np.ndarray],
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    patch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """One frame's backbone input [V * M, 3, h, w] for ``spec``."""
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
    encodings: Mapping[str, ModalityEncoding],
    spec: ViewSpec,
) -> tuple[Path, dict[str, Any]]:
    """The cache directory for these settings and the key metadata stored in it."""
    key = {
        "version": CACHE_VERSION,
        "backbone": backbone.identity.to_dict(),
        "encodings": {name: enc.to_dict() for name, enc in encodings.items()},
        "view": spec.to_dict(),
        "dataset": dict(dataset_id),
        "stems_sha256": hashlib.sha256("\n".join(stems).encode()).hexdigest(),
        "n_frames": len(stems),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe_split = "".join(c if c.isalnum() or c in "-_" else "_" for c in split_name)
    return cache_root / f"{safe_split}-{spec.kind}-{digest}", key


def _load_done(directory: Path, n_frames: int) -> np.ndarray:
    done = np.zeros(n_frames, dtype=bool)
    for path in directory.glob("done-*.npy"):
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


def _read_meta(directory: Path) -> dict[str, Any] | None:
    path = directory / "meta.json"
    if not path.is_file():
        return None
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta


def _shapes(
    source: FrameSource,
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    backbone: Backbone,
) -> tuple[list[int], list[int] | None, str]:
    """Feature and label shapes (and label dtype) of the whole split, from its first frame."""
    arrays, labels = _frame_view(source[0], spec, encodings)
    first = arrays["rgb"]
    height, width = first.shape[:2]
    patch = backbone.patch_size
    if spec.kind == "train":
        h = w = spec.size // patch
        label_shape = [spec.size, spec.size]
    else:
        ph, pw = processing_size(height, width, shorter_side=spec.size, patch_size=patch)
        h, w = ph // patch, pw // patch
        label_shape = [height, width]
    n_views = len(source) * spec.views_per_frame
    features = [n_views, len(encodings), backbone.channels, h, w]
    if labels is None:
        return features, None, "uint8"
    return features, [n_views, *label_shape], str(labels.dtype)


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

    Safe to call from every rank of a ``torchrun`` job with the default process group
    initialised: frames are sharded across ranks, and every rank returns the complete store.

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
        encodings=encodings,
        spec=spec,
    )
    meta = _read_meta(directory)
    if rank == 0 and (meta is None or meta.get("key") != key):
        _create(directory, key, source, spec, encodings, backbone)
    _barrier()
    meta = _read_meta(directory)
    if meta is None or meta.get("key") != key:
        raise CacheError(f"cache {str(directory)!r} was not created properly")
    if not meta.get("complete"):
        _fill(
            directory,
            meta,
            source,
            spec,
            encodings,
            backbone,
            device,
            rank,
            world,
            batch_frames,
            progress,
        )
        _barrier()
        if rank == 0:
            done = _load_done(directory, len(stems))
            if not done.all():
                raise CacheError(f"cache {str(directory)!r}: {int((~done).sum())} frames missing")
            meta["complete"] = True
            _atomic_write_bytes(directory / "meta.json", json.dumps(meta, indent=1).encode())
        _barrier()
    return open_store(directory)


def _create(
    directory: Path,
    key: dict[str, Any],
    source: FrameSource,
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    backbone: Backbone,
) -> None:
    """Start a fresh cache (discarding any stale content of the directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("done-*.npy"), directory / "meta.json"]:
        stale.unlink(missing_ok=True)
    try:
        feature_shape, label_shape, label_dtype = _shapes(source, spec, encodings, backbone)
    except EncodingError as err:
        raise DataError(f"frame {source.stems[0]!r}: {err}") from err
    np.lib.format.open_memmap(
        directory / "features.npy", mode="w+", dtype=np.float16, shape=tuple(feature_shape)
    ).flush()
    if label_shape is not None:
        np.lib.format.open_memmap(
            directory / "labels.npy", mode="w+", dtype=label_dtype, shape=tuple(label_shape)
        ).flush()
    meta = {
        "key": key,
        "stems": list(source.stems),
        "feature_shape": feature_shape,
        "label_shape": label_shape,
        "views_per_frame": spec.views_per_frame,
        "complete": False,
    }
    _atomic_write_bytes(directory / "meta.json", json.dumps(meta, indent=1).encode())


def _fill(
    directory: Path,
    meta: Mapping[str, Any],
    source: FrameSource,
    spec: ViewSpec,
    encodings: Mapping[str, ModalityEncoding],
    backbone: Backbone,
    device: torch.device,
    rank: int,
    world: int,
    batch_frames: int,
    progress: bool,
) -> None:
    """Extract this rank's frames that are not done yet."""
    n_frames = len(meta["stems"])
    views = int(meta["views_per_frame"])
    done = _load_done(directory, n_frames)
    todo = [i for i in range(rank, n_frames, world) if not done[i]]
    features = np.load(directory / "features.npy", mmap_mode="r+")
    labels = np.load(directory / "labels.npy", mmap_mode="r+") if meta["label_shape"] else None
    done_path = directory / f"done-{rank}.npy"
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
            inputs, chunk_labels = [], []
            for index in chunk:
                stem = meta["stems"][index]
                try:
                    arrays, frame_labels = _frame_view(source[index], spec, encodings)
                    inputs.append(
                        _backbone_input(arrays, spec, encodings, backbone.patch_size, device)
                    )
                except (EncodingError, DataError) as err:
                    raise DataError(f"frame {stem!r} of {directory.name}: {err}") from err
                if labels is not None:
                    if frame_labels is None:
                        raise DataError(f"frame {stem!r} has no labels, others do")
                    chunk_labels.append(_view_labels(frame_labels, spec))
            with torch.no_grad():
                out = backbone(torch.cat(inputs)).float()  # [F * V * M, C, h, w]
            out = out.reshape(len(chunk), views, len(encodings), *out.shape[1:])
            for j, index in enumerate(chunk):
                rows = slice(index * views, (index + 1) * views)
                if tuple(out[j].shape[2:]) != tuple(features.shape[3:]):
                    raise DataError(
                        f"frame {meta['stems'][index]!r} gives features {tuple(out[j].shape[2:])}, "
                        f"expected {tuple(features.shape[3:])}: frames of a split must match"
                    )
                features[rows] = out[j].cpu().numpy().astype(np.float16)
                if labels is not None:
                    labels[rows] = chunk_labels[j]
            features.flush()
            if labels is not None:
                labels.flush()
            done[chunk] = True
            _atomic_save_npy(done_path, done)
            bar.update(len(chunk))


def open_store(directory: str | Path) -> FeatureStore:
    """Open a complete cache directory read-only.

    Raises:
        CacheError: the directory is missing, incomplete or inconsistent.
    """
    directory = Path(directory)
    meta = _read_meta(directory)
    if meta is None:
        raise CacheError(f"no feature cache at {str(directory)!r}")
    if not meta.get("complete"):
        raise CacheError(f"feature cache {str(directory)!r} is incomplete")
    try:
        features = np.load(directory / "features.npy", mmap_mode="r")
        labels = np.load(directory / "labels.npy", mmap_mode="r") if meta["label_shape"] else None
    except (OSError, ValueError) as err:
        raise CacheError(f"cannot open feature cache {str(directory)!r}: {err}") from err
    if list(features.shape) != list(meta["feature_shape"]):
        raise CacheError(
            f"feature cache {str(directory)!r}: features.npy has shape {list(features.shape)}, "
            f"meta.json says {meta['feature_shape']}"
        )
    return FeatureStore(
        path=directory,
        features=features,
        labels=labels,
        stems=tuple(meta["stems"]),
        views_per_frame=int(meta["views_per_frame"]),
    )
