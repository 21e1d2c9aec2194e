"""The trainable heads of UniM2 on top of the frozen backbone (design.md §3).

Data flow for one frame group of M modalities (m = 0 is RGB, the anchor):

    backbone features [B, M, C, h, w]
      -> ModalityNet per modality, L2-normalised          (skipped when M = 1: RGB-only / STEGO)
      -> Fusion over modalities -> [B, C, h, w]
      -> SegmentationHead -> code s [B, D, h, w]
      -> ClusterProbe: argmax cosine similarity to K centroids -> cluster id per pixel

The Harmoniser (CMH) maps the code into each aligned modality's space and is used by the loss
only; inference never runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unim2_core.errors import ConfigError

FusionKind = Literal["conv", "sum", "mean", "max", "progressive"]
AlignKind = Literal["none", "aux", "all", "rgb"]
FUSION_KINDS: tuple[FusionKind, ...] = ("conv", "sum", "mean", "max", "progressive")
ALIGN_KINDS: tuple[AlignKind, ...] = ("none", "aux", "all", "rgb")
ANCHOR = "rgb"


@dataclass(frozen=True)
class HeadsConfig:
    """Shape and options of the trainable heads; stored in the checkpoint.

    Attributes:
        modalities: Modality names, the anchor ``rgb`` first. One name = the RGB-only model.
        channels: Backbone feature channels C.
        code_dim: Code dimension D.
        n_clusters: Number of clusters K of the cluster probe.
        fusion: How modality features are fused (ignored when there is one modality).
        msn_residual: Add the input back onto each modality network's output.
        align: Which modalities the loss compares through a harmoniser: ``aux`` (default, RGB
            is the anchor), ``none`` (naive fusion), ``all``, or ``rgb`` only (ablation).
        share_harmoniser: One harmoniser shared by every aligned modality.
        n_classes: Classes of the optional supervised linear probe (None: no probe).
        dropout: Dropout2d probability at the input of the segmentation head.
    """

    modalities: tuple[str, ...]
    channels: int
    code_dim: int = 70
    n_clusters: int = 27
    fusion: FusionKind = "conv"
    msn_residual: bool = False
    align: AlignKind = "aux"
    share_harmoniser: bool = False
    n_classes: int | None = None
    dropout: float = 0.1
    aligned: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.modalities or self.modalities[0] != ANCHOR:
            raise ConfigError(f"modalities must start with {ANCHOR!r}, got {self.modalities!r}")
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"modalities are repeated: {self.modalities!r}")
        for key in ("channels", "code_dim", "n_clusters"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.channels % 2:
            raise ConfigError(
                f"channels must be even (modality nets halve it), got {self.channels}"
            )
        if self.fusion not in FUSION_KINDS:
            raise ConfigError(f"fusion must be one of {FUSION_KINDS}, got {self.fusion!r}")
        if self.align not in ALIGN_KINDS:
            raise ConfigError(f"align must be one of {ALIGN_KINDS}, got {self.align!r}")
        if self.n_classes is not None and (isinstance(self.n_classes, bool) or self.n_classes < 1):
            raise ConfigError(
                f"n_classes must be a positive integer or None, got {self.n_classes!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "aligned", _aligned_modalities(self.modalities, self.align))

    @property
    def is_rgb_only(self) -> bool:
        """True for the single-modality (STEGO) model: no modality nets, no fusion."""
        return len(self.modalities) == 1

    def to_dict(self) -> dict[str, object]:
        """Plain-type form stored in the checkpoint (``aligned`` is derived, not stored)."""
        data = asdict(self)
        data.pop("aligned")
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, where: str = "heads") -> HeadsConfig:
        """Parse ``to_dict`` output; unknown or missing keys raise ConfigError naming ``where``."""
        known = {
            "modalities",
            "channels",
            "code_dim",
            "n_clusters",
            "fusion",
            "msn_residual",
            "align",
            "share_harmoniser",
            "n_classes",
            "dropout",
        }
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        values = dict(data)
        modalities = values.get("modalities")
        if not isinstance(modalities, (list, tuple)):
            raise ConfigError(f"{where}.modalities must be a list of names, got {modalities!r}")
        values["modalities"] = tuple(str(m) for m in modalities)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as err:
            raise ConfigError(f"{where}: {err}") from err
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err


def _aligned_modalities(modalities: Sequence[str], align: AlignKind) -> tuple[str, ...]:
    if align == "none":
        return ()
    if align == "aux":
        return tuple(modalities[1:])
    if align == "rgb":
        return (ANCHOR,)
    return tuple(modalities)


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


class ModalityNet(nn.Module):
    """Modality-specific network (MSN): 1x1 conv C -> C/2, ReLU, 1x1 conv C/2 -> C.

    Adapts the shared frozen features of one modality before fusion; the output is
    L2-normalised per pixel so no modality dominates the fusion by scale.
    """

    def __init__(self, channels: int, *, residual: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv1x1(channels, channels // 2), nn.ReLU(), _conv1x1(channels // 2, channels)
        )
        self.residual = residual

    def forward(self, features: Tensor) -> Tensor:
        out = self.net(features)
        if self.residual:
            out = out + features
        return F.normalize(out, dim=1)


class ConvFusion(nn.Module):
    """Learned fusion: concat [B, M*C] -> 1x1 conv to (M*C + C)/2 -> ReLU -> 1x1 conv to C."""

    def __init__(self, n_modalities: int, channels: int) -> None:
        super().__init__()
        wide = n_modalities * channels
        hidden = (wide + channels) // 2
        self.net = nn.Sequential(_conv1x1(wide, hidden), nn.ReLU(), _conv1x1(hidden, channels))

    def forward(self, features: Tensor) -> Tensor:
        batch, modalities, channels, height, width = features.shape
        fused: Tensor = self.net(features.reshape(batch, modalities * channels, height, width))
        return fused


class ProgressiveFusion(nn.Module):
    """The reference's MCubeS fusion: M 1x1 convs narrowing M*C -> (M-1)*C -> ... -> C -> C.

    BatchNorm + ReLU sit between consecutive convolutions.
    """

    def __init__(self, n_modalities: int, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in range(n_modalities, 1, -1):
            layers += [
                _conv1x1(width * channels, (width - 1) * channels),
                nn.BatchNorm2d((width - 1) * channels),
                nn.ReLU(),
            ]
        layers.append(_conv1x1(channels, channels))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        batch, modalities, channels, height, width = features.shape
        fused: Tensor = self.net(features.reshape(batch, modalities * channels, height, width))
        return fused


class ElementwiseFusion(nn.Module):
    """Parameter-free fusion: element-wise sum, mean or max over the modality axis."""

    def __init__(self, kind: Literal["sum", "mean", "max"]) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, features: Tensor) -> Tensor:
        if self.kind == "sum":
            return features.sum(dim=1)
        if self.kind == "mean":
            return features.mean(dim=1)
        return features.amax(dim=1)


class SegmentationHead(nn.Module):
    """Segmentation head S: Dropout2d, then a linear plus a non-linear 1x1-conv branch -> D."""

    def __init__(self, channels: int, code_dim: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.linear = _conv1x1(channels, code_dim)
        self.nonlinear = nn.Sequential(
            _conv1x1(channels, channels), nn.ReLU(), _conv1x1(channels, code_dim)
        )

    def forward(self, features: Tensor) -> Tensor:
        features = self.dropout(features)
        code: Tensor = self.linear(features) + self.nonlinear(features)
        return code


class Harmoniser(nn.Module):
    """Cross-modal harmoniser (CMH): 1x1 conv D -> D, ReLU, 1x1 conv D -> D.

    Maps the shared code into one modality's correspondence space inside the loss, so the code
    itself can stay anchored to RGB. Never run at inference.
    """

    def __init__(self, code_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv1x1(code_dim, code_dim), nn.ReLU(), _conv1x1(code_dim, code_dim)
        )

    def forward(self, code: Tensor) -> Tensor:
        out: Tensor = self.net(code)
        return out


class ClusterProbe(nn.Module):
    """K learnable centroids; a pixel belongs to the centroid of highest cosine similarity.

    Trained on detached codes to maximise the mean of the maximum cosine similarity
    (spherical k-means).
    """

    def __init__(self, n_clusters: int, code_dim: int) -> None:
        super().__init__()
        self.centroids = nn.Parameter(torch.randn(n_clusters, code_dim))

    def similarity(self, code: Tensor) -> Tensor:
        """Cosine similarity of every pixel to every centroid: [B, D, h, w] -> [B, K, h, w]."""
        return torch.einsum(
            "bdhw,kd->bkhw", F.normalize(code, dim=1), F.normalize(self.centroids, dim=1)
        )

    def loss(self, code: Tensor) -> Tensor:
        """Negative mean of each pixel's best cosine similarity (codes are detached here)."""
        return -self.similarity(code.detach()).amax(dim=1).mean()

    def forward(self, code: Tensor) -> Tensor:
        """Cluster id per pixel: [B, D, h, w] -> [B, h, w] int64."""
        return self.similarity(code).argmax(dim=1)


class LinearProbe(nn.Module):
    """Supervised diagnostic: 1x1 conv D -> n_classes, cross-entropy on detached codes."""

    def __init__(self, code_dim: int, n_classes: int) -> None:
        super().__init__()
        self.classifier = _conv1x1(code_dim, n_classes)

    def forward(self, code: Tensor) -> Tensor:
        logits: Tensor = self.classifier(code)
        return logits

    def loss(self, code: Tensor, labels: Tensor, *, ignore_index: int = 255) -> Tensor:
        """Cross-entropy at label resolution; the code is detached and bilinearly upsampled."""
        logits = self(code.detach())
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


class UniM2Heads(nn.Module):
    """Every trainable part of UniM2: modality nets, fusion, head, harmonisers and probes."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        channels, n_modalities = config.channels, len(config.modalities)
        self.modality_nets = nn.ModuleDict()
        self.fusion: nn.Module | None = None
        if not config.is_rgb_only:
            for name in config.modalities:
                self.modality_nets[name] = ModalityNet(channels, residual=config.msn_residual)
            if config.fusion == "conv":
                self.fusion = ConvFusion(n_modalities, channels)
            elif config.fusion == "progressive":
                self.fusion = ProgressiveFusion(n_modalities, channels)
            else:
                self.fusion = ElementwiseFusion(config.fusion)
        self.head = SegmentationHead(channels, config.code_dim, dropout=config.dropout)
        self.harmonisers = nn.ModuleDict()
        if config.aligned:
            if config.share_harmoniser:
                self.harmonisers["shared"] = Harmoniser(config.code_dim)
            else:
                for name in config.aligned:
                    self.harmonisers[name] = Harmoniser(config.code_dim)
        self.cluster_probe = ClusterProbe(config.n_clusters, config.code_dim)
        self.linear_probe = (
            LinearProbe(config.code_dim, config.n_classes) if config.n_classes is not None else None
        )

    def fuse(self, features: Tensor, present: Tensor | None = None) -> Tensor:
        """Backbone features [B, M, C, h, w] -> fused features [B, C, h, w].

        Args:
            features: Backbone features of every modality.
            present: Optional [B, M] bool mask; a modality marked absent enters the fusion as
                a zero modality-net output (see :func:`absent_modalities_zeroed`), whatever its
                slot of ``features`` holds. RGB (index 0) must be present. None: all present.

        Raises:
            ValueError: ``features`` or ``present`` has the wrong shape, or RGB is absent.
        """
        if features.dim() != 5 or features.shape[1] != len(self.config.modalities):
            raise ValueError(
                f"expected features [B, {len(self.config.modalities)}, C, h, w], "
                f"got {tuple(features.shape)}"
            )
        if present is not None:
            _check_present(present, features.shape[:2])
        if self.fusion is None:
            return features[:, 0]
        adapted = torch.stack(
            [net(features[:, i]) for i, net in enumerate(self.modality_nets.values())], dim=1
        )  # [B, M, C, h, w]
        if present is not None:
            adapted = absent_modalities_zeroed(adapted, present)
        fused: Tensor = self.fusion(adapted)
        return fused

    def forward(self, features: Tensor, present: Tensor | None = None) -> Tensor:
        """Backbone features [B, M, C, h, w] -> code s [B, D, h, w] (``present``: see fuse)."""
        code: Tensor = self.head(self.fuse(features, present))
        return code

    def harmonise(self, code: Tensor, modality: str) -> Tensor:
        """The code as compared with ``modality``'s features in the loss (CMH if aligned)."""
        if modality not in self.config.aligned:
            return code
        key = "shared" if self.config.share_harmoniser else modality
        out: Tensor = self.harmonisers[key](code)
        return out


def absent_modalities_zeroed(adapted: Tensor, present: Tensor) -> Tensor:
    """How a missing modality reaches the fusion: its modality-net output is all zeros.

    Modality-net outputs are unit vectors per pixel, so a zero vector can never be mistaken for
    a real one, and it needs no parameters: checkpoints keep their layout, and every fusion
    kind (conv, progressive, sum, mean, max) accepts it. Training with modality dropout and
    inference without a stream both come through here, so they cannot disagree.

    Args:
        adapted: L2-normalised modality-net outputs [B, M, C, h, w].
        present: [B, M] bool, False where the modality is missing.
    """
    mask = present.to(device=adapted.device, dtype=adapted.dtype)[:, :, None, None, None]
    return adapted * mask  # [B, M, C, h, w]


def _check_present(present: Tensor, shape: torch.Size) -> None:
    if present.dtype != torch.bool or tuple(present.shape) != tuple(shape):
        raise ValueError(
            f"present must be a bool mask of shape {tuple(shape)} (batch, modalities), got "
            f"{present.dtype} {tuple(present.shape)}"
        )
    if not bool(present[:, 0].all()):
        raise ValueError("present marks RGB (modality 0) absent; RGB is the anchor and required")
