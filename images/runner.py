"""Running the external tools of an image build (mmdebstrap, mksquashfs, depmod, ...).

Every line a tool prints goes to the build log and, as the latest detail, to
the progress display. A failing tool becomes a `BuildError` that names the
command, its exit code, the log and the last lines, so the user sees why
without opening the log.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ..base.errors import Problem, UserError
from .progress import Reporter

_TAIL = 15
# Tools that redraw a progress bar use carriage returns; each redraw is a line for us.
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class BuildError(UserError):
    """An image build step failed; the message says which, why, and where the full log is.

    A UserError because the usual causes are outside Stellwerk (mirror, disk
    space, a package gone from the suite) and the CLI then answers with exit 2
    and the message instead of a traceback.
    """

    def __init__(self, what: str, message: str, details: Sequence[str] = ()):
        # One problem per line: the CLI prints each on its own line, never a traceback.
        super().__init__([Problem(what, None, "", message), *(Problem(what, None, "", f"| {d}") for d in details)])


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UserError(Problem(what, None, "", "must run as root: mmdebstrap installs packages with chroot and "
                                                "the image keeps files owned by other users (run it with sudo)"))


def require_tools(what: str, tools: Mapping[str, str]) -> None:
    """`tools` maps a command to the Debian package that provides it."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = {tool: package for tool, package in tools.items() if shutil.which(tool, path=path) is None}
    if missing:
        packages = " ".join(sorted(set(missing.values())))
        raise UserError(Problem(what, None, "", f"missing {', '.join(sorted(missing))}; "
                                                f"install them with: apt-get install {packages}"))


def run(args: Sequence[str | Path], *, log: TextIO, reporter: Reporter, what: str,
        cwd: Path | None = None, env: Mapping[str, str] | None = None) -> None:
    """Run one command to completion; raise BuildError if it fails."""
    argv = [str(a) for a in args]
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    tail: deque[str] = deque(maxlen=_TAIL)
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = full_env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd, env=full_env)
    except OSError as exc:
        raise BuildError(what, f"cannot run {argv[0]}: {exc.strerror}") from exc
    assert process.stdout is not None
    pending = b""
    started = time.monotonic()
    while chunk := process.stdout.read1(65536):  # type: ignore[attr-defined]
        pending += chunk
        *lines, pending = _LINE_BREAK.split(pending)
        for raw in lines:
            _line(raw, log, tail, reporter, started)
    if pending:
        _line(pending, log, tail, reporter, started)
    code = process.wait()
    log.flush()
    if code != 0:
        raise BuildError(what, f"{argv[0]} failed with exit code {code}; full log: {log.name}; its last lines:",
                         list(tail))


def _line(raw: bytes, log: TextIO, tail: deque[str], reporter: Reporter, started: float) -> None:
    line = raw.decode("utf-8", "replace").rstrip()
    if not line:
        return
    # Seconds since the command started: the log shows where a slow build spent its time.
    log.write(f"[{time.monotonic() - started:6.1f}] {line}\n")
    tail.append(line)
    reporter.detail(line)
