"""The node's point-cloud path at 640x480 on the CPU: records, then the PointCloud2 message.

    python -m benchmarks.point_cloud [--repeats 50]

On a real NYU frame (uint16 depth, RGB, and a label image), times
``unim2_core.runtime.pointcloud.labelled_points`` followed by
``unim2_ros.point_cloud.point_cloud_message`` (what the inference thread does per frame while
``~/points`` has subscribers) for strides 1, 2 and 4 with the default 10 m range; prints the
median and fastest of ``--repeats`` calls and the number of points, and the median CPU time of
the calling thread (not inflated by a shared machine's load). Needs sensor_msgs (no rclpy
context).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
from std_msgs.msg import Header

from benchmarks.common import NYU_COLOUR, cpu_ms, machine, timed
from unim2_core.data.image_io import read_image
from unim2_core.runtime.pointcloud import labelled_points
from unim2_ros.point_cloud import point_cloud_message

REPO = Path(__file__).resolve().parents[1]
FRAME = REPO / "test" / "data" / "nyu_rgbd_sample"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    rgb = read_image(FRAME / "rgb" / "0003.png")
    depth = read_image(FRAME / "depth_mm" / "0003.png")
    labels = (np.arange(depth.size, dtype=np.uint32).reshape(depth.shape) // 4096 % 13).astype(
        np.uint8
    )
    header = Header(frame_id="camera_color_optical_frame")
    print(machine())
    for stride in (1, 2, 4):
        points = labelled_points(depth, rgb, labels, NYU_COLOUR, stride=stride, max_range=10.0)

        def records(stride: int = stride) -> np.ndarray:
            return labelled_points(depth, rgb, labels, NYU_COLOUR, stride=stride, max_range=10.0)

        def path(stride: int = stride) -> object:
            return point_cloud_message(records(stride), header)

        record_times = timed(records, repeats=args.repeats)
        total = timed(path, repeats=args.repeats)
        cpu_median, cpu_least = cpu_ms(path, repeats=args.repeats)
        print(
            f"640x480 stride {stride}: {len(points)} points; records median "
            f"{1000 * statistics.median(record_times):.2f} ms; records + message median "
            f"{1000 * statistics.median(total):.2f} ms, fastest {1000 * min(total):.2f} ms, "
            f"CPU time median {cpu_median:.2f} ms, least {cpu_least:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
