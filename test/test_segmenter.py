"""Segmenter: raw robot-unit arrays -> label maps, on real frames with the real default backbone."""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_bundle

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import encode_group, to_backbone_batch
from unim2_core.errors import BackboneError, CheckpointError, ConfigError, EncodingError
from unim2_core.model.backbone import Backbone, load_backbone
from unim2_core.model.checkpoint import ClassMapping, save_bundle
from unim2_core.runtime.segmenter import (
    Precision,
    Segmenter,
    clusters_from_code,
    clusters_from_similarity,
    distinct_palette,
)

RGBD = {"rgb": ModalityEncoding.default("rgb"), "depth": ModalityEncoding.default("depth")}
RGBT = {"rgb": ModalityEncoding.default("rgb"), "thermal": ModalityEncoding.default("thermal")}


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def nyu_frame(sample_data: Path) -> dict[str, np.ndarray]:
    root = sample_data / "nyu_rgbd_sample"
    depth = cv2.imread(str(root / "depth_mm" / "0003.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16
    return {"rgb": _read_rgb(root / "rgb" / "0003.png"), "depth": depth}


@pytest.fixture(scope="module")
def msrs_frame(sample_data: Path) -> dict[str, np.ndarray]:
    root = sample_data / "msrs_rgbt_sample"
    thermal = cv2.imread(str(root / "thermal" / "00004N.png"), cv2.IMREAD_UNCHANGED)
    assert thermal.dtype == np.uint8 and thermal.ndim == 2
    return {"rgb": _read_rgb(root / "rgb" / "00004N.png"), "thermal": thermal}


def _centroids_from_pixels(
    segmenter: Segmenter,
    frame: dict[str, np.ndarray],
    intrinsics: dict[str, CameraIntrinsics] | None = None,
) -> None:
    """Place the centroids on the codes of spread-out pixels, so several clusters occur."""
    code = segmenter.code(frame, intrinsics=intrinsics)[0]  # [D, h, w]
    _, h, w = code.shape
    picks = [((7 * i + 1) % h, (11 * i + 2) % w) for i in range(segmenter.heads.config.n_clusters)]
    with torch.no_grad():
        for k, (y, x) in enumerate(picks):
            segmenter.heads.cluster_probe.centroids[k] = code[:, y, x]


def _pipeline_groups(
    nyu_frame: dict[str, np.ndarray],
) -> list[tuple[dict[str, np.ndarray], tuple[str, ...]]]:
    """Three different groups (arrays, missing): full, depth lost, flipped."""
    flipped = {m: array[::-1].copy() for m, array in nyu_frame.items()}
    return [(nyu_frame, ()), ({"rgb": nyu_frame["rgb"]}, ("depth",)), (flipped, ())]


def _pipelined_labels(
    segmenter: Segmenter, groups: list[tuple[dict[str, np.ndarray], tuple[str, ...]]]
) -> list[np.ndarray]:
    """Each group's labels, run as the node runs them: the next group is staged before the
    previous outputs are read."""
    pending = segmenter.launch(segmenter.stage(groups[0][0], missing=groups[0][1]))
    outputs = []
    for arrays, missing in groups[1:]:
        staged = segmenter.stage(arrays, missing=missing)
        outputs.append(pending.result().labels)
        pending = segmenter.launch(staged)
    outputs.append(pending.result().labels)
    return outputs


def test_segments_real_nyu_rgbd_frame(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, RGBD, n_clusters=6), imgfocus_backbone, device="cpu"
    )
    _centroids_from_pixels(segmenter, nyu_frame)
    result = segmenter(nyu_frame, with_confidence=True)
    assert result.labels.shape == (480, 640) and result.labels.dtype == np.uint8
    assert result.labels.max() < 6 and len(np.unique(result.labels)) > 1
    assert result.confidence is not None and result.confidence.shape == (480, 640)
    assert result.confidence.dtype == np.float32 and float(result.confidence.max()) <= 1.0 + 1e-5
    again = segmenter(nyu_frame)
    np.testing.assert_array_equal(again.labels, result.labels)


def test_segments_real_msrs_rgbt_frame(
    imgfocus_backbone: Backbone, msrs_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, RGBT, n_clusters=4), imgfocus_backbone, device="cpu"
    )
    labels = segmenter(msrs_frame).labels
    assert labels.shape == msrs_frame["rgb"].shape[:2] and labels.max() < 4
    np.testing.assert_array_equal(segmenter(msrs_frame).labels, labels)


def test_depth_in_metres_gives_the_same_labels_as_millimetres(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(make_bundle(imgfocus_backbone, RGBD), imgfocus_backbone, device="cpu")
    metres = nyu_frame["depth"].astype(np.float32) / 1000.0
    metres[nyu_frame["depth"] == 0] = np.nan
    np.testing.assert_array_equal(
        segmenter({"rgb": nyu_frame["rgb"], "depth": metres}).labels, segmenter(nyu_frame).labels
    )


def test_inference_never_runs_the_harmoniser(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(make_bundle(imgfocus_backbone, RGBD), imgfocus_backbone, device="cpu")
    calls: list[str] = []
    for name, module in segmenter.heads.harmonisers.items():
        module.register_forward_hook(lambda *_, n=name: calls.append(n))
    assert list(segmenter.heads.harmonisers) == ["depth"]
    segmenter(nyu_frame)
    assert calls == []


def test_class_mapping_turns_clusters_into_class_ids(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    mapping = ClassMapping(
        (1, 0, -1, 2, -1), ("wall", "floor", "bed"), np.eye(3, dtype=np.uint8) * 200
    )
    bundle = make_bundle(imgfocus_backbone, RGBD, n_clusters=5, class_mapping=mapping)
    mapped = Segmenter(bundle, imgfocus_backbone, device="cpu")
    raw = Segmenter(bundle, imgfocus_backbone, device="cpu", apply_mapping=False)
    clusters = raw(nyu_frame).labels
    lookup = np.array([1, 0, 3, 2, 4])  # unmatched clusters 2 and 4 get ids 3 and 4
    np.testing.assert_array_equal(mapped(nyu_frame).labels, lookup[clusters])
    names = [info.name for info in mapped.labels_table]
    assert names == ["wall", "floor", "bed", "cluster_2", "cluster_4"]
    assert mapped.labels_table[0].color == (200, 0, 0)
    assert [info.name for info in raw.labels_table] == [f"cluster_{k}" for k in range(5)]


def test_more_than_255_labels_use_uint16(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, RGBD, n_clusters=300), imgfocus_backbone, device="cpu"
    )
    assert segmenter(nyu_frame).labels.dtype == np.uint16


def test_odd_input_sizes_come_back_at_input_resolution(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, RGBD), imgfocus_backbone, device="cpu", shorter_side=100
    )
    odd = {k: v[:479, :637] for k, v in nyu_frame.items()}
    assert segmenter.processing_size(479, 637) == (98, 126)
    assert segmenter(odd).labels.shape == (479, 637)


def test_bf16_precision_runs_on_cpu_and_mostly_agrees(
    imgfocus_weights: Path, nyu_frame: dict[str, np.ndarray]
) -> None:
    backbone = load_backbone("dinov2_vits14", imgfocus_weights)
    bundle = make_bundle(backbone, RGBD)
    fp32 = Segmenter(bundle, backbone, device="cpu")(nyu_frame).labels
    backbone16 = load_backbone("dinov2_vits14", imgfocus_weights)
    bf16 = Segmenter(bundle, backbone16, device="cpu", precision="bf16")(nyu_frame).labels
    assert (bf16 == fp32).mean() > 0.8


def test_bad_frames_are_refused_with_a_reason(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(make_bundle(imgfocus_backbone, RGBD), imgfocus_backbone, device="cpu")
    with pytest.raises(EncodingError, match=r"lacks modality \['depth'\]"):
        segmenter({"rgb": nyu_frame["rgb"]})
    with pytest.raises(EncodingError, match="rgb 480x640, depth 240x320"):
        segmenter({"rgb": nyu_frame["rgb"], "depth": nyu_frame["depth"][::2, ::2]})
    with pytest.raises(EncodingError, match="no valid pixel"):
        segmenter({"rgb": nyu_frame["rgb"], "depth": np.zeros_like(nyu_frame["depth"])})


def test_options_are_validated(imgfocus_backbone: Backbone) -> None:
    bundle = make_bundle(imgfocus_backbone, RGBD)
    with pytest.raises(ValueError, match="precision must be one of"):
        Segmenter(bundle, imgfocus_backbone, precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="device must be one of cpu, cuda, cuda:N"):
        Segmenter(bundle, imgfocus_backbone, device="tpu")
    with pytest.raises(ValueError, match="cluster_order must be one of"):
        Segmenter(bundle, imgfocus_backbone, cluster_order="logits")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match=f"device '{device}' .* sees no CUDA GPU"):
                Segmenter(bundle, imgfocus_backbone, device=device)


def test_from_files_loads_bundle_and_checks_the_backbone(
    imgfocus_backbone: Backbone,
    imgfocus_weights: Path,
    tmp_path: Path,
    nyu_frame: dict[str, np.ndarray],
) -> None:
    bundle = make_bundle(imgfocus_backbone, RGBD)
    path = save_bundle(bundle, tmp_path / "model.unim2.pt")
    segmenter = Segmenter.from_files(path, imgfocus_weights, device="cpu")
    assert segmenter.backbone.identity == imgfocus_backbone.identity
    np.testing.assert_array_equal(
        segmenter(nyu_frame).labels,
        Segmenter(bundle, imgfocus_backbone, device="cpu")(nyu_frame).labels,
    )
    with pytest.raises(BackboneError, match=r"not found.*nope\.safetensors"):
        Segmenter.from_files(path, tmp_path / "nope.safetensors")
    wrong = bundle.backbone._replace(weights_sha256="0" * 64)
    bundle.backbone = wrong
    other = save_bundle(bundle, tmp_path / "other.unim2.pt")
    with pytest.raises(CheckpointError, match="backbone mismatch in weights_sha256"):
        Segmenter.from_files(other, imgfocus_weights, device="cpu")


def test_clusters_from_similarity_upsamples_then_uses_nearest() -> None:
    similarity = torch.full((1, 2, 2, 2), 0.5)
    similarity[0, 1] = 0.0
    similarity[0, 1, 0, 0] = 1.0  # only the top-left feature cell prefers cluster 1
    clusters, best = clusters_from_similarity(
        similarity, processing_size=(4, 4), output_size=(8, 8)
    )
    # Bilinear 2 -> 4 weights the top-left cell by 1, 0.75, 0.25, 0 along each axis: cluster 1
    # wins where the product exceeds 0.5, the 2 x 2 top-left block, i.e. 4 x 4 output pixels.
    expected = torch.zeros(8, 8, dtype=torch.long)
    expected[:4, :4] = 1
    torch.testing.assert_close(clusters[0], expected)
    assert best[0, 0, 0].item() == pytest.approx(1.0) and best[0, 7, 7].item() == pytest.approx(0.5)


def test_clusters_from_code_upsamples_the_code_before_normalising() -> None:
    # Feature cells c0 = (10, 0) and c1 = (0, 1), centroids along the axes. Bilinear 2 -> 4
    # (align_corners=False) gives pixels c0, 0.75 c0 + 0.25 c1, 0.25 c0 + 0.75 c1, c1. Pixel 2
    # is (2.5, 0.75): the reference's order (upsample the code, normalise, cosine) gives it
    # cluster 0 with cosine 2.5 / sqrt(2.5^2 + 0.75^2); upsampling the per-cell cosines (1, 0)
    # and (0, 1) gives it 0.25 vs 0.75, cluster 1.
    code = torch.tensor([[10.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # [B, D, h, w]
    centroids = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # norms do not matter
    clusters, best = clusters_from_code(code, centroids, output_size=(1, 4))
    assert clusters[0, 0].tolist() == [0, 0, 0, 1]
    expected_best = [1.0, 7.5 / (7.5**2 + 0.25**2) ** 0.5, 2.5 / (2.5**2 + 0.75**2) ** 0.5, 1.0]
    assert best[0, 0].tolist() == pytest.approx(expected_best, abs=1e-6)
    fast, _ = clusters_from_similarity(
        torch.einsum(
            "bdhw,kd->bkhw",
            torch.nn.functional.normalize(code, dim=1),
            torch.nn.functional.normalize(centroids, dim=1),
        ),
        processing_size=(1, 4),
        output_size=(1, 4),
    )
    assert fast[0, 0].tolist() == [0, 0, 1, 1]


def _numpy_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [C, h, w] with half-pixel centres and edge clamping, written out."""
    channels, height, width = array.shape
    out = np.empty((channels, *size))
    for y in range(size[0]):
        sy = min(max((y + 0.5) * height / size[0] - 0.5, 0.0), height - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, height - 1), sy - y0
        for x in range(size[1]):
            sx = min(max((x + 0.5) * width / size[1] - 0.5, 0.0), width - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, width - 1), sx - x0
            top = (1 - fx) * array[:, y0, x0] + fx * array[:, y0, x1]
            bottom = (1 - fx) * array[:, y1, x0] + fx * array[:, y1, x1]
            out[:, y, x] = (1 - fy) * top + fy * bottom
    return out


def test_clusters_from_code_matches_a_numpy_reference_on_random_codes() -> None:
    rng = np.random.default_rng(0)
    code = rng.standard_normal((1, 6, 5, 7))
    centroids = rng.standard_normal((4, 6))
    upsampled = _numpy_bilinear(code[0], (20, 28))  # [D, H, W]
    unit = upsampled / np.linalg.norm(upsampled, axis=0, keepdims=True)
    cosine = np.einsum("dhw,kd->khw", unit, centroids / np.linalg.norm(centroids, axis=1)[:, None])
    clusters, best = clusters_from_code(
        torch.from_numpy(code).float(), torch.from_numpy(centroids).float(), output_size=(20, 28)
    )
    np.testing.assert_array_equal(clusters[0].numpy(), cosine.argmax(axis=0))
    np.testing.assert_allclose(best[0].numpy(), cosine.max(axis=0), atol=1e-5)
    fast, _ = clusters_from_similarity(
        torch.from_numpy(
            np.einsum(
                "dhw,kd->khw",
                code[0] / np.linalg.norm(code[0], axis=0, keepdims=True),
                centroids / np.linalg.norm(centroids, axis=1)[:, None],
            )[None]
        ).float(),
        processing_size=(20, 28),
        output_size=(20, 28),
    )
    assert 0 < (fast[0] != clusters[0]).float().mean().item() < 0.2  # the orders differ


def test_code_order_segmenter_assigns_clusters_from_the_upsampled_code(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    bundle = make_bundle(imgfocus_backbone, RGBD)
    fast = Segmenter(bundle, imgfocus_backbone, device="cpu")
    paper = Segmenter(bundle, imgfocus_backbone, device="cpu", cluster_order="code")
    _centroids_from_pixels(fast, nyu_frame)
    paper.heads.load_state_dict(fast.heads.state_dict())
    height, width = nyu_frame["rgb"].shape[:2]
    expected, _ = clusters_from_code(
        paper.code(nyu_frame), paper.heads.cluster_probe.centroids, output_size=(height, width)
    )
    labels = paper(nyu_frame).labels
    np.testing.assert_array_equal(labels, expected[0].numpy())
    assert (labels != fast(nyu_frame).labels).any()


def test_distinct_palette_is_deterministic_and_distinct() -> None:
    palette = distinct_palette(30)
    assert palette.shape == (30, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == 30
    np.testing.assert_array_equal(distinct_palette(30), palette)


def test_missing_depth_runs_rgb_alone_and_fuses_it_as_training_dropout_does(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, RGBD, n_clusters=6), imgfocus_backbone, device="cpu"
    )
    _centroids_from_pixels(segmenter, nyu_frame)
    rgb_only = {"rgb": nyu_frame["rgb"]}
    code = segmenter.code(rgb_only, missing=("depth",))
    # Independent reference: the backbone on RGB alone, the depth slot filled with anything,
    # and the heads told that depth is absent (the trainer's modality-dropout call).
    encoded = encode_group(rgb_only, {"rgb": RGBD["rgb"]})
    pixels = to_backbone_batch(encoded, segmenter.processing_size(480, 640))
    with torch.no_grad():
        features = imgfocus_backbone(pixels)  # [1, C, h, w]
        stacked = torch.stack([features[0], torch.randn_like(features[0])])[None]
        expected = segmenter.heads(stacked, torch.tensor([[True, False]]))
    torch.testing.assert_close(code, expected, rtol=1e-4, atol=1e-4)
    degraded = segmenter(rgb_only, missing=("depth",)).labels
    full = segmenter(nyu_frame).labels
    assert degraded.shape == full.shape == (480, 640)
    assert 0.0 < float((degraded != full).mean()) < 1.0
    # A depth array handed in anyway is ignored when depth is declared missing.
    np.testing.assert_array_equal(segmenter(nyu_frame, missing=["depth"]).labels, degraded)


def test_missing_modalities_are_checked(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(make_bundle(imgfocus_backbone, RGBD), imgfocus_backbone, device="cpu")
    with pytest.raises(ValueError, match=r"\['rgb'\] are not auxiliary modalities"):
        segmenter(nyu_frame, missing=("rgb",))
    with pytest.raises(ValueError, match=r"\['thermal'\] are not auxiliary.*\['depth'\]"):
        segmenter(nyu_frame, missing=("thermal",))
    with pytest.raises(EncodingError, match="lacks modality"):
        segmenter({"rgb": nyu_frame["rgb"]})


CAMERA_320 = CameraIntrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)


def test_staged_input_is_the_encoded_resized_batch_and_run_gives_the_call_outputs(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    encodings = {"rgb": RGBD["rgb"], "depth": ModalityEncoding.default("depth_hha")}
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, encodings, n_clusters=6),
        imgfocus_backbone,
        device="cpu",
        shorter_side=112,
    )
    frame = {k: v[:240, :320] for k, v in nyu_frame.items()}
    camera = {"depth": CAMERA_320}
    _centroids_from_pixels(segmenter, frame, camera)
    for missing, present in (((), ("rgb", "depth")), (("depth",), ("rgb",))):
        staged = segmenter.stage(frame, intrinsics=camera, missing=missing)
        assert staged.present == present and staged.output_size == (240, 320)
        assert staged.ready is None and not segmenter.launch_is_asynchronous  # CPU: all done
        expected_pixels = to_backbone_batch(
            encode_group(frame, {m: encodings[m] for m in present}, intrinsics=camera),
            segmenter.processing_size(240, 320),
        )
        torch.testing.assert_close(staged.pixels, expected_pixels, rtol=0, atol=0)
        result = segmenter.run(staged, with_confidence=True)
        called = segmenter(frame, intrinsics=camera, missing=missing, with_confidence=True)
        np.testing.assert_array_equal(result.labels, called.labels)
        assert result.confidence is not None and called.confidence is not None
        np.testing.assert_array_equal(result.confidence, called.confidence)
        assert len(np.unique(result.labels)) > 1
    # The frame's intrinsics reach the HHA encoding: another camera gives other labels.
    other = {"depth": CameraIntrinsics(150.0, 150.0, 100.0, 60.0, 320, 240)}
    with_other = segmenter.run(segmenter.stage(frame, intrinsics=other)).labels
    assert (with_other != segmenter(frame, intrinsics=camera).labels).any()


def test_pipelined_stage_launch_result_gives_each_groups_outputs_in_order(
    imgfocus_backbone: Backbone, nyu_frame: dict[str, np.ndarray]
) -> None:
    segmenter = Segmenter(
        make_bundle(imgfocus_backbone, RGBD, n_clusters=6),
        imgfocus_backbone,
        device="cpu",
        shorter_side=112,
    )
    _centroids_from_pixels(segmenter, nyu_frame)
    groups = _pipeline_groups(nyu_frame)
    expected = [segmenter(arrays, missing=missing).labels for arrays, missing in groups]
    assert not np.array_equal(expected[0], expected[2])
    for output, labels in zip(_pipelined_labels(segmenter, groups), expected, strict=True):
        np.testing.assert_array_equal(output, labels)


def test_compiled_backbone_gives_the_eager_labels(
    imgfocus_weights: Path, nyu_frame: dict[str, np.ndarray]
) -> None:
    backbone = load_backbone("dinov2_vits14", imgfocus_weights, feature_layer="block:2")
    bundle = make_bundle(backbone, RGBD, n_clusters=6)
    eager = Segmenter(bundle, backbone, device="cpu", shorter_side=56)
    compiled = Segmenter(bundle, backbone, device="cpu", shorter_side=56, compile=True)
    assert compiled.compiled and not eager.compiled
    _centroids_from_pixels(eager, nyu_frame)
    compiled.heads.load_state_dict(eager.heads.state_dict())
    frame = {k: v[:120, :160] for k, v in nyu_frame.items()}
    compiling: list[bool] = []
    backbone.register_forward_pre_hook(lambda *_: compiling.append(torch.compiler.is_compiling()))
    expected = eager(frame, with_confidence=True)
    assert compiling == [False]
    result = compiled(frame, with_confidence=True)
    assert compiling[1:] == [True]  # traced by TorchDynamo, not run eagerly
    assert len(np.unique(expected.labels)) > 1
    np.testing.assert_array_equal(result.labels, expected.labels)
    assert expected.confidence is not None and result.confidence is not None
    np.testing.assert_allclose(result.confidence, expected.confidence, atol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA stage / launch path needs a GPU"
)
@pytest.mark.parametrize(("precision", "min_agreement"), [("fp32", 0.999), ("fp16", 0.97)])
def test_cuda_pipelined_outputs_match_the_cpu_segmenter(
    imgfocus_backbone: Backbone,
    nyu_frame: dict[str, np.ndarray],
    precision: Precision,
    min_agreement: float,
) -> None:
    """Pinned upload on the side stream, the event the compute stream waits for and the async
    copy back give each group its own labels, those of the CPU, while the next group stages."""
    bundle = make_bundle(imgfocus_backbone, RGBD, n_clusters=6)
    cpu = Segmenter(bundle, copy.deepcopy(imgfocus_backbone), device="cpu", shorter_side=112)
    _centroids_from_pixels(cpu, nyu_frame)
    gpu = Segmenter(
        bundle,
        copy.deepcopy(imgfocus_backbone),  # a Segmenter moves and casts its backbone in place
        device="cuda",
        precision=precision,
        shorter_side=112,
    )
    gpu.heads.load_state_dict(cpu.heads.state_dict())
    assert gpu.launch_is_asynchronous
    groups = _pipeline_groups(nyu_frame)
    expected = [cpu(arrays, missing=missing).labels for arrays, missing in groups]
    first = gpu.stage(groups[0][0], missing=groups[0][1])
    assert isinstance(first.ready, torch.cuda.Event) and first.pixels.is_cuda
    for output, labels in zip(_pipelined_labels(gpu, groups), expected, strict=True):
        assert output.dtype == labels.dtype and output.shape == labels.shape
        assert float(np.mean(output == labels)) >= min_agreement
