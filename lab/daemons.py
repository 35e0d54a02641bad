"""libvirt's daemons: make sure `libvirtd` and `virtlogd` answer, and connect to `qemu:///system`.

On a host with systemd the daemons are socket-activated and already answer. In a container or a CI job without
systemd nobody starts them, so the lab does: `virtlogd -d` first (libvirtd hands every QEMU's stdout/stderr to it,
and starting a domain fails without it), then `libvirtd -d`. Both stay running afterwards, like a service would:
starting them is slow and other labs on the host may use them too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from .errors import LabError

SYSTEM_URI = "qemu:///system"
RUN_DIR = Path("/run/libvirt")
SBIN_DIRS = ("/usr/sbin", "/sbin")  # root's PATH has them; a test runner's PATH often does not


@dataclass(frozen=True)
class Daemon:
    """One daemon: its program and the UNIX socket that answers once it is ready."""

    program: str
    socket: Path
    package: str  # the Debian package that provides it, for the error message


# In start order: libvirtd checks for virtlogd only when a domain starts, but a half-started lab helps nobody.
VIRTLOGD = Daemon("virtlogd", RUN_DIR / "virtlogd-sock", "libvirt-daemon-system")
LIBVIRTD = Daemon("libvirtd", RUN_DIR / "libvirt-sock", "libvirt-daemon-system")
DAEMONS = (VIRTLOGD, LIBVIRTD)


def answers(path: Path) -> bool:
    """True if something accepts connections on the UNIX socket `path` (a stale socket file refuses them)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _program(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS))
    if found is None:
        raise LabError(name, f"not installed; install it with 'apt-get install {package}'")
    return found


def ensure(daemon: Daemon, timeout: float = 30.0) -> bool:
    """Start `daemon` with `-d` unless its socket answers; wait until it does. True if this call started it."""
    if answers(daemon.socket):
        return False
    program = _program(daemon.program, daemon.package)
    if os.geteuid() != 0:
        raise LabError(daemon.program, f"is not running and only root can start it; start it as root "
                       f"('{daemon.program} -d', or 'systemctl start {daemon.program}') or run the lab as root")
    # -d forks into the background once the daemon is initialised, so a failed start shows up as the exit status.
    result = subprocess.run([program, "-d"], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
        raise LabError(daemon.program, f"'{program} -d' failed: {detail}")
    deadline = time.monotonic() + timeout
    while not answers(daemon.socket):
        if time.monotonic() > deadline:
            raise LabError(daemon.program, f"started, but {daemon.socket} did not answer within {timeout:g} s; "
                           f"see the system log, or run '{program} -v' in the foreground to see why")
        time.sleep(0.1)
    return True


def ensure_running(timeout: float = 30.0) -> list[str]:
    """Make sure virtlogd and libvirtd answer; returns the names of those this call had to start."""
    return [daemon.program for daemon in DAEMONS if ensure(daemon, timeout)]


def _quiet(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr as well as raising it; the exception is enough."""


def connect(uri: str = SYSTEM_URI, timeout: float = 30.0) -> libvirt.virConnect:
    """A read-write libvirt connection to `uri`, with the daemons started first if the URI is the local system."""
    libvirt.registerErrorHandler(_quiet, None)
    if uri == SYSTEM_URI:
        ensure_running(timeout)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LabError(uri, f"cannot connect: {exc.get_error_message()}; is libvirtd running, and are you "
                       "root?") from None
