"""Running `stellwerk lab` as a user would, for the VM tests of the lab: the commands, and what libvirt and the
process table show afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.paths import REPO

LAB_ROOT = Path("/var/lib/stellwerk/lab-test")  # QEMU (libvirt-qemu) must reach it: not below a 0700 tmp dir


def stellwerk(*args: str, timeout: float = 1200, lab_dir: bool = True) -> subprocess.CompletedProcess:
    extra = ["--lab-dir", str(LAB_ROOT)] if lab_dir else []
    return subprocess.run([sys.executable, "-m", "stellwerk", *args, *extra], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                          timeout=60).stdout


def lab_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", str(LAB_ROOT)], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]
