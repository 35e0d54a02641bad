"""File writes that never lose what is already on disk.

Secrets (keys, certificates, tokens) are persisted state: they are created
once and then only read. Everything that writes them goes through here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

DIR_MODE = 0o755
# New files are created private and widened afterwards, so key bytes are never readable by others.
_CREATE_MODE = 0o600


def make_dirs(path: Path) -> None:
    """Create missing directories with mode 0755 whatever the umask."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, DIR_MODE)


# A batch records what it is about to create in this file of the directory it writes to, and removes
# the record when every file is in place. A record left behind marks files of an interrupted batch.
JOURNAL = ".stellwerk-pending.json"


def recover_interrupted(directory: Path) -> list[str]:
    """Remove the files an interrupted batch created in `directory` (and below); return their names.

    They were created together and nothing was rendered from them (rendering
    starts only after every secret is in place), so removing them lets the
    batch run again whole instead of leaving a key without its certificate.
    """
    journal = directory / JOURNAL
    try:
        names = json.loads(journal.read_text())["files"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        names = []
    removed = []
    for name in names:
        path = directory / name
        if isinstance(name, str) and ".." not in Path(name).parts and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(name)
    journal.unlink()
    return removed


def write_new_files(files: Iterable[tuple[Path, bytes, int]], journal_dir: Path | None = None) -> None:
    """Create each (path, data, mode); never replace a file that exists.

    Every file is first written to a temporary name in its directory, all are
    flushed to disk with one sync, and only then hard-linked to their real
    names: a reader never sees a half-written key, a crash leaves no torn file
    under a real name, and os.link refuses (FileExistsError, naming the path)
    to replace a file that appeared in the meantime. One sync for the batch
    instead of an fsync per file keeps a thousand-node first render fast.
    """
    staged: list[tuple[Path, Path, bytes, int]] = []
    staging_dirs: dict[Path, Path] = {}
    try:
        for path, data, mode in files:
            parent = path.parent
            if parent not in staging_dirs:
                make_dirs(parent)
                staging_dirs[parent] = Path(tempfile.mkdtemp(dir=parent, prefix=".new-"))
            temp = staging_dirs[parent] / path.name
            _write(temp, data, mode)
            staged.append((temp, path, data, mode))
        journal = None
        if staged and journal_dir is not None:
            make_dirs(journal_dir)
            journal = journal_dir / JOURNAL
            record = {"files": [str(path.relative_to(journal_dir)) for _, path, _, _ in staged]}
            _write(journal, json.dumps(record).encode(), 0o600)
        if staged:
            os.sync()
        for temp, path, data, mode in staged:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "exists already", str(path)) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                # A filesystem without hard links: O_EXCL still never clobbers; an
                # interrupted write leaves a truncated PEM, which the next run reports.
                _write(path, data, mode)
        if journal is not None:
            journal.unlink()
    finally:
        for directory in staging_dirs.values():
            shutil.rmtree(directory, ignore_errors=True)


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    write_new_files([(path, data, mode)])


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace (or create) `path`: readers see the old or the new bytes, never a mix."""
    make_dirs(path.parent)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _CREATE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
