"""DINO backbone architectures and their weight files.

Weights are published in two layouts and we read both, always from local files:

- the official Meta ``.pth`` layout (``blocks.N.attn.qkv.weight``...): fused query/key/value
  projections, plus buffers that hold no learned state (the DINOv3 key-bias mask and RoPE
  periods);
- the HuggingFace checkpoint layout, as published on the hub and as written by transformers'
  ``save_pretrained`` (``layer.N.attention.q_proj.weight`` for DINOv3,
  ``encoder.layer.N.attention.attention.query.weight`` for DINOv2).

Everything is converted to the HuggingFace checkpoint layout, the *canonical* layout of this
package: it is what :func:`load_weights_file` returns and what :func:`weights_sha256` hashes, so
the same weights give the same identity whatever file they came from, and whatever transformers
release later renames its modules. transformers >= 5 names some modules differently in memory
(``model.layer.N``, ``attention.q_proj``); files holding those in-memory names are accepted too,
and :func:`to_module_state_dict` maps canonical names to them. Every check is strict: a missing,
unexpected or mis-shaped key is an error naming it, never a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn
from transformers import Dinov2Config, Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel
from transformers.initialization import no_init_weights

from unim2_core.errors import BackboneError
from unim2_core.torch_files import load_torch_file

Family = Literal["dinov3", "dinov2"]
Shapes = dict[str, tuple[int, ...]]

HF_CONFIG_FILE = "config.json"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_MAX_LISTED_KEYS = 12

# Config fields checked in HF directories: those that change the forward pass, in particular the
# ones that no tensor shape reveals (heads, epsilon, activation, RoPE base).
_COMMON_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "patch_size",
    "num_channels",
    "layer_norm_eps",
    "hidden_act",
)
_HF_CONFIG_FIELDS: dict[str, tuple[str, ...]] = {
    "dinov3": (
        *_COMMON_FIELDS,
        "intermediate_size",
        "use_gated_mlp",
        "num_register_tokens",
        "rope_theta",
        "query_bias",
        "key_bias",
        "value_bias",
        "proj_bias",
        "mlp_bias",
    ),
    "dinov2": (*_COMMON_FIELDS, "mlp_ratio", "use_swiglu_ffn", "qkv_bias", "image_size"),
}


@dataclass(frozen=True)
class BackboneArch:
    """Static facts of one published ViT backbone, enough to build its transformers model.

    Attributes:
        name: Name as used by the Meta releases, e.g. ``"dinov3_vits16"``.
        family: ``"dinov3"`` (RoPE, register tokens, masked key bias) or ``"dinov2"`` (learned
            position table, no registers).
        patch_size: Side of a square patch in pixels.
        hidden_size: Token width C.
        depth: Number of transformer blocks.
        num_heads: Attention heads per block.
        mlp_size: Hidden width of the block MLP.
        num_register_tokens: Register ("storage") tokens between CLS and patch tokens.
        image_size: Training resolution; for DINOv2 it fixes the learned position grid
            (``image_size // patch_size`` per side).
        layer_norm_eps: Epsilon of every LayerNorm.
        rope_theta: RoPE base period (DINOv3 only).
    """

    name: str
    family: Family
    patch_size: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_size: int
    num_register_tokens: int
    image_size: int
    layer_norm_eps: float
    rope_theta: float | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{self.name}: hidden_size {self.hidden_size} not divisible by heads")
        if (self.family == "dinov3") != (self.rope_theta is not None):
            raise ValueError(f"{self.name}: rope_theta is required for DINOv3 and only for it")
        if self.family == "dinov2" and self.num_register_tokens:
            raise ValueError(f"{self.name}: DINOv2 without registers has no register tokens")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patch tokens: CLS plus registers."""
        return 1 + self.num_register_tokens

    def transformers_config(self) -> DINOv3ViTConfig | Dinov2Config:
        """The transformers config of this architecture (no hub access)."""
        if self.family == "dinov3":
            assert self.rope_theta is not None  # checked in __post_init__
            return DINOv3ViTConfig(
                patch_size=self.patch_size,
                hidden_size=self.hidden_size,
                intermediate_size=self.mlp_size,
                num_hidden_layers=self.depth,
                num_attention_heads=self.num_heads,
                hidden_act="gelu",
                layer_norm_eps=self.layer_norm_eps,
                rope_theta=self.rope_theta,
                image_size=self.image_size,
                query_bias=True,
                key_bias=False,
                value_bias=True,
                proj_bias=True,
                mlp_bias=True,
                use_gated_mlp=False,
                num_register_tokens=self.num_register_tokens,
            )
        return Dinov2Config(
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            mlp_ratio=self.mlp_size // self.hidden_size,
            num_hidden_layers=self.depth,
            num_attention_heads=self.num_heads,
            hidden_act="gelu",
            layer_norm_eps=self.layer_norm_eps,
            image_size=self.image_size,
            qkv_bias=True,
            use_swiglu_ffn=False,
        )

    def new_model(self, *, device: str | torch.device = "cpu") -> nn.Module:
        """An eval-mode transformers model with *uninitialised* weights, to be loaded next.

        Returns a ``DINOv3ViTModel`` or ``Dinov2Model``. Skipping the random initialisation
        saves seconds for ViT-L; ``device="meta"`` gives a model without storage, used to read
        the expected parameter names and shapes. As in transformers' ``from_pretrained``, the
        skip disables ``torch.nn.init`` process-wide while the model is built: do not build
        other modules in other threads at the same moment.
        """
        config = self.transformers_config()
        model: nn.Module
        with torch.device(device), no_init_weights():
            if isinstance(config, DINOv3ViTConfig):
                model = DINOv3ViTModel(config)
            else:
                model = Dinov2Model(config)
        model.train(False)
        return model


def _dinov3(name: str, hidden: int, depth: int, heads: int) -> BackboneArch:
    # hub/backbones.py of facebookresearch/dinov3: 4 storage tokens, masked key bias,
    # "layernormbf16" (eps 1e-5), RoPE base 100 with separately normalised coordinates, GELU MLP
    # of ratio 4. The "plus" variants (SwiGLU, ratio 6) and ViT-L SAT493M (untied local CLS norm)
    # differ and are not listed.
    return BackboneArch(
        name=name,
        family="dinov3",
        patch_size=16,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        mlp_size=4 * hidden,
        num_register_tokens=4,
        image_size=224,
        layer_norm_eps=1e-5,
        rope_theta=100.0,
    )


def _dinov2(name: str, hidden: int, depth: int, heads: int) -> BackboneArch:
    # transformers convert_dinov2_to_hf.py: 518 px training size (37 x 37 learned positions),
    # LayerNorm eps 1e-6, GELU MLP of ratio 4, layer scale, no registers.
    return BackboneArch(
        name=name,
        family="dinov2",
        patch_size=14,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        mlp_size=4 * hidden,
        num_register_tokens=0,
        image_size=518,
        layer_norm_eps=1e-6,
    )


ARCHITECTURES: dict[str, BackboneArch] = {
    arch.name: arch
    for arch in (
        _dinov3("dinov3_vits16", 384, 12, 6),
        _dinov3("dinov3_vitb16", 768, 12, 12),
        _dinov3("dinov3_vitl16", 1024, 24, 16),
        _dinov2("dinov2_vits14", 384, 12, 6),
        _dinov2("dinov2_vitb14", 768, 12, 12),
        _dinov2("dinov2_vitl14", 1024, 24, 16),
    )
}


def get_architecture(name: str) -> BackboneArch:
    """The architecture called ``name``.

    Raises:
        BackboneError: ``name`` is not one of :data:`ARCHITECTURES`.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise BackboneError(f"unknown backbone {name!r}; known backbones: {known}") from None


# In-memory renames of transformers >= 5 (canonical pattern, module replacement). Files written by
# save_pretrained and published on the hub use the canonical names; transformers renames them
# on loading.
_MODULE_RENAMES: dict[Family, tuple[tuple[str, str], ...]] = {
    "dinov3": ((r"^layer\.", "model.layer."),),
    "dinov2": (
        (r"\.attention\.attention\.query\.", ".attention.q_proj."),
        (r"\.attention\.attention\.key\.", ".attention.k_proj."),
        (r"\.attention\.attention\.value\.", ".attention.v_proj."),
        (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    ),
}
_CANONICAL_RENAMES: dict[Family, tuple[tuple[str, str], ...]] = {
    "dinov3": ((r"^model\.layer\.", "layer."),),
    "dinov2": (
        (r"\.attention\.q_proj\.", ".attention.attention.query."),
        (r"\.attention\.k_proj\.", ".attention.attention.key."),
        (r"\.attention\.v_proj\.", ".attention.attention.value."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
    ),
}


def _rename(key: str, rules: Iterable[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def canonical_key(module_key: str, family: Family) -> str:
    """The canonical (HF checkpoint) name of a transformers in-memory parameter name."""
    return _rename(module_key, _CANONICAL_RENAMES[family])


def to_module_state_dict(state_dict: Mapping[str, Tensor], family: Family) -> dict[str, Tensor]:
    """Rename a canonical state dict to the in-memory names of transformers >= 5."""
    return {_rename(key, _MODULE_RENAMES[family]): value for key, value in state_dict.items()}


def expected_shapes(arch: BackboneArch) -> Shapes:
    """Canonical key -> shape of every tensor a weight file of ``arch`` must hold."""
    model = arch.new_model(device="meta")
    return {
        canonical_key(key, arch.family): tuple(value.shape)
        for key, value in model.state_dict().items()
    }


def _meta_expected_shapes(arch: BackboneArch) -> Shapes:
    """Key -> shape of an official Meta checkpoint of ``arch``."""
    c, m, p = arch.hidden_size, arch.mlp_size, arch.patch_size
    shapes: Shapes = {
        "cls_token": (1, 1, c),
        "mask_token": (1, c),
        "patch_embed.proj.weight": (c, 3, p, p),
        "patch_embed.proj.bias": (c,),
        "norm.weight": (c,),
        "norm.bias": (c,),
    }
    if arch.family == "dinov3":
        shapes["storage_tokens"] = (1, arch.num_register_tokens, c)
        shapes["rope_embed.periods"] = (arch.head_dim // 4,)
    else:
        grid = arch.image_size // p
        shapes["pos_embed"] = (1, 1 + grid * grid, c)
    for i in range(arch.depth):
        block = {
            "norm1.weight": (c,),
            "norm1.bias": (c,),
            "attn.qkv.weight": (3 * c, c),
            "attn.qkv.bias": (3 * c,),
            "attn.proj.weight": (c, c),
            "attn.proj.bias": (c,),
            "ls1.gamma": (c,),
            "norm2.weight": (c,),
            "norm2.bias": (c,),
            "mlp.fc1.weight": (m, c),
            "mlp.fc1.bias": (m,),
            "mlp.fc2.weight": (c, m),
            "mlp.fc2.bias": (c,),
            "ls2.gamma": (c,),
        }
        if arch.family == "dinov3":
            block["attn.qkv.bias_mask"] = (3 * c,)
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    return shapes


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED_KEYS])
    more = len(items) - _MAX_LISTED_KEYS
    return f"{shown} (and {more} more)" if more > 0 else shown


def check_state_dict(
    state_dict: Mapping[str, Tensor], expected: Shapes, *, source: str, what: str
) -> None:
    """Raise unless ``state_dict`` holds exactly the expected keys with the expected shapes.

    Args:
        state_dict: Tensors to check.
        expected: Key -> shape that must be present, nothing more.
        source: Where the tensors come from (a path), named in the message.
        what: What they should be (architecture and layout), named in the message.

    Raises:
        BackboneError: Listing every missing, unexpected and mis-shaped key.
    """
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{key} {list(state_dict[key].shape)} (expected {list(shape)})"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    )
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        )
        if keys
    ]
    if problems:
        raise BackboneError(f"{source} does not hold {what}: " + "; ".join(problems))


def _split_qkv(qkv: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    query, key, value = (part.clone() for part in torch.split(qkv, width, dim=0))
    return query, key, value


def _check_meta_buffers(state_dict: Mapping[str, Tensor], arch: BackboneArch, source: str) -> None:
    """Check the DINOv3 buffers we drop: they must say what our transformers config assumes."""
    c = arch.hidden_size
    mask = torch.cat([torch.ones(c), torch.zeros(c), torch.ones(c)])
    for i in range(arch.depth):
        key = f"blocks.{i}.attn.qkv.bias_mask"
        if not torch.equal(state_dict[key].float(), mask):
            raise BackboneError(
                f"{source}: {key} does not mask exactly the key part of the qkv bias; "
                "this is not a released DINOv3 checkpoint"
            )
    assert arch.rope_theta is not None
    quarter = arch.head_dim // 4
    periods = arch.rope_theta ** (2 * torch.arange(quarter, dtype=torch.float64) / (2 * quarter))
    if not torch.allclose(state_dict["rope_embed.periods"].double(), periods, rtol=1e-5):
        raise BackboneError(
            f"{source}: rope_embed.periods do not match a RoPE base of {arch.rope_theta}"
        )


def _convert_meta(state_dict: Mapping[str, Tensor], arch: BackboneArch) -> dict[str, Tensor]:
    """Official Meta layout (already checked) -> canonical HF layout."""
    c = arch.hidden_size
    out: dict[str, Tensor] = {
        "embeddings.cls_token": state_dict["cls_token"],
        "embeddings.patch_embeddings.weight": state_dict["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": state_dict["patch_embed.proj.bias"],
    }
    if arch.family == "dinov3":
        out["embeddings.mask_token"] = state_dict["mask_token"].reshape(1, 1, c)
        out["embeddings.register_tokens"] = state_dict["storage_tokens"]
        out["norm.weight"] = state_dict["norm.weight"]
        out["norm.bias"] = state_dict["norm.bias"]
    else:
        out["embeddings.mask_token"] = state_dict["mask_token"]
        out["embeddings.position_embeddings"] = state_dict["pos_embed"]
        out["embeddings.patch_embeddings.projection.weight"] = out.pop(
            "embeddings.patch_embeddings.weight"
        )
        out["embeddings.patch_embeddings.projection.bias"] = out.pop(
            "embeddings.patch_embeddings.bias"
        )
        out["layernorm.weight"] = state_dict["norm.weight"]
        out["layernorm.bias"] = state_dict["norm.bias"]
    for i in range(arch.depth):
        src = f"blocks.{i}."
        q_w, k_w, v_w = _split_qkv(state_dict[src + "attn.qkv.weight"], c)
        q_b, k_b, v_b = _split_qkv(state_dict[src + "attn.qkv.bias"], c)
        if arch.family == "dinov3":
            dst = f"layer.{i}."
            attention = {
                "q_proj.weight": q_w,
                "q_proj.bias": q_b,
                "k_proj.weight": k_w,
                "v_proj.weight": v_w,
                "v_proj.bias": v_b,
                "o_proj.weight": state_dict[src + "attn.proj.weight"],
                "o_proj.bias": state_dict[src + "attn.proj.bias"],
            }
            mlp = {"up_proj": "fc1", "down_proj": "fc2"}
        else:
            dst = f"encoder.layer.{i}."
            attention = {
                "attention.query.weight": q_w,
                "attention.query.bias": q_b,
                "attention.key.weight": k_w,
                "attention.key.bias": k_b,
                "attention.value.weight": v_w,
                "attention.value.bias": v_b,
                "output.dense.weight": state_dict[src + "attn.proj.weight"],
                "output.dense.bias": state_dict[src + "attn.proj.bias"],
            }
            mlp = {"fc1": "fc1", "fc2": "fc2"}
        out.update({f"{dst}attention.{name}": value for name, value in attention.items()})
        for hf_name, meta_name in mlp.items():
            for kind in ("weight", "bias"):
                out[f"{dst}mlp.{hf_name}.{kind}"] = state_dict[f"{src}mlp.{meta_name}.{kind}"]
        for norm in ("norm1", "norm2"):
            for kind in ("weight", "bias"):
                out[f"{dst}{norm}.{kind}"] = state_dict[f"{src}{norm}.{kind}"]
        out[f"{dst}layer_scale1.lambda1"] = state_dict[src + "ls1.gamma"]
        out[f"{dst}layer_scale2.lambda1"] = state_dict[src + "ls2.gamma"]
    return out


def _read_tensor_file(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file or a torch-pickled state dict (safely: weights only)."""
    if path.suffix != ".safetensors":
        loaded: object = load_torch_file(path, what="a backbone weight file", error=BackboneError)
    else:
        try:
            loaded = load_safetensors(path)
        except (OSError, SafetensorError) as err:
            raise BackboneError(f"cannot read backbone weights {str(path)!r}: {err}") from err
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in loaded.items()
    ):
        raise BackboneError(
            f"{str(path)!r} is not a state dict (a mapping of names to tensors); "
            f"got {type(loaded).__name__}"
        )
    return dict(loaded)


def _config_fields(arch: BackboneArch) -> dict[str, object]:
    """HF config fields that change the forward pass, with the values ``arch`` needs."""
    config = arch.transformers_config()
    fields: dict[str, object] = {"model_type": config.model_type}
    fields.update({name: getattr(config, name) for name in _HF_CONFIG_FIELDS[arch.family]})
    return fields


def _same(found: object, expected: object) -> bool:
    if isinstance(expected, float) and isinstance(found, int | float):
        return math.isclose(found, expected, rel_tol=1e-9)
    return found == expected


def _check_hf_config(path: Path, arch: BackboneArch) -> None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BackboneError(f"cannot read model config {str(path)!r}: {err}") from err
    if not isinstance(config, dict):
        raise BackboneError(f"model config {str(path)!r} is not a JSON object")
    for name, expected in _config_fields(arch).items():
        if name in config and not _same(config[name], expected):
            raise BackboneError(
                f"model config {str(path)!r} does not describe {arch.name}: "
                f"{name} is {config[name]!r}, expected {expected!r}"
            )


def _read_hf_dir(path: Path, arch: BackboneArch) -> tuple[dict[str, Tensor], Path]:
    config_path = path / HF_CONFIG_FILE
    if not config_path.is_file():
        raise BackboneError(f"HuggingFace model directory {str(path)!r} has no {HF_CONFIG_FILE}")
    _check_hf_config(config_path, arch)
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file():
            return _read_tensor_file(path / name), path / name
    raise BackboneError(
        f"HuggingFace model directory {str(path)!r} holds none of {', '.join(HF_WEIGHT_FILES)}"
    )


def _as_float32(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in state_dict.items()
    }


def load_weights_file(path: str | Path, arch: BackboneArch) -> dict[str, Tensor]:
    """Read backbone weights of ``arch`` from a local file or HF directory, strictly.

    Accepted: an official Meta ``.pth`` checkpoint; a ``.safetensors`` / ``.pth`` / ``.bin``
    file in the HF checkpoint layout (or the in-memory names of the installed transformers);
    a HuggingFace model directory (``config.json`` plus ``model.safetensors`` or
    ``pytorch_model.bin``; the config must describe ``arch``).

    Returns:
        The canonical (HF checkpoint layout) state dict, floating tensors as float32 so that
        the storage precision of the file does not change the weights' identity.

    Raises:
        BackboneError: The path does not exist or cannot be read, or its tensors (after
            conversion) are not exactly those of ``arch``.
    """
    path = Path(path)
    if not path.exists():
        raise BackboneError(f"backbone weights not found: {str(path)!r}")
    if path.is_dir():
        raw, source_path = _read_hf_dir(path, arch)
    else:
        raw, source_path = _read_tensor_file(path), path
    source = repr(str(source_path))
    if "patch_embed.proj.weight" in raw or any(key.startswith("blocks.") for key in raw):
        check_state_dict(
            raw, _meta_expected_shapes(arch), source=source, what=f"{arch.name} (Meta layout)"
        )
        if arch.family == "dinov3":
            _check_meta_buffers(raw, arch, source)
        canonical = _convert_meta(raw, arch)
    else:
        canonical = {}
        for key, value in raw.items():
            name = canonical_key(key, arch.family)
            if name in canonical:
                raise BackboneError(f"{source} holds {name} twice (as {key} and another name)")
            canonical[name] = value
    check_state_dict(
        canonical, expected_shapes(arch), source=source, what=f"{arch.name} (HF layout)"
    )
    return _as_float32(canonical)


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, in key order.

    Hash the canonical layout (as returned by :func:`load_weights_file`): the same weights read
    from a Meta checkpoint, an HF safetensors file or an HF directory then hash the same.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        header = f"{key}\0{tensor.dtype}\0{list(tensor.shape)}\0"
        digest.update(header.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
