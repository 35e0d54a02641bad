"""Booting the lab OS directly with QEMU (no libvirt, no netboot): for smoke tests and debugging.

KVM is used only when a probe proves it runs guest code: on a nested host
/dev/kvm can exist and open fine while the first guest instruction hangs. The
probe boots a 512-byte boot sector, with the CPU flags of a real boot, that
writes one byte to the serial port and exits through QEMU's isa-debug-exit
device, under a short timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

QEMU = "qemu-system-x86_64"
_PROBE_BYTE = b"K"
# mov dx,0x3f8 ; mov al,'K' ; out dx,al ; mov dx,0xf4 ; mov al,0 ; out dx,al ; hlt
_PROBE_CODE = bytes([0xBA, 0xF8, 0x03, 0xB0, _PROBE_BYTE[0], 0xEE, 0xBA, 0xF4, 0x00, 0xB0, 0x00, 0xEE, 0xF4])


def probe_sector() -> bytes:
    return _PROBE_CODE + bytes(510 - len(_PROBE_CODE)) + b"\x55\xaa"


@cache
def kvm_works(timeout: float = 10.0) -> bool:
    """Whether QEMU can run a guest with KVM here, tried for real (the answer is kept per process)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or shutil.which(QEMU) is None:
        return False
    with tempfile.TemporaryDirectory(prefix="stellwerk-kvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(probe_sector())
        serial = Path(tmp) / "serial.out"
        args = [QEMU, *accelerator_args(True), "-m", "16", "-display", "none", "-monitor", "none", "-no-reboot",
                "-drive", f"file={disk},format=raw,if=floppy", "-serial", f"file:{serial}",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        try:
            subprocess.run(args, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False  # the hang this probe exists for; run() killed QEMU
        return serial.exists() and _PROBE_BYTE in serial.read_bytes()


def accelerator_args(kvm: bool) -> list[str]:
    """The same for the probe and the real boot: a probe with other CPU flags would prove nothing.

    Seen on nested hosts: the default CPU model hangs now and then, and
    "-cpu host" fails at once setting MSRs; either makes the probe say no.
    """
    return ["-accel", "kvm", "-cpu", "host"] if kvm else ["-accel", "tcg", "-cpu", "max"]


@dataclass(frozen=True)
class Disk:
    path: Path
    serial: str  # NVMe serial: the device shows up as /dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_<serial>


@dataclass(frozen=True)
class Machine:
    kernel: Path
    initrd: Path
    append: Sequence[str]
    console: Path  # the serial console goes to this file
    memory_mib: int = 768
    cpus: int = 1
    disks: Sequence[Disk] = ()
    extra: Sequence[str] = field(default_factory=tuple)

    def command(self, kvm: bool | None = None) -> list[str]:
        """The qemu-system-x86_64 command line; KVM when `kvm`, or when the probe says it works."""
        use_kvm = kvm_works() if kvm is None else kvm
        args = [QEMU, *accelerator_args(use_kvm), "-m", str(self.memory_mib), "-smp", str(self.cpus), "-nographic", "-monitor", "none",
                "-serial", f"file:{self.console}", "-no-reboot",
                "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", " ".join(self.append),
                "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
        for number, disk in enumerate(self.disks):
            args += ["-drive", f"file={disk.path},format=raw,if=none,id=disk{number}",
                     "-device", f"nvme,drive=disk{number},serial={disk.serial}"]
        return [*args, *self.extra]
