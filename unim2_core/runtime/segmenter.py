"""Segmenter: raw modality arrays in robot units -> per-pixel label map.

The one inference object: the trainer's evaluator, the replay tool and the node all call it, so
preprocessing, backbone, heads and cluster assignment cannot drift apart between them.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding, check_group
from unim2_core.data.preprocess import encode_group, processing_size, to_backbone_batch
from unim2_core.device import resolve_device
from unim2_core.model.backbone import Backbone, load_backbone
from unim2_core.model.checkpoint import Bundle, load_bundle

Device = str
"""A device name checked by :func:`unim2_core.device.resolve_device` (``cuda:1``...)."""
Precision = Literal["fp32", "fp16", "bf16"]
ClusterOrder = Literal["similarity", "code"]
CLUSTER_ORDERS: tuple[ClusterOrder, ...] = ("similarity", "code")
PRECISIONS: dict[Precision, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class LabelInfo(NamedTuple):
    """What one output label id means."""

    id: int
    name: str
    color: tuple[int, int, int]


class SegmentationResult(NamedTuple):
    """Output for one frame group, at the input resolution.

    Attributes:
        labels: HxW label ids (uint8, or uint16 when there are more than 255 ids).
        confidence: HxW float32 cosine similarity of each pixel's code to its centroid, when
            requested.
    """

    labels: np.ndarray
    confidence: np.ndarray | None


class StagedGroup(NamedTuple):
    """One frame group encoded and on its way to the model's device (:meth:`Segmenter.stage`).

    Attributes:
        pixels: [M', 3, h, w] backbone input on the model's device, in the backbone's dtype
            (for ONNX Runtime: on the CPU, fp32).
        present: The modalities in ``pixels``, in model order.
        output_size: (H, W) of the input arrays, the size of the labels.
        ready: On CUDA, the event recorded on the copy stream after ``pixels`` was written;
            None on the CPU, where ``pixels`` is complete when ``stage`` returns.
    """

    pixels: Tensor
    present: tuple[str, ...]
    output_size: tuple[int, int]
    ready: torch.cuda.Event | None


class PendingSegmentation:
    """Labels (and confidences) whose device work is queued; :meth:`result` waits for them.

    On CUDA the kernels and the copy of the outputs into pinned host memory are queued when
    :meth:`Segmenter.launch` returns, so the caller's thread is free (to stage the next group)
    while the GPU works. On the CPU the outputs are complete already.
    """

    def __init__(
        self,
        labels: Tensor,
        confidence: Tensor | None,
        *,
        done: torch.cuda.Event | None,
        label_dtype: type[np.unsignedinteger],
    ) -> None:
        self._labels = labels
        self._confidence = confidence
        self._done = done
        self._label_dtype = label_dtype

    def result(self) -> SegmentationResult:
        """The outputs as numpy arrays, once the device has produced them."""
        if self._done is not None:
            self._done.synchronize()
        labels = self._labels.numpy().astype(self._label_dtype)
        confidence = None if self._confidence is None else self._confidence.numpy()
        return SegmentationResult(labels=labels, confidence=confidence)


def distinct_palette(n: int) -> np.ndarray:
    """``n`` well-separated RGB colours (golden-ratio hue steps), [n, 3] uint8, deterministic."""
    colors = []
    for index in range(n):
        hue = (index * 0.618033988749895) % 1.0
        value = 0.95 if index % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, value)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.asarray(colors, dtype=np.uint8).reshape(n, 3)


def clusters_from_similarity(
    similarity: Tensor, *, processing_size: tuple[int, int], output_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Cluster ids and their cosine similarity at ``output_size`` from [B, K, h, w] similarities.

    Similarities are upsampled bilinearly to the processing resolution, the best centroid is
    chosen there, and ids are brought to the output resolution with nearest neighbour.

    Returns:
        ``(clusters [B, H, W] int64, best [B, H, W] float)``.
    """
    similarity = F.interpolate(
        similarity, size=processing_size, mode="bilinear", align_corners=False
    )
    best, clusters = similarity.max(dim=1)  # [B, h', w']
    if tuple(processing_size) != tuple(output_size):
        clusters = F.interpolate(clusters[:, None].float(), size=output_size, mode="nearest-exact")
        clusters = clusters[:, 0].long()
        best = F.interpolate(best[:, None], size=output_size, mode="nearest-exact")[:, 0]
    return clusters, best


def clusters_from_code(
    code: Tensor, centroids: Tensor, *, output_size: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Cluster ids and their cosine similarity in the reference implementation's order.

    The paper's evaluation (STEGO / UniM2 reference) upsamples the code bilinearly to the label
    size, L2-normalises every upsampled pixel code and only then takes the cosine with the
    centroids. ``clusters_from_similarity`` (the node's fast path) takes the cosine at feature
    resolution and upsamples the K similarities instead; the two disagree near cluster borders
    (on random codes a few percent of pixels), so ``eval.protocol: paper`` uses this order.

    Args:
        code: [B, D, h, w] codes at feature resolution (any norm).
        centroids: [K, D] centroids (any norm).
        output_size: Label size (H, W) the code is upsampled to.

    Returns:
        ``(clusters [B, H, W] int64, best [B, H, W] float)``.
    """
    upsampled = F.interpolate(code, size=output_size, mode="bilinear", align_corners=False)
    similarity = torch.einsum(
        "bdhw,kd->bkhw", F.normalize(upsampled, dim=1), F.normalize(centroids, dim=1)
    )  # [B, K, H, W]
    best, clusters = similarity.max(dim=1)
    return clusters, best


def present_modalities(modalities: Sequence[str], missing: Collection[str]) -> tuple[str, ...]:
    """A model's ``modalities`` (RGB first) less ``missing``, in model order.

    Raises:
        ValueError: ``missing`` names RGB (the anchor is always needed) or a modality the
            model does not use.
    """
    unknown = [m for m in missing if m not in modalities[1:]]
    if unknown:
        raise ValueError(
            f"missing modalities {unknown} are not auxiliary modalities of this model "
            f"(auxiliary: {list(modalities[1:])}); RGB cannot be missing"
        )
    return tuple(m for m in modalities if m not in missing)


class FrameSegmenter(Protocol):
    """What a caller of a segmenter uses, whichever runtime runs the model: :class:`Segmenter`
    (PyTorch) or ``onnx_segmenter.OnnxSegmenter`` (ONNX Runtime). The node holds one of these
    and never asks which."""

    labels_table: list[LabelInfo]

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names the model needs, ``rgb`` first."""
        ...

    @property
    def encodings(self) -> dict[str, ModalityEncoding]:
        """Encoding of each modality, as trained (the node adjusts its ranges in place)."""
        ...

    @property
    def device_label(self) -> str:
        """Where the model runs, for logs and diagnostics (``cpu``, ``cuda:0``,
        ``onnxruntime:CPUExecutionProvider``...)."""
        ...

    @property
    def launch_is_asynchronous(self) -> bool:
        """Whether ``launch`` returns before the outputs are computed (PyTorch on CUDA), so that
        staging the next group meanwhile overlaps the device's work."""
        ...

    def stage(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> StagedGroup:
        """Encode one frame group into the model's input (see ``Segmenter.stage``)."""
        ...

    def launch(self, staged: StagedGroup, *, with_confidence: bool = False) -> PendingSegmentation:
        """Start segmenting a staged group (see ``Segmenter.launch``)."""
        ...

    def __call__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        with_confidence: bool = False,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> SegmentationResult:
        """Segment one frame group of raw arrays (see ``Segmenter.__call__``)."""
        ...


class Segmenter:
    """A trained bundle on a loaded backbone, ready to segment frame groups.

    A call runs in two steps that a pipelined caller (the node) can separate: :meth:`stage`
    (CPU encoding, the copy to the device and the resize to the backbone input) and
    :meth:`launch` / :meth:`run` (backbone, heads, cluster assignment). On CUDA, ``stage`` copies
    from pinned host memory on a side stream, so the next group's conversion and upload overlap
    the current group's compute; ``segmenter(arrays)`` is ``run(stage(arrays))``.

    Args:
        bundle: The trained heads and their settings.
        backbone: The frozen backbone; its identity must match the bundle's.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: Backbone precision (``fp32``, ``fp16``, ``bf16``); the small heads always run
            in fp32.
        shorter_side: Processing resolution (shorter side, rounded to the patch size); the
            bundle's default when None.
        apply_mapping: Output class ids through the bundle's cluster -> class mapping when it has
            one; False gives raw cluster ids (what the Hungarian evaluator needs).
        cluster_order: ``similarity`` (default, the node's fast path: cosine at feature
            resolution, similarities upsampled, see ``clusters_from_similarity``) or ``code``
            (the reference's order: code upsampled to the output size, normalised, then the
            cosine, see ``clusters_from_code``; what ``eval.protocol: paper`` uses).
        compile: Run the backbone's forward through ``torch.compile`` (TorchInductor, default
            mode). Only the backbone is compiled: it is nearly all of the frame time, while the
            heads are a few 1x1 convolutions. Shapes are static (``dynamic=False``): a camera
            gives one input size, so the only shapes are the batch sizes of the present
            modalities (one per number of present modalities, fewer than dynamo's limit of
            8 recompilations), and fully specialised kernels are the fastest. The first frame
            of each shape pays its compilation (seconds on a GPU, up to a minute; about 5 s for
            a 2-block ViT-S on 2 CPU cores). No CUDA graphs (``reduce-overhead``): their reused
            output buffers do not suit the pipelined calls of the node's inference thread.

    Raises:
        CheckpointError: the backbone does not match the bundle.
        ConfigError: an unknown device, or one torch does not see.
        ValueError: an unknown precision or cluster order, or a non-positive resolution.
    """

    def __init__(
        self,
        bundle: Bundle,
        backbone: Backbone,
        *,
        device: Device = "auto",
        precision: Precision = "fp32",
        shorter_side: int | None = None,
        apply_mapping: bool = True,
        cluster_order: ClusterOrder = "similarity",
        compile: bool = False,
    ) -> None:
        bundle.check_compatible(backbone=backbone.identity)
        if cluster_order not in CLUSTER_ORDERS:
            raise ValueError(
                f"cluster_order must be one of {CLUSTER_ORDERS}, got {cluster_order!r}"
            )
        self.cluster_order = cluster_order
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        if shorter_side is not None and shorter_side < 1:
            raise ValueError(f"shorter_side must be positive, got {shorter_side}")
        self.bundle = bundle
        self.device = resolve_device(device)
        self.precision = precision
        self.compiled = compile
        self.shorter_side = shorter_side or bundle.preprocess.shorter_side
        self.backbone = backbone.to(self.device, PRECISIONS[precision])
        self._backbone_forward: Callable[[Tensor], Tensor] = (
            cast(Callable[[Tensor], Tensor], torch.compile(self.backbone, dynamic=False))
            if compile
            else self.backbone
        )
        self._copy_stream: torch.cuda.Stream | None = None
        if self.device.type == "cuda":
            self._copy_stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        self.heads = bundle.build_heads().to(self.device)
        self.labels_table, lookup = label_table(bundle, apply_mapping=apply_mapping)
        self._lookup = torch.as_tensor(lookup, device=self.device)
        self._label_dtype = np.uint8 if len(self.labels_table) <= 255 else np.uint16

    @classmethod
    def from_files(
        cls,
        checkpoint: str | Path,
        backbone_weights: str | Path,
        *,
        device: Device = "auto",
        precision: Precision = "fp32",
        shorter_side: int | None = None,
        apply_mapping: bool = True,
        compile: bool = False,
    ) -> Segmenter:
        """Load a checkpoint bundle and the backbone weights it was trained with.

        Raises:
            CheckpointError: unreadable or mismatching checkpoint.
            BackboneError: missing or invalid backbone weights.
        """
        bundle = load_bundle(checkpoint)
        backbone = load_backbone(
            bundle.backbone.name, backbone_weights, feature_layer=bundle.backbone.feature_layer
        )
        return cls(
            bundle,
            backbone,
            device=device,
            precision=precision,
            shorter_side=shorter_side,
            apply_mapping=apply_mapping,
            compile=compile,
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names the model needs, ``rgb`` first."""
        return self.bundle.modalities

    @property
    def encodings(self) -> dict[str, ModalityEncoding]:
        """Encoding of each modality, as trained."""
        return self.bundle.encodings

    @property
    def device_label(self) -> str:
        """The torch device (``cpu``, ``cuda:0``...), for logs and diagnostics."""
        return str(self.device)

    @property
    def launch_is_asynchronous(self) -> bool:
        """True on CUDA: :meth:`launch` only queues the work (see ``FrameSegmenter``)."""
        return self._copy_stream is not None

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """The backbone input size used for an input of ``height`` x ``width``."""
        return processing_size(
            height, width, shorter_side=self.shorter_side, patch_size=self.backbone.patch_size
        )

    def present_modalities(self, missing: Collection[str] = ()) -> tuple[str, ...]:
        """The model's modalities less ``missing`` (see :func:`present_modalities`)."""
        return present_modalities(self.modalities, missing)

    @torch.inference_mode()
    def stage(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> StagedGroup:
        """Encode one frame group and build its backbone input on the model's device.

        On CUDA the encoded images are pinned and copied without blocking on a side stream,
        where the resize and normalisation run too; the returned event marks the end of that
        work, and :meth:`launch` makes the compute stream wait for it (not the host).

        Args:
            arrays: Raw array per modality; those in ``missing`` may be left out.
            intrinsics: The frame's camera intrinsics per modality (``depth_hha``); see
                ``preprocess.encode_group``.
            missing: Auxiliary modalities whose stream is lost: neither needed in ``arrays``
                nor run through the backbone.

        Raises:
            EncodingError: a needed modality is missing, sizes differ, or an array is invalid.
            ValueError: ``missing`` names RGB or a modality the model does not use.
        """
        present = self.present_modalities(missing)
        height, width = check_group(arrays, present)
        encoded = encode_group(
            arrays, {m: self.encodings[m] for m in present}, intrinsics=intrinsics
        )  # [M', H, W, 3]
        size = self.processing_size(height, width)
        dtype, interpolation = PRECISIONS[self.precision], self.bundle.preprocess.interpolation
        if self._copy_stream is None:
            pixels = to_backbone_batch(
                encoded, size, device=self.device, dtype=dtype, interpolation=interpolation
            )  # [M', 3, h, w]
            return StagedGroup(pixels, present, (height, width), ready=None)
        host = torch.from_numpy(encoded).pin_memory()
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        with torch.cuda.stream(self._copy_stream):
            uploaded = host.to(self.device, non_blocking=True)
            pixels = to_backbone_batch(
                uploaded, size, device=self.device, dtype=dtype, interpolation=interpolation
            )  # [M', 3, h, w]
            ready.record(self._copy_stream)
        return StagedGroup(pixels, present, (height, width), ready=ready)

    def _staged_code(self, staged: StagedGroup) -> Tensor:
        """The code map [1, D, h, w] of a staged group, queued on the current stream."""
        if staged.ready is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(staged.ready)
            # pixels was allocated on the copy stream: keep its memory from being reused
            # there before this stream's kernels have read it.
            staged.pixels.record_stream(stream)
        features = self._backbone_forward(staged.pixels).float()  # [M', C, h, w]
        if len(staged.present) == len(self.modalities):
            code: Tensor = self.heads(features.unsqueeze(0))  # [1, D, h, w]
            return code
        mask = [m in staged.present for m in self.modalities]
        full = features.new_zeros((len(self.modalities), *features.shape[1:]))  # [M, C, h, w]
        full[torch.tensor(mask, device=self.device)] = features
        present_mask = torch.tensor([mask], dtype=torch.bool, device=self.device)  # [1, M]
        code = self.heads(full.unsqueeze(0), present_mask)  # [1, D, h, w]
        return code

    @torch.inference_mode()
    def code(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> Tensor:
        """The code map of one frame group, [1, D, h, w] at feature resolution.

        ``intrinsics``: the frame's camera intrinsics per modality, for encodings that use
        them (``depth_hha``); see ``preprocess.encode_group``. Modalities in ``missing`` are
        neither needed in ``arrays`` nor run through the backbone; the heads fuse without them
        exactly as training with modality dropout did (``UniM2Heads.fuse`` with a ``present``
        mask).
        """
        return self._staged_code(self.stage(arrays, intrinsics=intrinsics, missing=missing))

    @torch.inference_mode()
    def launch(self, staged: StagedGroup, *, with_confidence: bool = False) -> PendingSegmentation:
        """Queue the backbone, heads and cluster assignment of a staged group.

        On CUDA the current stream first waits for the staging copy, and the outputs are
        copied to pinned host memory without blocking, so this returns as soon as the work is
        queued; :meth:`PendingSegmentation.result` waits for it.
        """
        code = self._staged_code(staged)  # [1, D, h, w]
        height, width = staged.output_size
        if self.cluster_order == "code":
            clusters, best = clusters_from_code(
                code, self.heads.cluster_probe.centroids, output_size=(height, width)
            )
        else:
            clusters, best = clusters_from_similarity(
                self.heads.cluster_probe.similarity(code),  # [1, K, h, w]
                processing_size=self.processing_size(height, width),
                output_size=(height, width),
            )
        non_blocking = self.device.type == "cuda"
        labels = self._lookup[clusters[0]].to("cpu", non_blocking=non_blocking)  # [H, W]
        confidence = (
            best[0].to("cpu", torch.float32, non_blocking=non_blocking) if with_confidence else None
        )
        done = None
        if non_blocking:
            done = torch.cuda.Event()  # type: ignore[no-untyped-call]
            done.record(torch.cuda.current_stream(self.device))
        return PendingSegmentation(labels, confidence, done=done, label_dtype=self._label_dtype)

    def run(self, staged: StagedGroup, *, with_confidence: bool = False) -> SegmentationResult:
        """Segment a staged group and wait for its outputs (``launch(...).result()``)."""
        return self.launch(staged, with_confidence=with_confidence).result()

    def __call__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        with_confidence: bool = False,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> SegmentationResult:
        """Segment one frame group of raw arrays (robot units, see ``encoding``).

        Args:
            arrays: Raw array per modality; those in ``missing`` may be left out.
            with_confidence: Also return each pixel's similarity to its centroid.
            intrinsics: The frame's camera intrinsics per modality (``depth_hha``).
            missing: Auxiliary modalities whose stream is lost: the frame is segmented
                without them (see ``code``).

        Raises:
            EncodingError: a needed modality is missing, sizes differ, or an array is invalid.
            ValueError: ``missing`` names RGB or a modality the model does not use.
        """
        staged = self.stage(arrays, intrinsics=intrinsics, missing=missing)
        return self.run(staged, with_confidence=with_confidence)


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
    return int(color[0]), int(color[1]), int(color[2])


def label_table(bundle: Bundle, *, apply_mapping: bool) -> tuple[list[LabelInfo], np.ndarray]:
    """Output label ids with names and colours, and the cluster -> output id lookup (shared by
    the PyTorch and ONNX Runtime segmenters)."""
    n_clusters = bundle.heads_config.n_clusters
    mapping = bundle.class_mapping
    if mapping is None or not apply_mapping:
        palette = distinct_palette(n_clusters)
        table = [LabelInfo(k, f"cluster_{k}", _rgb(palette[k])) for k in range(n_clusters)]
        return table, np.arange(n_clusters, dtype=np.int64)
    table = [
        LabelInfo(i, name, _rgb(mapping.palette[i])) for i, name in enumerate(mapping.class_names)
    ]
    unmatched = [k for k, c in enumerate(mapping.cluster_to_class) if c < 0]
    extra = distinct_palette(len(mapping.class_names) + len(unmatched))[len(mapping.class_names) :]
    lookup = np.asarray(mapping.cluster_to_class, dtype=np.int64)
    for j, cluster in enumerate(unmatched):
        label_id = len(table)
        table.append(LabelInfo(label_id, f"cluster_{cluster}", _rgb(extra[j])))
        lookup[cluster] = label_id
    return table, lookup
