"""Package-level checks, as ament's linters do for a ROS package: style, types, layering."""

from __future__ import annotations

import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unim2_core

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["unim2_core", "unim2_ros", "unim2_demo", "train", "test", "launch", "benchmarks"]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed in this environment (pip install -e '.[test]')")
    return path


def test_ruff_finds_no_problems() -> None:
    sources = [s for s in SOURCES if (REPO_ROOT / s).exists()]
    result = subprocess.run(
        [_tool("ruff"), "check", *sources], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_no_problems() -> None:
    result = subprocess.run(
        [
            _tool("mypy"),
            "--config-file",
            "setup.cfg",
            "unim2_core",
            "unim2_ros",
            "unim2_demo",
            "train",
            "benchmarks",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unim2_core_never_imports_rclpy_or_ros_messages() -> None:
    modules = [m.name for m in pkgutil.walk_packages(unim2_core.__path__, "unim2_core.")]
    assert "unim2_core.runtime.segmenter" in modules and "unim2_core.runtime.sync" in modules
    blocker = (
        "import sys\n"
        "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs'):\n"
        "    sys.modules[name] = None\n"
        f"for module in {modules!r}:\n"
        "    __import__(module)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocker], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_setup_lists_every_package_directory() -> None:
    listed = set(re.findall(r'"(unim2_[a-z_.]+)"', (REPO_ROOT / "setup.py").read_text()))
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts)
        for top in ("unim2_core", "unim2_ros", "unim2_demo")
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    assert found and found <= listed, f"not in setup.py packages: {sorted(found - listed)}"
