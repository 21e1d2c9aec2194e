"""Offline training of the UniM2 heads on cached backbone features.

Reads in run order, like nanoGPT's ``train.py``: set-up (config, output folder, data, backbone,
feature caches, neighbours), batch sampling, initialisation (scratch or resume), validation,
then one loop (validate + keep the best, checkpoint, forward/backward, clip, step, log, stop).

Everything random flows from ``train.seed`` through one explicit generator plus torch's global
generator (dropout), both saved in the training state, and batches are a pure function of the
seed and the step, so a run killed at any point and restarted ends with the same result as an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from unim2_core.atomic import atomic_output, atomic_write_text
from unim2_core.data.datasets import DatasetInfo, FrameGroup, open_dataset
from unim2_core.data.datasets.folder import DATASET_YAML
from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_core.data.preprocess import PreprocessConfig
from unim2_core.device import resolve_device
from unim2_core.errors import ConfigError, DataError, Interrupted, TrainingError
from unim2_core.evaluation.metrics import ConfusionMatrix, SegmentationScores, score
from unim2_core.evaluation.plots import write_training_plots
from unim2_core.model.backbone import Backbone, load_backbone
from unim2_core.model.checkpoint import Bundle, ClassMapping, save_bundle
from unim2_core.model.heads import HeadsConfig, UniM2Heads
from unim2_core.model.loss import LossConfig, cmcs_loss
from unim2_core.runtime.segmenter import (
    ClusterOrder,
    clusters_from_code,
    clusters_from_similarity,
)
from unim2_core.torch_files import load_torch_file
from unim2_core.training.batches import batch_indices
from unim2_core.training.calibration import Calibration, calibrate, needs_calibration
from unim2_core.training.config import TrainConfig, config_to_dict
from unim2_core.training.feature_cache import FeatureStore, ViewSpec, extract_features
from unim2_core.training.kmeans import spherical_kmeans
from unim2_core.training.knn import cached_neighbours
from unim2_core.training.label_free import SelectionProbe, better
from unim2_core.training.tracking import Tracker, numeric_metrics, open_tracker

RESUME_NEUTRAL_KEYS = (
    "train.steps",
    "train.checkpoint_every",
    "train.device",
    "output_dir",
    "cache_dir",
    "logging.",
)
"""Config keys that may change between an interrupted run and its resumption: where files
live, how often the state is saved, trackers, the device, and ``train.steps`` (to extend a run;
it must not go below the step reached). Every other key changes results, so a difference in it
refuses the resume, naming the key."""

LOGGER = logging.getLogger(__name__)
STATE_FILE = "state.pt"
CALIBRATION_FILE = "calibration.json"
BUNDLE_FILE = "model.unim2.pt"
LOG_EVERY = 10
CLUSTER_FIT_PIXELS = 100_000


class FrameSubset:
    """A subset of a dataset's frames (a held-out validation share, for instance)."""

    def __init__(self, source: Any, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = list(indices)
        self.info: DatasetInfo = source.info
        self.stems: tuple[str, ...] = tuple(source.stems[i] for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> FrameGroup:
        group: FrameGroup = self.source[self.indices[index]]
        return group

    def has_labels(self, index: int) -> bool:
        """Whether frame ``index`` has ground truth (asks the source, which may know cheaply)."""
        if hasattr(self.source, "has_labels"):
            return bool(self.source.has_labels(self.indices[index]))
        return self[index].labels is not None


def holdout_split(n_frames: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of frame indices into (train, held-out), at least one frame in each."""
    if n_frames < 2:
        raise DataError(f"holding out a validation share needs at least 2 frames, got {n_frames}")
    order = np.random.default_rng(seed).permutation(n_frames)
    n_held = min(n_frames - 1, max(1, round(n_frames * fraction)))
    return sorted(order[n_held:].tolist()), sorted(order[:n_held].tolist())


class Splits(NamedTuple):
    """The frame sources of a run and the name under which each is reported."""

    train: Any
    selection: Any
    selection_name: str
    test: Any | None
    test_name: str | None
    info: DatasetInfo


def open_splits(config: TrainConfig) -> Splits:
    """Open the training, selection and test splits named by the config.

    Selection uses the validation split, or a seeded held-out share of the training frames
    when the dataset has none; the test split only when ``train.selection_split`` is ``test``.
    """
    section = config.dataset
    names = config.modality_names

    def split(name: str) -> Any:
        return open_dataset(
            section.kind, section.root, split=name, modalities=names, **section.options
        )

    train = split(section.train_split)
    test = split(section.test_split) if section.test_split else None
    if config.train.selection_split == "test":
        if test is None:
            raise ConfigError("train.selection_split is 'test' but dataset.test_split is null")
        return Splits(
            train,
            test,
            f"{section.test_split} (selected on test)",
            test,
            section.test_split,
            train.info,
        )
    if section.val_split:
        return Splits(
            train, split(section.val_split), section.val_split, test, section.test_split, train.info
        )
    kept, held = holdout_split(len(train), section.holdout_fraction, config.train.seed)
    selection_name = f"{section.train_split} held-out {section.holdout_fraction:g}"
    return Splits(
        FrameSubset(train, kept),
        FrameSubset(train, held),
        selection_name,
        test,
        section.test_split,
        train.info,
    )


def dataset_encodings(config: TrainConfig, info: DatasetInfo) -> dict[str, ModalityEncoding]:
    """The config's encodings, each ``depth_hha`` one without intrinsics given the dataset's
    camera of its modality (``info.intrinsics``, a folder's ``dataset.yaml``).

    Training computes HHA from every depth frame, so such an encoding needs a camera; the
    resolved intrinsics are part of the feature cache's identity and of the checkpoint.

    Raises:
        ConfigError: A ``depth_hha`` encoding without intrinsics whose modality has none in
            the dataset either.
    """
    resolved = dict(config.modalities)
    for name, encoding in config.modalities.items():
        if encoding.kind is not EncodingKind.DEPTH_HHA or encoding.intrinsics is not None:
            continue
        camera = info.intrinsics.get(name)
        if camera is None:
            raise ConfigError(
                f"modalities.{name}: the depth_hha encoding needs the camera's intrinsics: give "
                "'intrinsics' [fx, fy, cx, cy, width, height] in this encoding or, for a folder "
                f"dataset, key 'intrinsics.{name}' in {_dataset_yaml(config)!r}, which "
                "unim2_import_bag writes when the bag recorded the camera_info beside the image "
                "topic (re-import such a bag)"
            )
        resolved[name] = dataclasses.replace(encoding, intrinsics=camera)
    return resolved


def with_dataset_intrinsics(config: TrainConfig, info: DatasetInfo) -> TrainConfig:
    """``config`` with :func:`dataset_encodings`, logging where each camera came from.

    A ``depth_hha`` encoding that takes the dataset's camera is logged at INFO; one whose
    config intrinsics differ from the dataset's keeps its own, with a WARNING naming both.

    Raises:
        ConfigError: As :func:`dataset_encodings`.
    """
    where = _dataset_yaml(config)
    for name, encoding in config.modalities.items():
        camera = info.intrinsics.get(name)
        if encoding.kind is not EncodingKind.DEPTH_HHA or camera is None:
            continue
        if encoding.intrinsics is None:
            LOGGER.info(
                "modalities.%s: depth_hha intrinsics %s taken from %r (key 'intrinsics.%s')",
                name,
                camera.to_list(),
                where,
                name,
            )
        elif encoding.intrinsics != camera:
            LOGGER.warning(
                "modalities.%s: the config's intrinsics %s differ from %s in %r; the config's "
                "are used",
                name,
                encoding.intrinsics.to_list(),
                camera.to_list(),
                where,
            )
    return dataclasses.replace(config, modalities=dataset_encodings(config, info))


def _dataset_yaml(config: TrainConfig) -> str:
    """Where a folder dataset keeps its cameras, for messages."""
    return str(Path(config.dataset.root) / DATASET_YAML)


class SplitStores(NamedTuple):
    """Cached features of a run's splits (``test`` is None when it is the selection split)."""

    train: FeatureStore
    selection: FeatureStore
    test: FeatureStore | None


def eval_view(config: TrainConfig) -> ViewSpec:
    """The evaluation view of the config's protocol."""
    if config.eval.protocol == "paper":
        return ViewSpec("paper", config.eval.crop_size, interpolation=config.crops.interpolation)
    return ViewSpec("full", config.crops.shorter_side, interpolation=config.crops.interpolation)


def eval_cluster_order(config: TrainConfig) -> ClusterOrder:
    """How cluster ids are computed under the config's protocol: the reference's order
    (upsample the code, normalise, cosine) for ``paper``, the node's fast path for ``full``."""
    return "code" if config.eval.protocol == "paper" else "similarity"


def prepare_caches(
    config: TrainConfig,
    splits: Splits,
    backbone: Backbone,
    *,
    device: torch.device,
    cache_root: Path,
    progress: bool,
) -> SplitStores:
    """Extract (or reuse) the feature caches of every split (all ranks of a torchrun job).

    A ``depth_hha`` encoding without intrinsics takes the dataset's (:func:`dataset_encodings`),
    so that every tool extracts the features training uses.
    """
    encodings = dataset_encodings(config, splits.info)
    dataset_id = {
        "kind": config.dataset.kind,
        "root": str(Path(config.dataset.root).resolve()),
        "options": config_to_dict(config.dataset.options),
    }
    train_view = ViewSpec(
        "train",
        config.crops.crop_size,
        five_crop=config.crops.five_crop,
        interpolation=config.crops.interpolation,
    )
    extract = functools.partial(
        extract_features,
        dataset_id=dataset_id,
        backbone=backbone,
        encodings=encodings,
        cache_root=cache_root,
        device=device,
        progress=progress,
    )
    train = extract(splits.train, split_name="train", spec=train_view)
    selection = extract(splits.selection, split_name="selection", spec=eval_view(config))
    test = None
    if splits.test is not None and splits.test is not splits.selection:
        test = extract(splits.test, split_name="test", spec=eval_view(config))
    return SplitStores(train=train, selection=selection, test=test)


def build_heads(
    config: TrainConfig, channels: int, info: DatasetInfo | None, labelled: bool
) -> UniM2Heads:
    """Heads for this config: K = model.n_clusters, or the number of classes when unset."""
    n_classes = len(info.class_names) if info is not None and labelled else None
    n_clusters = config.model.n_clusters or n_classes
    if n_clusters is None:
        raise ConfigError("model.n_clusters must be set for unlabelled data")
    return UniM2Heads(
        HeadsConfig(
            modalities=config.modality_names,
            channels=channels,
            code_dim=config.model.code_dim,
            n_clusters=n_clusters,
            fusion=config.model.fusion,
            msn_residual=config.model.msn_residual,
            align=config.model.align,
            share_harmoniser=config.model.share_harmoniser,
            n_classes=n_classes if config.model.linear_probe else None,
            dropout=config.model.dropout,
        )
    )


class Evaluation(NamedTuple):
    """Cluster metrics of one split (and the linear probe's, when there is one)."""

    scores: SegmentationScores
    confusion: np.ndarray
    probe_miou: float | None
    probe_accuracy: float | None


@torch.no_grad()
def evaluate_store(
    heads: UniM2Heads,
    store: FeatureStore,
    *,
    patch_size: int,
    device: torch.device,
    cluster_order: ClusterOrder = "similarity",
    chunk: int = 16,
) -> Evaluation:
    """Hungarian-matched metrics of the heads on a cached, labelled evaluation split.

    Post-processing is the Segmenter's with the same ``cluster_order`` (``similarity``: the
    node's fast path; ``code``: the reference's order of the paper protocol), so validation
    numbers are those the Segmenter produces on the same views.
    """
    if store.labels is None:
        raise DataError(f"split cached at {str(store.path)!r} has no labels")
    was_training = heads.training
    heads.eval()
    n_clusters = heads.config.n_clusters
    n_classes = heads.config.n_classes
    label_size = tuple(store.labels.shape[1:])
    feature_size = store.feature_size
    proc = (feature_size[0] * patch_size, feature_size[1] * patch_size)
    confusion: ConfusionMatrix | None = None
    probe_confusion = None
    for start in range(0, store.n_views, chunk):
        idx = np.arange(start, min(start + chunk, store.n_views))
        features = store.load(idx, device)
        labels = np.asarray(store.labels[idx])
        code = heads(features)
        if cluster_order == "code":
            clusters, _ = clusters_from_code(
                code, heads.cluster_probe.centroids, output_size=label_size
            )
        else:
            clusters, _ = clusters_from_similarity(
                heads.cluster_probe.similarity(code), processing_size=proc, output_size=label_size
            )
        if confusion is None:
            n_label_classes = n_classes or int(labels[labels != 255].max(initial=0)) + 1
            confusion = ConfusionMatrix(n_clusters, n_label_classes)
        confusion.update(clusters.cpu().numpy(), labels)
        if heads.linear_probe is not None and n_classes is not None:
            logits = heads.linear_probe(code)
            predicted, _ = clusters_from_similarity(
                logits, processing_size=proc, output_size=label_size
            )
            if probe_confusion is None:
                probe_confusion = ConfusionMatrix(n_classes, n_classes)
            probe_confusion.update(predicted.cpu().numpy(), labels)
    heads.train(was_training)
    assert confusion is not None
    probe_miou = probe_acc = None
    if probe_confusion is not None:
        matrix = probe_confusion.matrix.astype(np.float64)
        tp = np.diag(matrix)
        union = matrix.sum(0) + matrix.sum(1) - tp
        present = union > 0
        probe_miou = float(100 * np.mean(tp[present] / union[present])) if present.any() else 0.0
        probe_acc = float(100 * tp.sum() / max(matrix.sum(), 1))
    return Evaluation(score(confusion.matrix), confusion.matrix, probe_miou, probe_acc)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_output(path) as stream:
        torch.save(obj, stream)


class TrainResult(NamedTuple):
    """Where a finished run left its outputs, and its final metrics."""

    output_dir: Path
    bundle_path: Path
    metrics: dict[str, Any]


StepHook = Callable[[int], None]
ValHook = Callable[[int, dict[str, Any]], None]


class Trainer:
    """One training run of UniM2 heads (RGB-only, naive fusion or full UniM2, by config).

    ``val_hook(step, record)`` is called after each validation record is logged (a
    hyperparameter search reports it for pruning); whatever it raises, ``optuna.TrialPruned``
    included, propagates out of ``run``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        restart: bool = False,
        progress: bool = True,
        step_hook: StepHook | None = None,
        val_hook: ValHook | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.step_hook = step_hook
        self.val_hook = val_hook
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.output_dir / STATE_FILE
        self.log_path = self.output_dir / "metrics.jsonl"
        if restart:
            self.state_path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
        self.device = resolve_device(config.train.device)
        self.backbone = load_backbone(
            config.backbone.name,
            config.backbone.weights,
            feature_layer=config.backbone.feature_layer,
        ).to(self.device)
        self.splits = open_splits(config)
        config = self.config = with_dataset_intrinsics(config, self.splits.info)
        self.plain_config = config_to_dict(config)
        cache_root = Path(config.cache_dir) if config.cache_dir else self.output_dir / "cache"
        self.data = prepare_caches(
            config,
            self.splits,
            self.backbone,
            device=self.device,
            cache_root=cache_root,
            progress=progress,
        )
        if self.data.train.n_views < 2:
            raise DataError("training needs at least 2 views")
        self.neighbour_plan = cached_neighbours(
            self.data.train,
            keep=config.loss.knn_keep,
            draw=config.loss.knn_neighbours,
            candidates=config.loss.knn_candidates,
        )
        self.neighbours = self.neighbour_plan.table
        self.notes = [self.neighbour_plan.describe()]
        self.calibration: Calibration | None = None
        if needs_calibration(config):
            self.calibration = calibrate(
                config, self.data.train, self.neighbour_plan, device=self.device
            )
            config = self.config = self.calibration.config
            self.plain_config = config_to_dict(config)
            atomic_write_text(
                self.output_dir / CALIBRATION_FILE,
                json.dumps(self.calibration.to_dict(), indent=2) + "\n",
            )
            self.notes.append(self.calibration.describe())
        self.labelled = self.data.selection.labels is not None
        self.loss_config = LossConfig(
            modalities=config.loss.modalities,
            points=config.loss.points,
            random_pairs=config.loss.random_pairs,
            pointwise=config.loss.pointwise,
            zero_clamp=config.loss.zero_clamp,
        )
        self._init_model()
        self.probe = SelectionProbe(
            self.data.train,
            self.data.selection,
            n_clusters=self.heads.config.n_clusters,
            loss_config=self.loss_config,
            modalities=config.modality_names,
            seed=config.train.seed,
            device=self.device,
            batch_size=config.train.batch_size,
        )

    def _init_model(self) -> None:
        """Fresh heads and optimisers from the seed, then the saved state if there is one."""
        config = self.config
        torch.manual_seed(config.train.seed)
        self.heads = build_heads(config, self.backbone.channels, self.splits.info, self.labelled)
        self.heads.to(self.device)
        probe_params = list(self.heads.cluster_probe.parameters())
        if self.heads.linear_probe is not None:
            probe_params += list(self.heads.linear_probe.parameters())
        probe_ids = {id(p) for p in probe_params}
        self.head_params = [p for p in self.heads.parameters() if id(p) not in probe_ids]
        self.optimizer = torch.optim.Adam(self.head_params, lr=config.train.lr)
        self.probe_optimizer = torch.optim.Adam(probe_params, lr=config.train.probe_lr)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.step = 0
        self._resumed_step = 0
        self.best: dict[str, Any] | None = None
        if self.state_path.is_file():
            self._resume()

    def _resume(self) -> None:
        try:
            loaded = load_torch_file(
                self.state_path, what="a unim2 training state", error=TrainingError
            )
        except TrainingError as err:
            raise TrainingError(f"cannot resume: {err}; pass --restart to start over") from err
        if not isinstance(loaded, dict) or "config" not in loaded:
            raise TrainingError(
                f"cannot resume: {str(self.state_path)!r} is not a unim2 training state; pass "
                "--restart to start over"
            )
        state: dict[str, Any] = loaded
        changed = config_differences(state["config"], self.plain_config)
        fixed = [key for key in changed if not key.startswith(RESUME_NEUTRAL_KEYS)]
        if fixed:
            shown = "; ".join(changed[key] for key in fixed)
            raise TrainingError(
                f"{str(self.output_dir)!r} holds a run with a different configuration ({shown}); "
                "only train.steps, train.checkpoint_every, train.device, logging.*, output_dir "
                "and cache_dir may change on resume. Use the old values, another output_dir, or "
                "pass --restart to discard the run"
            )
        if int(state["step"]) > self.config.train.steps:
            raise TrainingError(
                f"{str(self.output_dir)!r} holds a run already at step {int(state['step'])}, "
                f"beyond train.steps={self.config.train.steps}; raise train.steps or pass "
                "--restart to discard the run"
            )
        self.heads.load_state_dict(state["heads"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.probe_optimizer.load_state_dict(state["probe_optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self._resumed_step = self.step
        self.best = state["best"]
        self._truncate_log(self.step)

    @property
    def resumed_step(self) -> int:
        """The step a saved state brought this run to at start-up (0: a fresh run)."""
        return self._resumed_step

    def _save_state(self) -> None:
        state = {
            "step": self.step,
            "config": self.plain_config,
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "probe_optimizer": self.probe_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best": self.best,
        }
        _atomic_torch_save(state, self.state_path)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the resumed step, so the log reads as one run."""
        if not self.log_path.is_file():
            return
        kept = [
            line
            for line in self.log_path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        atomic_write_text(self.log_path, "".join(f"{line}\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with self.log_path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def _warn(self, message: str) -> None:
        """A WARNING on the ``unim2_core.training.trainer`` logger and a ``warning`` log record."""
        LOGGER.warning("%s: %s", self.output_dir, message)
        self._log({"step": self.step, "kind": "warning", "message": message})

    def batch_features(self, views: np.ndarray) -> Tensor:
        """Frozen features of training views [B, M, C, h, w], read from the cache."""
        return self.data.train.load(views, self.device)

    def _train_step(self) -> dict[str, float]:
        config, data = self.config, self.data
        self.heads.train()
        anchors = batch_indices(
            self.step,
            n_views=data.train.n_views,
            batch_size=config.train.batch_size,
            seed=config.train.seed,
        )
        ranks = torch.randint(
            self.neighbour_plan.draw,
            (len(anchors),),
            generator=self.generator,
        ).numpy()
        partners = self.neighbours[anchors, ranks]
        feats = self.batch_features(anchors)  # [B, M, C, h, w]
        feats_knn = self.batch_features(partners)
        code = self.heads(feats, self._dropout_mask(len(anchors)))  # [B, D, h, w]
        code_knn = self.heads(feats_knn, self._dropout_mask(len(partners)))
        terms = cmcs_loss(
            self.heads.harmonise,
            self.loss_config,
            feats,
            code,
            feats_knn,
            code_knn,
            modalities=config.modality_names,
            generator=self.generator,
        )
        probe_loss = self.heads.cluster_probe.loss(code)
        linear_loss = None
        if self.heads.linear_probe is not None and data.train.labels is not None:
            labels = torch.from_numpy(np.asarray(data.train.labels[anchors]).astype(np.int64))
            if bool((labels != 255).any()):  # a batch of only unlabelled frames has no CE
                linear_loss = self.heads.linear_probe.loss(code, labels.to(self.device))
                probe_loss = probe_loss + linear_loss
        if not torch.isfinite(terms.total):
            raise TrainingError(f"loss became {terms.total.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.probe_optimizer.zero_grad(set_to_none=True)
        (terms.total + probe_loss).backward()  # type: ignore[no-untyped-call]
        if config.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.head_params, config.train.grad_clip)
        self.optimizer.step()
        self.probe_optimizer.step()
        record = {
            "loss": terms.total.item(),
            "cluster_loss": self.heads.cluster_probe.loss(code).item(),
        }
        if linear_loss is not None:
            record["linear_loss"] = linear_loss.item()
        record.update({f"loss/{k}": v.item() for k, v in terms.terms.items()})
        return record

    @torch.no_grad()
    def _fit_clusters(self, heads: UniM2Heads) -> None:
        """Set the cluster centroids by spherical k-means on codes of training pixels.

        Up to ``CLUSTER_FIT_PIXELS`` pixels, spread evenly over the training views and drawn
        with a generator seeded by ``train.seed`` and the step (the training generator is not
        touched, so this does not change the run's other random choices).
        """
        store = self.data.train
        height, width = store.feature_size
        per_view = min(height * width, math.ceil(CLUSTER_FIT_PIXELS / store.n_views))
        generator = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + self.step)
        was_training = heads.training
        heads.eval()
        parts = []
        for start in range(0, store.n_views, 32):
            idx = np.arange(start, min(start + 32, store.n_views))
            code = heads(store.load(idx, self.device)).flatten(2)  # [B, D, h*w]
            keys = torch.rand(len(idx), height * width, generator=generator)
            picks = keys.argsort(dim=1)[:, :per_view].to(self.device)  # [B, S]
            code = code.gather(2, picks[:, None].expand(-1, code.shape[1], -1))
            parts.append(code.transpose(1, 2).reshape(-1, code.shape[1]))  # [B*S, D]
        heads.train(was_training)
        centroids = spherical_kmeans(
            torch.cat(parts), heads.config.n_clusters, seed=self.config.train.seed
        )
        heads.cluster_probe.centroids.copy_(centroids)

    def _dropout_mask(self, batch: int) -> Tensor | None:
        """Which modalities each view shows the fusion ([B, M] bool), or None for all.

        With ``train.modality_dropout`` p > 0 every auxiliary modality of every view is hidden
        with probability p, drawn from the run's generator (so resume stays exact); RGB always
        stays. With p = 0 nothing is drawn, so the paper's training is unchanged bit for bit.
        """
        rate = self.config.train.modality_dropout
        if rate == 0:
            return None
        n_aux = len(self.config.modality_names) - 1
        kept = torch.rand(batch, n_aux, generator=self.generator) >= rate  # [B, M - 1]
        present = torch.cat([torch.ones(batch, 1, dtype=torch.bool), kept], dim=1)  # [B, M]
        return present.to(self.device)

    def _validate(self) -> dict[str, Any]:
        """Measure health and label-free criteria (and mIoU when labelled); keep the best.

        With labels the best checkpoint is the one of highest mIoU; without, the one of best
        ``train.label_free_criterion``, a collapsed checkpoint never beating a healthy one.
        """
        if self.config.model.cluster_fit == "kmeans":
            self._fit_clusters(self.heads)
        measured = self.probe.measure(self.heads)
        health = measured.health.to_record()
        record: dict[str, Any] = {"step": self.step, "split": self.splits.selection_name}
        record.update({f"health/{k}": v for k, v in health.items()})
        record.update({f"criterion/{k}": v for k, v in measured.criteria.items()})
        if measured.health.collapsed:
            self._warn(
                f"step {self.step}: clusters COLLAPSED on {self.splits.selection_name}: "
                f"{measured.health.reason}"
            )
        scores: dict[str, Any] = {}
        if self.labelled:
            evaluation = evaluate_store(
                self.heads,
                self.data.selection,
                patch_size=self.backbone.patch_size,
                device=self.device,
                cluster_order=eval_cluster_order(self.config),
            )
            scores = {
                "miou": evaluation.scores.miou,
                "accuracy": evaluation.scores.accuracy,
                "mapping": evaluation.scores.mapping.tolist(),
            }
            record["miou"] = evaluation.scores.miou
            record["accuracy"] = evaluation.scores.accuracy
            if evaluation.probe_miou is not None:
                record["linear_probe_miou"] = evaluation.probe_miou
                record["linear_probe_accuracy"] = evaluation.probe_accuracy
            criterion = "miou"
            value = evaluation.scores.miou
            improved = self.best is None or value > self.best["value"]
        else:
            criterion = self.config.train.label_free_criterion
            value = measured.criteria[criterion]
            healthy = not measured.health.collapsed
            best_healthy = self.best is not None and not self.best["collapsed"]
            improved = (
                self.best is None
                or (healthy and not best_healthy)
                or (healthy == best_healthy and better(criterion, value, self.best["value"]))
            )
        if improved:
            self.best = {
                "step": self.step,
                "criterion": criterion,
                "value": value,
                "collapsed": measured.health.collapsed,
                **scores,
                "heads": {k: v.detach().cpu().clone() for k, v in self.heads.state_dict().items()},
            }
        return record

    def run(self) -> TrainResult:
        """Train to ``train.steps`` (resuming if a state exists), then write the bundle."""
        config = self.config
        atomic_write_text(
            self.output_dir / "config.yaml", yaml.safe_dump(self.plain_config, sort_keys=False)
        )
        total = config.train.steps
        bar = tqdm(
            total=total,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        if self.step == 0:
            self._log({"step": 0, "kind": "setup", **self._setup_record()})
        started = time.perf_counter()
        tracker = open_tracker(config.logging, self.output_dir, self.plain_config)
        try:
            with bar, _StopRequests() as stop:
                self._loop(bar, tracker, stop)
        finally:
            tracker.close()
        return self._finish(time.perf_counter() - started)

    def _setup_record(self) -> dict[str, Any]:
        """What the run chose from its data: the kNN plan and calibrated shifts, if any."""
        record: dict[str, Any] = {"knn": self.neighbour_plan.summary()}
        if self.calibration is not None:
            record["calibration"] = self.calibration.to_dict()
        return record

    def _loop(self, bar: tqdm[Any], tracker: Tracker, stop: _StopRequests) -> None:
        """Steps to ``train.steps``: log, validate, checkpoint and call the hooks on schedule.

        A SIGINT / SIGTERM ends the loop between two steps with the state saved at the step
        reached (raising :class:`Interrupted`), so a restart loses nothing.
        """
        config = self.config
        total = config.train.steps
        while self.step < total:
            if stop.signal_number is not None:
                self._save_state()
                raise Interrupted(
                    f"training stopped at step {self.step} of {total}; the state is saved in "
                    f"{str(self.state_path)!r}: run the same command again to resume",
                    stop.signal_number,
                )
            record = self._train_step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.step % LOG_EVERY == 0 or self.step == total:
                self._log({"step": self.step, "kind": "train", **record})
                tracker.log(self.step, numeric_metrics(record, prefix="train/"))
            if self.step % config.train.val_every == 0 or self.step == total:
                val = self._validate()
                self._log({"kind": "val", **val})
                tracker.log(self.step, numeric_metrics(val, prefix="val/"))
                if self.labelled:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", miou=f"{val['miou']:.1f}")
                    if self.val_hook is not None:
                        self.val_hook(self.step, val)
            if self.step % config.train.checkpoint_every == 0 or self.step == total:
                self._save_state()
            if self.step_hook is not None:
                self.step_hook(self.step)

    def _finish(self, seconds: float) -> TrainResult:
        """Write the bundle of the selected heads, the final metrics and the plots."""
        final_heads = UniM2Heads(self.heads.config)
        metrics: dict[str, Any] = {
            "steps": self.step,
            "train_seconds_this_session": round(seconds, 2),
            **self._setup_record(),
        }
        mapping = None
        assert self.best is not None  # the last step always validates
        final_heads.load_state_dict(self.best["heads"])
        selection: dict[str, Any] = {
            "split": self.splits.selection_name,
            "step": self.best["step"],
            "criterion": self.best["criterion"],
            "value": self.best["value"],
            "labelled": self.labelled,
        }
        if self.labelled:
            selection.update(miou=self.best["miou"], accuracy=self.best["accuracy"])
            info = self.splits.info
            mapping = ClassMapping(
                cluster_to_class=tuple(int(c) for c in self.best["mapping"]),
                class_names=tuple(info.class_names),
                palette=np.asarray(info.palette, dtype=np.uint8),
            )
        else:
            selection["note"] = (
                f"no labels: selected by the label-free criterion {self.best['criterion']!r}"
            )
        metrics["selection"] = selection
        LOGGER.info(
            "%s: checkpoint of step %d selected on %s by %s = %.4g",
            self.output_dir,
            self.best["step"],
            self.splits.selection_name,
            self.best["criterion"],
            self.best["value"],
        )
        final_heads.to(self.device)
        final = self.probe.measure(final_heads)
        metrics["health"] = final.health.to_record()
        metrics["collapsed"] = final.health.collapsed
        metrics["label_free_criteria"] = final.criteria
        if final.health.collapsed:
            self._warn(f"the selected model's clusters are COLLAPSED: {final.health.reason}")
        if self.data.test is not None and self.data.test.labels is not None:
            test = evaluate_store(
                final_heads,
                self.data.test,
                patch_size=self.backbone.patch_size,
                device=self.device,
                cluster_order=eval_cluster_order(self.config),
            )
            metrics["test"] = {
                "split": self.splits.test_name,
                "miou": test.scores.miou,
                "accuracy": test.scores.accuracy,
                "per_class_iou": _plain_floats(test.scores.per_class_iou),
            }
        bundle = Bundle.from_heads(
            final_heads,
            backbone=self.backbone.identity,
            encodings=self.config.modalities,
            preprocess=PreprocessConfig(
                shorter_side=self.config.crops.shorter_side,
                interpolation=self.config.crops.interpolation,
            ),
            class_mapping=mapping,
            training=self.plain_config,
            metrics=metrics,
        )
        bundle_path = save_bundle(bundle, self.output_dir / BUNDLE_FILE)
        atomic_write_text(self.output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_training_plots(self.output_dir)
        return TrainResult(self.output_dir, bundle_path, metrics)


class _StopRequests:
    """While entered (in the main thread), SIGINT and SIGTERM only set ``signal_number``.

    The training loop polls it between steps, so an interruption never lands in the middle of
    an optimiser step. A second SIGINT raises KeyboardInterrupt at once, for a user who does
    not want to wait for the step to end. Outside the main thread (where Python cannot install
    handlers) nothing changes.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and self.signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = number

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, str]:
    """Dotted keys whose values differ between two plain configs, each with ``key: a -> b``."""
    differences: dict[str, str] = {}

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in list(a) + [k for k in b if k not in a]:
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{prefix}{key}.")
        elif a != b:
            key = prefix.rstrip(".")
            differences[key] = f"{key}: {_shown(a)} -> {_shown(b)}"

    walk(old, new, "")
    return differences


_ABSENT = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def _plain_floats(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def calibrate_run(config: TrainConfig, *, progress: bool = True) -> Calibration:
    """Calibrate the config's ``auto`` shifts without training (``unim2_calibrate``).

    Extracts (or reuses) the run's feature caches and kNN table exactly as training would, so
    ``unim2_train`` with the same config finds them ready and places the same shifts.
    """
    device = resolve_device(config.train.device)
    backbone = load_backbone(
        config.backbone.name, config.backbone.weights, feature_layer=config.backbone.feature_layer
    ).to(device)
    cache_root = Path(config.cache_dir) if config.cache_dir else Path(config.output_dir) / "cache"
    splits = open_splits(config)
    config = with_dataset_intrinsics(config, splits.info)
    stores = prepare_caches(
        config, splits, backbone, device=device, cache_root=cache_root, progress=progress
    )
    plan = cached_neighbours(
        stores.train,
        keep=config.loss.knn_keep,
        draw=config.loss.knn_neighbours,
        candidates=config.loss.knn_candidates,
    )
    return calibrate(config, stores.train, plan, device=device)


def train(config: TrainConfig, *, restart: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``config``; see ``Trainer``."""
    return Trainer(config, restart=restart, progress=progress).run()
