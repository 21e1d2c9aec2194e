"""Reading files written by ``torch.save`` safely, with one-line reasons for what is not one.

``torch.load(weights_only=True)`` refuses pickled code, but its errors are no help to a user
who passed the wrong file: a text file gives ``KeyError: 101``, a YAML file ``IndexError``, a
PNG or a pickled object a paragraph recommending ``weights_only=False`` (exactly what must not
be done with an untrusted file) with terminal colour codes in it, an empty file an empty
message. :func:`load_torch_file` checks what the file is first and words every failure itself.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from unim2_core.errors import Unim2Error

_PICKLE_PROTOCOL_MARK = 0x80  # first byte of a legacy (pre-zip) torch.save file
_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"SQLite format 3": "an SQLite database",
    b"\x93NUMPY": "a NumPy .npy array",
    b"PK": "a zip archive torch cannot read",
}
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _what_it_is(head: bytes) -> str:
    """A short description of a file that is not a torch.save file, from its first bytes."""
    for signature, name in _SIGNATURES.items():
        if head.startswith(signature):
            return name
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data starting with {head[:8]!r}"
    return "a text file"


def load_torch_file(path: Path, *, what: str, error: type[Unim2Error]) -> object:
    """Load ``path`` with ``torch.load(weights_only=True)`` on the CPU.

    Args:
        path: The file.
        what: What the file should be, for messages (``"a unim2 checkpoint"``).
        error: The exception class to raise (the caller's subsystem).

    Raises:
        error: The file cannot be read, is empty, is not a ``torch.save`` file (the message
            says what it looks like instead), or holds pickled objects other than tensors and
            plain data (the message names the first one; it is never loaded).
    """
    name = repr(str(path))
    try:
        with path.open("rb") as stream:
            head = stream.read(16)
    except OSError as err:
        raise error(f"cannot read {name}: {err.strerror or err}") from err
    if not head:
        raise error(f"{name} is not {what}: the file is empty")
    if not head.startswith(b"PK") and head[0] != _PICKLE_PROTOCOL_MARK:
        raise error(f"{name} is not {what}: it is {_what_it_is(head)}, not a torch.save file")
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise error(f"{name} is not {what}: it is {_what_it_is(head)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        if found is None:
            raise error(_unreadable(name, what, err)) from err
        raise error(
            f"{name} is not {what}: it holds pickled Python objects (first: {found.group(1)}), "
            "which would run code on load; refused"
        ) from err
    except (OSError, RuntimeError, EOFError, KeyError, IndexError, ValueError) as err:
        raise error(_unreadable(name, what, err)) from err


def _unreadable(name: str, what: str, err: BaseException) -> str:
    return (
        f"{name} is not {what}: torch cannot read it ({type(err).__name__}); it may be "
        "truncated or written by another program"
    )
