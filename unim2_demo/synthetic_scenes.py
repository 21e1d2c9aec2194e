"""Procedural synthetic indoor RGB-D video with known per-pixel labels.

The demo needs labelled RGB-D video without shipping a dataset. This module builds random
rectangular rooms (floor, walls, ceiling, windows, baseboards, rugs, tables, cabinets, shelves,
sofas, beds, boxes, paintings, screens), moves a pinhole camera through each room along a smooth
path and renders RGB, depth and class labels by vectorised ray casting in numpy. Every object is a
union of boxes (axis-aligned or turned about the vertical axis); textures are procedural and live
in surface coordinates, so they stay attached to surfaces as the camera moves.

Some boxes and cabinets standing against a wall are *camouflaged*: they carry the wall's material
in the wall's own texture coordinates, so in RGB they nearly vanish into the wall while depth shows
them clearly. Frames report which pixels belong to such objects, so an evaluation can measure what
the depth modality adds.

Conventions: world frame in metres, z up, the room fills [0, Lx] x [0, Ly] x [0, H]. Camera frame
as in OpenCV (x right, y down, z forward). Depth is the camera-frame z in millimetres, 0 = invalid
(REP 118, 16UC1).
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "CLASS_NAMES",
    "IGNORE_LABEL",
    "PALETTE",
    "CameraPose",
    "Room",
    "SceneFrame",
    "camera_matrix",
    "generate_sequence",
    "random_room",
    "render_view",
]

_Array = npt.NDArray[Any]

CLASS_NAMES: tuple[str, ...] = (
    "floor",  # floor and rugs
    "wall",  # walls and baseboards
    "ceiling",
    "table",  # dining tables, desks, coffee tables (top and legs)
    "cabinet",  # sideboards, wardrobes, bookshelves, nightstands, TV stands
    "sofa",  # sofas, armchairs and beds (soft furniture one sits or lies on)
    "box",  # cardboard boxes and storage bins
    "painting",  # paintings, posters, whiteboards, screens hung on walls
)
"""Class names; the class id of a pixel is the index in this tuple."""

FLOOR, WALL, CEILING, TABLE, CABINET, SOFA, BOX, PAINTING = range(len(CLASS_NAMES))

IGNORE_LABEL = 255
"""Label of pixels that belong to no class: windows (the view outside; no depth return either)
and doors."""

PALETTE: npt.NDArray[np.uint8] = np.array(
    [
        (120, 85, 55),
        (110, 150, 200),
        (235, 235, 190),
        (240, 140, 30),
        (40, 160, 70),
        (215, 45, 60),
        (40, 210, 220),
        (170, 70, 200),
    ],
    dtype=np.uint8,
)
"""Display colour of each class, ``[len(CLASS_NAMES), 3]`` uint8 RGB."""

_T = 256  # texture side in texels; a power of two, so texel wrap-around is a bit mask
_NEAR = 0.05  # metres; ray hits closer than this are ignored
_DEPTH_RANGE_M = (0.3, 9.5)  # the simulated sensor returns 0 outside this range
_GRID = 0.05  # metres per cell of the floor occupancy grid used for placement
_SHADOW_RES = 20.0  # cells per metre of the baked floor contact-shadow map
_CLEARANCE = 0.65  # metres kept free around the camera path


class SceneFrame(NamedTuple):
    """One rendered RGB-D frame with ground truth.

    Attributes:
        rgb: ``[H, W, 3]`` uint8, RGB order.
        depth_mm: ``[H, W]`` uint16 camera-frame z in millimetres, 0 where the simulated sensor
            has no return (windows, out of range, grazing angles, depth edges, dropouts).
        labels: ``[H, W]`` uint8 class ids (index into ``CLASS_NAMES``), ``IGNORE_LABEL`` where no
            class applies.
        stamp_ns: acquisition time in nanoseconds.
        instances: ``[H, W]`` uint16 object instance ids, unique within a room; 0 for the room
            structure (floor, walls, ceiling, baseboards, rugs, windows).
        camouflaged: ``[H, W]`` bool, pixels of objects that carry the texture of the wall they
            stand against (hard to see in RGB, obvious in depth).
        room_index: which room of the sequence the frame shows.
    """

    rgb: npt.NDArray[np.uint8]
    depth_mm: npt.NDArray[np.uint16]
    labels: npt.NDArray[np.uint8]
    stamp_ns: int
    instances: npt.NDArray[np.uint16]
    camouflaged: npt.NDArray[np.bool_]
    room_index: int


class CameraPose(NamedTuple):
    """Camera position (world metres) and orientation (radians).

    ``yaw`` turns about the world z axis (0 looks along +x), positive ``pitch`` looks up, positive
    ``roll`` turns the image clockwise as seen by the viewer.
    """

    position: tuple[float, float, float]
    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class _Trajectory:
    """Smooth camera path: an ellipse around a free point plus slow panning and bobbing."""

    centre: tuple[float, float]
    radii: tuple[float, float]
    phase: float
    angular_speed: float  # rad/s along the ellipse
    height: float
    yaw0: float
    yaw_rate: float  # rad/s of steady panning
    wobble: tuple[float, float, float, float, float, float]  # yaw amp, freq; pitch mean, amp,
    # freq; roll amp
    phases: tuple[float, float, float, float]

    def pose(self, t: float) -> CameraPose:
        a = self.phase + self.angular_speed * t
        x = self.centre[0] + self.radii[0] * math.cos(a)
        y = self.centre[1] + self.radii[1] * math.sin(a)
        z = self.height + 0.04 * math.sin(1.3 * t + self.phases[0])
        yaw_amp, yaw_freq, pitch0, pitch_amp, pitch_freq, roll_amp = self.wobble
        yaw = self.yaw0 + self.yaw_rate * t + yaw_amp * math.sin(yaw_freq * t + self.phases[1])
        pitch = pitch0 + pitch_amp * math.sin(pitch_freq * t + self.phases[2])
        roll = roll_amp * math.sin(0.9 * t + self.phases[3])
        return CameraPose((x, y, z), yaw, pitch, roll)


@dataclass(frozen=True, eq=False)
class Room:
    """A furnished room ready to render; build one with :func:`random_room`.

    Attributes:
        size: ``(Lx, Ly, H)`` in metres.

    The remaining attributes are the renderer's tables: one row per primitive box (row 0 is the
    room shell, seen from inside), per-face material and class, and a texture atlas in linear
    albedo.
    """

    size: tuple[float, float, float]
    centre: _Array  # [P, 3] primitive box centres
    half: _Array  # [P, 3] half extents in the primitive's own frame
    cos_yaw: _Array  # [P]
    sin_yaw: _Array  # [P]
    prim_table: _Array  # [P, 15] centre, half, cos, sin, texture offset, outward (+1 / -1),
    # and the wall normal camouflaged boxes are shaded with
    face_material: _Array  # [P * 6] material of face 2*axis + (positive side)
    face_stretch: _Array  # [P * 6] True: the texture spans the face once; False: tiled per metre
    face_class: _Array  # [P * 6] class id or IGNORE_LABEL
    instance: _Array  # [P] uint16
    camouflaged: _Array  # [P] bool
    corners: _Array  # [P, 8, 3] world corners, for screen-space culling
    atlas: _Array  # [M * T * T, 3] float32 linear albedo
    texels_per_m: _Array  # [M]
    emissive: _Array  # [M] bool: the material glows (window view), no shading, no depth return
    lamp: tuple[float, float, float, float]  # x, y, z, power
    window_light: tuple[float, float, float, float]  # unit direction towards the light, power
    ambient: float
    exposure: float
    floor_shadow: _Array  # [ny, nx] multiplicative contact shadow on the floor
    trajectory: _Trajectory

    def camera_pose(self, t: float) -> CameraPose:
        """Pose of the camera ``t`` seconds after it entered the room (smooth in ``t``)."""
        return self.trajectory.pose(t)


# ---------------------------------------------------------------------------------------------
# Procedural textures. Each returns [T, T, 3] float32 display-referred colour in [0, 1]; row 0
# is the top. Tiled textures are exactly periodic so they wrap without seams.


_U = (np.arange(_T, dtype=np.float32) / _T)[None, :]
_V = (np.arange(_T, dtype=np.float32) / _T)[:, None]


@functools.lru_cache(maxsize=64)
def _noise_filter(beta: float, stretch: float) -> _Array:
    fv = np.fft.fftfreq(_T)[:, None] * _T
    fu = np.fft.rfftfreq(_T)[None, :] * _T
    k = np.hypot(fv, fu * stretch)
    k[0, 0] = 1.0
    filt = k**-beta
    filt[0, 0] = 0.0
    out: _Array = filt.astype(np.float32)
    return out


def _noise(rng: np.random.Generator, beta: float = 1.5, stretch: float = 1.0) -> _Array:
    """Periodic fractal noise, zero mean, unit std; ``stretch > 1`` elongates it along rows."""
    white = rng.standard_normal((_T, _T + 2), dtype=np.float32).view(np.complex64)
    n = np.fft.irfft2(white * _noise_filter(round(beta, 1), stretch), s=(_T, _T))
    out: _Array = (n / n.std()).astype(np.float32, copy=False)
    return out


def _hsv(h: float, s: float, v: float) -> _Array:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _shade(colour: _Array, shade: _Array) -> _Array:
    return (shade[..., None] * colour).astype(np.float32, copy=False)


def _smoothstep(lo: float, hi: float, x: _Array) -> _Array:
    y = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return y * y * (3.0 - 2.0 * y)


def _tex_paint(rng: np.random.Generator, colour: _Array) -> _Array:
    return _shade(colour, 1.0 + 0.035 * _noise(rng, 1.8) + 0.015 * _noise(rng, 0.3))


def _tex_stripes(rng: np.random.Generator, c1: _Array, c2: _Array) -> _Array:
    phase = (_U * int(rng.choice([6, 8, 12]))) % 1.0
    duty = rng.uniform(0.3, 0.6)
    band = np.broadcast_to((phase < duty)[..., None], (_T, _T, 1))
    line = 1.0 - 0.12 * (np.abs(phase - duty) < 0.015)
    paper = 1.0 + 0.02 * _noise(rng, 0.3) + 0.025 * _noise(rng, 1.8)
    return (np.where(band, c1, c2) * (line * paper)[..., None]).astype(np.float32)


def _tex_pattern(rng: np.random.Generator, c1: _Array, c2: _Array) -> _Array:
    k = int(rng.choice([4, 6, 8]))
    a, b = 2 * np.pi * k * _U, 2 * np.pi * k * _V
    kind = int(rng.integers(3))
    if kind == 0:
        m = np.cos(a) * np.cos(b)
    elif kind == 1:
        m = np.cos(a + b) * np.cos(a - b) + 0.4 * np.cos(2 * a)
    else:
        m = (np.cos(a) + np.cos(b) + np.cos(a + b)) / 3.0
    motif = _smoothstep(0.35, 0.6, m)
    paper = 1.0 + 0.02 * _noise(rng, 0.3) + 0.025 * _noise(rng, 1.8)
    out: _Array = ((c1 + (c2 - c1) * motif[..., None]) * paper[..., None]).astype(np.float32)
    return out


def _tex_brick(rng: np.random.Generator, colour: _Array, mortar: _Array) -> _Array:
    rows, per_row = 16, 5
    y = _V * rows
    r = np.floor(y).astype(int)
    x = _U * per_row + 0.5 * (r % 2)
    brick = np.floor(x).astype(int) % per_row
    joint = ((x % 1.0) < 0.05) | ((y % 1.0) < 0.16)
    tone = 1.0 + 0.12 * rng.standard_normal((rows, per_row)).astype(np.float32)
    hue = 0.04 * rng.standard_normal((rows, per_row, 3)).astype(np.float32)
    body = colour * tone[r, brick][..., None] + hue[r, brick]
    body = body * (1.0 + 0.06 * _noise(rng, 0.6))[..., None]
    mortar_tex = _shade(mortar, 1.0 + 0.05 * _noise(rng, 0.5))
    return np.where(joint[..., None], mortar_tex, body).astype(np.float32)


def _tex_wood(rng: np.random.Generator, colour: _Array) -> _Array:
    warp = _noise(rng, 2.0, stretch=6.0)
    rings = np.sin(2 * np.pi * (_V * int(rng.choice([8, 12, 16])) + 0.9 * warp))
    grain = _noise(rng, 1.0, stretch=14.0)
    return _shade(colour, 1.0 + 0.07 * rings + 0.05 * grain)


def _tex_planks(rng: np.random.Generator, colour: _Array) -> _Array:
    rows = 8
    y = _V * rows
    r = np.floor(y).astype(int)
    x = (_U + rng.uniform(0, 1, rows).astype(np.float32)[r]) % 1.0
    tone = 1.0 + 0.09 * rng.standard_normal(rows).astype(np.float32)
    warm = 0.012 * rng.standard_normal((rows, 3)).astype(np.float32)
    wood = _tex_wood(rng, colour)
    shift = rng.integers(0, _T, rows)[r[:, 0]]
    rows_idx = (np.arange(_T)[:, None] + shift[:, None]) % _T
    wood = wood[rows_idx, np.arange(_T)[None, :]]
    tex = wood * tone[r][..., None] + warm[r[:, 0]][:, None, :]
    gap = ((y % 1.0) < 0.04) | (x < 0.004)
    out: _Array = np.where(gap[..., None], tex * 0.55, tex).astype(np.float32)
    return out


def _tex_tiles(rng: np.random.Generator, colour: _Array, grout: _Array) -> _Array:
    n = 4
    ti, tj = np.floor(_U * n).astype(int), np.floor(_V * n).astype(int)
    tone = 1.0 + 0.04 * rng.standard_normal((n, n)).astype(np.float32)
    veins = np.abs(np.sin(2 * np.pi * (2 * _U + _V) + 2.5 * _noise(rng, 2.2)))
    body = _shade(colour, tone[tj, ti] * (1.0 - 0.12 * veins**6) + 0.02 * _noise(rng, 0.4))
    joint = ((_U * n) % 1.0 < 0.012) | ((_V * n) % 1.0 < 0.012)
    return np.where(joint[..., None], grout, body).astype(np.float32)


def _tex_carpet(rng: np.random.Generator, colour: _Array) -> _Array:
    return _shade(colour, 1.0 + 0.08 * _noise(rng, 0.2) + 0.05 * _noise(rng, 1.6))


def _tex_fabric(rng: np.random.Generator, colour: _Array) -> _Array:
    weave = np.sin(2 * np.pi * 64 * _U) * np.sin(2 * np.pi * 64 * _V)
    return _shade(colour, 1.0 + 0.04 * weave + 0.04 * _noise(rng, 0.5) + 0.04 * _noise(rng, 1.7))


def _tex_cardboard(rng: np.random.Generator) -> _Array:
    colour = _hsv(rng.uniform(0.07, 0.1), rng.uniform(0.4, 0.55), rng.uniform(0.55, 0.72))
    flutes = 0.015 * np.sin(2 * np.pi * 96 * _V)
    return _shade(colour, 1.0 + flutes + 0.035 * _noise(rng, 0.4) + 0.04 * _noise(rng, 1.8))


def _tex_plain(rng: np.random.Generator, colour: _Array, amount: float = 0.015) -> _Array:
    return _shade(colour, 1.0 + amount * _noise(rng, 0.8))


def _tex_metal(rng: np.random.Generator, grey: float) -> _Array:
    return _shade(np.full(3, grey, np.float32), 1.0 + 0.06 * _noise(rng, 0.8, stretch=25.0))


def _tex_ceiling_tiles(rng: np.random.Generator) -> _Array:
    speck = 1.0 + 0.05 * _noise(rng, 0.1) + 0.02 * _noise(rng, 1.5)
    tex = _shade(_hsv(0.12, 0.03, 0.9), speck)
    joint = ((_U * 2) % 1.0 < 0.01) | ((_V * 2) % 1.0 < 0.01)
    return np.where(joint[..., None], tex * 0.7, tex).astype(np.float32)


def _frame(tex: _Array, width: int, colour: _Array) -> None:
    tex[:width], tex[-width:], tex[:, :width], tex[:, -width:] = colour, colour, colour, colour


def _tex_painting(rng: np.random.Generator) -> _Array:
    kind = int(rng.integers(3))
    if kind == 0:  # abstract colour fields
        n = _noise(rng, rng.uniform(2.0, 3.0))
        levels = int(rng.integers(3, 6))
        idx = np.digitize(n, np.quantile(n, np.linspace(0, 1, levels + 1)[1:-1]))
        h0 = rng.uniform()
        pal = np.stack(
            [
                _hsv(h0 + rng.uniform(-0.25, 0.25), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))
                for _ in range(levels)
            ]
        )
        tex = cv2.GaussianBlur(pal[idx], (0, 0), 1.5)
    elif kind == 1:  # landscape
        horizon = rng.uniform(0.45, 0.65)
        sky = _hsv(rng.uniform(0.55, 0.65), rng.uniform(0.3, 0.6), rng.uniform(0.7, 0.95))
        haze = _hsv(rng.uniform(0.05, 0.15), 0.2, 0.95)
        tex = (sky + (haze - sky) * np.clip(_V / horizon, 0, 1)[..., None]) * np.ones((1, _T, 1))
        far = _noise(rng, 2.5)[0]
        near = _noise(rng, 2.5)[_T // 2]
        hill_far = horizon - 0.05 - 0.04 * far
        hill_near = horizon + 0.05 - 0.06 * near
        ground = _hsv(rng.uniform(0.15, 0.35), rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.6))
        far_col = (0.6 * ground + 0.4 * sky) * 1.1
        tex = np.where((hill_far[None, :] < _V)[..., None], far_col, tex)
        near_tex = _shade(ground, 1.0 + 0.15 * _noise(rng, 1.2))
        tex = np.where((hill_near[None, :] < _V)[..., None], near_tex, tex)
    else:  # geometric blocks
        tex = np.full((_T, _T, 3), 0.92, np.float32)
        cuts_u = np.sort(rng.integers(20, _T - 20, int(rng.integers(2, 5))))
        cuts_v = np.sort(rng.integers(20, _T - 20, int(rng.integers(2, 5))))
        edges_u, edges_v = np.r_[0, cuts_u, _T], np.r_[0, cuts_v, _T]
        primaries = [_hsv(0.0, 0.85, 0.8), _hsv(0.62, 0.85, 0.6), _hsv(0.14, 0.9, 0.95)]
        for i in range(len(edges_v) - 1):
            for j in range(len(edges_u) - 1):
                if rng.uniform() < 0.3:
                    c = primaries[int(rng.integers(3))]
                    tex[edges_v[i] : edges_v[i + 1], edges_u[j] : edges_u[j + 1]] = c
        for c in cuts_u:
            tex[:, c - 3 : c + 3] = 0.05
        for c in cuts_v:
            tex[c - 3 : c + 3] = 0.05
    tex = tex.astype(np.float32)
    if rng.uniform() < 0.4:
        _frame(tex, int(rng.integers(14, 26)), np.full(3, 0.93, np.float32))
    frame_colours = [
        _hsv(0.08, 0.6, 0.35),
        np.full(3, 0.05),
        _hsv(0.12, 0.6, 0.75),
        np.full(3, 0.9),
    ]
    _frame(tex, int(rng.integers(6, 14)), frame_colours[int(rng.integers(4))].astype(np.float32))
    return tex


def _tex_screen(rng: np.random.Generator) -> _Array:
    glare = 0.03 + 0.05 * _smoothstep(0.3, 1.2, _U + _V) * rng.uniform(0.5, 1.0)
    tex = np.repeat(glare[..., None], 3, axis=2).astype(np.float32)
    _frame(tex, 5, np.full(3, 0.02, np.float32))
    return tex


def _tex_whiteboard(rng: np.random.Generator) -> _Array:
    tex = _shade(np.full(3, 0.9, np.float32), 1.0 + 0.01 * _noise(rng, 1.0))
    inks = [(0.1, 0.15, 0.6), (0.05, 0.05, 0.05), (0.7, 0.1, 0.1)]
    for _ in range(int(rng.integers(2, 7))):
        start = rng.uniform(30, _T - 30, 2)
        steps = np.cumsum(rng.normal(0, 6, (int(rng.integers(8, 30)), 2)), axis=0)
        pts = np.clip(start + steps, 15, _T - 15).astype(np.int32)
        cv2.polylines(tex, [pts], False, inks[int(rng.integers(3))], 2, cv2.LINE_AA)
    _frame(tex, 6, np.full(3, 0.7, np.float32))
    return tex


def _tex_cabinet_front(rng: np.random.Generator, body: _Array) -> _Array:
    tex = body.copy()
    seam = body.mean(axis=(0, 1)) * 0.35
    handle = np.full(3, 0.75, np.float32) if rng.uniform() < 0.5 else np.full(3, 0.08, np.float32)
    kind = int(rng.integers(3))
    top = 0
    if kind == 2:  # a drawer row above doors
        top = int(_T * rng.uniform(0.2, 0.3))
        tex[top - 2 : top + 1] = seam
        tex[top // 2 - 3 : top // 2 + 3, _T // 2 - 20 : _T // 2 + 20] = handle
    if kind == 0:  # drawers
        n = int(rng.integers(2, 5))
        for i in range(1, n):
            y = i * _T // n
            tex[y - 1 : y + 2] = seam
        for i in range(n):
            y = (2 * i + 1) * _T // (2 * n)
            tex[y - 3 : y + 3, _T // 2 - 22 : _T // 2 + 22] = handle
    else:  # doors
        n = int(rng.integers(1, 4))
        for i in range(1, n):
            x = i * _T // n
            tex[top:, x - 1 : x + 2] = seam
        y0 = top + (_T - top) // 3
        for i in range(n):
            x = (i + 1) * _T // n - 12 if i % 2 == 0 else i * _T // n + 12
            tex[y0 - 16 : y0 + 16, x - 2 : x + 3] = handle
    _frame(tex, 2, seam)
    return tex


def _tex_door(rng: np.random.Generator, body: _Array) -> _Array:
    tex = body.copy()
    edge = body.mean(axis=(0, 1)) * 0.6
    n = int(rng.integers(1, 4))
    for i in range(n):
        y0, y1 = 20 + i * (_T - 30) // n, 10 + (i + 1) * (_T - 30) // n
        cv2.rectangle(tex, (40, y0), (_T - 40, y1), edge.tolist(), 3)
    knob = (0.75, 0.72, 0.6) if rng.uniform() < 0.6 else (0.1, 0.1, 0.1)
    cv2.rectangle(tex, (_T - 30, 120), (_T - 18, 128), knob, -1)
    _frame(tex, 4, edge * 0.8)
    return tex


def _tex_bookshelf(rng: np.random.Generator, wood: _Array) -> _Array:
    tex = wood.copy()
    shelves = int(rng.integers(4, 7))
    side, board, plinth = 10, 7, 16
    bounds = np.linspace(board, _T - plinth, shelves + 1).astype(int)
    for i in range(shelves):
        y0, y1 = bounds[i], bounds[i + 1] - board
        tex[y0:y1, side : _T - side] = wood[y0:y1, side : _T - side] * 0.25
        x = side + int(rng.integers(0, 12))
        while x < _T - side - 3:
            if rng.uniform() < 0.08:
                x += int(rng.integers(10, 40))
                continue
            w = min(int(rng.integers(3, 11)), _T - side - x)
            top = y1 - int((y1 - y0) * rng.uniform(0.6, 0.95))
            c = _hsv(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.85))
            tex[top:y1, x : x + w] = c
            band = top + int((y1 - top) * rng.uniform(0.1, 0.3))
            tex[band : band + 2, x : x + w] = c * 1.4
            tex[top:y1, x : x + 1] = c * 0.6
            x += w
    return tex


def _tex_rug(rng: np.random.Generator) -> _Array:
    h = rng.uniform()
    c1 = _hsv(h, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
    c2 = _hsv(h + rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.85))
    tex = _tex_pattern(rng, c1, c2)
    border = _shade(c2 * 0.8, np.ones((_T, _T), np.float32))
    mask = np.zeros((_T, _T), bool)
    b = int(rng.integers(14, 28))
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = True, True, True, True
    tex = np.where(mask[..., None], border, tex)
    return (tex * (1.0 + 0.06 * _noise(rng, 0.2))[..., None]).astype(np.float32)


def _tex_window(rng: np.random.Generator) -> _Array:
    top, low = np.array([0.55, 0.7, 0.95], np.float32), np.array([0.9, 0.93, 0.97], np.float32)
    tex = (top + (low - top) * _V[..., None]) * np.ones((1, _T, 1), np.float32)
    if rng.uniform() < 0.6:  # trees
        crowns = _noise(rng, 1.8) + 3.0 * (_V - rng.uniform(0.45, 0.65))
        green = _shade(_hsv(rng.uniform(0.22, 0.32), 0.5, 0.45), 1.0 + 0.25 * _noise(rng, 0.8))
        tex = np.where((crowns > 0.5)[..., None], green, tex)
    else:  # buildings
        for _ in range(int(rng.integers(3, 7))):
            x0 = int(rng.integers(0, _T - 40))
            w, y0 = int(rng.integers(30, 90)), int(rng.integers(_T // 3, _T - 40))
            tex[y0:, x0 : x0 + w] = _hsv(rng.uniform(0, 0.15), 0.15, rng.uniform(0.55, 0.85))
    white = np.full(3, 0.92, np.float32)
    _frame(tex, 12, white)
    tex[:, _T // 2 - 4 : _T // 2 + 4] = white
    if rng.uniform() < 0.5:
        tex[_T // 3 - 4 : _T // 3 + 4] = white
    return tex.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Room assembly.


def _pastel(rng: np.random.Generator) -> _Array:
    return _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.03, 0.25), rng.uniform(0.72, 0.92))


def _wood_colour(rng: np.random.Generator) -> _Array:
    return _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.8))


class _Builder:
    """Collects materials and primitive boxes while a room is furnished."""

    def __init__(self, rng: np.random.Generator, size: tuple[float, float, float]) -> None:
        self.rng = rng
        self.size = size
        self.textures: list[_Array] = []
        self.scales: list[float] = []
        self.emissive: list[bool] = []
        self.prims: list[dict[str, Any]] = []
        self.n_instances = 0
        lx, ly, _ = size
        self.occupied = np.zeros((int(ly / _GRID) + 1, int(lx / _GRID) + 1), np.uint8)
        self.wall_spans: list[list[tuple[float, float, float, float]]] = [[], [], [], []]

    def material(self, tex: _Array, texels_per_m: float = 256.0, *, emissive: bool = False) -> int:
        self.textures.append(np.clip(tex, 0.0, 1.0).astype(np.float32))
        self.scales.append(texels_per_m)
        self.emissive.append(emissive)
        return len(self.textures) - 1

    def new_instance(self) -> int:
        self.n_instances += 1
        return self.n_instances

    def box(
        self,
        centre: tuple[float, float, float],
        half: tuple[float, float, float],
        cls: int,
        mat: int,
        *,
        yaw: float = 0.0,
        instance: int = 0,
        faces: dict[int, tuple[int, bool]] | None = None,
        world_texture: bool = False,
        camouflage_wall: int | None = None,
    ) -> None:
        """Add a box; ``faces`` overrides (material, stretched) per face index 2*axis+side.

        ``world_texture`` tiles textures in world coordinates, as on the walls. A box camouflaged
        against wall ``camouflage_wall`` also does, and is shaded with that wall's normal, so in
        RGB it shows little more than the texture shift that parallax causes.
        """
        face_mat = [mat] * 6
        face_stretch = [False] * 6
        for f, (m, stretched) in (faces or {}).items():
            face_mat[f], face_stretch[f] = m, stretched
        c, h = np.asarray(centre, np.float32), np.asarray(half, np.float32)
        camouflaged = camouflage_wall is not None
        world = world_texture or camouflaged
        offset = c - h if world else self.rng.uniform(0, 4, 3).astype(np.float32)
        normal = np.zeros(3, np.float32)
        if camouflage_wall is not None:
            normal[camouflage_wall // 2] = 1.0 if camouflage_wall % 2 == 0 else -1.0
        self.prims.append(
            dict(
                centre=c,
                half=h,
                yaw=yaw,
                face_mat=face_mat,
                face_stretch=face_stretch,
                face_class=[cls] * 6,
                instance=instance,
                camouflaged=camouflaged,
                offset=offset,
                normal=normal,
            )
        )

    # -- placement -------------------------------------------------------------------------

    def _cells(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        m = 0.04
        i0, i1 = max(int((y0 - m) / _GRID), 0), math.ceil((y1 + m) / _GRID)
        j0, j1 = max(int((x0 - m) / _GRID), 0), math.ceil((x1 + m) / _GRID)
        return slice(i0, i1), slice(j0, j1)

    def floor_free(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        lx, ly, _ = self.size
        if x0 < 0 or y0 < 0 or x1 > lx or y1 > ly:
            return False
        return not self.occupied[self._cells(x0, y0, x1, y1)].any()

    def occupy(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self.occupied[self._cells(x0, y0, x1, y1)] = 1

    def wall_length(self, wall: int) -> float:
        return self.size[1] if wall < 2 else self.size[0]

    def wall_free(self, wall: int, s0: float, s1: float, z0: float, z1: float) -> bool:
        if s0 < 0.05 or s1 > self.wall_length(wall) - 0.05:
            return False
        return all(
            s1 <= a0 or s0 >= a1 or z1 <= b0 or z0 >= b1 for a0, a1, b0, b1 in self.wall_spans[wall]
        )

    def against_wall(
        self, width: float, depth: float, height: float, *, walls: tuple[int, ...] = (0, 1, 2, 3)
    ) -> tuple[int, float] | None:
        """Find a free spot for a ``width`` x ``depth`` footprint backed against one of ``walls``.

        Returns (wall, position of the footprint centre along the wall) and reserves it.
        """
        for _ in range(40):
            wall = walls[int(self.rng.integers(len(walls)))]
            s = self.rng.uniform(
                width / 2 + 0.05, max(self.wall_length(wall) - width / 2 - 0.05, width / 2 + 0.06)
            )
            x0, y0, x1, y1 = _wall_footprint(self.size, wall, s, width, depth)
            if self.wall_free(wall, s - width / 2, s + width / 2, 0.0, height) and self.floor_free(
                x0, y0, x1, y1
            ):
                self.wall_spans[wall].append((s - width / 2, s + width / 2, 0.0, height))
                self.occupy(x0, y0, x1, y1)
                return wall, s
        return None

    def free_spot(self, width: float, depth: float, yaw: float) -> tuple[float, float] | None:
        """Find and reserve a free floor spot for a footprint turned by ``yaw``."""
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        ex, ey = (width * c + depth * s) / 2, (width * s + depth * c) / 2
        lx, ly, _ = self.size
        for _ in range(40):
            x = self.rng.uniform(ex + 0.15, max(lx - ex - 0.15, ex + 0.16))
            y = self.rng.uniform(ey + 0.15, max(ly - ey - 0.15, ey + 0.16))
            if self.floor_free(x - ex, y - ey, x + ex, y + ey):
                self.occupy(x - ex, y - ey, x + ex, y + ey)
                return x, y
        return None


def _wall_footprint(
    size: tuple[float, float, float], wall: int, s: float, width: float, depth: float
) -> tuple[float, float, float, float]:
    lx, ly, _ = size
    if wall == 0:
        return 0.0, s - width / 2, depth, s + width / 2
    if wall == 1:
        return lx - depth, s - width / 2, lx, s + width / 2
    if wall == 2:
        return s - width / 2, 0.0, s + width / 2, depth
    return s - width / 2, ly - depth, s + width / 2, ly


def _wall_box(
    size: tuple[float, float, float],
    wall: int,
    s: float,
    d: float,
    width: float,
    depth: float,
    z0: float,
    height: float,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centre and half extents of a box ``d`` metres (front edge) from a wall, at ``s`` along it.

    ``d`` is the distance from the wall to the box's far side (towards the room): the box spans
    [d - depth, d] away from the wall.
    """
    lx, ly, _ = size
    off = d - depth / 2
    zc = z0 + height / 2
    if wall == 0:
        return (off, s, zc), (depth / 2, width / 2, height / 2)
    if wall == 1:
        return (lx - off, s, zc), (depth / 2, width / 2, height / 2)
    if wall == 2:
        return (s, off, zc), (width / 2, depth / 2, height / 2)
    return (s, ly - off, zc), (width / 2, depth / 2, height / 2)


def _front(wall: int) -> int:
    """Face index of a wall-backed box that looks into the room."""
    return wall ^ 1


@dataclass
class _Kit:
    """Materials shared by the furniture of one room."""

    wall: list[int]  # material per wall
    plain_walls: tuple[int, ...]  # walls with the common material (not the accent wall)
    wood: int
    wood_tex: _Array
    paint_tex: _Array
    metal: int
    fabric: int
    boxes: list[int]  # cardboard and plastic

    def box_material(self, rng: np.random.Generator) -> int:
        return self.boxes[int(rng.integers(len(self.boxes)))]


def _add_table(b: _Builder, kit: _Kit, kind: str, *, wall: bool) -> None:
    rng = b.rng
    if kind == "dining":
        w, d, h = rng.uniform(1.1, 1.8), rng.uniform(0.75, 1.0), rng.uniform(0.72, 0.78)
    elif kind == "desk":
        w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.6, 0.75), rng.uniform(0.72, 0.76)
    else:
        w, d, h = rng.uniform(0.8, 1.2), rng.uniform(0.5, 0.7), rng.uniform(0.38, 0.48)
    if wall:
        spot = b.against_wall(w, d, h)
        if spot is None:
            return
        k, s = spot
        (cx, cy, _), (hx, hy, _) = _wall_box(b.size, k, s, d + 0.02, w, d, 0.0, h)
        yaw = 0.0
    else:
        yaw = float(rng.choice([0.0, math.pi / 2])) + rng.uniform(-0.3, 0.3) * (rng.uniform() < 0.4)
        free = b.free_spot(w, d, yaw)
        if free is None:
            return
        cx, cy = free
        hx, hy = w / 2, d / 2
    top_mat = (
        kit.wood
        if rng.uniform() < 0.7
        else b.material(_tex_plain(rng, _hsv(0, 0, rng.choice([0.9, 0.15, 0.6]))))
    )
    leg_mat = kit.metal if rng.uniform() < 0.4 else top_mat
    inst = b.new_instance()
    thick = rng.uniform(0.03, 0.05)
    b.box((cx, cy, h - thick / 2), (hx, hy, thick / 2), TABLE, top_mat, yaw=yaw, instance=inst)
    leg = rng.uniform(0.02, 0.035)
    cs, sn = math.cos(yaw), math.sin(yaw)
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx_, ly_ = sx * (hx - leg - 0.03), sy * (hy - leg - 0.03)
            pos = (cx + cs * lx_ - sn * ly_, cy + sn * lx_ + cs * ly_, (h - thick) / 2)
            b.box(pos, (leg, leg, (h - thick) / 2), TABLE, leg_mat, yaw=yaw, instance=inst)
    if rng.uniform() < 0.6:  # something on the table
        bw, bd, bh = rng.uniform(0.15, 0.35), rng.uniform(0.12, 0.3), rng.uniform(0.05, 0.25)
        ox, oy = rng.uniform(-1, 1) * (hx - bw / 2 - 0.05), rng.uniform(-1, 1) * (hy - bd / 2)
        pos = (cx + cs * ox - sn * oy, cy + sn * ox + cs * oy, h + bh / 2)
        b.box(
            pos,
            (bw / 2, bd / 2, bh / 2),
            BOX,
            kit.box_material(rng),
            yaw=yaw + rng.uniform(-0.4, 0.4),
            instance=b.new_instance(),
        )


def _add_cabinet(b: _Builder, kit: _Kit, kind: str, *, camouflaged: bool = False) -> None:
    rng = b.rng
    dims = {
        "sideboard": (rng.uniform(0.9, 1.8), rng.uniform(0.4, 0.5), rng.uniform(0.7, 0.9)),
        "wardrobe": (rng.uniform(0.9, 2.0), rng.uniform(0.55, 0.62), rng.uniform(1.9, 2.2)),
        "bookshelf": (rng.uniform(0.7, 1.2), rng.uniform(0.3, 0.36), rng.uniform(1.6, 2.0)),
        "nightstand": (rng.uniform(0.4, 0.55), rng.uniform(0.35, 0.45), rng.uniform(0.45, 0.6)),
        "tvstand": (rng.uniform(1.2, 1.8), rng.uniform(0.38, 0.45), rng.uniform(0.4, 0.55)),
    }
    w, d, h = dims[kind]
    spot = b.against_wall(w, d, h, walls=kit.plain_walls if camouflaged else (0, 1, 2, 3))
    if spot is None:
        return
    k, s = spot
    centre, half = _wall_box(b.size, k, s, d, w, d, 0.0, h)
    inst = b.new_instance()
    if camouflaged:
        b.box(centre, half, CABINET, kit.wall[k], instance=inst, camouflage_wall=k)
        return
    body_tex = kit.wood_tex if rng.uniform() < 0.6 else kit.paint_tex
    body = kit.wood if body_tex is kit.wood_tex else b.material(body_tex)
    front_tex = (
        _tex_bookshelf(rng, kit.wood_tex)
        if kind == "bookshelf"
        else _tex_cabinet_front(rng, body_tex)
    )
    front = b.material(front_tex)
    b.box(centre, half, CABINET, body, instance=inst, faces={_front(k): (front, True)})
    if kind == "tvstand":
        tw, th = min(w * rng.uniform(0.7, 0.95), 1.6), rng.uniform(0.5, 0.8)
        z0 = h + rng.uniform(0.05, 0.2)
        if b.wall_free(k, s - tw / 2, s + tw / 2, z0, z0 + th):
            b.wall_spans[k].append((s - tw / 2, s + tw / 2, z0, z0 + th))
            c, hh = _wall_box(b.size, k, s, 0.06, tw, 0.05, z0, th)
            screen = b.material(_tex_screen(rng))
            b.box(
                c,
                hh,
                PAINTING,
                kit.metal,
                instance=b.new_instance(),
                faces={_front(k): (screen, True)},
            )
    elif kind in ("sideboard", "nightstand") and rng.uniform() < 0.5:
        bw, bd, bh = rng.uniform(0.15, 0.3), rng.uniform(0.15, 0.25), rng.uniform(0.1, 0.3)
        c, hh = _wall_box(b.size, k, s + rng.uniform(-0.3, 0.3) * (w - bw), d - 0.05, bw, bd, h, bh)
        b.box(c, hh, BOX, kit.box_material(rng), instance=b.new_instance())


def _add_sofa(b: _Builder, kit: _Kit, *, armchair: bool) -> None:
    rng = b.rng
    w = rng.uniform(0.8, 1.0) if armchair else rng.uniform(1.6, 2.4)
    d, seat, back_h = rng.uniform(0.8, 0.95), rng.uniform(0.38, 0.45), rng.uniform(0.75, 0.9)
    spot = b.against_wall(w, d, back_h)
    if spot is None:
        return
    k, s = spot
    fabric = (
        kit.fabric
        if rng.uniform() < 0.6
        else b.material(
            _tex_fabric(rng, _hsv(rng.uniform(), rng.uniform(0.2, 0.6), rng.uniform(0.25, 0.7)))
        )
    )
    inst = b.new_instance()
    back_t, arm_w, arm_h = rng.uniform(0.16, 0.24), rng.uniform(0.12, 0.2), rng.uniform(0.55, 0.65)
    size = b.size

    def part(s_c: float, width: float, dist: float, depth: float, z0: float, h: float) -> None:
        c, hh = _wall_box(size, k, s_c, dist, width, depth, z0, h)
        b.box(c, hh, SOFA, fabric, instance=inst)

    part(s, w - 2 * arm_w, d, d - back_t, 0.0, seat - 0.1)
    part(s, w, back_t, back_t, 0.0, back_h)
    for side in (-1, 1):
        part(s + side * (w - arm_w) / 2, arm_w, d, d, 0.0, arm_h)
    n = 1 if armchair else int(rng.integers(2, 4))
    inner = w - 2 * arm_w
    for i in range(n):
        sc = s - inner / 2 + (i + 0.5) * inner / n
        part(sc, inner / n - 0.01, d - 0.02, d - back_t - 0.02, seat - 0.1, 0.12)


def _add_bed(b: _Builder, kit: _Kit) -> None:
    rng = b.rng
    w = rng.uniform(0.9, 1.0) if rng.uniform() < 0.3 else rng.uniform(1.4, 1.8)
    length, head_h = rng.uniform(1.95, 2.1), rng.uniform(0.9, 1.2)
    spot = b.against_wall(w + 0.04, length, head_h)
    if spot is None:
        return
    k, s = spot
    inst = b.new_instance()
    size = b.size
    sheet = b.material(_tex_fabric(rng, _hsv(rng.uniform(), rng.uniform(0.0, 0.15), 0.9)))
    cover = b.material(
        _tex_fabric(rng, _hsv(rng.uniform(), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.8)))
    )
    pillow = b.material(_tex_fabric(rng, _hsv(0.1, 0.05, 0.95)))

    def part(
        s_c: float, width: float, dist: float, depth: float, z0: float, h: float, mat: int
    ) -> None:
        c, hh = _wall_box(size, k, s_c, dist, width, depth, z0, h)
        b.box(c, hh, SOFA, mat, instance=inst)

    part(s, w + 0.04, 0.07, 0.07, 0.0, head_h, kit.wood)
    part(s, w, length, length - 0.07, 0.0, 0.3, kit.wood)
    part(s, w - 0.04, length - 0.02, length - 0.1, 0.3, 0.2, sheet)
    part(s, w + 0.02, length, length * 0.6, 0.3, 0.23, cover)
    n = 1 if w < 1.2 else 2
    for i in range(n):
        sc = s - w / 2 + (i + 0.5) * w / n
        part(sc, w / n - 0.12, 0.5, 0.35, 0.5, 0.12, pillow)


def _add_boxes(b: _Builder, kit: _Kit, *, wall: bool, camouflaged: bool = False) -> None:
    """A stack of one to three boxes, against a wall or free-standing."""
    rng = b.rng
    w, d = rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.55)
    heights = [rng.uniform(0.25, 0.5) for _ in range(int(rng.integers(1, 4)))]
    total = sum(heights)
    backing: int | None = None  # the wall a camouflaged stack hides against
    if wall or camouflaged:
        spot = b.against_wall(w, d, total, walls=kit.plain_walls if camouflaged else (0, 1, 2, 3))
        if spot is None:
            return
        k, s = spot
        (cx, cy, _), (hx, hy, _) = _wall_box(b.size, k, s, d, w, d, 0.0, total)
        yaw = 0.0
        backing = k if camouflaged else None
    else:
        yaw = rng.uniform(-math.pi, math.pi)
        free = b.free_spot(w, d, yaw)
        if free is None:
            return
        (cx, cy), hx, hy = free, w / 2, d / 2
    z = 0.0
    for i, bh in enumerate(heights):
        shrink = 1.0 if i == 0 else rng.uniform(0.75, 0.95)
        mat = kit.box_material(rng) if backing is None else kit.wall[backing]
        turn = 0.0 if backing is not None or i == 0 else rng.uniform(-0.15, 0.15)
        b.box(
            (cx, cy, z + bh / 2),
            (hx * shrink, hy * shrink, bh / 2),
            BOX,
            mat,
            yaw=yaw + turn,
            instance=b.new_instance(),
            camouflage_wall=backing,
        )
        z += bh


def _add_wall_art(b: _Builder, kit: _Kit, kind: str) -> None:
    rng = b.rng
    lz = b.size[2]
    if kind == "whiteboard":
        w, h, tex = rng.uniform(1.2, 1.8), rng.uniform(0.9, 1.2), _tex_whiteboard(rng)
    else:
        w, h, tex = rng.uniform(0.35, 1.2), rng.uniform(0.3, 0.9), _tex_painting(rng)
    for _ in range(30):
        wall = int(rng.integers(4))
        s = rng.uniform(w / 2 + 0.1, max(b.wall_length(wall) - w / 2 - 0.1, w / 2 + 0.11))
        z0 = rng.uniform(1.0, max(lz - 0.3 - h, 1.01))
        if b.wall_free(wall, s - w / 2 - 0.15, s + w / 2 + 0.15, z0 - 0.1, z0 + h + 0.1):
            b.wall_spans[wall].append((s - w / 2, s + w / 2, z0, z0 + h))
            depth = rng.uniform(0.02, 0.045)
            c, hh = _wall_box(b.size, wall, s, depth, w, depth, z0, h)
            side = kit.metal if kind == "whiteboard" else kit.wood
            b.box(
                c,
                hh,
                PAINTING,
                side,
                instance=b.new_instance(),
                faces={_front(wall): (b.material(tex), True)},
            )
            return


def _add_window(b: _Builder) -> None:
    rng = b.rng
    w, h = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.5)
    z0 = rng.uniform(0.8, max(b.size[2] - h - 0.25, 0.81))
    for _ in range(20):
        wall = int(rng.integers(4))
        s = rng.uniform(w / 2 + 0.3, max(b.wall_length(wall) - w / 2 - 0.3, w / 2 + 0.31))
        if b.wall_free(wall, s - w / 2 - 0.2, s + w / 2 + 0.2, z0, z0 + h):
            b.wall_spans[wall].append((s - w / 2, s + w / 2, 0.0, z0 + h))
            c, hh = _wall_box(b.size, wall, s, 0.015, w, 0.015, z0, h)
            mat = b.material(_tex_window(rng), emissive=True)
            b.box(c, hh, IGNORE_LABEL, mat)
            return


_FURNITURE: dict[str, list[tuple[str, float]]] = {
    # room type -> (piece, probability); the first piece is always placed, first.
    "living": [
        ("sofa", 1.0),
        ("coffee_table", 1.0),
        ("armchair", 0.7),
        ("tvstand", 0.7),
        ("sideboard", 0.6),
        ("bookshelf", 0.7),
        ("dining_table", 0.4),
    ],
    "bedroom": [
        ("bed", 1.0),
        ("nightstand", 1.0),
        ("nightstand", 0.6),
        ("wardrobe", 0.9),
        ("sideboard", 0.5),
        ("desk", 0.6),
        ("armchair", 0.5),
        ("bookshelf", 0.3),
    ],
    "office": [
        ("desk", 1.0),
        ("desk", 0.8),
        ("free_desk", 0.6),
        ("bookshelf", 1.0),
        ("bookshelf", 0.5),
        ("sideboard", 0.8),
        ("armchair", 0.6),
        ("sofa", 0.4),
    ],
}


def _add_furniture(b: _Builder, kit: _Kit, name: str) -> None:
    if name in ("sofa", "armchair"):
        _add_sofa(b, kit, armchair=name == "armchair")
    elif name == "bed":
        _add_bed(b, kit)
    elif name == "coffee_table":
        _add_table(b, kit, "coffee", wall=False)
    elif name == "dining_table":
        _add_table(b, kit, "dining", wall=False)
    elif name in ("desk", "free_desk"):
        _add_table(b, kit, "desk", wall=name == "desk")
    else:
        _add_cabinet(b, kit, name)


def _add_door(b: _Builder, kit: _Kit) -> None:
    """A closed door: no class of its own, so it is labelled IGNORE_LABEL (depth is valid)."""
    rng = b.rng
    w, h = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)
    for _ in range(20):
        wall = int(rng.integers(4))
        s = rng.uniform(w / 2 + 0.2, max(b.wall_length(wall) - w / 2 - 0.2, w / 2 + 0.21))
        x0, y0, x1, y1 = _wall_footprint(b.size, wall, s, w + 0.2, 0.9)
        if b.wall_free(wall, s - w / 2 - 0.1, s + w / 2 + 0.1, 0.0, h) and b.floor_free(
            x0, y0, x1, y1
        ):
            b.wall_spans[wall].append((s - w / 2 - 0.1, s + w / 2 + 0.1, 0.0, h + 0.1))
            b.occupy(x0, y0, x1, y1)
            body = kit.wood_tex if rng.uniform() < 0.5 else _tex_paint(rng, _pastel(rng))
            c, hh = _wall_box(b.size, wall, s, 0.03, w, 0.03, 0.0, h)
            b.box(
                c,
                hh,
                IGNORE_LABEL,
                kit.wood,
                faces={_front(wall): (b.material(_tex_door(rng, body)), True)},
            )
            return


def _choose_camera_path(b: _Builder) -> _Trajectory:
    """Pick an ellipse in the freest part of the floor, then reserve a corridor around it."""
    rng = b.rng
    free = np.pad(1 - b.occupied, 1).astype(np.uint8)
    dist = cv2.distanceTransform(free, cv2.DIST_L2, 5)[1:-1, 1:-1] * _GRID
    radius = float(np.clip(dist.max() - _CLEARANCE - 0.5, 0.15, 0.8)) * rng.uniform(0.6, 1.0)
    ok = np.argwhere(dist >= max(0.85 * dist.max(), min(radius + _CLEARANCE + 0.3, dist.max())))
    i, j = ok[int(rng.integers(len(ok)))]
    cx, cy = (j + 0.5) * _GRID, (i + 0.5) * _GRID
    r = radius + _CLEARANCE
    b.occupy(cx - r, cy - r, cx + r, cy + r)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    return _Trajectory(
        centre=(cx, cy),
        radii=(radius * rng.uniform(0.6, 1.0), radius * rng.uniform(0.6, 1.0)),
        phase=rng.uniform(0, 2 * math.pi),
        angular_speed=rng.uniform(0.15, 0.3) * (1 if rng.uniform() < 0.5 else -1),
        height=rng.uniform(1.0, 1.6),
        yaw0=rng.uniform(-math.pi, math.pi),
        yaw_rate=sign * rng.uniform(0.2, 0.4),
        wobble=(
            rng.uniform(0.1, 0.3),
            rng.uniform(0.3, 0.6),
            rng.uniform(-0.35, 0.05),
            rng.uniform(0.08, 0.2),
            rng.uniform(0.3, 0.7),
            rng.uniform(0.0, 0.03),
        ),
        phases=tuple(float(p) for p in rng.uniform(0, 2 * math.pi, 4)),  # type: ignore[arg-type]
    )


def _wall_material(rng: np.random.Generator, b: _Builder) -> int:
    c = _pastel(rng)
    kind = rng.choice(["paint", "stripes", "pattern", "brick"], p=[0.55, 0.18, 0.17, 0.1])
    if kind == "paint":
        return b.material(_tex_paint(rng, c), 128.0)
    if kind == "stripes":
        return b.material(_tex_stripes(rng, c, c * rng.uniform(0.8, 0.93)), 256.0)
    if kind == "pattern":
        c2 = _hsv(rng.uniform(), rng.uniform(0.1, 0.35), rng.uniform(0.6, 0.85))
        return b.material(_tex_pattern(rng, c, c2), 256.0 / rng.uniform(0.8, 1.6))
    brick = _hsv(rng.uniform(0.0, 0.06), rng.uniform(0.45, 0.65), rng.uniform(0.45, 0.7))
    return b.material(_tex_brick(rng, brick, _hsv(0.1, 0.08, 0.75)), _T / (16 * 0.077))


def _floor_material(rng: np.random.Generator, b: _Builder) -> int:
    kind = rng.choice(["planks", "tiles", "carpet"], p=[0.45, 0.3, 0.25])
    if kind == "planks":
        return b.material(_tex_planks(rng, _wood_colour(rng)), _T / (8 * rng.uniform(0.12, 0.2)))
    if kind == "tiles":
        c = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.25), rng.uniform(0.45, 0.9))
        return b.material(_tex_tiles(rng, c, c * 0.7), _T / (4 * rng.uniform(0.3, 0.6)))
    c = _hsv(rng.uniform(), rng.uniform(0.1, 0.45), rng.uniform(0.25, 0.6))
    return b.material(_tex_carpet(rng, c), 256.0)


def random_room(rng: np.random.Generator) -> Room:
    """Build a random furnished room and the camera path through it.

    The room type (living room, bedroom or office) decides the furniture list. Besides it, every
    room gets boxes, paintings, maybe windows, a door and a rug, and two or three camouflaged
    objects (box stacks or a sideboard) against walls of the common wall material. Pieces that do
    not fit are left out.

    Args:
        rng: source of all randomness; the same generator state gives the same room.
    """
    lx, ly = rng.uniform(3.8, 6.5), rng.uniform(3.8, 6.0)
    size = (lx, ly, rng.uniform(2.5, 3.1))
    b = _Builder(rng, size)

    walls = [_wall_material(rng, b)] * 4
    accent = int(rng.integers(4)) if rng.uniform() < 0.3 else -1  # one wall may differ
    if accent >= 0:
        walls[accent] = _wall_material(rng, b)
    floor = _floor_material(rng, b)
    ceiling = (
        b.material(_tex_ceiling_tiles(rng), _T / 1.2)
        if rng.uniform() < 0.3
        else b.material(_tex_paint(rng, _hsv(0.12, 0.03, 0.93)), 128.0)
    )
    shell_faces = {i: (walls[i], False) for i in range(4)}
    shell_faces[4], shell_faces[5] = (floor, False), (ceiling, False)
    b.box(
        (lx / 2, ly / 2, size[2] / 2),
        (lx / 2, ly / 2, size[2] / 2),
        WALL,
        walls[0],
        faces=shell_faces,
        world_texture=True,
    )
    b.prims[0]["face_class"] = [WALL] * 4 + [FLOOR, CEILING]  # the shell: faces differ in class

    wood_tex = _tex_wood(rng, _wood_colour(rng))
    paint_tex = _tex_paint(rng, _hsv(rng.uniform(), rng.uniform(0, 0.3), rng.uniform(0.2, 0.95)))
    kit = _Kit(
        wall=walls,
        plain_walls=tuple(i for i in range(4) if i != accent),
        wood=b.material(wood_tex, 256.0),
        wood_tex=wood_tex,
        paint_tex=paint_tex,
        metal=b.material(_tex_metal(rng, rng.uniform(0.15, 0.7))),
        fabric=b.material(
            _tex_fabric(rng, _hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.7)))
        ),
        boxes=[b.material(_tex_cardboard(rng)) for _ in range(2)]
        + [
            b.material(
                _tex_plain(rng, _hsv(rng.uniform(), rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.9)))
            )
            for _ in range(2)
        ],
    )
    board = b.material(_tex_paint(rng, _hsv(0.1, 0.05, 0.9))) if rng.uniform() < 0.6 else kit.wood
    board_h = rng.uniform(0.06, 0.1)
    for wall in range(4):
        c, h = _wall_box(
            size, wall, b.wall_length(wall) / 2, 0.012, b.wall_length(wall), 0.012, 0.0, board_h
        )
        b.box(c, h, WALL, board)

    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        _add_window(b)

    if rng.uniform() < 0.6:
        _add_door(b, kit)
    room_type = str(rng.choice(list(_FURNITURE)))
    anchor, *rest = _FURNITURE[room_type]
    _add_furniture(b, kit, anchor[0])  # the largest piece goes in before the camera path
    trajectory = _choose_camera_path(b)
    for name, chance in rest:
        if rng.uniform() < chance:
            _add_furniture(b, kit, name)
    for _ in range(int(rng.integers(2, 4))):
        if rng.uniform() < 0.3:
            _add_cabinet(b, kit, "sideboard", camouflaged=True)
        else:
            _add_boxes(b, kit, wall=True, camouflaged=True)
    for _ in range(int(rng.integers(3, 7))):
        _add_boxes(b, kit, wall=rng.uniform() < 0.6)
    art = ["painting"] * int(rng.integers(2, 6))
    if room_type == "office" and rng.uniform() < 0.7:
        art.insert(0, "whiteboard")
    for kind in art:
        _add_wall_art(b, kit, kind)
    if rng.uniform() < 0.6:
        rw, rd = rng.uniform(1.4, 2.6), rng.uniform(1.0, 1.8)
        rx, ry = (
            rng.uniform(rw / 2 + 0.3, lx - rw / 2 - 0.3),
            rng.uniform(rd / 2 + 0.3, ly - rd / 2 - 0.3),
        )
        b.box(
            (rx, ry, 0.004),
            (rw / 2, rd / 2, 0.004),
            FLOOR,
            kit.wood,
            faces={5: (b.material(_tex_rug(rng)), True)},
        )
    return _finish_room(b, trajectory)


def _finish_room(b: _Builder, trajectory: _Trajectory) -> Room:
    rng = b.rng
    lx, ly, lz = b.size
    p = b.prims
    yaw = np.array([q["yaw"] for q in p], np.float32)
    centre = np.stack([q["centre"] for q in p])
    half = np.stack([q["half"] for q in p])
    signs = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)], np.float32) * 2 - 1
    local = signs[None] * half[:, None]  # [P, 8, 3]
    cs, sn = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    corners = (
        np.stack(
            [
                cs * local[..., 0] - sn * local[..., 1],
                sn * local[..., 0] + cs * local[..., 1],
                local[..., 2],
            ],
            axis=-1,
        )
        + centre[:, None]
    )

    shadow = np.zeros((int(ly * _SHADOW_RES) + 1, int(lx * _SHADOW_RES) + 1), np.float32)
    order = np.argsort(-(centre[:, 2] - half[:, 2]))  # high objects first, low ones overwrite
    for i in order[order > 0]:
        bottom = float(centre[i, 2] - half[i, 2])
        if b.prims[i]["face_class"][0] in (PAINTING, IGNORE_LABEL, FLOOR) or bottom > 1.2:
            continue
        weight = 0.9 * math.exp(-bottom / 0.5)
        poly = (corners[i, :4, :2] * _SHADOW_RES)[[0, 1, 3, 2]].round().astype(np.int32)
        cv2.fillConvexPoly(shadow, poly, weight)
    shadow = 1.0 - 0.6 * np.clip(cv2.GaussianBlur(shadow, (0, 0), 0.12 * _SHADOW_RES), 0, 1)

    windows = [q for q in p if b.emissive[q["face_mat"][0]]]
    window_light = (0.0, 0.0, 1.0, 0.0)
    if windows:  # daylight falls in from the first window, downwards
        wc = windows[0]["centre"]
        dx, dy = wc[0] - lx / 2, wc[1] - ly / 2
        norm = math.hypot(dx, dy)
        dx, dy, dz = dx / norm, dy / norm, 0.6
        norm = math.sqrt(1.0 + dz * dz)
        window_light = (dx / norm, dy / norm, dz / norm, rng.uniform(0.25, 0.45))
    atlas = np.stack(b.textures) ** 2  # display colour -> linear albedo (gamma 2)
    return Room(
        size=b.size,
        centre=centre,
        half=half,
        cos_yaw=np.cos(yaw),
        sin_yaw=np.sin(yaw),
        prim_table=np.concatenate(
            [
                centre,
                half,
                np.cos(yaw)[:, None],
                np.sin(yaw)[:, None],
                np.stack([q["offset"] for q in p]),
                np.array([-1.0] + [1.0] * (len(p) - 1), np.float32)[:, None],
                np.stack([q["normal"] for q in p]),
            ],
            axis=1,
        ).astype(np.float32),
        face_material=np.array([q["face_mat"] for q in p], np.int32).ravel(),
        face_stretch=np.array([q["face_stretch"] for q in p], bool).ravel(),
        face_class=np.array([q["face_class"] for q in p], np.uint8).ravel(),
        instance=np.array([q["instance"] for q in p], np.uint16),
        camouflaged=np.array([q["camouflaged"] for q in p], bool),
        corners=corners.astype(np.float32),
        atlas=atlas.reshape(-1, 3).astype(np.float32),
        texels_per_m=np.array(b.scales, np.float32),
        emissive=np.array(b.emissive, bool),
        lamp=(
            lx / 2 + rng.uniform(-0.5, 0.5),
            ly / 2 + rng.uniform(-0.5, 0.5),
            lz - 0.3,
            rng.uniform(2.5, 4.0) * (lx * ly / 25.0) ** 0.5,
        ),
        window_light=window_light,
        ambient=rng.uniform(0.35, 0.5),
        exposure=rng.uniform(0.9, 1.15),
        floor_shadow=shadow,
        trajectory=trajectory,
    )


# ---------------------------------------------------------------------------------------------
# Rendering.


def camera_matrix(width: int, height: int) -> npt.NDArray[np.float64]:
    """Pinhole intrinsics ``K`` (3x3) of the simulated camera.

    About 78 x 62 degrees at 4:3, the field of view of a wide RGB-D sensor (RealSense D455
    class): wide enough that a frame shows a piece of floor, wall and furniture together. Pixel
    centres sit at integer coordinates, so the principal point is the image centre.
    """
    f = 0.62 * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


@functools.lru_cache(maxsize=8)
def _camera_rays(width: int, height: int) -> tuple[_Array, _Array, _Array]:
    """Camera-frame ray directions with z = 1 ``[3, H*W]``, their norms, and vignetting."""
    k = camera_matrix(width, height)
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    x, y = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    rays = np.stack([x, y, np.ones_like(x)]).reshape(3, -1).astype(np.float32)
    norm = np.linalg.norm(rays, axis=0).astype(np.float32).reshape(height, width)
    r2 = (x**2 + y**2) / (x**2 + y**2).max()
    vignette = (1.0 - 0.25 * r2).astype(np.float32)
    for a in (rays, norm, vignette):
        a.flags.writeable = False
    return rays, norm, vignette


@functools.lru_cache(maxsize=8)
def _noise_pool(width: int, height: int) -> _Array:
    """Standard normal samples from which each frame takes a random window of sensor noise.

    Drawing fresh normals costs more than the rest of the shading; a window at a random offset of
    a fixed pool is as good for sensor noise and keeps frames deterministic per seed.
    """
    pool = np.random.default_rng(12345).standard_normal(8 * width * height, dtype=np.float32)
    pool.flags.writeable = False
    return pool


def _rotation(pose: CameraPose) -> _Array:
    """World-from-camera rotation; its columns are the camera's x (right), y (down), z axes."""
    cy, sy, cp, sp = (
        math.cos(pose.yaw),
        math.sin(pose.yaw),
        math.cos(pose.pitch),
        math.sin(pose.pitch),
    )
    forward = np.array([cy * cp, sy * cp, sp])
    right = np.array([sy, -cy, 0.0])
    down = np.cross(forward, right)
    cr, sr = math.cos(pose.roll), math.sin(pose.roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    return np.stack([right, down, forward], axis=1)


_EDGES = np.array([(a, a | (1 << k)) for a in range(8) for k in range(3) if not a & (1 << k)])


def _screen_rects(
    corners: _Array, origin: _Array, rot: _Array, k: _Array, width: int, height: int
) -> _Array:
    """Pixel rectangles ``[P, 4]`` (row0, row1, col0, col1) that bound each box's image."""
    cam = (corners - origin) @ rot  # [P, 8, 3] camera coordinates
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]  # [P, 12, 3] edge end points
    za, zb = a[..., 2], b[..., 2]
    crosses = (za - _NEAR) * (zb - _NEAR) < 0
    s = np.where(crosses, (_NEAR - za) / np.where(crosses, zb - za, 1.0), 0.0)
    clipped = a + s[..., None] * (b - a)  # where an edge crosses the near plane
    pts = np.concatenate([cam, clipped], axis=1)
    valid = np.concatenate([cam[..., 2] >= _NEAR, crosses], axis=1)
    z = np.maximum(pts[..., 2], _NEAR)
    u = np.where(valid, k[0, 0] * pts[..., 0] / z + k[0, 2], np.nan)
    v = np.where(valid, k[1, 1] * pts[..., 1] / z + k[1, 2], np.nan)
    rects = np.zeros((len(corners), 4), np.int64)
    seen = valid.any(axis=1)
    with np.errstate(invalid="ignore"):
        rects[seen, 0] = np.clip(np.floor(np.nanmin(v[seen], axis=1)), 0, height)
        rects[seen, 1] = np.clip(np.ceil(np.nanmax(v[seen], axis=1)) + 1, 0, height)
        rects[seen, 2] = np.clip(np.floor(np.nanmin(u[seen], axis=1)), 0, width)
        rects[seen, 3] = np.clip(np.ceil(np.nanmax(u[seen], axis=1)) + 1, 0, width)
    return rects


def _cast(room: Room, origin: _Array, dirs: _Array, rects: _Array) -> tuple[_Array, _Array]:
    """Nearest hit per pixel: ray parameter t (= camera z) and primitive index ``[H, W]``."""
    lx, ly, lz = room.size
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) < 1e-9, 1e-9, dirs)
    bounds = np.array([lx, ly, lz], np.float32)
    exit_t = np.maximum(
        (bounds[:, None, None] - origin[:, None, None]) * inv, -origin[:, None, None] * inv
    )
    best_t = exit_t.min(axis=0)
    best = np.zeros(best_t.shape, np.int32)
    for i in range(1, len(room.centre)):
        r0, r1, c0, c1 = rects[i]
        if r0 >= r1 or c0 >= c1:
            continue
        o = origin - room.centre[i]
        cs, sn = room.cos_yaw[i], room.sin_yaw[i]
        if sn == 0.0:
            iv = inv[:, r0:r1, c0:c1]
            ox, oy = o[0], o[1]
            ix, iy = iv[0], iv[1]
        else:
            d = dirs[:, r0:r1, c0:c1]
            dx, dy = cs * d[0] + sn * d[1], cs * d[1] - sn * d[0]
            ix = 1.0 / np.where(np.abs(dx) < 1e-9, 1e-9, dx)
            iy = 1.0 / np.where(np.abs(dy) < 1e-9, 1e-9, dy)
            ox, oy = cs * o[0] + sn * o[1], cs * o[1] - sn * o[0]
            iv = inv[:, r0:r1, c0:c1]
        hx, hy, hz = room.half[i]
        ta, tb = (-hx - ox) * ix, (hx - ox) * ix
        near, far = np.minimum(ta, tb), np.maximum(ta, tb)
        ta, tb = (-hy - oy) * iy, (hy - oy) * iy
        near, far = np.maximum(near, np.minimum(ta, tb)), np.minimum(far, np.maximum(ta, tb))
        ta, tb = (-hz - o[2]) * iv[2], (hz - o[2]) * iv[2]
        near, far = np.maximum(near, np.minimum(ta, tb)), np.minimum(far, np.maximum(ta, tb))
        bt = best_t[r0:r1, c0:c1]
        hit = (near <= far) & (near > _NEAR) & (near < bt)
        np.copyto(bt, near, where=hit)
        np.copyto(best[r0:r1, c0:c1], i, where=hit)
    return best_t, best


def render_view(
    room: Room,
    pose: CameraPose,
    *,
    width: int = 320,
    height: int = 240,
    rng: np.random.Generator,
    stamp_ns: int = 0,
    room_index: int = 0,
) -> SceneFrame:
    """Render one RGB-D frame of ``room`` seen from ``pose``.

    Args:
        room: the room, from :func:`random_room`.
        pose: camera pose; keep it inside the room (the trajectory of ``room`` does).
        width: image width in pixels.
        height: image height in pixels.
        rng: source of sensor noise.
        stamp_ns: time stamp stored in the frame.
        room_index: room number stored in the frame.

    Raises:
        ValueError: the image is smaller than 8 x 8 pixels.
    """
    _check_size(width, height)
    rays, ray_norm, vignette = _camera_rays(width, height)
    k = camera_matrix(width, height)
    rot = _rotation(pose).astype(np.float32)
    origin = np.asarray(pose.position, np.float32)
    dirs = (rot @ rays).reshape(3, height, width)
    rects = _screen_rects(room.corners, origin, rot, k, width, height)
    t, prim = _cast(room, origin, dirs, rects)

    # Hit point in the primitive's own frame, face and surface coordinates.
    p = origin[:, None, None] + t * dirs  # [3, H, W] world
    cx, cy, cz, hx, hy, hz, cs, sn, ox, oy, oz, outward, wx, wy, wz = np.ascontiguousarray(
        np.moveaxis(np.take(room.prim_table, prim, axis=0), -1, 0)
    )  # [15, H, W]
    qx, qy = p[0] - cx, p[1] - cy
    lx, ly, lz = cs * qx + sn * qy, cs * qy - sn * qx, p[2] - cz
    rx, ry, rz = np.abs(lx) / hx, np.abs(ly) / hy, np.abs(lz) / hz
    is_x = (rx >= ry) & (rx >= rz)
    is_z = ~is_x & (rz > ry)
    is_y = ~is_x & ~is_z
    positive = np.where(is_x, lx, np.where(is_z, lz, ly)) > 0
    side = 2 * is_y + 4 * is_z + positive  # face index 2 * axis + positive side
    face = prim * 6 + side
    mat = np.take(room.face_material, face)
    u, hu = np.where(is_x, ly, lx), np.where(is_x, hy, hx)
    v, hv = np.where(is_z, ly, lz), np.where(is_z, hy, hz)
    scale = np.take(room.texels_per_m, mat)
    col_t = (u + hu + np.where(is_x, oy, ox)) * scale
    row_t = (v + hv + np.where(is_z, oy, oz)) * -scale
    col_s = (u + hu) / (2 * hu)
    col_s = np.where((side == 0) | (side == 3), 1.0 - col_s, col_s) * (_T - 1)  # not mirrored
    row_s = (hv - v) / (2 * hv) * (_T - 1)
    stretch = np.take(room.face_stretch, face)
    col = np.where(stretch, col_s, col_t).astype(np.int32) & (_T - 1)
    row = np.where(stretch, row_s, row_t).astype(np.int32) & (_T - 1)
    albedo = np.take(room.atlas, (mat * _T + row) * _T + col, axis=0)  # [H, W, 3] linear

    # Lighting: ambient + ceiling lamp + window light, contact shadows and corner darkening.
    sign = np.where(positive, outward, -outward)
    nlx, nly = sign * is_x, sign * is_y
    nx, ny, nz = cs * nlx - sn * nly, sn * nlx + cs * nly, sign * is_z
    camouflaged = np.take(room.camouflaged, prim)
    sx = np.where(camouflaged, wx, nx)  # shading normal
    sy = np.where(camouflaged, wy, ny)
    sz = np.where(camouflaged, wz, nz)
    tx, ty, tz = room.lamp[0] - p[0], room.lamp[1] - p[1], room.lamp[2] - p[2]
    dist2 = tx * tx + ty * ty + tz * tz
    lamp = (
        np.maximum(sx * tx + sy * ty + sz * tz, 0.0)
        * room.lamp[3]
        / (np.sqrt(dist2) * (dist2 + 1.0))
    )
    wl = room.window_light
    window = np.maximum(sx * wl[0] + sy * wl[1] + sz * wl[2], 0.0) * wl[3]
    ambient = (1.0 + 0.12 * sz) * room.ambient
    size = room.size
    gap = np.full(t.shape, 9.0, np.float32)
    for g in (p[0], size[0] - p[0], p[1], size[1] - p[1], p[2], size[2] - p[2]):
        np.minimum(gap, np.where(g < 0.01, 9.0, g), out=gap)
    occlusion = 1.0 - 0.3 * np.exp(gap * (-1.0 / 0.3))
    shadow = room.floor_shadow
    si = np.clip((p[1] * _SHADOW_RES).astype(np.int32), 0, shadow.shape[0] - 1)
    sj = np.clip((p[0] * _SHADOW_RES).astype(np.int32), 0, shadow.shape[1] - 1)
    occlusion = np.where(
        p[2] < 0.02, occlusion * np.take(shadow, si * shadow.shape[1] + sj), occlusion
    )
    glow = np.take(room.emissive, mat)
    gain = occlusion * vignette * room.exposure
    light = np.stack(
        [
            (ambient * 0.95 + lamp + window * 0.9) * gain,
            (ambient * 0.97 + lamp * 0.93 + window * 0.95) * gain,
            (ambient + lamp * 0.82 + window * 1.05) * gain,
        ],
        axis=-1,
    )
    light[glow] = 1.6
    img = np.sqrt(np.clip(albedo * light, 0.0, 1.0))
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    n_px = height * width
    pool = _noise_pool(width, height)
    start = int(rng.integers(0, len(pool) - 6 * n_px))
    sensor = pool[start : start + 3 * n_px].reshape(height, width, 3)
    grain = pool[start + 3 * n_px : start + 4 * n_px].reshape(height, width, 1)
    img += sensor * 0.008 + grain * 0.006
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)

    # Depth: Kinect-like noise growing with distance; no return from windows, out of range,
    # grazing surfaces, a share of depth-edge pixels and scattered dropouts.
    depth_noise = pool[start + 4 * n_px : start + 5 * n_px].reshape(height, width)
    z = t + depth_noise * (0.0012 + 0.0019 * (t - 0.4) ** 2)
    cos_view = np.abs(nx * dirs[0] + ny * dirs[1] + nz * dirs[2]) / ray_norm
    invalid = glow | (z < _DEPTH_RANGE_M[0]) | (z > _DEPTH_RANGE_M[1]) | (cos_view < 0.1)
    jump = np.zeros_like(invalid)
    jump[:, 1:] = np.abs(t[:, 1:] - t[:, :-1]) > 0.04 * t[:, 1:]
    coin = pool[start + 5 * n_px : start + 6 * n_px].reshape(height, width)
    invalid |= (jump & (coin > 0.0)) | (coin > 2.9)  # half the depth edges, 0.2 % anywhere
    depth = np.where(invalid, 0, z * 1000.0 + 0.5).astype(np.uint16)

    return SceneFrame(
        rgb=rgb,
        depth_mm=depth,
        labels=np.take(room.face_class, face),
        stamp_ns=stamp_ns,
        instances=np.take(room.instance, prim),
        camouflaged=camouflaged,
        room_index=room_index,
    )


def _check_size(width: int, height: int) -> None:
    if width < 8 or height < 8:
        raise ValueError(f"image size must be at least 8x8, got {width!r}x{height!r}")


def generate_sequence(
    n_frames: int,
    *,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    frames_per_room: int = 60,
    fps: float = 10.0,
    start_ns: int = 1_700_000_000_000_000_000,
) -> Iterator[SceneFrame]:
    """Yield a synthetic RGB-D video: a new random room every ``frames_per_room`` frames.

    Within a room the camera moves smoothly (about 0.1-0.3 m/s, panning 10-25 deg/s), so frames
    at ``fps`` form a plausible video. Room ``i`` depends only on ``(seed, i)``, so a shorter
    sequence is a prefix of a longer one with the same seed and ``frames_per_room``.

    Args:
        n_frames: number of frames to yield.
        width: image width in pixels.
        height: image height in pixels.
        seed: non-negative seed; the same seed gives identical frames.
        frames_per_room: frames rendered in each room before the next one is built.
        fps: frame rate; sets the time between frames (camera motion and time stamps).
        start_ns: time stamp of the first frame.

    Raises:
        ValueError: a count, size or rate is out of range.
    """
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames!r}")
    _check_size(width, height)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    if frames_per_room < 1:
        raise ValueError(f"frames_per_room must be >= 1, got {frames_per_room!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    return _frames(n_frames, width, height, seed, frames_per_room, fps, start_ns)


def _frames(
    n_frames: int,
    width: int,
    height: int,
    seed: int,
    frames_per_room: int,
    fps: float,
    start_ns: int,
) -> Iterator[SceneFrame]:
    room: Room | None = None
    rng = np.random.default_rng(seed)
    for i in range(n_frames):
        room_index, k = divmod(i, frames_per_room)
        if k == 0 or room is None:
            rng = np.random.default_rng([seed, room_index])
            room = random_room(rng)
        yield render_view(
            room,
            room.camera_pose(k / fps),
            width=width,
            height=height,
            rng=rng,
            stamp_ns=start_ns + round(i * 1e9 / fps),
            room_index=room_index,
        )
