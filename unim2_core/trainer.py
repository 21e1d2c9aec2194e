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

import functools
import json
import math
import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from unim2_core.atomic import atomic_output, atomic_write_text
from unim2_core.backbone import Backbone, load_backbone
from unim2_core.checkpoint import Bundle, ClassMapping, save_bundle
from unim2_core.config import TrainConfig, config_to_dict
from unim2_core.datasets import DatasetInfo, FrameGroup, open_dataset
from unim2_core.errors import ConfigError, DataError, TrainingError
from unim2_core.feature_cache import FeatureStore, ViewSpec, extract_features
from unim2_core.knn import cached_neighbours
from unim2_core.loss import LossConfig, cmcs_loss
from unim2_core.metrics import ConfusionMatrix, SegmentationScores, score
from unim2_core.model import HeadsConfig, UniM2Heads
from unim2_core.plots import write_training_plots
from unim2_core.preprocess import PreprocessConfig
from unim2_core.segmenter import clusters_from_similarity, resolve_device
from unim2_core.tracking import Tracker, numeric_metrics, open_tracker

STATE_FILE = "state.pt"
BUNDLE_FILE = "model.unim2.pt"
LOG_EVERY = 10


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


def prepare_caches(
    config: TrainConfig,
    splits: Splits,
    backbone: Backbone,
    *,
    device: torch.device,
    cache_root: Path,
    progress: bool,
) -> SplitStores:
    """Extract (or reuse) the feature caches of every split (all ranks of a torchrun job)."""
    encodings = config.modalities
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


def batch_indices(step: int, *, n_views: int, batch_size: int, seed: int) -> np.ndarray:
    """The anchor views of ``step``: consecutive slices of per-epoch seeded permutations."""
    start = step * batch_size
    out: list[int] = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_views)
        perm = np.random.default_rng([seed, epoch]).permutation(n_views)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)


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
    chunk: int = 16,
) -> Evaluation:
    """Hungarian-matched metrics of the heads on a cached, labelled evaluation split.

    Post-processing is the Segmenter's (``clusters_from_similarity``), so validation numbers
    are those the node would produce on the same views.
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
        self.plain_config = config_to_dict(config)
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
        self.neighbours = cached_neighbours(self.data.train, keep=config.loss.knn_keep)
        self.labelled = self.data.selection.labels is not None
        self.loss_config = LossConfig(
            modalities=config.loss.modalities,
            points=config.loss.points,
            random_pairs=config.loss.random_pairs,
            pointwise=config.loss.pointwise,
            zero_clamp=config.loss.zero_clamp,
        )
        self._init_model()

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
        self.best: dict[str, Any] | None = None
        if self.state_path.is_file():
            self._resume()

    def _resume(self) -> None:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
            raise TrainingError(
                f"cannot resume from {str(self.state_path)!r}: {err}; pass --restart to start over"
            ) from err
        if state.get("config") != self.plain_config:
            raise TrainingError(
                f"{str(self.output_dir)!r} holds a run with a different configuration; use another "
                "output_dir or pass --restart to discard it"
            )
        self.heads.load_state_dict(state["heads"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.probe_optimizer.load_state_dict(state["probe_optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.best = state["best"]
        self._truncate_log(self.step)

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
            config.loss.knn_neighbours,
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
        evaluation = evaluate_store(
            self.heads, self.data.selection, patch_size=self.backbone.patch_size, device=self.device
        )
        record: dict[str, Any] = {
            "step": self.step,
            "split": self.splits.selection_name,
            "miou": evaluation.scores.miou,
            "accuracy": evaluation.scores.accuracy,
        }
        if evaluation.probe_miou is not None:
            record["linear_probe_miou"] = evaluation.probe_miou
            record["linear_probe_accuracy"] = evaluation.probe_accuracy
        if self.best is None or evaluation.scores.miou > self.best["miou"]:
            self.best = {
                "step": self.step,
                "miou": evaluation.scores.miou,
                "accuracy": evaluation.scores.accuracy,
                "heads": {k: v.detach().cpu().clone() for k, v in self.heads.state_dict().items()},
                "mapping": evaluation.scores.mapping.tolist(),
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
        started = time.perf_counter()
        tracker = open_tracker(config.logging, self.output_dir, self.plain_config)
        try:
            with bar:
                self._loop(bar, tracker)
        finally:
            tracker.close()
        return self._finish(time.perf_counter() - started)

    def _loop(self, bar: tqdm[Any], tracker: Tracker) -> None:
        """Steps to ``train.steps``: log, validate, checkpoint and call the hooks on schedule."""
        config = self.config
        total = config.train.steps
        while self.step < total:
            record = self._train_step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if self.step % LOG_EVERY == 0 or self.step == total:
                self._log({"step": self.step, "kind": "train", **record})
                tracker.log(self.step, numeric_metrics(record, prefix="train/"))
            if self.labelled and (self.step % config.train.val_every == 0 or self.step == total):
                val = self._validate()
                self._log({"kind": "val", **val})
                tracker.log(self.step, numeric_metrics(val, prefix="val/"))
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
        }
        mapping = None
        if self.best is not None:
            final_heads.load_state_dict(self.best["heads"])
            metrics["selection"] = {
                "split": self.splits.selection_name,
                "step": self.best["step"],
                "miou": self.best["miou"],
                "accuracy": self.best["accuracy"],
            }
            info = self.splits.info
            mapping = ClassMapping(
                cluster_to_class=tuple(int(c) for c in self.best["mapping"]),
                class_names=tuple(info.class_names),
                palette=np.asarray(info.palette, dtype=np.uint8),
            )
        else:
            final_heads.load_state_dict(self.heads.state_dict())
            metrics["selection"] = {
                "split": None,
                "step": self.step,
                "note": "no labels: last step",
            }
        final_heads.to(self.device)
        if self.data.test is not None and self.data.test.labels is not None:
            test = evaluate_store(
                final_heads, self.data.test, patch_size=self.backbone.patch_size, device=self.device
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


def _plain_floats(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def train(config: TrainConfig, *, restart: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume) the run described by ``config``; see ``Trainer``."""
    return Trainer(config, restart=restart, progress=progress).run()
