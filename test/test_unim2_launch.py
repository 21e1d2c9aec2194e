"""launch/unim2.launch.py, checked statically (launch / launch_ros are not installable here)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "unim2.launch.py"
ARGUMENTS = {
    "params_file",
    "namespace",
    "rgb_topic",
    "depth_topic",
    "depth_info_topic",
    "thermal_topic",
    "nir_topic",
    "aolp_topic",
    "dolp_topic",
    "use_sim_time",
    "log_level",
}


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _calls(name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(_tree())
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]


def _keyword(call: ast.Call, name: str) -> ast.expr:
    return next(k.value for k in call.keywords if k.arg == name)


def test_launch_file_defines_generate_launch_description() -> None:
    functions = [n.name for n in _tree().body if isinstance(n, ast.FunctionDef)]
    assert functions == ["generate_launch_description"]


def test_launch_file_declares_the_documented_arguments() -> None:
    declared = [ast.literal_eval(call.args[0]) for call in _calls("DeclareLaunchArgument")]
    assert sorted(declared) == sorted(ARGUMENTS)
    for call in _calls("DeclareLaunchArgument"):
        assert _keyword(call, "description") is not None


def test_every_declared_argument_is_used() -> None:
    used = {ast.literal_eval(call.args[0]) for call in _calls("LaunchConfiguration")}
    assert used == ARGUMENTS


def test_node_runs_the_package_executable_with_remapped_inputs() -> None:
    (node,) = _calls("Node")
    assert ast.literal_eval(_keyword(node, "package")) == "unim2_ros"
    assert ast.literal_eval(_keyword(node, "executable")) == "unim2_node"
    remaps = _keyword(node, "remappings")
    assert isinstance(remaps, ast.List)
    pairs = [pair for pair in remaps.elts if isinstance(pair, ast.Tuple)]
    assert len(pairs) == len(remaps.elts)
    sources = [ast.literal_eval(pair.elts[0]) for pair in pairs]
    images = [f"{m}/image" for m in ("rgb", "depth", "thermal", "nir", "aolp", "dolp")]
    assert sources == [*images, "depth/camera_info"]


def test_every_referenced_file_exists_in_the_repository() -> None:
    (join,) = [
        call
        for call in ast.walk(_tree())
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "join"
    ]
    parts = [ast.literal_eval(arg) for arg in join.args[1:]]
    assert parts == ["config", "unim2_node.yaml"]
    words = [
        word
        for node in ast.walk(_tree())
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for word in node.value.split()
    ]
    files = {Path(word.rstrip(".,")).name for word in words if word.endswith((".yaml", ".xml"))}
    assert files == {"unim2_node.yaml", "fastdds_localhost.xml"}
    for name in files:
        assert (REPO / "config" / name).is_file(), name
