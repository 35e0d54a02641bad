"""File writes that never lose what is already on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `data` and `mode`; fail if it exists.

    The bytes go to a temporary file in the same directory first and are then
    hard-linked into place: a reader never sees a half-written key, and a file
    that appeared in the meantime is never replaced (os.link refuses).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)
    finally:
        os.unlink(temp)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace (or create) `path`: readers see the old or the new bytes, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
