"""The whole per-frame model as one module: backbone batch in, cluster ids at the frame size out.

:class:`InferenceGraph` is what ``unim2_export`` writes to ONNX. It computes exactly what
:class:`~unim2_core.runtime.segmenter.Segmenter` computes between the backbone batch and the
class lookup (backbone, heads with a ``present`` mask, cluster assignment in either cluster
order), written with operators the ONNX exporter supports and dynamic in every size:

- the frame size reaches the graph as the shape of ``output_shape``, an empty [0, H, W] tensor
  (the tracer keeps sizes read from an input's shape symbolic, integers it would freeze);
- the nearest-neighbour resize of the ``similarity`` order is an index gather
  (:func:`nearest_exact_indices`) because ``nearest-exact`` interpolation has no ONNX export.

The encoding before the graph (depth, HHA with per-frame intrinsics...) and the antialiased
resize to the backbone batch stay the shared Python code of :mod:`unim2_core.data.preprocess`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unim2_core.model.backbone import Backbone
from unim2_core.model.heads import UniM2Heads
from unim2_core.runtime.segmenter import CLUSTER_ORDERS, ClusterOrder, clusters_from_code


def nearest_exact_indices(size_in: int, size_out: int) -> Tensor:
    """Source index of every output position for a ``nearest-exact`` resize along one axis.

    ``floor((i + 0.5) * size_in / size_out)``, clamped to the last source index: the rule of
    ``F.interpolate(mode="nearest-exact")``, as a gather the ONNX exporter can trace. Under
    the tracer the sizes read from a shape are tensors, so they stay symbolic here.
    """
    source = torch.as_tensor(size_in)
    positions = torch.arange(size_out, dtype=torch.float32) + 0.5  # [size_out]
    scale = source.float() / torch.as_tensor(size_out).float()
    index: Tensor = torch.minimum((positions * scale).floor().long(), source.long() - 1)
    return index


class InferenceGraph(nn.Module):
    """Backbone + heads + cluster assignment of one frame group, always in eval mode.

    Args:
        backbone: The frozen backbone (fp32 for export).
        heads: The trained heads.
        cluster_order: ``similarity`` (the node's) or ``code`` (the reference's), as in
            ``Segmenter``.

    Raises:
        ValueError: an unknown cluster order.
    """

    def __init__(
        self, backbone: Backbone, heads: UniM2Heads, *, cluster_order: ClusterOrder
    ) -> None:
        super().__init__()
        if cluster_order not in CLUSTER_ORDERS:
            raise ValueError(
                f"cluster_order must be one of {CLUSTER_ORDERS}, got {cluster_order!r}"
            )
        self.backbone = backbone
        self.heads = heads
        self.cluster_order = cluster_order
        super().train(False)

    def train(self, mode: bool = True) -> InferenceGraph:
        """Stay in eval mode whatever ``mode`` says: this module only ever infers.

        ``torch.onnx.export`` puts a module back into the mode it found; a graph left in
        training mode would run the heads' dropout.
        """
        super().train(False)
        return self

    def forward(
        self, pixels: Tensor, present: Tensor, output_shape: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One frame group -> ``(clusters [H, W] int64, best [H, W] float32)``.

        Args:
            pixels: [M, 3, h, w] ImageNet-normalised backbone batch, every model modality in
                model order (a missing modality's slot may hold anything, zeros by convention).
            present: [M] bool, False for a modality whose stream is lost (RGB must be True).
            output_shape: Empty [0, H, W] tensor; only its shape is read (the frame size).
        """
        features = self.backbone(pixels).float()  # [M, C, h', w']
        code = self.heads(features.unsqueeze(0), present.unsqueeze(0))  # [1, D, h', w']
        height, width = output_shape.shape[-2], output_shape.shape[-1]
        if self.cluster_order == "code":
            clusters, best = clusters_from_code(
                code, self.heads.cluster_probe.centroids, output_size=(height, width)
            )  # [1, H, W]
            return clusters[0], best[0]
        similarity = F.interpolate(
            self.heads.cluster_probe.similarity(code),  # [1, K, h', w']
            size=(pixels.shape[-2], pixels.shape[-1]),
            mode="bilinear",
            align_corners=False,
        )  # [1, K, h, w]
        best, clusters = similarity[0].max(dim=0)  # [h, w]
        rows = nearest_exact_indices(pixels.shape[-2], height)  # [H]
        cols = nearest_exact_indices(pixels.shape[-1], width)  # [W]
        return clusters[rows][:, cols], best[rows][:, cols]
