"""Shared pytest fixtures: ROS isolation (loopback only, own domain id, temp log dir) and paths."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="unim2-roslog-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "test" / "data"

_DOMAIN_IDS = itertools.cycle(range(1 + os.getpid() % 40, 101))


@pytest.fixture
def ros_domain_id(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A DDS domain id used by this test alone, also exported for subprocesses."""
    domain_id = next(_DOMAIN_IDS)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    yield domain_id


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """Real sample frames (NYU RGB-D, MSRS RGB-thermal) kept in test/data."""
    return SAMPLE_DATA
