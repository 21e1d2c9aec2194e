"""The import rules between the project's parts, read from the import graph of every module.

Floors, bottom to top: ``unim2_core`` (itself layered: base modules < data < model < runtime <
evaluation < training), ``unim2_ros``, then the entry scripts (``train/`` as ``unim2_train``) and
the demo (``unim2_demo``). A module may import its own floor and the floors below, never above;
entry scripts never import each other. Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Where each top-level import name lives in the repository.
PACKAGE_DIRS = {"unim2_core": "unim2_core", "unim2_ros": "unim2_ros", "unim2_demo": "unim2_demo"}
PACKAGE_DIRS["unim2_train"] = "train"
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "lifecycle_msgs", "rosbags")
# unim2_core's floors; a module directly in unim2_core/ (errors, atomic, cli) is the base.
CORE_FLOORS = ("base", "data", "model", "runtime", "evaluation", "training")


class Import(NamedTuple):
    """One import statement: the importing module, the imported module and where it stands."""

    module: str
    target: str
    line: int


class Violation(NamedTuple):
    """An import that breaks a rule."""

    where: str
    target: str
    rule: str


def module_name(package: str, path: Path, package_dir: Path) -> str:
    """The dotted name of ``path`` inside ``package`` (whose files are in ``package_dir``)."""
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def imports_of(source: str, module: str, is_package: bool) -> Iterator[Import]:
    """Every module ``source`` imports, relative imports resolved against ``module``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            yield Import(module, target, node.lineno)
            for alias in node.names:  # `from pkg import submodule`
                yield Import(module, f"{target}.{alias.name}", node.lineno)


def import_graph(root: Path, package_dirs: dict[str, str]) -> list[Import]:
    """The imports of every module of the given packages under ``root``."""
    found: list[Import] = []
    for package, directory in package_dirs.items():
        package_dir = root / directory
        for path in sorted(package_dir.rglob("*.py")):
            module = module_name(package, path, package_dir)
            found += imports_of(path.read_text(), module, path.name == "__init__.py")
    return found


def core_floor(module: str) -> int:
    """The floor of a ``unim2_core`` module (0 = base modules)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in CORE_FLOORS:
        return CORE_FLOORS.index(parts[1])
    if len(parts) == 2 and parts[1] in CORE_FLOORS:  # the sub-package itself
        return CORE_FLOORS.index(parts[1])
    return 0


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def check(graph: list[Import]) -> list[Violation]:
    """Every import in ``graph`` that breaks the rules of this module's docstring."""
    violations: list[Violation] = []
    for imp in graph:
        source, target = _top(imp.module), _top(imp.target)
        where = f"{imp.module}:{imp.line}"
        if source == "unim2_core":
            if target in ("unim2_ros", "unim2_demo", "unim2_train") or target in ROS_MODULES:
                violations.append(Violation(where, imp.target, "unim2_core imports no ROS part"))
            elif (
                target == "unim2_core"
                and imp.module != "unim2_core"
                and core_floor(imp.target) > core_floor(imp.module)
            ):
                violations.append(Violation(where, imp.target, "core floor imports above"))
        elif source == "unim2_ros" and target in ("unim2_demo", "unim2_train"):
            violations.append(Violation(where, imp.target, "unim2_ros imports no entry script"))
        elif source == "unim2_train" and target in ("unim2_train", "unim2_demo"):
            violations.append(Violation(where, imp.target, "entry scripts import each other"))
        elif source == "unim2_demo" and target == "unim2_train":
            violations.append(Violation(where, imp.target, "the demo imports no entry script"))
    return violations


def test_the_project_keeps_its_import_rules() -> None:
    graph = import_graph(REPO_ROOT, PACKAGE_DIRS)
    assert len(graph) > 300  # every package was read
    assert check(graph) == []


@pytest.mark.parametrize(
    ("package", "file", "line", "rule"),
    [
        ("unim2_core", "runtime/sync.py", "import rclpy", "unim2_core imports no ROS part"),
        ("unim2_core", "errors.py", "from unim2_ros import errors", "unim2_core imports no ROS"),
        ("unim2_core", "data/encoding.py", "from ..model import heads", "core floor imports above"),
        (
            "unim2_core",
            "model/heads.py",
            "def f():\n    from unim2_core.training.trainer import train\n",
            "core floor imports above",
        ),
        ("unim2_ros", "node.py", "import unim2_demo.run", "unim2_ros imports no entry script"),
        ("unim2_ros", "node.py", "from unim2_train.cli import x", "unim2_ros imports no entry"),
        ("unim2_train", "train.py", "from .evaluate import main", "entry scripts import each"),
        ("unim2_demo", "run.py", "from unim2_train import train", "the demo imports no entry"),
    ],
)
def test_check_finds_each_kind_of_leak(
    tmp_path: Path, package: str, file: str, line: str, rule: str
) -> None:
    path = tmp_path / package / file
    path.parent.mkdir(parents=True)
    path.write_text(line + "\n")
    violations = check(import_graph(tmp_path, {package: package}))
    assert violations and all(v.rule.startswith(rule) for v in violations)
    module = f"{package}." + Path(file).with_suffix("").as_posix().replace("/", ".")
    assert {v.where.rsplit(":", 1)[0] for v in violations} == {module}


def test_check_accepts_imports_downwards(tmp_path: Path) -> None:
    files = {
        "unim2_core/training/trainer.py": "from unim2_core.runtime import segmenter\nimport torch",
        "unim2_core/runtime/segmenter.py": "from ..model.heads import X\nfrom ..errors import E",
        "unim2_ros/node.py": "import rclpy\nfrom unim2_core.runtime.sync import S",
        "unim2_demo/run.py": "from unim2_ros import node\nfrom unim2_core import cli",
        "unim2_train/train.py": "from unim2_core.cli import run_cli\nfrom unim2_ros import x",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    graph = import_graph(tmp_path, {p: p for p in PACKAGE_DIRS})
    assert len(graph) == 18  # `from a import b` also counts a.b (b may be a module)
    assert check(graph) == []
