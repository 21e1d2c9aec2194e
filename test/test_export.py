"""ONNX export and ONNX Runtime inference against the PyTorch Segmenter, on the real NYU frames
of test/data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_bundle

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.errors import ExportError
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import Bundle, save_bundle
from unim2_core.runtime.export import TIE_TOLERANCE, export_onnx, self_check_agreement
from unim2_core.runtime.inference_graph import InferenceGraph, nearest_exact_indices
from unim2_core.runtime.onnx_segmenter import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    OnnxSegmenter,
    choose_providers,
)
from unim2_core.runtime.segmenter import CLUSTER_ORDERS, ClusterOrder, Segmenter
from unim2_train.export import main as export_main

NYU = CameraIntrinsics(518.857901, 519.469611, 325.582449, 253.736166, 640, 480)
MIN_AGREEMENT = 0.999


def _nyu_frames(sample_data: Path) -> list[dict[str, np.ndarray]]:
    root = sample_data / "nyu_rgbd_sample"
    frames = []
    for path in sorted((root / "rgb").glob("*.png")):
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(root / "depth_mm" / path.name), cv2.IMREAD_UNCHANGED)
        frames.append({"rgb": rgb, "depth": depth})
    return frames


@pytest.fixture(scope="module")
def nyu_frames(sample_data: Path) -> list[dict[str, np.ndarray]]:
    frames = _nyu_frames(sample_data)
    assert len(frames) >= 2
    return frames


def _spread_bundle(
    backbone: Backbone,
    encodings: dict[str, ModalityEncoding],
    frame: dict[str, np.ndarray],
    *,
    shorter_side: int = 224,
) -> Bundle:
    """A bundle whose centroids sit on the codes of spread-out pixels of ``frame``, so that
    many clusters occur and their borders test the agreement (random centroids give one)."""
    bundle = make_bundle(backbone, encodings, n_clusters=8, shorter_side=shorter_side)
    segmenter = Segmenter(bundle, backbone, device="cpu")
    intrinsics = {"depth": NYU} if encodings["depth"].kind.value == "depth_hha" else None
    code = segmenter.code(frame, intrinsics=intrinsics)[0]  # [D, h, w]
    _, h, w = code.shape
    with torch.no_grad():
        for k in range(8):
            segmenter.heads.cluster_probe.centroids[k] = code[:, (5 * k + 2) % h, (13 * k + 3) % w]
    return Bundle.from_heads(
        segmenter.heads,
        backbone=bundle.backbone,
        encodings=bundle.encodings,
        preprocess=bundle.preprocess,
    )


@pytest.fixture(scope="module")
def rgbd_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
    imgfocus_backbone: Backbone,
    nyu_frames: list[dict[str, np.ndarray]],
) -> Path:
    encodings = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
    path = tmp_path_factory.mktemp("rgbd") / "model.unim2.pt"
    return save_bundle(_spread_bundle(imgfocus_backbone, encodings, nyu_frames[0]), path)


@pytest.fixture(scope="module")
def rgbd_exports(rgbd_checkpoint: Path, imgfocus_weights: Path) -> dict[ClusterOrder, Path]:
    return {
        order: export_onnx(
            rgbd_checkpoint,
            imgfocus_weights,
            rgbd_checkpoint.parent / f"model.{order}.onnx",
            cluster_order=order,
        )
        for order in CLUSTER_ORDERS
    }


def _agreement(expected: np.ndarray, actual: np.ndarray) -> float:
    assert expected.shape == actual.shape and expected.dtype == actual.dtype
    return float(np.mean(expected == actual))


@pytest.mark.parametrize("order", CLUSTER_ORDERS)
def test_onnx_labels_equal_the_pytorch_segmenters_on_the_nyu_frames(
    order: ClusterOrder,
    rgbd_checkpoint: Path,
    rgbd_exports: dict[ClusterOrder, Path],
    imgfocus_backbone: Backbone,
    nyu_frames: list[dict[str, np.ndarray]],
) -> None:
    from unim2_core.model.checkpoint import load_bundle

    torch_segmenter = Segmenter(
        load_bundle(rgbd_checkpoint), imgfocus_backbone, device="cpu", cluster_order=order
    )
    onnx_segmenter = OnnxSegmenter.from_files(rgbd_checkpoint, rgbd_exports[order], device="cpu")
    assert onnx_segmenter.cluster_order == order
    assert onnx_segmenter.labels_table == torch_segmenter.labels_table
    for frame in nyu_frames:
        expected = torch_segmenter(frame, with_confidence=True)
        actual = onnx_segmenter(frame, with_confidence=True)
        assert len(np.unique(expected.labels)) >= 4  # borders between clusters are tested
        assert _agreement(expected.labels, actual.labels) >= MIN_AGREEMENT
        assert actual.confidence is not None and expected.confidence is not None
        np.testing.assert_allclose(actual.confidence, expected.confidence, atol=1e-3)
    square = {name: array[:, 80:560] for name, array in nyu_frames[1].items()}  # another batch size
    assert onnx_segmenter.processing_size(480, 480) != onnx_segmenter.processing_size(480, 640)
    assert (
        _agreement(torch_segmenter(square).labels, onnx_segmenter(square).labels) >= MIN_AGREEMENT
    )


def test_the_two_cluster_orders_give_different_files_and_labels(
    rgbd_checkpoint: Path,
    rgbd_exports: dict[ClusterOrder, Path],
    nyu_frames: list[dict[str, np.ndarray]],
) -> None:
    by_order = {
        order: OnnxSegmenter.from_files(rgbd_checkpoint, path, device="cpu")(nyu_frames[1]).labels
        for order, path in rgbd_exports.items()
    }
    assert not np.array_equal(by_order["similarity"], by_order["code"])


def test_onnx_segments_without_a_lost_modality_as_the_pytorch_fallback_does(
    rgbd_checkpoint: Path,
    rgbd_exports: dict[ClusterOrder, Path],
    imgfocus_backbone: Backbone,
    nyu_frames: list[dict[str, np.ndarray]],
) -> None:
    from unim2_core.model.checkpoint import load_bundle

    torch_segmenter = Segmenter(load_bundle(rgbd_checkpoint), imgfocus_backbone, device="cpu")
    onnx_segmenter = OnnxSegmenter.from_files(
        rgbd_checkpoint, rgbd_exports["similarity"], device="cpu"
    )
    for frame in nyu_frames[:3]:
        rgb_only = {"rgb": frame["rgb"]}
        expected = torch_segmenter(rgb_only, missing=("depth",)).labels
        actual = onnx_segmenter(rgb_only, missing=("depth",)).labels
        assert _agreement(expected, actual) >= MIN_AGREEMENT
        assert _agreement(onnx_segmenter(frame).labels, actual) < 0.99  # the mask took effect
    staged = onnx_segmenter.stage({"rgb": nyu_frames[0]["rgb"]}, missing=("depth",))
    assert staged.present == ("rgb",) and not onnx_segmenter.launch_is_asynchronous
    reference = torch_segmenter.stage({"rgb": nyu_frames[0]["rgb"]}, missing=("depth",))
    assert np.array_equal(staged.pixels.numpy(), reference.pixels.numpy())  # one preprocessing
    with pytest.raises(ValueError, match=r"missing modalities \['rgb'\] are not auxiliary"):
        onnx_segmenter(nyu_frames[0], missing=("rgb",))


def test_onnx_labels_equal_pytorch_for_a_depth_hha_model_with_per_frame_intrinsics(
    tmp_path: Path,
    imgfocus_backbone: Backbone,
    imgfocus_weights: Path,
    nyu_frames: list[dict[str, np.ndarray]],
) -> None:
    encodings = {
        "rgb": ModalityEncoding.default("rgb"),
        "depth": ModalityEncoding.default("depth_hha"),
    }
    checkpoint = save_bundle(
        _spread_bundle(imgfocus_backbone, encodings, nyu_frames[0]), tmp_path / "hha.unim2.pt"
    )
    onnx_path = export_onnx(checkpoint, imgfocus_weights, tmp_path / "hha.onnx")
    torch_segmenter = Segmenter.from_files(checkpoint, imgfocus_weights, device="cpu")
    onnx_segmenter = OnnxSegmenter.from_files(checkpoint, onnx_path, device="cpu")
    for frame in nyu_frames[:4]:
        expected = torch_segmenter(frame, intrinsics={"depth": NYU}).labels
        actual = onnx_segmenter(frame, intrinsics={"depth": NYU}).labels
        assert len(np.unique(expected)) >= 4
        assert _agreement(expected, actual) >= MIN_AGREEMENT
    other_camera = NYU._replace(fx=300.0, fy=300.0)
    moved = onnx_segmenter(nyu_frames[0], intrinsics={"depth": other_camera}).labels
    assert (
        _agreement(torch_segmenter(nyu_frames[0], intrinsics={"depth": other_camera}).labels, moved)
        >= MIN_AGREEMENT
    )
    assert (
        _agreement(onnx_segmenter(nyu_frames[0], intrinsics={"depth": NYU}).labels, moved) < 0.999
    )


def test_onnx_file_of_another_checkpoint_is_refused_naming_the_file(
    tmp_path: Path,
    rgbd_exports: dict[ClusterOrder, Path],
    imgfocus_backbone: Backbone,
) -> None:
    encodings = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
    other = save_bundle(make_bundle(imgfocus_backbone, encodings, seed=7), tmp_path / "other.pt")
    onnx_path = rgbd_exports["similarity"]
    with pytest.raises(
        ExportError, match=rf"'{onnx_path}' was exported from another model: checkpoint_sha256"
    ):
        OnnxSegmenter.from_files(other, onnx_path, device="cpu")


def test_missing_corrupt_and_foreign_onnx_files_are_refused_naming_the_file(
    tmp_path: Path, rgbd_checkpoint: Path
) -> None:
    missing = tmp_path / "absent.onnx"
    with pytest.raises(ExportError, match=rf"ONNX file not found: '{missing}'"):
        OnnxSegmenter.from_files(rgbd_checkpoint, missing, device="cpu")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model at all")
    with pytest.raises(ExportError, match=rf"'{corrupt}' is not a usable ONNX model"):
        OnnxSegmenter.from_files(rgbd_checkpoint, corrupt, device="cpu")
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), foreign, dynamo=False)
    with pytest.raises(
        ExportError, match=rf"'{foreign}': ONNX metadata lacks 'unim2.format_version'"
    ):
        OnnxSegmenter.from_files(rgbd_checkpoint, foreign, device="cpu")


def test_providers_are_chosen_from_what_onnxruntime_offers() -> None:
    cpu_only = ["AzureExecutionProvider", CPU_PROVIDER]
    gpu = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    assert choose_providers("cpu", "fp32", gpu) == [CPU_PROVIDER]
    assert choose_providers("auto", "fp32", cpu_only) == [CPU_PROVIDER]
    assert choose_providers("auto", "fp32", gpu) == gpu
    assert choose_providers("cuda", "fp16", gpu) == [
        (TENSORRT_PROVIDER, {"trt_fp16_enable": True}),
        CUDA_PROVIDER,
        CPU_PROVIDER,
    ]
    with pytest.raises(ExportError, match="device 'cuda' needs onnxruntime's"):
        choose_providers("cuda", "fp32", cpu_only)
    with pytest.raises(ExportError, match="precision 'fp16' with onnxruntime needs the Tensorrt"):
        choose_providers("cuda", "fp16", [CUDA_PROVIDER, CPU_PROVIDER])
    with pytest.raises(ExportError, match="precision must be one of .* got 'bf16'"):
        choose_providers("cpu", "bf16", gpu)
    assert choose_providers("cuda:1", "fp16", gpu) == [
        (TENSORRT_PROVIDER, {"device_id": 1, "trt_fp16_enable": True}),
        (CUDA_PROVIDER, {"device_id": 1}),
        CPU_PROVIDER,
    ]
    with pytest.raises(ExportError, match="device 'cuda:1' needs onnxruntime's"):
        choose_providers("cuda:1", "fp32", cpu_only)
    with pytest.raises(ExportError, match="device must be one of .* or cuda:N, got 'cuda:x'"):
        choose_providers("cuda:x", "fp32", gpu)


@pytest.mark.parametrize(
    ("size_in", "size_out"), [(16, 480), (294, 640), (224, 480), (7, 5), (30, 30)]
)
def test_nearest_exact_indices_match_torch_interpolate(size_in: int, size_out: int) -> None:
    source = torch.arange(size_in, dtype=torch.float32)[None, None, :, None]  # [1, 1, n, 1]
    reference = F.interpolate(source, size=(size_out, 1), mode="nearest-exact")[0, 0, :, 0]
    assert torch.equal(nearest_exact_indices(size_in, size_out), reference.long())


def test_inference_graph_stays_in_eval_mode(imgfocus_backbone: Backbone) -> None:
    encodings = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
    heads = make_bundle(imgfocus_backbone, encodings).build_heads()
    graph = InferenceGraph(imgfocus_backbone, heads, cluster_order="similarity")
    graph.train(True)
    assert not graph.training and not heads.training
    with pytest.raises(ValueError, match="cluster_order must be one of"):
        InferenceGraph(imgfocus_backbone, heads, cluster_order="nearest")  # type: ignore[arg-type]


def test_unim2_export_writes_a_file_onnx_runtime_serves(
    tmp_path: Path,
    rgbd_checkpoint: Path,
    imgfocus_weights: Path,
    nyu_frames: list[dict[str, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cli.onnx"
    argv = ["--checkpoint", str(rgbd_checkpoint), "--backbone-weights", str(imgfocus_weights)]
    assert export_main([*argv, "--out", str(out), "--cluster-order", "code"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    segmenter = OnnxSegmenter.from_files(rgbd_checkpoint, out, device="cpu")
    assert segmenter.cluster_order == "code"
    assert segmenter(nyu_frames[0]).labels.shape == (480, 640)
    absent = tmp_path / "absent.pt"
    assert export_main(["--checkpoint", str(absent), "--out", str(tmp_path / "x.onnx")]) == 1
    assert capsys.readouterr().err.startswith("ERROR: ")
    assert not (tmp_path / "x.onnx").exists()


def test_self_check_counts_ties_but_not_other_clusters() -> None:
    expected = np.array([[0, 1], [2, 3]])
    expected_best = np.array([[0.9, 0.8], [0.7, 0.6]], dtype=np.float32)
    assert self_check_agreement(expected, expected_best, expected, expected_best) == 1.0
    # Pixel (0, 0): another id with the same similarity (a tie); pixel (1, 1): another id whose
    # similarity is clearly lower, which only a wrong graph gives.
    clusters = np.array([[5, 1], [2, 4]])
    best = expected_best + np.array([[TIE_TOLERANCE / 2, 0.0], [0.0, -0.05]], dtype=np.float32)
    assert self_check_agreement(clusters, best, expected, expected_best) == 0.75
