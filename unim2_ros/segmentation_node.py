"""ROS 2 node: synchronised RGB + auxiliary camera images in, per-pixel semantic labels out.

Run it as ``ros2 run unim2_ros unim2_node --ros-args --params-file config/unim2_node.yaml``
(or the ``unim2_node`` console script), remapping the inputs as needed
(``-r rgb/image:=/camera/color/image_raw -r depth/image:=/camera/depth/image_rect_raw``).

Topics:

- Inputs (``sensor_msgs/Image``, QoS ``qos.input``): ``rgb/image`` and ``<modality>/image`` for
  each auxiliary modality of the checkpoint (``depth``, ``thermal``, ...). Encodings accepted
  per modality: see :mod:`unim2_ros.frame_inputs`.
- ``~/labels`` (mono8; mono16 when there are more than 255 labels), ``~/colored`` (rgb8) and
  ``~/overlay`` (rgb8, built only while it has subscribers), QoS ``qos.output``. Every output
  carries the RGB input's header and has the input's resolution.
- ``~/points`` (``sensor_msgs/PointCloud2``, QoS ``qos.output``), with ``points.enabled`` (or
  a ``depth_hha`` checkpoint): x y z rgb label of the depth pixels in the camera frame, built
  only while it has subscribers; ``<depth>/camera_info`` is then a synchronised input. See
  :mod:`unim2_ros.point_cloud`.
- ``~/label_info`` (``std_msgs/String``, reliable + transient local, depth 1: latched): the JSON
  document of :mod:`unim2_ros.label_info` (id -> name and colour, model identity).
- ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, 1 Hz): one status named
  ``<node>: segmentation`` whose hardware_id is the inference device; levels and keys are those
  of :class:`unim2_ros.pipeline_monitor.PipelineMonitor`.

Parameters: :mod:`unim2_ros.node_parameters` (every one is documented in
``config/unim2_node.yaml``). Values are checked at start-up, where a bad one stops the node with
one line naming it, and at run time, where a bad one is refused with a reason.

Runtimes: ``model.runtime: torch`` (default) runs the checkpoint's heads on the backbone in
PyTorch; ``onnxruntime`` runs ``model.onnx``, the graph ``unim2_export`` wrote from the same
checkpoint (:mod:`unim2_core.runtime.onnx_segmenter`). The rest of the node holds a
:class:`~unim2_core.runtime.segmenter.FrameSegmenter` and is the same for both.

Threads: subscription callbacks (one executor thread) only convert (zero-copy), count and hand
frames to the approximate-time synchroniser; a complete group goes to a single-slot "latest
group" buffer. One inference thread, which also builds the model, takes groups from it, so when
the model is slower than the cameras stale groups are replaced (counted as stale drops) instead
of queueing up: output latency stays under about two inference times. On a GPU (PyTorch) the
thread pipelines (``Segmenter.stage`` / ``launch``): when a group is already waiting as the
previous one's inference is queued, it stages that group (encoding, the upload from pinned
memory on a side CUDA stream) before waiting for and publishing the previous outputs, so
conversion overlaps GPU compute; outputs keep their order. On a CPU, or with ONNX Runtime, whose
``launch`` returns with the outputs, each group is published before the next one is staged.
Pipeline latency in the diagnostics is the node clock's now - the RGB stamp when the outputs
have been published; inference time is the thread's time on a group (staging, queueing, waiting
for its outputs), without the time it spent staging the next one meanwhile.

Bad input never stops the node: a message whose encoding does not suit its modality, whose
step / data size is inconsistent or which is empty is refused in its callback; a group whose
images differ in size, or whose values cannot be encoded (e.g. a depth image without one valid
pixel), is refused by the inference thread. Each is counted per topic and reason in the
diagnostics (keys ``<topic> bad messages (<reason>)``) and logged at most every 5 s.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String

from unim2_core.data.camera import CameraIntrinsics
from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_core.device import DEVICE_HELP
from unim2_core.errors import (
    BackboneError,
    CheckpointError,
    ConfigError,
    EncodingError,
    ExportError,
    ProviderError,
)
from unim2_core.model.backbone import load_backbone
from unim2_core.model.checkpoint import Bundle, load_bundle
from unim2_core.runtime.export import checkpoint_identity
from unim2_core.runtime.latest_slot import LatestSlot, consume_pipelined
from unim2_core.runtime.onnx_segmenter import OnnxSegmenter, available_providers, choose_providers
from unim2_core.runtime.pointcloud import labelled_points
from unim2_core.runtime.segmenter import FrameSegmenter, PendingSegmentation, Segmenter, StagedGroup
from unim2_core.runtime.sync import ApproximateTimeSynchronizer, FallbackSynchronizer
from unim2_core.runtime.visualize import colorize, overlay
from unim2_ros.errors import InputRejectedError
from unim2_ros.frame_inputs import modality_array
from unim2_ros.image_conversion import array_to_image, camera_info_intrinsics, header_stamp_ns
from unim2_ros.label_info import label_info_json
from unim2_ros.node_parameters import (
    MODALITIES_PARAMETER,
    NODE_PARAMETERS,
    NodeSettings,
    ParameterSpec,
    QosName,
    check_provided_modalities,
    check_value,
    encoding_parameter_names,
    encoding_specs,
    format_parameter_help,
    modalities_spec,
    unknown_parameter_problem,
)
from unim2_ros.pipeline_monitor import PipelineMonitor
from unim2_ros.point_cloud import POINTS_PARAMETERS, depth_modality, point_cloud_message
from unim2_ros.rclpy_internals import RCLError, parameter_override_names
from unim2_ros.ros_cli import run_ros_cli

SIZE_MISMATCH = "size_mismatch"
INVALID_VALUES = "invalid_values"
DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0


class _Frame(NamedTuple):
    """One converted input message, as queued in the synchroniser."""

    header: Header
    array: np.ndarray


class _CameraFrame(NamedTuple):
    """One converted camera_info message, as queued in the synchroniser after the images."""

    header: Header
    intrinsics: CameraIntrinsics


_Synced = _Frame | _CameraFrame


class _Staged(NamedTuple):
    """A group whose model input is built (or being uploaded), with what its outputs need."""

    rgb: _Frame
    arrays: dict[str, np.ndarray]
    intrinsics: dict[str, CameraIntrinsics]
    missing: tuple[str, ...]
    model_input: StagedGroup
    seconds: float


class _InFlight(NamedTuple):
    """A staged group whose inference is queued on the model's device."""

    staged: _Staged
    pending: PendingSegmentation
    seconds: float


class _PointsOptions(NamedTuple):
    """Run-time point cloud settings, swapped as a whole when a parameter changes."""

    stride: int
    max_range: float


class _OutputOptions(NamedTuple):
    """Run-time output settings, swapped as a whole when a parameter changes."""

    labels: bool
    colored: bool
    overlay: bool
    overlay_alpha: float


def _qos(name: QosName) -> QoSProfile:
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "system_default":
        return qos_profile_system_default
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    elif spec.name == "model.device":
        descriptor.additional_constraints = DEVICE_HELP
    if spec.minimum is not None and spec.maximum is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)
            ]
        elif isinstance(spec.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=spec.minimum, to_value=spec.maximum, step=0.0)
            ]
    return descriptor


def _load_segmenter(bundle: Bundle, settings: NodeSettings) -> FrameSegmenter:
    """The checkpoint's model in the runtime ``model.runtime`` names; the node uses either
    through :class:`~unim2_core.runtime.segmenter.FrameSegmenter` alone.

    Raises:
        ConfigError: naming the parameter at fault (see the two loaders).
    """
    if settings.runtime == "onnxruntime":
        return _load_onnx_segmenter(bundle, settings)
    return _load_torch_segmenter(bundle, settings)


def _load_torch_segmenter(bundle: Bundle, settings: NodeSettings) -> Segmenter:
    """The backbone the checkpoint names, loaded from ``model.backbone_weights``, with its heads.

    Raises:
        ConfigError: naming ``model.backbone_weights`` (missing, unreadable or mismatching
            weights) or ``model.device`` (e.g. cuda without a GPU).
    """
    try:
        backbone = load_backbone(
            bundle.backbone.name,
            settings.backbone_weights,
            feature_layer=bundle.backbone.feature_layer,
        )
        return Segmenter(
            bundle,
            backbone,
            device=settings.device,
            precision=settings.precision,
            shorter_side=settings.input_size or None,
            compile=settings.compile,
        )
    except (BackboneError, CheckpointError) as err:
        raise ConfigError(
            f"parameter model.backbone_weights {settings.backbone_weights!r}: {err}"
        ) from err
    except ValueError as err:
        raise ConfigError(f"parameter model.device {settings.device!r}: {err}") from err
    except ConfigError as err:  # a device torch does not see
        raise ConfigError(f"parameter model.device: {err}") from err


def _load_onnx_segmenter(bundle: Bundle, settings: NodeSettings) -> OnnxSegmenter:
    """The graph of ``model.onnx`` in ONNX Runtime, checked to be the checkpoint's export.

    The execution providers are checked first, device before precision, so that a GPU request
    onnxruntime cannot serve names ``model.device`` and an fp16 request without TensorRT names
    ``model.precision``.

    Raises:
        ConfigError: naming ``model.runtime`` (onnxruntime not installed), ``model.device``
            (no provider for it, or a GPU provider that failed to start), ``model.precision``,
            ``model.checkpoint`` (unreadable) or ``model.onnx`` (missing, corrupt, not a unim2
            export, or exported from another checkpoint).
    """
    try:
        available = available_providers()
    except ExportError as err:
        raise ConfigError(f"parameter model.runtime 'onnxruntime': {err}") from err
    try:
        choose_providers(settings.device, "fp32", available)
    except ProviderError as err:
        raise ConfigError(f"parameter model.device {settings.device!r}: {err}") from err
    try:
        choose_providers(settings.device, settings.precision, available)
    except ProviderError as err:
        raise ConfigError(f"parameter model.precision {settings.precision!r}: {err}") from err
    try:
        expected = checkpoint_identity(settings.checkpoint)
    except (CheckpointError, ExportError) as err:
        raise ConfigError(f"parameter model.checkpoint: {err}") from err
    try:
        return OnnxSegmenter(
            bundle,
            settings.onnx,
            expected=expected,
            device=settings.device,
            precision=settings.precision,
            shorter_side=settings.input_size or None,
        )
    except ProviderError as err:  # e.g. onnxruntime-gpu without its CUDA libraries
        raise ConfigError(f"parameter model.device {settings.device!r}: {err}") from err
    except ExportError as err:  # the message names the file
        raise ConfigError(f"parameter model.onnx: {err}") from err


class SegmentationPipeline(Node):
    """The node's logic in four steps, shared by :class:`SegmentationNode` and the managed
    node of :mod:`unim2_ros.lifecycle_node`.

    - ``_configure``: declares and checks the parameters, reads the checkpoint and loads the
      model in the inference thread (raises ConfigError naming what is wrong);
    - ``_activate``: creates the publishers, the synchroniser, the subscriptions and the
      diagnostics timer, and latches ``~/label_info``;
    - ``_deactivate``: destroys those again (the model stays loaded);
    - ``_cleanup``: stops the inference thread and frees the model.

    The plain node runs the first two in its constructor; ``destroy_node`` runs whatever is
    needed of the last two.
    """

    def _init_pipeline(self) -> None:
        """State before configuration; called once, right after ``Node.__init__``."""
        self._slot: LatestSlot[tuple[_Synced | None, ...]] = LatestSlot()
        self._points_pub: Publisher[PointCloud2] | None = None
        self._camera_modality: str | None = None
        self._worker: threading.Thread | None = None
        self._model: FrameSegmenter | None = None
        self._active = False
        self._outputs_lock = threading.Lock()
        self._callbacks_added = False
        self._specs: dict[str, ParameterSpec] = {}
        self._missing: tuple[str, ...] = ()

    def _configure(self) -> None:
        """Parameters, checkpoint and model; a failure leaves no thread or model behind."""
        self._specs = {spec.name: spec for spec in NODE_PARAMETERS}
        self._refuse_unknown_parameters()
        settings = NodeSettings.from_parameters(
            {spec.name: self._declare(spec) for spec in NODE_PARAMETERS}
        )
        try:
            bundle = load_bundle(settings.checkpoint)
        except CheckpointError as err:
            raise ConfigError(f"parameter model.checkpoint: {err}") from err

        modalities_param = modalities_spec(bundle.modalities)
        self._specs[modalities_param.name] = modalities_param
        provided = cast(list[str], self._declare(modalities_param))  # checked by _declare
        check_provided_modalities(bundle.modalities, provided)
        self._modalities = bundle.modalities
        unused = [m for m in provided if m not in self._modalities]
        if unused:
            self.get_logger().info(f"the checkpoint does not use modalities {unused}")

        self._trained = dict(bundle.encodings)
        for modality in self._modalities[1:]:
            for spec in encoding_specs(modality, bundle.encodings[modality]):
                self._specs[spec.name] = spec
                self._declare(spec)
            reason = self._encoding_problem(modality, {})
            if reason is not None:
                raise ConfigError(f"parameter {reason}")
        self._refuse_unknown_parameters(known=list(self._specs))
        self._declare_points(bundle.encodings)

        loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._slot = LatestSlot()
        self._worker = threading.Thread(
            target=self._run_worker, args=(bundle, settings, loaded), name="unim2_inference"
        )
        self._worker.start()
        loaded.wait()
        if self._model is None:
            self._worker.join()
            self._worker = None
            raise self._load_error or RuntimeError("the inference thread built no model")
        self._encodings = self._model.encodings
        self._warned_encodings: set[str] = set()
        for modality in self._modalities[1:]:
            self._apply_encoding(modality)
        self._palette = np.asarray([label.color for label in self._model.labels_table], np.uint8)
        self._device_name = self._model.device_label
        self._trained_dropout = float(bundle.training.get("train", {}).get("modality_dropout", 0))
        self._settings = settings
        self._label_info_args: dict[str, Any] = {
            "checkpoint": settings.checkpoint,
            "backbone": bundle.backbone,
            "modalities": self._modalities,
            "n_clusters": bundle.heads_config.n_clusters,
            "label_source": "clusters" if bundle.class_mapping is None else "classes",
        }
        if not self._callbacks_added:
            self.add_on_set_parameters_callback(self._check_parameters)
            self.add_post_set_parameters_callback(self._apply_parameters)
            self._callbacks_added = True
        self.get_logger().info(
            f"loaded a {'+'.join(self._modalities)} model on {self._device_name} "
            f"({settings.precision}{', torch.compile' if settings.compile else ''}), "
            f"{len(self._palette)} labels"
        )

    def _activate(self) -> None:
        """Publishers, synchroniser, subscriptions and diagnostics; latches ``~/label_info``."""
        settings = self._settings
        self._options = _OutputOptions(
            self.get_parameter("output.labels").value,
            self.get_parameter("output.colored").value,
            self.get_parameter("output.overlay").value,
            self.get_parameter("output.overlay_alpha").value,
        )
        output_qos = _qos(settings.qos_output)
        self._labels_pub = self.create_publisher(Image, "~/labels", output_qos)
        self._colored_pub = self.create_publisher(Image, "~/colored", output_qos)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", output_qos)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._label_info_pub = self.create_publisher(String, "~/label_info", latched)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._points_pub = (
            self.create_publisher(PointCloud2, "~/points", output_qos)
            if self._points_enabled
            else None
        )

        self._sync = self._new_synchronizer(
            self.get_parameter("sync.slop").value,
            self.get_parameter("sync.queue_size").value,
            self.get_parameter("sync.aux_timeout").value,
        )
        self._topics = [
            self.resolve_topic_name(f"{modality}/image") for modality in self._modalities
        ]
        if self._camera_modality is not None:
            self._topics.append(self.resolve_topic_name(f"{self._camera_modality}/camera_info"))
        self._monitor = PipelineMonitor(
            self._topics,
            start=time.monotonic(),
            stream_timeout=self.get_parameter("diagnostics.stream_timeout").value,
        )
        self._missing = ()
        input_qos = _qos(settings.qos_input)
        self._inputs = [
            self.create_subscription(
                Image, f"{modality}/image", functools.partial(self._on_image, index), input_qos
            )
            for index, modality in enumerate(self._modalities)
        ]
        if self._camera_modality is not None:
            self._inputs.append(
                self.create_subscription(
                    CameraInfo,
                    f"{self._camera_modality}/camera_info",
                    self._on_camera_info,
                    input_qos,
                )
            )
        self._diagnostics_timer = self.create_timer(
            DIAGNOSTICS_PERIOD_S,
            self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        with self._outputs_lock:
            self._active = True
            self._publish_label_info()
        self.get_logger().info(
            f"segmenting {'+'.join(self._modalities)} from {', '.join(self._topics)}"
        )

    def _deactivate(self) -> None:
        """Stops input and output; the model stays loaded and a waiting group is discarded."""
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        self.destroy_timer(self._diagnostics_timer)
        with self._outputs_lock:  # an inference in flight finishes without publishing
            self._active = False
            for publisher in (
                self._labels_pub,
                self._colored_pub,
                self._overlay_pub,
                self._label_info_pub,
                self._diagnostics_pub,
            ):
                self.destroy_publisher(publisher)
            if self._points_pub is not None:
                self.destroy_publisher(self._points_pub)
                self._points_pub = None
        self._slot.take(timeout=0)
        self._sync.clear()

    def _cleanup(self) -> None:
        """Stops the inference thread and frees the model."""
        self._slot.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        self._model = None

    def _refuse_unknown_parameters(self, *, known: list[str] | None = None) -> None:
        """Refuses given parameters (params file, ``-p``) that look like this node's but are
        not declared, e.g. ``sync.slope``: ignored, they would leave the default in force.

        Before the checkpoint is read (``known`` None) the ``encoding.*`` names, which depend
        on its modalities, are left for the second call.
        """
        early = known is None
        if known is None:
            known = [spec.name for spec in NODE_PARAMETERS] + [MODALITIES_PARAMETER]
        for name in parameter_override_names(self):
            if self.has_parameter(name) or (early and name.startswith("encoding.")):
                continue
            problem = unknown_parameter_problem(name, known)
            if problem is not None:
                raise ConfigError(problem)

    def _declare(self, spec: ParameterSpec) -> object:
        """Declares one parameter (once: a managed node configures again after a cleanup) and
        returns its value (override or default)."""
        value: object
        if self.has_parameter(spec.name):
            value = self.get_parameter(spec.name).value
        else:
            try:
                value = self.declare_parameter(spec.name, spec.default, _descriptor(spec)).value
            except ParameterException as err:
                raise ConfigError(f"parameter {spec.name}: {err}") from err
        reason = check_value(spec, value)
        if reason is not None:
            raise ConfigError(f"parameter {reason}")
        return value

    def _new_synchronizer(
        self, slop: float, queue_size: int, aux_timeout: float
    ) -> ApproximateTimeSynchronizer[_Synced] | FallbackSynchronizer[_Synced]:
        """message_filters' synchroniser over the images (and camera_info, last), falling back
        without lost auxiliary image topics when ``sync.aux_timeout`` is positive (see
        :class:`unim2_core.runtime.sync.FallbackSynchronizer`)."""
        n_images = len(self._modalities)
        n_inputs = n_images + (self._camera_modality is not None)
        if aux_timeout > 0 and n_images > 1:
            return FallbackSynchronizer(
                n_inputs,
                queue_size=queue_size,
                slop=slop,
                optional=range(1, n_images),
                timeout=aux_timeout,
            )
        return ApproximateTimeSynchronizer(n_inputs, queue_size=queue_size, slop=slop)

    # --- point cloud and camera_info ------------------------------------------------------

    def _declare_points(self, encodings: dict[str, ModalityEncoding]) -> None:
        """Declares ``points.*`` and decides whether camera_info is an input.

        Raises:
            ConfigError: ``points.enabled`` with a checkpoint that has no raw depth modality.
        """
        values = {}
        for spec in POINTS_PARAMETERS:
            self._specs[spec.name] = spec
            values[spec.name] = self._declare(spec)
        self._points_enabled = bool(values["points.enabled"])
        self._points = _PointsOptions(
            cast(int, values["points.stride"]), float(cast(float, values["points.max_range"]))
        )
        depth = depth_modality(encodings)
        needs_intrinsics = any(e.kind is EncodingKind.DEPTH_HHA for e in encodings.values())
        if self._points_enabled and depth is None:
            raise ConfigError(
                "parameter points.enabled: the checkpoint has no raw depth modality (encoding "
                f"depth or depth_hha) to build points from; its modalities: {list(encodings)}"
            )
        self._camera_modality = depth if (self._points_enabled or needs_intrinsics) else None

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Converts one camera_info message and offers the group it completes to the model."""
        index = len(self._modalities)
        self._monitor.record_message(index, time.monotonic())
        try:
            intrinsics = camera_info_intrinsics(msg)
        except EncodingError as err:
            self._refuse(index, INVALID_VALUES, str(err))
            return
        stamp_ns = header_stamp_ns(msg.header)
        group = self._sync.add(index, stamp_ns, _CameraFrame(msg.header, intrinsics))
        if group is not None and self._slot.put(group):
            self._monitor.record_stale_drop()

    def _split_camera_info(
        self, synced: tuple[_Synced | None, ...]
    ) -> tuple[tuple[_Frame | None, ...], dict[str, CameraIntrinsics]]:
        """The image frames of a synchronised group (None for a lost auxiliary stream), and
        the depth camera's intrinsics (camera_info is never optional)."""
        images = cast(tuple[_Frame | None, ...], synced[: len(self._modalities)])
        if self._camera_modality is None:
            return images, {}
        camera = cast(_CameraFrame, synced[-1])
        return images, {self._camera_modality: camera.intrinsics}

    def _publish_points(
        self,
        rgb: _Frame,
        arrays: dict[str, np.ndarray],
        labels: np.ndarray,
        intrinsics: dict[str, CameraIntrinsics],
    ) -> None:
        """Publishes ~/points when enabled and subscribed (the records are built only then)."""
        publisher = self._points_pub
        if publisher is None or self._camera_modality is None:
            return
        if publisher.get_subscription_count() == 0:
            return
        options = self._points
        try:
            points = labelled_points(
                arrays[self._camera_modality],
                rgb.array,
                labels,
                intrinsics[self._camera_modality],
                stride=options.stride,
                max_range=options.max_range,
                name=self._camera_modality,
            )
        except EncodingError as err:
            self._refuse(len(self._modalities), INVALID_VALUES, str(err))
            return
        publisher.publish(point_cloud_message(points, rgb.header))

    # --- subscription side ----------------------------------------------------------------

    def _on_image(self, index: int, msg: Image) -> None:
        """Converts one input message and offers the group it completes to the model."""
        now = time.monotonic()
        self._monitor.record_message(index, now)
        modality = self._modalities[index]
        try:
            array = modality_array(msg, modality, self._encodings[modality])
        except InputRejectedError as err:
            self._refuse(index, err.reason, str(err))
            return
        group = self._sync.add(index, header_stamp_ns(msg.header), _Frame(msg.header, array))
        if group is not None and self._slot.put(group):
            self._monitor.record_stale_drop()

    def _refuse(self, index: int, reason: str, detail: str) -> None:
        self._monitor.record_bad(index, reason)
        self.get_logger().warning(
            f"dropped a message on {self._topics[index]} ({reason}): {detail}",
            throttle_duration_sec=LOG_THROTTLE_S,
        )

    # --- inference side -------------------------------------------------------------------

    def _run_worker(self, bundle: Bundle, settings: NodeSettings, loaded: threading.Event) -> None:
        """Inference thread: builds the model, then segments the latest group until the slot
        is closed, staging a waiting group while the previous one computes
        (:func:`consume_pipelined`).

        The model is built here rather than in the constructor's thread: on CPU, PyTorch
        (libgomp) runs about 10 % slower in a thread other than one that already ran a parallel
        operation (measured: loading in the main thread, inferring in this one).
        """
        try:
            self._model = _load_segmenter(bundle, settings)
        except BaseException as err:  # re-raised by the constructor, in its thread
            self._load_error = err
            return
        finally:
            loaded.set()
        segmenter = self._model
        consume_pipelined(
            self._slot,
            functools.partial(self._stage, segmenter),
            functools.partial(self._launch, segmenter),
            self._finish,
            overlap=segmenter.launch_is_asynchronous,
        )

    def _stage(
        self, segmenter: FrameSegmenter, synced: tuple[_Synced | None, ...]
    ) -> _Staged | None:
        """Checks a group and builds its model input (on CUDA, uploading it on a side stream
        while the previous group computes); None when the group is refused."""
        group, intrinsics = self._split_camera_info(synced)
        rgb = group[0]
        assert rgb is not None  # RGB is never optional in the synchroniser
        size = rgb.array.shape[:2]
        present = {i: frame for i, frame in enumerate(group) if frame is not None}
        mismatched = [i for i, frame in present.items() if frame.array.shape[:2] != size]
        if mismatched:
            for index in mismatched:
                shape = present[index].array.shape
                self._refuse(
                    index,
                    SIZE_MISMATCH,
                    f"{shape[1]}x{shape[0]} image does not match the RGB image's "
                    f"{size[1]}x{size[0]}",
                )
            return None
        arrays = {self._modalities[i]: frame.array for i, frame in present.items()}
        missing = tuple(m for i, m in enumerate(self._modalities) if i not in present)
        start = time.perf_counter()
        try:
            model_input = segmenter.stage(arrays, intrinsics=intrinsics, missing=missing)
        except EncodingError as err:
            self._refuse(self._blame(err), INVALID_VALUES, str(err))
            return None
        except Exception as err:  # the thread outlives model failures; repeated ones are ERROR
            self._inference_failed(err)
            return None
        seconds = time.perf_counter() - start
        return _Staged(rgb, arrays, intrinsics, missing, model_input, seconds)

    def _launch(self, segmenter: FrameSegmenter, staged: _Staged) -> _InFlight | None:
        """Queues the inference of a staged group; None when it fails."""
        if staged.missing != self._missing:
            self._missing_changed(staged.missing)
        start = time.perf_counter()
        try:
            pending = segmenter.launch(staged.model_input)
        except Exception as err:  # the thread outlives model failures; repeated ones are ERROR
            self._inference_failed(err)
            return None
        return _InFlight(staged, pending, staged.seconds + time.perf_counter() - start)

    def _finish(self, in_flight: _InFlight) -> None:
        """Waits for a group's labels and publishes them.

        The inference time recorded is the thread's time on this group (staging, queueing,
        waiting for its outputs), not the time it spent staging the next group meanwhile.
        """
        staged = in_flight.staged
        start = time.perf_counter()
        try:
            labels = in_flight.pending.result().labels
        except Exception as err:  # the thread outlives model failures; repeated ones are ERROR
            self._inference_failed(err)
            return
        inference_s = in_flight.seconds + time.perf_counter() - start
        try:
            self._publish_outputs(staged.rgb, labels, staged.arrays, staged.intrinsics)
        except (InvalidHandle, RCLError):
            if self.context.ok():
                raise
            return  # SIGINT / SIGTERM shut the context down while this group was segmented
        latency_ns = self.get_clock().now().nanoseconds - header_stamp_ns(staged.rgb.header)
        self._monitor.record_segmented(time.monotonic(), inference_s, latency_ns * 1e-9)

    def _inference_failed(self, err: Exception) -> None:
        self._monitor.record_failure()
        self.get_logger().error(f"inference failed: {err!r}", throttle_duration_sec=LOG_THROTTLE_S)

    def _blame(self, err: EncodingError) -> int:
        """Index of the input an encoding error is about (RGB when it names no input)."""
        modality = err.modality
        return self._modalities.index(modality) if modality in self._modalities else 0

    def _missing_changed(self, missing: tuple[str, ...]) -> None:
        """Reports that outputs are now computed without ``missing`` (or with everything)."""
        self._missing = missing
        self._monitor.set_missing(missing)
        if missing:
            untrained = (
                ""
                if self._trained_dropout > 0
                else (
                    "; this checkpoint was trained without train.modality_dropout, so expect "
                    "poorer labels"
                )
            )
            self.get_logger().warning(
                f"DEGRADED: segmenting without {', '.join(missing)} (no recent message){untrained}"
            )
        else:
            self.get_logger().info("every input is back: segmenting with full fusion")
        with self._outputs_lock:
            if self._active:
                self._publish_label_info()

    def _publish_label_info(self) -> None:
        """Latches the label_info document; call with the outputs lock held while active."""
        assert self._model is not None
        text = label_info_json(
            self._model.labels_table, missing_modalities=self._missing, **self._label_info_args
        )
        self._label_info_pub.publish(String(data=text))

    def _publish_outputs(
        self,
        rgb: _Frame,
        labels: np.ndarray,
        arrays: dict[str, np.ndarray],
        intrinsics: dict[str, CameraIntrinsics],
    ) -> None:
        with self._outputs_lock:
            if self._active:
                self._publish_images(rgb, labels)
                self._publish_points(rgb, arrays, labels, intrinsics)

    def _publish_images(self, rgb: _Frame, labels: np.ndarray) -> None:
        options = self._options
        if options.labels:
            encoding = "mono8" if labels.dtype == np.uint8 else "mono16"
            self._labels_pub.publish(array_to_image(labels, encoding, header=rgb.header))
        want_overlay = options.overlay and self._overlay_pub.get_subscription_count() > 0
        if not (options.colored or want_overlay):
            return
        colored = colorize(labels, self._palette)
        if options.colored:
            self._colored_pub.publish(array_to_image(colored, "rgb8", header=rgb.header))
        if want_overlay:
            blended = overlay(rgb.array, colored, options.overlay_alpha)
            self._overlay_pub.publish(array_to_image(blended, "rgb8", header=rgb.header))

    # --- parameters -----------------------------------------------------------------------

    def _check_parameters(self, parameters: list[Parameter[Any]]) -> SetParametersResult:
        """Refuses, with a reason, any value the node cannot use (ranges are checked by rclpy)."""
        pending: dict[str, object] = {}
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is None:
                continue
            reason = check_value(spec, parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            pending[parameter.name] = parameter.value
        for modality in self._modalities[1:]:
            reason = self._encoding_problem(modality, pending)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _encoding_problem(self, modality: str, pending: dict[str, object]) -> str | None:
        """Why the (pending or current) low / high of ``modality`` are unusable, or None."""
        names = encoding_parameter_names(modality)
        values = [pending.get(name, self.get_parameter(name).value) for name in names]
        low, high = (float(cast(float, value)) for value in values)
        try:
            dataclasses.replace(self._trained[modality], low=low, high=high)
        except ConfigError as err:
            return f"{names[0]} / {names[1]}: {err}"
        return None

    def _apply_parameters(self, parameters: list[Parameter[Any]]) -> None:
        """Makes accepted run-time changes take effect."""
        names = {parameter.name for parameter in parameters}
        if self._model is not None:
            for modality in self._modalities[1:]:
                if names & set(encoding_parameter_names(modality)):
                    self._apply_encoding(modality)
        if names & {"points.stride", "points.max_range"}:
            self._points = _PointsOptions(
                self.get_parameter("points.stride").value,
                self.get_parameter("points.max_range").value,
            )
        if not self._active:  # the rest is read again by the next activation
            return
        if names & {"sync.slop", "sync.queue_size", "sync.aux_timeout"}:
            retired = self._sync
            self._sync = self._new_synchronizer(
                self.get_parameter("sync.slop").value,
                self.get_parameter("sync.queue_size").value,
                self.get_parameter("sync.aux_timeout").value,
            )
            retired.clear()
            self._monitor.add_retired_sync_drops(retired.stats().dropped)
        if any(name.startswith("output.") for name in names):
            self._options = _OutputOptions(
                self.get_parameter("output.labels").value,
                self.get_parameter("output.colored").value,
                self.get_parameter("output.overlay").value,
                self.get_parameter("output.overlay_alpha").value,
            )
        if "diagnostics.stream_timeout" in names:
            self._monitor.set_stream_timeout(self.get_parameter("diagnostics.stream_timeout").value)

    def _apply_encoding(self, modality: str) -> None:
        """Uses the current ``encoding.<modality>.*`` values from the next frame on."""
        low_name, high_name = encoding_parameter_names(modality)
        trained = self._trained[modality]
        encoding: ModalityEncoding = dataclasses.replace(
            trained,
            low=self.get_parameter(low_name).value,
            high=self.get_parameter(high_name).value,
        )
        self._encodings[modality] = encoding
        if encoding != trained and modality not in self._warned_encodings:
            self._warned_encodings.add(modality)
            self.get_logger().warning(
                f"{modality} is normalised with low={encoding.low} high={encoding.high}, but "
                f"the model was trained with low={trained.low} high={trained.high}"
            )

    # --- diagnostics ----------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        report = self._monitor.report(time.monotonic(), sync_dropped=self._sync.stats().dropped)
        status = DiagnosticStatus(
            level=bytes([int(report.level)]),
            name=f"{self.get_fully_qualified_name()}: segmentation",
            message=report.message,
            hardware_id=self._device_name,
            values=[KeyValue(key=key, value=value) for key, value in report.values],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # --- teardown -------------------------------------------------------------------------

    def destroy_node(self) -> None:
        """Stops the inference thread, frees the model, then destroys the ROS entities."""
        self._cleanup()
        super().destroy_node()


class SegmentationNode(SegmentationPipeline):
    """Segments synchronised RGB + auxiliary images with a UniM2 checkpoint.

    Configures and activates itself in the constructor (for the managed variant see
    :mod:`unim2_ros.lifecycle_node`).

    Args:
        node_name: The node's name (remappable with ``__node``).
        **kwargs: Passed to ``rclpy.node.Node`` (``context``, ``parameter_overrides``,
            ``cli_args``, ``namespace``...).

    Raises:
        ConfigError: a parameter is invalid, the checkpoint or backbone weights cannot be
            used, or the configuration lacks a modality the checkpoint needs; the message
            names the parameter, path or modality.
    """

    def __init__(self, node_name: str = "unim2_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._init_pipeline()
        try:
            self._configure()
            self._activate()
        except BaseException:
            self.destroy_node()
            raise


def run_until_shutdown(node: Node) -> None:
    """Spins ``node`` until its context shuts down (SIGINT / SIGTERM) or Ctrl-C, then destroys
    the node and after it the executor.

    The signal handler shuts the context down wherever the executor happens to be, so rclpy
    reports it as an interrupt, an external shutdown, or an error about the now invalid context
    (building the executor or its wait set); the last is an error only while the context is
    still valid. The executor outlives the node's teardown on purpose: rclpy's signal thread
    triggers the executor's SIGINT guard condition without a lock, and freeing that guard
    condition as soon as the wake-up returned crashed the process (SIGSEGV in
    ``rcl_trigger_guard_condition``, 3 of 8 stops while a group was in flight).
    """
    executor: SingleThreadedExecutor | None = None
    try:
        if node.context.ok():  # shut down already: building an executor now would fail half-way
            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:  # RCLError included
        if node.context.ok():
            raise
    finally:
        node.destroy_node()
        if executor is not None:
            executor.shutdown()


HELP_TEXT = """usage: unim2_node [-h] [--ros-args [-p NAME:=VALUE] [--params-file FILE] [-r A:=B]]

Segments synchronised RGB + auxiliary camera images with a UniM2 checkpoint and publishes
~/labels, ~/colored, ~/overlay, ~/label_info and /diagnostics. Inputs: rgb/image and
<modality>/image for each auxiliary modality of the checkpoint (remap with -r).

example:
  unim2_node --ros-args --params-file config/unim2_node.yaml \\
      -p model.checkpoint:=runs/my_robot/model.unim2.pt -r rgb/image:=/camera/color/image_raw
"""


def _wants_help(argv: list[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def _params_file_hint(argv: list[str], node_name: str) -> str | None:
    """A warning when params files are given but none of them addresses ``node_name``.

    rcl applies a file's parameters only to the nodes its top-level keys name (``unim2_node``,
    ``/ns/unim2_node``, ``/**``, ``/**/unim2_node``...); under another name they are silently
    ignored, and the node would start on defaults.
    """
    files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--params-file"]
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-r", "--remap") and argv[i + 1].startswith("__node:="):
            node_name = argv[i + 1].partition(":=")[2]
    names: list[str] = []
    for path in files:
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None  # rcl reports an unreadable file itself
        if not isinstance(document, dict):
            return None
        names += [str(key) for key in document]
    if not files or any(
        fnmatch.fnmatchcase(node_name, name.rsplit("/", 1)[-1]) or name in ("/**", "/*", "**")
        for name in names
    ):
        return None
    return (
        f"no parameter was given to this node's name {node_name!r}: the params file(s) "
        f"{', '.join(files)} address only {names}; put the parameters under "
        f"'{node_name}:' or '/**:'"
    )


def main(args: list[str] | None = None) -> int:
    """Runs the node until SIGINT / SIGTERM; a start-up error prints one line and returns 1."""
    argv = list(sys.argv[1:] if args is None else args)
    if _wants_help(argv):
        print(HELP_TEXT)
        print(format_parameter_help())
        return 0
    hint = _params_file_hint(argv, "unim2_node")
    if hint is not None:
        print(f"WARNING: {hint}", file=sys.stderr)

    def body() -> int:
        try:
            with rclpy.init(args=args):
                try:
                    node = SegmentationNode()
                except KeyboardInterrupt:
                    return 0  # Ctrl-C while the model loads
                except (ExternalShutdownException, RCLError):
                    if rclpy.ok():
                        raise
                    return 0  # SIGINT / SIGTERM while starting: rclpy shut the context down
                run_until_shutdown(node)
        except KeyboardInterrupt:
            return 0  # Ctrl-C before rclpy's own handler was installed, or while it tears down
        return 0

    return run_ros_cli(body, prog="unim2_node")


if __name__ == "__main__":
    sys.exit(main())
