"""ONNX Runtime inference: an exported graph (see :mod:`unim2_core.runtime.export`) behind the
``Segmenter``'s interface.

Everything but the graph is the PyTorch runtime's own code: the encoding (per-frame intrinsics
for ``depth_hha`` included) and the backbone batch before it (:mod:`unim2_core.data.preprocess`,
on the CPU, in fp32), and the cluster -> class lookup of the checkpoint after it. The ONNX file
must have been exported from that very checkpoint file (its metadata records the checkpoint's
SHA-256, backbone identity and modalities).

Missing modalities work as with PyTorch: the graph takes a ``present`` mask, the lost
modality's slot of the batch is zeros and the heads fuse without it. (The backbone still runs
over that zero slot: the graph's batch is the model's full modality list.)

Execution providers are chosen from what ``onnxruntime.get_available_providers()`` reports:
``cpu`` takes the CPU provider; ``cuda`` (or ``cuda:N``, GPU index N, passed on as the
providers' ``device_id``) the TensorRT and/or CUDA providers (an error when neither is present
or the session could not start one); ``auto`` the GPU providers when present, else the CPU.
``fp16`` precision is TensorRT's (its ``trt_fp16_enable`` option); the graph itself is fp32.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding, check_group
from unim2_core.data.preprocess import encode_group, processing_size, to_backbone_batch
from unim2_core.errors import ExportError, ProviderError
from unim2_core.model.checkpoint import Bundle, load_bundle
from unim2_core.runtime.export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    OnnxIdentity,
    checkpoint_identity,
)
from unim2_core.runtime.segmenter import (
    ClusterOrder,
    LabelInfo,
    PendingSegmentation,
    SegmentationResult,
    StagedGroup,
    label_table,
    present_modalities,
)

OnnxDevice = Literal["auto", "cpu", "cuda"]
ONNX_DEVICES: tuple[OnnxDevice, ...] = ("auto", "cpu", "cuda")
OnnxPrecision = Literal["fp32", "fp16"]
ONNX_PRECISIONS: tuple[OnnxPrecision, ...] = ("fp32", "fp16")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT_PROVIDER, CUDA_PROVIDER)
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::([0-9]+))?")


def available_providers() -> list[str]:
    """What ``onnxruntime.get_available_providers()`` reports.

    Raises:
        ExportError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ExportError(
            "onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu "
            "(CUDA / TensorRT)"
        ) from err
    providers: list[str] = ort.get_available_providers()
    return providers


def choose_providers(
    device: str, precision: str, available: Sequence[str]
) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers, in priority order, for ``device`` and ``precision``.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N`` (GPU index N) or ``auto``.
        precision: ``fp32``, or ``fp16`` (TensorRT only).
        available: What ``onnxruntime.get_available_providers()`` reports.

    Raises:
        ProviderError: an unknown device or precision, or no provider fits, naming what
            onnxruntime reports.
    """
    spelled = _DEVICE_PATTERN.fullmatch(device)
    if spelled is None:
        raise ProviderError(
            f"onnxruntime device must be one of {ONNX_DEVICES} or cuda:N, got {device!r}"
        )
    if precision not in ONNX_PRECISIONS:
        raise ProviderError(
            f"onnxruntime precision must be one of {ONNX_PRECISIONS}, got {precision!r} "
            "(the exported graph is fp32; fp16 is TensorRT's)"
        )
    gpu = [name for name in GPU_PROVIDERS if name in available]
    if device.startswith("cuda") and not gpu:
        raise ProviderError(
            f"device {device!r} needs onnxruntime's {TENSORRT_PROVIDER} or {CUDA_PROVIDER}, "
            f"but it reports only {list(available)} (install onnxruntime-gpu)"
        )
    chosen = [] if device == "cpu" else gpu
    if precision == "fp16" and TENSORRT_PROVIDER not in chosen:
        raise ProviderError(
            f"precision 'fp16' with onnxruntime needs the {TENSORRT_PROVIDER} on a GPU device "
            f"(the exported graph is fp32); onnxruntime reports {list(available)}"
        )
    index = spelled.group(1)
    providers: list[str | tuple[str, dict[str, Any]]] = []
    for name in chosen:
        options: dict[str, Any] = {} if index is None else {"device_id": int(index)}
        if name == TENSORRT_PROVIDER and precision == "fp16":
            options["trt_fp16_enable"] = True
        providers.append((name, options) if options else name)
    return [*providers, CPU_PROVIDER]


class OnnxSegmenter:
    """An exported inference graph run by ONNX Runtime, used like a ``Segmenter``.

    Args:
        bundle: The checkpoint the file was exported from (label table, encodings, resolution).
        onnx_path: The exported file.
        expected: Identity the file must carry (``export.checkpoint_identity``).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (see :func:`choose_providers`).
        precision: ``fp32``; ``fp16`` with TensorRT.
        shorter_side: Processing resolution; the bundle's when None.
        apply_mapping: As for ``Segmenter``.
        threads: ONNX Runtime intra-op threads; its default (all cores) when None.

    Raises:
        ExportError: the file is missing, not a valid ONNX model, exported from another model,
            or lacks the expected inputs / outputs.
        ProviderError: no execution provider fits ``device`` / ``precision``, or the GPU
            provider asked for did not start.
        ValueError: a non-positive resolution or thread count.
    """

    def __init__(
        self,
        bundle: Bundle,
        onnx_path: str | Path,
        *,
        expected: OnnxIdentity,
        device: str = "auto",
        precision: str = "fp32",
        shorter_side: int | None = None,
        apply_mapping: bool = True,
        threads: int | None = None,
    ) -> None:
        if shorter_side is not None and shorter_side < 1:
            raise ValueError(f"shorter_side must be positive, got {shorter_side}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        source = repr(str(onnx_path))
        if not Path(onnx_path).is_file():
            raise ExportError(f"ONNX file not found: {source}")
        providers = choose_providers(device, precision, available_providers())
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: provider fallbacks are checked below
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own unexported exception types
            raise ExportError(f"{source} is not a usable ONNX model: {err}") from err
        identity = OnnxIdentity.from_metadata(
            session.get_modelmeta().custom_metadata_map, source=source
        )
        identity.check_matches(expected, source=source)
        inputs = [node.name for node in session.get_inputs()]
        outputs = [node.name for node in session.get_outputs()]
        if inputs != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
            raise ExportError(
                f"{source}: inputs {inputs} / outputs {outputs}, expected {list(INPUT_NAMES)} / "
                f"{list(OUTPUT_NAMES)}"
            )
        used = session.get_providers()
        if device.startswith("cuda") and not any(name in used for name in GPU_PROVIDERS):
            raise ProviderError(
                f"{source}: onnxruntime could not start a GPU provider (session uses {used}); "
                "check the CUDA / TensorRT libraries"
            )
        self.bundle = bundle
        self.precision = precision
        self.cluster_order: ClusterOrder = identity.cluster_order
        self.providers: tuple[str, ...] = tuple(used)
        self.shorter_side = shorter_side or bundle.preprocess.shorter_side
        self._session = session
        self.labels_table: list[LabelInfo]
        self.labels_table, self._lookup = label_table(bundle, apply_mapping=apply_mapping)
        self._label_dtype = np.uint8 if len(self.labels_table) <= 255 else np.uint16

    @classmethod
    def from_files(
        cls,
        checkpoint: str | Path,
        onnx_path: str | Path,
        *,
        device: str = "auto",
        precision: str = "fp32",
        shorter_side: int | None = None,
        apply_mapping: bool = True,
        threads: int | None = None,
    ) -> OnnxSegmenter:
        """Load a checkpoint and the ONNX file exported from it.

        Raises:
            CheckpointError: unreadable checkpoint.
            ExportError: see the class.
        """
        return cls(
            load_bundle(checkpoint),
            onnx_path,
            expected=checkpoint_identity(checkpoint),
            device=device,
            precision=precision,
            shorter_side=shorter_side,
            apply_mapping=apply_mapping,
            threads=threads,
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
        """``onnxruntime:<first execution provider>``, for logs and diagnostics."""
        return f"onnxruntime:{self.providers[0]}"

    @property
    def launch_is_asynchronous(self) -> bool:
        """False: ONNX Runtime's ``run`` returns with the outputs (see ``FrameSegmenter``)."""
        return False

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """The backbone input size used for an input of ``height`` x ``width``."""
        return processing_size(
            height,
            width,
            shorter_side=self.shorter_side,
            patch_size=self.bundle.backbone.patch_size,
        )

    def present_modalities(self, missing: Collection[str] = ()) -> tuple[str, ...]:
        """The model's modalities less ``missing`` (see ``segmenter.present_modalities``)."""
        return present_modalities(self.modalities, missing)

    def stage(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> StagedGroup:
        """Encode one frame group into the backbone batch of its present modalities (CPU, fp32).

        Arguments and errors as for ``Segmenter.stage``.
        """
        present = self.present_modalities(missing)
        height, width = check_group(arrays, present)
        encoded = encode_group(
            arrays, {m: self.encodings[m] for m in present}, intrinsics=intrinsics
        )  # [M', H, W, 3]
        batch = to_backbone_batch(
            encoded,
            self.processing_size(height, width),
            interpolation=self.bundle.preprocess.interpolation,
        )  # [M', 3, h, w]
        return StagedGroup(batch, present, (height, width), ready=None)

    def launch(self, staged: StagedGroup, *, with_confidence: bool = False) -> PendingSegmentation:
        """Run the graph on a staged group; ONNX Runtime's ``run`` blocks, so the outputs are
        complete when this returns."""
        height, width = staged.output_size
        batch = staged.pixels.numpy()  # [M', 3, h, w]
        mask = np.array([m in staged.present for m in self.modalities])  # [M]
        pixels = np.zeros((len(self.modalities), *batch.shape[1:]), dtype=np.float32)
        pixels[mask] = batch  # [M, 3, h, w]
        feeds = {
            INPUT_NAMES[0]: pixels,
            INPUT_NAMES[1]: mask,
            INPUT_NAMES[2]: np.empty((0, height, width), dtype=np.float32),
        }
        clusters, best = self._session.run(list(OUTPUT_NAMES), feeds)  # [H, W] each
        confidence = (
            torch.from_numpy(np.asarray(best, dtype=np.float32)) if with_confidence else None
        )
        return PendingSegmentation(
            torch.from_numpy(self._lookup[clusters]),
            confidence,
            done=None,
            label_dtype=self._label_dtype,
        )

    def __call__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        with_confidence: bool = False,
        intrinsics: Mapping[str, CameraIntrinsics] | None = None,
        missing: Collection[str] = (),
    ) -> SegmentationResult:
        """Segment one frame group of raw arrays (robot units, see ``encoding``).

        Arguments as for ``Segmenter.__call__``.

        Raises:
            EncodingError: a needed modality is missing, sizes differ, or an array is invalid.
            ValueError: ``missing`` names RGB or a modality the model does not use.
        """
        staged = self.stage(arrays, intrinsics=intrinsics, missing=missing)
        return self.launch(staged, with_confidence=with_confidence).result()
