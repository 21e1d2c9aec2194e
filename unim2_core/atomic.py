"""Atomic file writes: a hidden temporary file in the target folder, renamed over the target.

Readers (and a run restarted after a crash) see either the old file or the complete new one,
never half of it. Every writer of checkpoints, caches, exported frames and reports uses this.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@functools.cache
def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask (read once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary stream whose content replaces ``path`` only if the block succeeds.

    The parent folder is created if needed. The file gets the permissions a plain ``open()``
    would give it (the temporary file's private 0600 would keep other users, e.g. a node
    running under another account, from reading a checkpoint). On any exception the temporary
    file is removed and ``path`` is left as it was.

    Raises:
        OSError: the folder or file cannot be written (callers convert it at their boundary).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, _new_file_mode())
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it only if the block succeeds.

    For writers that need a file name rather than a stream (a video encoder, safetensors'
    ``save_file``). The temporary file exists, empty, with the mode a plain ``open()`` would
    give; ``suffix`` keeps the extension a writer may look at. On any exception it is removed
    and ``path`` is left as it was.

    Raises:
        OSError: the folder or file cannot be written (callers convert it at their boundary).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    temporary = Path(name)
    try:
        os.fchmod(handle, _new_file_mode())
        os.close(handle)
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` atomically."""
    with atomic_output(path) as stream:
        stream.write(payload)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
