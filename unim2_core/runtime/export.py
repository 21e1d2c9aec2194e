"""ONNX export of the whole inference graph, stamped with the identity of the model it holds.

The exported graph is :class:`~unim2_core.runtime.inference_graph.InferenceGraph` (backbone
over all modalities of a frame as one batch, heads, cluster assignment) in fp32. Inputs:

- ``pixels`` [M, 3, h, w] float32, the ImageNet-normalised backbone batch (h, w any multiples of
  the patch size);
- ``present`` [M] bool, False for a modality whose stream is lost (the node's DEGRADED
  fallback; its ``pixels`` slot is zeros);
- ``output_shape`` [0, H, W] float32, empty: its shape carries the frame size.

Outputs: ``clusters`` [H, W] int64 and ``best`` [H, W] float32 (cosine similarity to the chosen
centroid). The modality encoding and the resize to the backbone batch before the graph, and the
cluster -> class lookup after it, stay shared Python code, so the label table, palette and
encodings come from the checkpoint, which is loaded next to the ONNX file.

Identity: the file's ONNX ``metadata_props`` record the format version, the SHA-256 of the
checkpoint file it was exported from, the backbone identity (weights hash included), the
modality list and the cluster order. :meth:`OnnxIdentity.check_matches` refuses a file exported
from another checkpoint.

The exporter is torch's TorchScript-based one (``dynamo=False``): the dynamo exporter needs
``onnxscript``, which is not a dependency here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from unim2_core.atomic import atomic_write_bytes
from unim2_core.errors import BackboneError, ExportError
from unim2_core.model.backbone import BackboneIdentity, load_backbone
from unim2_core.model.checkpoint import load_bundle
from unim2_core.runtime.inference_graph import InferenceGraph
from unim2_core.runtime.segmenter import CLUSTER_ORDERS, ClusterOrder, Segmenter

ONNX_FORMAT_VERSION = "1"
INPUT_NAMES = ("pixels", "present", "output_shape")
OUTPUT_NAMES = ("clusters", "best")
OPSET_VERSION = 18
METADATA_PREFIX = "unim2."
DEFAULT_SAMPLE_SIZE = (480, 640)
MIN_SELF_CHECK_AGREEMENT = 0.999
TIE_TOLERANCE = 1e-4
"""Best-centroid similarities this close are a tie: either cluster id is a faithful answer."""


class OnnxIdentity(NamedTuple):
    """What an exported file holds, as recorded in its ONNX metadata.

    Attributes:
        format_version: :data:`ONNX_FORMAT_VERSION` of the exporter.
        checkpoint_sha256: SHA-256 of the checkpoint file's bytes.
        backbone: The backbone identity stored in that checkpoint (weights hash included).
        modalities: Modality order of the batch, ``rgb`` first.
        cluster_order: The Segmenter cluster order the graph computes.
    """

    format_version: str
    checkpoint_sha256: str
    backbone: BackboneIdentity
    modalities: tuple[str, ...]
    cluster_order: ClusterOrder

    def to_metadata(self) -> dict[str, str]:
        """String key/value pairs for ONNX ``metadata_props``."""
        return {
            f"{METADATA_PREFIX}format_version": self.format_version,
            f"{METADATA_PREFIX}checkpoint_sha256": self.checkpoint_sha256,
            f"{METADATA_PREFIX}backbone": json.dumps(self.backbone.to_dict(), sort_keys=True),
            f"{METADATA_PREFIX}modalities": json.dumps(list(self.modalities)),
            f"{METADATA_PREFIX}cluster_order": self.cluster_order,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], *, source: str) -> OnnxIdentity:
        """Parse :meth:`to_metadata` output.

        Raises:
            ExportError: a key is missing or malformed (naming ``source`` and the key), or the
                format version is not this exporter's.
        """

        def field(name: str) -> str:
            key = f"{METADATA_PREFIX}{name}"
            if key not in metadata:
                raise ExportError(
                    f"{source}: ONNX metadata lacks {key!r}; it was not written by unim2_export"
                )
            return metadata[key]

        version = field("format_version")
        if version != ONNX_FORMAT_VERSION:
            raise ExportError(
                f"{source}: ONNX export format version {version!r}, this unim2 reads "
                f"{ONNX_FORMAT_VERSION!r}; export the checkpoint again"
            )
        try:
            backbone = BackboneIdentity.from_dict(json.loads(field("backbone")))
            modalities = json.loads(field("modalities"))
        except (json.JSONDecodeError, BackboneError) as err:
            raise ExportError(f"{source}: malformed ONNX metadata: {err}") from err
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise ExportError(f"{source}: ONNX metadata 'modalities' is not a list of names")
        order = field("cluster_order")
        if order not in CLUSTER_ORDERS:
            raise ExportError(f"{source}: ONNX metadata cluster_order {order!r} is unknown")
        return cls(version, field("checkpoint_sha256"), backbone, tuple(modalities), order)  # type: ignore[arg-type]

    def check_matches(self, expected: OnnxIdentity, *, source: str) -> None:
        """Refuse a file exported from a different checkpoint, backbone or modality list.

        The cluster order is not compared: it is the file's (see ``OnnxSegmenter``).

        Raises:
            ExportError: naming the first differing field, both values and ``source``.
        """
        for name in ("checkpoint_sha256", "backbone", "modalities"):
            stored, wanted = getattr(self, name), getattr(expected, name)
            if stored != wanted:
                raise ExportError(
                    f"{source} was exported from another model: {name} {stored!r} in the ONNX "
                    f"file, {wanted!r} for the given checkpoint; export this checkpoint with "
                    "unim2_export"
                )


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes.

    Raises:
        ExportError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise ExportError(f"cannot read {str(path)!r}: {err}") from err
    return digest.hexdigest()


def checkpoint_identity(
    checkpoint: str | Path, *, cluster_order: ClusterOrder = "similarity"
) -> OnnxIdentity:
    """The identity an ONNX export of ``checkpoint`` carries.

    Raises:
        CheckpointError: the checkpoint is unreadable or invalid.
        ExportError: the file cannot be hashed.
    """
    bundle = load_bundle(checkpoint)
    return OnnxIdentity(
        ONNX_FORMAT_VERSION,
        file_sha256(checkpoint),
        bundle.backbone,
        bundle.modalities,
        cluster_order,
    )


def export_onnx(
    checkpoint: str | Path,
    backbone_weights: str | Path,
    output: str | Path,
    *,
    cluster_order: ClusterOrder = "similarity",
    sample_size: tuple[int, int] = DEFAULT_SAMPLE_SIZE,
    self_check: bool = True,
) -> Path:
    """Write the inference graph of ``checkpoint`` (fp32) to ``output`` as ONNX.

    Args:
        checkpoint: The trained bundle.
        backbone_weights: The backbone weights it was trained with (see ``load_backbone``).
        output: The ONNX file to write (atomically).
        cluster_order: The Segmenter cluster order the graph computes (``similarity``, the
            node's; ``code``, the paper protocol's).
        sample_size: Frame size (H, W) traced; the graph accepts any size afterwards.
        self_check: Run the written graph with ONNX Runtime on the traced (random) batch and
            refuse it when fewer than 99.9 % of its cluster ids equal PyTorch's or tie with
            them (:func:`self_check_agreement`).

    Raises:
        CheckpointError: the checkpoint is unreadable or does not match the backbone.
        BackboneError: the backbone weights are missing or invalid.
        ExportError: the export, the write or the self-check failed.
        ValueError: an unknown cluster order.
    """
    output = Path(output)
    identity = checkpoint_identity(checkpoint, cluster_order=cluster_order)
    bundle = load_bundle(checkpoint)
    backbone = load_backbone(
        bundle.backbone.name, backbone_weights, feature_layer=bundle.backbone.feature_layer
    )
    segmenter = Segmenter(bundle, backbone, device="cpu", cluster_order=cluster_order)
    graph = InferenceGraph(segmenter.backbone, segmenter.heads, cluster_order=cluster_order)
    height, width = segmenter.processing_size(*sample_size)
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(len(bundle.modalities), 3, height, width, generator=generator),
        torch.ones(len(bundle.modalities), dtype=torch.bool),
        torch.empty(0, *sample_size),
    )
    frame_axes = {0: "frame_height", 1: "frame_width"}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        # The tracer warns about every Python-level shape check it freezes; the sizes that
        # vary (batch and frame height/width) are exported as dynamic axes.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph,
                inputs,
                Path(tmp) / "graph.onnx",
                dynamo=False,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    INPUT_NAMES[0]: {2: "height", 3: "width"},
                    INPUT_NAMES[2]: {1: "frame_height", 2: "frame_width"},
                    OUTPUT_NAMES[0]: frame_axes,
                    OUTPUT_NAMES[1]: frame_axes,
                },
                opset_version=OPSET_VERSION,
            )
            graph_bytes = (Path(tmp) / "graph.onnx").read_bytes()
        except (RuntimeError, OSError, torch.onnx.errors.OnnxExporterError) as err:
            raise ExportError(f"exporting {str(checkpoint)!r} to ONNX failed: {err}") from err
    payload = _with_metadata(graph_bytes, identity.to_metadata())
    if self_check:
        _self_check(payload, graph, inputs, source=str(output))
    try:
        atomic_write_bytes(output, payload)
    except OSError as err:
        raise ExportError(f"cannot write {str(output)!r}: {err}") from err
    return output


def _with_metadata(model_bytes: bytes, metadata: Mapping[str, str]) -> bytes:
    """The serialised ONNX model with ``metadata`` added to its ``metadata_props``."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = model.SerializeToString()
    return data


def self_check_agreement(
    clusters: np.ndarray, best: np.ndarray, expected: np.ndarray, expected_best: np.ndarray
) -> float:
    """Share of pixels where ONNX Runtime's cluster id is PyTorch's, or a tie with it.

    A pixel whose two best centroids are equally similar (within :data:`TIE_TOLERANCE`) may get
    either id from float rounding; it counts as agreeing when the similarity ONNX Runtime
    reports for its pick equals PyTorch's best. Codes that sit between nearly identical
    centroids (a briefly trained model, or k-means centroids of a narrow code cloud) make many
    such ties on the random traced batch, and refusing them would refuse a faithful graph.
    """
    same = clusters == expected
    tie = np.abs(best.astype(np.float64) - expected_best.astype(np.float64)) <= TIE_TOLERANCE
    return float(np.mean(same | tie))


def _self_check(
    payload: bytes, graph: InferenceGraph, inputs: tuple[torch.Tensor, ...], *, source: str
) -> None:
    """Refuse an export whose ONNX Runtime cluster ids disagree with PyTorch's (ties aside,
    see :func:`self_check_agreement`)."""
    import onnxruntime as ort

    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    feeds = {name: value.numpy() for name, value in zip(INPUT_NAMES, inputs, strict=True)}
    clusters, best = session.run(list(OUTPUT_NAMES), feeds)
    with torch.inference_mode():
        expected, expected_best = graph(*inputs)
    agreement = self_check_agreement(
        np.asarray(clusters), np.asarray(best), expected.numpy(), expected_best.float().numpy()
    )
    if agreement < MIN_SELF_CHECK_AGREEMENT:
        raise ExportError(
            f"{source}: ONNX Runtime agrees with PyTorch on only {100 * agreement:.2f} % of "
            f"the pixels of the traced batch (need {100 * MIN_SELF_CHECK_AGREEMENT:.1f} %; "
            f"ties within {TIE_TOLERANCE:g} count as agreeing)"
        )
