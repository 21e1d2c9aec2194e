"""Tests of the procedural RGB-D scene generator: determinism, geometry, labels, camouflage."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import pytest

from unim2_demo.synthetic_scenes import (
    CLASS_NAMES,
    IGNORE_LABEL,
    PALETTE,
    CameraPose,
    Room,
    SceneFrame,
    camera_matrix,
    generate_sequence,
    random_room,
    render_view,
)

FLOOR, WALL, CEILING = (CLASS_NAMES.index(n) for n in ("floor", "wall", "ceiling"))


def _frames(n: int, **kwargs: object) -> list[SceneFrame]:
    return list(generate_sequence(n, **kwargs))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def _tour() -> list[SceneFrame]:
    """Four rooms, 24 frames each at 2 Hz: the camera pans through most of every room."""
    return _frames(96, width=160, height=120, seed=11, frames_per_room=24, fps=2.0)


def _room(seed: int) -> Room:
    return random_room(np.random.default_rng([seed, 0]))


def _level_pose(room: Room, yaw: float) -> CameraPose:
    start = room.camera_pose(0.0)
    return CameraPose(start.position, yaw, 0.0, 0.0)


def test_palette_has_one_distinct_colour_per_class() -> None:
    assert PALETTE.shape == (len(CLASS_NAMES), 3)
    assert PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE.tolist()}) == len(CLASS_NAMES)
    assert 6 <= len(CLASS_NAMES) <= 8
    assert len(CLASS_NAMES) <= IGNORE_LABEL


@pytest.mark.parametrize(("width", "height"), [(320, 240), (160, 120), (96, 64)])
def test_frames_have_documented_shapes_and_dtypes(width: int, height: int) -> None:
    frames = _frames(2, width=width, height=height, seed=1)
    for f in frames:
        assert f.rgb.shape == (height, width, 3) and f.rgb.dtype == np.uint8
        assert f.depth_mm.shape == (height, width) and f.depth_mm.dtype == np.uint16
        assert f.labels.shape == (height, width) and f.labels.dtype == np.uint8
        assert f.instances.shape == (height, width) and f.instances.dtype == np.uint16
        assert f.camouflaged.shape == (height, width) and f.camouflaged.dtype == np.bool_
        assert isinstance(f.stamp_ns, int)
        valid = f.labels != IGNORE_LABEL
        assert f.labels[valid].max() < len(CLASS_NAMES)


def test_same_seed_gives_identical_frames() -> None:
    a = _frames(3, width=96, height=64, seed=5, frames_per_room=2)
    b = _frames(3, width=96, height=64, seed=5, frames_per_room=2)
    for fa, fb in zip(a, b, strict=True):
        for x, y in zip(fa, fb, strict=True):
            np.testing.assert_array_equal(x, y)


def test_different_seeds_give_different_frames() -> None:
    a = _frames(1, width=96, height=64, seed=5)[0]
    b = _frames(1, width=96, height=64, seed=6)[0]
    assert not np.array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.depth_mm, b.depth_mm)


def test_shorter_sequence_is_prefix_of_longer_one() -> None:
    short = _frames(3, width=96, height=64, seed=2, frames_per_room=2)
    long = _frames(5, width=96, height=64, seed=2, frames_per_room=2)
    for fa, fb in zip(short, long[:3], strict=True):
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.depth_mm, fb.depth_mm)


def test_rooms_change_every_frames_per_room_and_stamps_follow_fps() -> None:
    frames = _frames(5, width=64, height=48, seed=0, frames_per_room=2, fps=12.5, start_ns=1_000)
    assert [f.room_index for f in frames] == [0, 0, 1, 1, 2]
    assert [f.stamp_ns for f in frames] == [1_000 + i * 80_000_000 for i in range(5)]


def test_every_class_appears_in_a_short_tour() -> None:
    seen = set()
    for f in _tour():
        seen |= set(np.unique(f.labels).tolist())
    assert set(range(len(CLASS_NAMES))) <= seen


def test_depth_is_plausible_and_zero_only_where_invalid() -> None:
    frames = _tour()
    depth = np.stack([f.depth_mm for f in frames])
    valid = depth[depth > 0]
    assert valid.min() >= 300 and valid.max() <= 9500
    assert 0.001 < (depth == 0).mean() < 0.1
    labels = np.stack([f.labels for f in frames])
    assert (labels[depth == 0] != IGNORE_LABEL).any()  # dropouts hit labelled surfaces too
    assert (labels[depth > 0] != IGNORE_LABEL).mean() > 0.9


def test_level_camera_sees_floor_below_and_ceiling_above_the_horizon() -> None:
    width, height = 160, 120
    k = camera_matrix(width, height)
    rows = np.arange(height)[:, None] * np.ones((1, width))
    checked = 0
    for seed in range(3):
        room = _room(seed)
        for yaw in np.linspace(0, 2 * math.pi, 4, endpoint=False):
            pose = _level_pose(room, float(yaw))
            f = render_view(room, pose, width=width, height=height, rng=np.random.default_rng(0))
            floor, ceiling = f.labels == FLOOR, f.labels == CEILING
            assert (rows[floor] > k[1, 2]).all()
            assert (rows[ceiling] < k[1, 2]).all()
            # Floor depth follows the ground plane: z = h * f / (v - cy), growing towards the
            # horizon (rugs lie 8 mm above the floor; the sensor adds noise and rounding).
            ok = floor & (f.depth_mm > 0)
            if ok.sum() < 50:
                continue
            expected = pose.position[2] * k[1, 1] / (rows[ok] - k[1, 2])
            rel = f.depth_mm[ok] / 1000.0 / expected - 1.0
            assert np.median(np.abs(rel)) < 0.01
            assert np.quantile(np.abs(rel), 0.98) < 0.05
            ok = ceiling & (f.depth_mm > 0)
            expected = (room.size[2] - pose.position[2]) * k[1, 1] / (k[1, 2] - rows[ok])
            if ok.any():
                assert np.median(np.abs(f.depth_mm[ok] / 1000.0 / expected - 1.0)) < 0.01
            checked += int(floor.sum())
    assert checked > 10_000


def test_wall_pixels_back_project_onto_the_room_walls() -> None:
    width, height = 160, 120
    k = camera_matrix(width, height)
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    room = _room(4)
    pose = _level_pose(room, 0.0)  # camera z = world +x, camera x = world -y, camera y = -z
    f = render_view(room, pose, width=width, height=height, rng=np.random.default_rng(0))
    ok = (f.labels == WALL) & (f.depth_mm > 0)
    z = f.depth_mm[ok] / 1000.0
    xw = pose.position[0] + z
    yw = pose.position[1] - (u[ok] - k[0, 2]) / k[0, 0] * z
    zw = pose.position[2] - (v[ok] - k[1, 2]) / k[1, 1] * z
    lx, ly, lz = room.size
    to_wall = np.minimum.reduce([np.abs(xw), np.abs(lx - xw), np.abs(yw), np.abs(ly - yw)])
    assert ok.sum() > 1000
    assert np.quantile(to_wall, 0.95) < 0.05  # baseboards stand 12 mm proud, plus noise
    assert ((zw > -0.05) & (zw < lz + 0.05)).all()


def test_consecutive_frames_are_similar_and_rooms_differ() -> None:
    frames = _frames(8, width=160, height=120, seed=3, frames_per_room=4, fps=10.0)

    def mad(a: SceneFrame, b: SceneFrame) -> float:
        return float(np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16)).mean())

    within = [mad(frames[i], frames[i + 1]) for i in (0, 1, 2, 4, 5, 6)]
    across = [mad(frames[i], frames[j]) for i in range(4) for j in range(4, 8)]
    assert max(within) < 0.5 * min(across)
    depth_step = [
        np.abs(frames[i].depth_mm.astype(float) - frames[i + 1].depth_mm).mean() for i in (0, 1, 2)
    ]
    assert max(depth_step) < 250  # mm, mean over pixels (holes included)


def _contrast_with_wall(camouflaged: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per visible object: colour and depth gap between the object and the wall around it.

    Colour gap: largest per-channel difference of mean RGB (0-255). Depth gap: median depth of
    the surrounding wall minus that of the object (mm).
    """
    colour, depth = [], []
    kernel = np.ones((9, 9), np.uint8)
    for f in _tour():
        chosen = f.camouflaged if camouflaged else ~f.camouflaged & (f.instances > 0)
        for inst in np.unique(f.instances[chosen]):
            obj = (f.instances == inst) & (f.depth_mm > 0)
            if obj.sum() < 150:
                continue
            ring = cv2.dilate(obj.astype(np.uint8), kernel).astype(bool) & ~obj
            ring &= (f.labels == WALL) & (f.instances == 0) & (f.depth_mm > 0)
            if ring.sum() < 100:
                continue
            colour.append(np.abs(f.rgb[obj].mean(axis=0) - f.rgb[ring].mean(axis=0)).max())
            depth.append(np.median(f.depth_mm[ring]) - np.median(f.depth_mm[obj]))
    return np.array(colour), np.array(depth)


def test_camouflaged_objects_match_the_wall_in_rgb_but_not_in_depth() -> None:
    colour, depth = _contrast_with_wall(camouflaged=True)
    assert len(colour) >= 20
    # Seen against their own wall they nearly vanish; near a corner the neighbouring wall,
    # lit from another side, can show behind them, hence a quantile and not the maximum.
    assert np.median(colour) < 8
    assert np.quantile(colour, 0.9) < 14
    assert np.median(depth) > 200
    assert np.quantile(depth, 0.1) > 80
    ordinary, _ = _contrast_with_wall(camouflaged=False)
    assert np.median(ordinary) > 5 * np.median(colour)


def test_camouflaged_pixels_are_objects_not_room_structure() -> None:
    for f in _tour()[::6]:
        assert (f.instances[f.camouflaged] > 0).all()
        labels = set(np.unique(f.labels[f.camouflaged]).tolist())
        assert labels <= {CLASS_NAMES.index("box"), CLASS_NAMES.index("cabinet")}


def test_render_noise_is_small_and_textures_stay_put() -> None:
    room = _room(8)
    pose = room.camera_pose(1.0)
    a = render_view(room, pose, width=160, height=120, rng=np.random.default_rng(1))
    b = render_view(room, pose, width=160, height=120, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a.labels, b.labels)
    diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16))
    assert 0 < diff.mean() < 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_frames": -1}, "n_frames"),
        ({"n_frames": 1, "width": 4}, "image size"),
        ({"n_frames": 1, "seed": -3}, "seed"),
        ({"n_frames": 1, "frames_per_room": 0}, "frames_per_room"),
        ({"n_frames": 1, "fps": 0.0}, "fps"),
        ({"n_frames": 1, "fps": float("nan")}, "fps"),
    ],
)
def test_generate_sequence_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_sequence(**kwargs)  # type: ignore[arg-type]


def test_render_view_rejects_tiny_images() -> None:
    room = _room(0)
    with pytest.raises(ValueError, match="image size"):
        render_view(room, room.camera_pose(0.0), width=4, height=64, rng=np.random.default_rng(0))
