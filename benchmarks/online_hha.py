"""Online HHA against a dataset's HHA images, and its time at 640x480 on the CPU.

    python -m benchmarks.online_hha [--data test/data/nyu_rgbd_sample] [--repeats 30]

For every frame of ``--data`` (``depth_mm/<stem>.png`` uint16 millimetres and the dataset's
``hha/<stem>.png``), computes HHA from the depth with the NYU Kinect colour intrinsics and
prints, per channel (disparity, height, angle), the Pearson correlation and the mean absolute
difference (in 8-bit HHA units) with the dataset's image, then their means over the frames,
and the slope of a per-frame linear fit of the dataset's height channel on ours.
Then times ``hha_from_depth`` and the whole ``depth_hha`` encoding on the first frame (one
thread; median and fastest wall time of ``--repeats`` calls, and the median CPU time of the
calling thread, which a shared machine's load does not inflate).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import NYU_COLOUR, cpu_ms, machine, timed
from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.hha import hha_from_depth

REPO = Path(__file__).resolve().parents[1]

CHANNELS = ("disparity", "height", "angle")


def _frames(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    frames = []
    for depth_path in sorted((root / "depth_mm").glob("*.png")):
        depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        bgr = cv2.imread(str(root / "hha" / depth_path.name), cv2.IMREAD_COLOR)
        if depth is None or bgr is None or depth.dtype != np.uint16:
            raise SystemExit(f"ERROR: {depth_path} or its hha image is missing or not uint16 mm")
        frames.append((depth_path.stem, depth, bgr[..., ::-1].astype(np.float32)))
    if not frames:
        raise SystemExit(f"ERROR: no depth_mm/*.png under {root}")
    return frames


def _height_slope(hha: np.ndarray, reference: np.ndarray) -> float:
    """Slope of the least-squares line dataset height = slope * ours + offset (unclipped)."""
    ours, theirs = hha[..., 1], reference[..., 1]
    used = (ours < 254) & (theirs > 0) & (theirs < 255)
    design = np.stack([ours[used], np.ones(int(used.sum()), np.float32)], axis=1)
    (slope, _), *_ = np.linalg.lstsq(design, theirs[used], rcond=None)
    return float(slope)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "test" / "data" / "nyu_rgbd_sample")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    print(machine())
    frames = _frames(args.data)
    print(f"{len(frames)} frames from {args.data}")
    header = "frame  " + "  ".join(f"{c:>9s} r / MAD" for c in CHANNELS)
    print(header)
    correlations, differences = [], []
    for stem, depth, reference in frames:
        hha = hha_from_depth(depth, NYU_COLOUR)
        r = [
            float(np.corrcoef(hha[..., c].ravel(), reference[..., c].ravel())[0, 1])
            for c in range(3)
        ]
        mad = [float(np.abs(hha[..., c] - reference[..., c]).mean()) for c in range(3)]
        correlations.append(r)
        differences.append(mad)
        print(
            f"{stem:6s} " + "  ".join(f"{a:9.3f} / {b:5.1f}" for a, b in zip(r, mad, strict=True))
        )
    mean_r = np.mean(correlations, axis=0)
    mean_mad = np.mean(differences, axis=0)
    print(
        "mean   " + "  ".join(f"{a:9.3f} / {b:5.1f}" for a, b in zip(mean_r, mean_mad, strict=True))
    )
    print("min r  " + "  ".join(f"{a:9.3f}        " for a in np.min(correlations, axis=0)))
    slopes = [_height_slope(hha_from_depth(depth, NYU_COLOUR), ref) for _, depth, ref in frames]
    print(
        "height: dataset = slope x ours + offset, least squares over unclipped pixels; slope "
        f"median {statistics.median(slopes):.3f}, range {min(slopes):.3f}-{max(slopes):.3f}"
    )

    _, depth, _ = frames[0]
    encoding = ModalityEncoding.default("depth_hha")
    for name, function in (
        ("hha_from_depth", lambda: hha_from_depth(depth, NYU_COLOUR)),
        ("depth_hha encode", lambda: encoding.encode(depth, intrinsics=NYU_COLOUR)),
    ):
        times = timed(function, repeats=args.repeats)
        cpu_median, cpu_least = cpu_ms(function, repeats=args.repeats)
        print(
            f"{name} {depth.shape[1]}x{depth.shape[0]}: wall median "
            f"{1000 * statistics.median(times):.1f} ms, fastest {1000 * min(times):.1f} ms; "
            f"CPU time median {cpu_median:.1f} ms, least {cpu_least:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
