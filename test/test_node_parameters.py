"""The node's parameter table: validation, settings, and config/unim2_node.yaml covering it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.errors import ConfigError
from unim2_ros.node_parameters import (
    NODE_PARAMETERS,
    SPECS_BY_NAME,
    NodeSettings,
    ParameterSpec,
    check_provided_modalities,
    check_value,
    encoding_specs,
    format_parameter_help,
    modalities_spec,
    unknown_parameter_problem,
)
from unim2_ros.point_cloud import POINTS_PARAMETERS

CONFIG = Path(__file__).resolve().parents[1] / "config" / "unim2_node.yaml"
CONFIG_NODE_KEY = "/**/unim2_node"  # any namespace


def test_names_are_unique_and_dotted_by_group() -> None:
    names = [spec.name for spec in NODE_PARAMETERS]
    assert len(set(names)) == len(names)
    groups = {name.split(".")[0] for name in names}
    assert groups == {"model", "sync", "qos", "output", "diagnostics"}


def test_model_and_qos_are_read_only_the_rest_runtime_settable() -> None:
    for spec in NODE_PARAMETERS:
        assert spec.read_only == spec.name.startswith(("model.", "qos.")), spec.name
        assert spec.description


@pytest.mark.parametrize("spec", NODE_PARAMETERS, ids=lambda spec: spec.name)
def test_every_default_is_allowed(spec: ParameterSpec) -> None:
    assert check_value(spec, spec.default) is None


def test_settings_take_defaults_for_missing_values() -> None:
    settings = NodeSettings.from_parameters({"model.checkpoint": "/m.pt", "sync.slop": 0.2})
    assert settings.checkpoint == "/m.pt"
    assert settings.slop == 0.2
    assert (settings.device, settings.precision, settings.input_size) == ("auto", "fp32", 0)
    assert (settings.runtime, settings.onnx) == ("torch", "")
    assert settings.compile is False
    assert (settings.qos_input, settings.qos_output) == ("sensor_data", "reliable")
    assert settings.publish_overlay and settings.overlay_alpha == 0.5
    assert settings.stream_timeout == 1.0 and settings.queue_size == 10


def test_settings_need_a_checkpoint() -> None:
    with pytest.raises(ConfigError, match=r"parameter model.checkpoint is not set"):
        NodeSettings.from_parameters({})


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        (
            "model.precision",
            "int8",
            r"model.precision must be one of 'fp32', 'fp16', 'bf16', got 'int8'",
        ),
        ("model.device", "tpu", r"model.device must be one of cpu, cuda, cuda:N .*; got 'tpu'"),
        ("model.device", "cuda:x", r"model.device must be one of cpu, cuda, cuda:N"),
        ("model.compile", "yes", r"model.compile must be true or false, got 'yes'"),
        ("qos.input", "best_effort", r"qos.input must be one of 'sensor_data', 'reliable'"),
        ("qos.output", "", r"qos.output must be one of"),
        ("model.input_size", -14, r"model.input_size must be >= 0"),
        ("model.input_size", 5000, r"model.input_size must be <= 4096"),
        ("model.input_size", 1.5, r"model.input_size must be an integer, got"),
        ("model.input_size", True, r"model.input_size must be an integer, got"),
        ("sync.slop", -1.0, r"sync.slop must be >= 0.001"),
        ("sync.slop", 0.0, r"sync.slop must be >= 0.001"),
        ("sync.slop", math.nan, r"sync.slop must be finite"),
        ("sync.slop", "fast", r"sync.slop must be a number, got 'fast'"),
        ("sync.queue_size", 0, r"sync.queue_size must be >= 1"),
        ("output.overlay_alpha", 1.5, r"output.overlay_alpha must be <= 1.0"),
        ("output.labels", 1, r"output.labels must be true or false, got 1"),
        ("diagnostics.stream_timeout", 0.0, r"diagnostics.stream_timeout must be >= 0.1"),
        ("model.checkpoint", 3, r"model.checkpoint must be a string, got 3"),
        ("model.runtime", "tensorrt", r"model.runtime must be one of 'torch', 'onnxruntime', got"),
        ("model.onnx", 1, r"model.onnx must be a string, got 1"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(name: str, value: object, match: str) -> None:
    assert check_value(SPECS_BY_NAME[name], value) is not None
    with pytest.raises(ConfigError, match=rf"^parameter {match}"):
        NodeSettings.from_parameters({"model.checkpoint": "/m.pt", name: value})


def test_onnxruntime_settings_carry_the_onnx_file() -> None:
    settings = NodeSettings.from_parameters(
        {
            "model.checkpoint": "/m.pt",
            "model.runtime": "onnxruntime",
            "model.onnx": "/m.onnx",
            "model.device": "cuda:1",
            "model.precision": "fp16",
        }
    )
    assert (settings.runtime, settings.onnx) == ("onnxruntime", "/m.onnx")
    assert (settings.device, settings.precision) == ("cuda:1", "fp16")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (
            {"model.onnx": "/m.onnx"},
            r"model.onnx must be empty with model.runtime 'torch' \(set model.runtime "
            r"'onnxruntime' to run it\), got '/m.onnx'",
        ),
        (
            {"model.runtime": "onnxruntime"},
            r"model.onnx must be the ONNX file exported from model.checkpoint \(unim2_export\) "
            r"with model.runtime 'onnxruntime', got ''",
        ),
        (
            {"model.runtime": "onnxruntime", "model.onnx": "/m.onnx", "model.precision": "bf16"},
            r"model.precision must be one of 'fp32', 'fp16' with model.runtime 'onnxruntime' "
            r".*got 'bf16'",
        ),
        (
            {
                "model.runtime": "onnxruntime",
                "model.onnx": "/m.onnx",
                "model.precision": "fp16",
                "model.device": "cpu",
            },
            r"model.precision must be 'fp32' with model.runtime 'onnxruntime' on model.device "
            r"'cpu' \(fp16 is TensorRT's, on a GPU\), got 'fp16'",
        ),
        (
            {"model.runtime": "onnxruntime", "model.onnx": "/m.onnx", "model.compile": True},
            r"model.compile must be false with model.runtime 'onnxruntime' .*got True",
        ),
    ],
)
def test_model_values_that_do_not_fit_the_runtime_are_refused(
    values: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^parameter {match}"):
        NodeSettings.from_parameters({"model.checkpoint": "/m.pt", **values})


def test_integers_are_accepted_for_doubles() -> None:
    assert NodeSettings.from_parameters({"model.checkpoint": "m", "sync.slop": 1}).slop == 1.0


def test_modalities_default_to_the_checkpoints_and_must_cover_them() -> None:
    spec = modalities_spec(("rgb", "thermal"))
    assert spec.default == ["rgb", "thermal"] and spec.read_only
    assert check_value(spec, ["rgb", "depth"]) is None
    assert check_value(spec, ["rgb", 3]) is not None
    check_provided_modalities(("rgb", "depth"), ["rgb", "thermal", "depth"])
    with pytest.raises(
        ConfigError,
        match=r"needs modality 'thermal', which parameter inputs.modalities \['rgb', 'depth'\]",
    ):
        check_provided_modalities(("rgb", "thermal"), ["rgb", "depth"])


def test_encoding_parameters_default_to_the_checkpoint_constants() -> None:
    trained = dataclasses.replace(ModalityEncoding.default("depth"), low=0.3, high=6.0)
    low, high = encoding_specs("depth", trained)
    assert (low.name, low.default, high.name, high.default) == (
        "encoding.depth.low",
        0.3,
        "encoding.depth.high",
        6.0,
    )
    assert "metres" in low.description and not low.read_only
    thermal_low, _ = encoding_specs("thermal", ModalityEncoding.default("thermal", "uint16"))
    assert "uint16 input units" in thermal_low.description


def test_config_file_sets_every_parameter_to_its_documented_default() -> None:
    document = yaml.safe_load(CONFIG.read_text())
    values = document[CONFIG_NODE_KEY]["ros__parameters"]
    assert list(values) == [spec.name for spec in NODE_PARAMETERS + POINTS_PARAMETERS]
    for spec in NODE_PARAMETERS + POINTS_PARAMETERS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), spec.name


def test_config_file_comments_every_parameter() -> None:
    lines = CONFIG.read_text().splitlines()
    for spec in NODE_PARAMETERS + POINTS_PARAMETERS:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{spec.name}:"))
        assert lines[index - 1].strip().startswith("#"), spec.name


def test_help_lists_every_declared_parameter_from_the_table() -> None:
    text = format_parameter_help()
    for spec in NODE_PARAMETERS:
        assert f"\n  {spec.name} (" in text
        assert spec.description in text
    assert "model.checkpoint (string, required, read-only)" in text
    assert "model.runtime (string, default 'torch', read-only; one of torch, onnxruntime)" in text
    assert "model.onnx (string, default '', read-only)" in text
    assert "sync.slop (double, default 0.05, settable at run time; 0.001 to 10)" in text
    assert "inputs.modalities (string array" in text and "encoding.<modality>.low" in text


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("sync.slope", "unknown parameter 'sync.slope' (did you mean 'sync.slop'?)"),
        ("outputs.labels", "unknown parameter 'outputs.labels' (did you mean 'output.labels'?)"),
        ("modle.device", "unknown parameter 'modle.device' (did you mean 'model.device'?)"),
        ("sync.batch", "unknown parameter 'sync.batch'; this node's"),
        ("use_sim_time", None),
        ("camera.fps", None),
        ("model.checkpoint", None),
    ],
)
def test_unknown_parameters_in_the_node_groups_are_named_with_a_suggestion(
    name: str, problem: str | None
) -> None:
    found = unknown_parameter_problem(name, [spec.name for spec in NODE_PARAMETERS])
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
