"""Which accelerator lab VMs get: KVM where it truly works, QEMU's TCG emulator everywhere else.

"/dev/kvm exists" is not enough. Under nested virtualisation KVM can accept a trivial guest and still fail a real
one: on some hosts a 16-bit guest runs, while a Linux kernel stops in its decompressor with "KVM internal error",
or QEMU cannot even set the MSRs of `-cpu host`, and the VM hangs for ever. So the probe boots what the lab boots:

1. `/dev/kvm` must open read-write;
2. a 64 KiB firmware whose reset vector writes one byte to QEMU's `isa-debug-exit` port must make QEMU exit with
   the matching status under `-accel kvm` (KVM can run guest code at all);
3. a Linux kernel, without an initrd, must boot under `-accel kvm` until it panics for want of a root file system
   (KVM runs a whole kernel start: decompression, paging, SMP, interrupts, timers, device probing).

Every step has a timeout and is killed when it runs out, so a hanging KVM costs seconds, not the lab. The answer says
why it was chosen. It is cached per process, and in /run/stellwerk for the rest of this boot of the host (keyed by
the boot id, the kernel and the QEMU binary), so only the first lab after a reboot pays for the probe.
`STELLWERK_LAB_ACCEL=kvm|tcg` overrides the probe.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
KVM_DEVICE = Path("/dev/kvm")
OVERRIDE_VARIABLE = "STELLWERK_LAB_ACCEL"
CACHE_DIR = Path("/run/stellwerk")  # a tmpfs: emptied by a reboot, which is when the answer may change
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MACHINE = "q35"  # the machine type lab domains use, so the probe exercises the same chipset

# isa-debug-exit: a guest write of V to the port makes QEMU exit with status (V << 1) | 1.
DEBUG_EXIT_PORT = 0xF4
FIRMWARE_VALUE = 0x21
FIRMWARE_EXIT_STATUS = (FIRMWARE_VALUE << 1) | 1
# What a kernel prints once it has started everything and looks for its root file system (stable since 2.6).
KERNEL_REACHED_ROOT = "Unable to mount root fs"
# What QEMU prints when KVM gives up on a guest; QEMU then pauses the guest instead of exiting.
KVM_FAILURE_MARKERS = ("KVM internal error", "emulation failure", "kvm run failed", "failed to set MSR")


@dataclass(frozen=True)
class Accel:
    """The accelerator to use and why."""

    name: str  # "kvm" or "tcg": QEMU's -accel
    reason: str

    @property
    def domain_type(self) -> str:
        """libvirt's <domain type=…>: "kvm" runs QEMU with KVM, "qemu" with TCG."""
        return "kvm" if self.name == "kvm" else "qemu"

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


def firmware_image() -> bytes:
    """A 64 KiB BIOS image: at the reset vector (offset 0xFFF0), `mov al, 0x21; out 0xf4, al; hlt`.

    QEMU maps the image's end at 4 GiB - 16, where an x86 CPU starts; the rest is `hlt`, so a CPU that goes astray
    stops instead of running garbage. QEMU wants a BIOS image in whole 64 KiB units.
    """
    image = bytearray(b"\xf4" * 0x10000)
    image[0xFFF0:0xFFF5] = bytes([0xB0, FIRMWARE_VALUE, 0xE6, DEBUG_EXIT_PORT, 0xF4])
    return bytes(image)


def _qemu(qemu: str) -> str:
    found = shutil.which(qemu)
    if found is None:
        raise LabError(qemu, "not installed; install it with 'apt-get install qemu-system-x86'")
    return found


def _run(command: list[str], timeout: float, console: Path | None, done: str | None) -> tuple[int | None, str, str]:
    """Run QEMU until it exits, `done` appears on the console, KVM reports a failure, or `timeout` runs out.

    Returns (exit status or None if it was stopped, console text, stderr text). QEMU's output goes to files, not
    pipes, so a chatty guest can never block on a full pipe.
    """
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        status: int | None = None
        try:
            while True:
                status = process.poll()
                text = console.read_text(errors="replace") if console is not None and console.exists() else ""
                stderr.seek(0)
                errors = stderr.read().decode(errors="replace")
                if status is not None or (done and done in text) or any(m in errors for m in KVM_FAILURE_MARKERS):
                    break
                if time.monotonic() > deadline:
                    errors += f"\n(no result within {timeout:g} s)"
                    break
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:  # stuck in the kernel: leave it, a zombie costs nothing
                    log.warning("qemu probe pid %d did not exit after SIGKILL", process.pid)
    return status, text, errors.strip()


def firmware_probe(accel: str, *, qemu: str = QEMU, timeout: float = 10.0) -> ProbeResult:
    """Can QEMU with `accel` run guest code at all? Boots `firmware_image()` and checks QEMU's exit status."""
    with tempfile.TemporaryDirectory(prefix="stellwerk-accel-") as scratch:
        bios = Path(scratch) / "probe.bin"
        bios.write_bytes(firmware_image())
        command = [_qemu(qemu), "-accel", accel, "-machine", MACHINE, "-nodefaults", "-no-user-config",
                   "-display", "none", "-m", "16", "-bios", str(bios),
                   "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=1"]
        status, _, errors = _run(command, timeout, None, None)
    if status == FIRMWARE_EXIT_STATUS:
        return ProbeResult(True, "ran guest code")
    complaint = _complaint(errors) or "QEMU said nothing"
    return ProbeResult(False, f"the probe firmware did not run under -accel {accel} "
                       f"(exit status {status}, expected {FIRMWARE_EXIT_STATUS}): {complaint}")


def kernel_probe(accel: str, kernel: Path, *, qemu: str = QEMU, timeout: float = 20.0,
                 memory_mib: int = 256) -> ProbeResult:
    """Can QEMU with `accel` start a Linux kernel? Boots `kernel` without an initrd until it looks for its root."""
    with tempfile.TemporaryDirectory(prefix="stellwerk-accel-") as scratch:
        console = Path(scratch) / "console.log"
        command = [_qemu(qemu), "-accel", accel, "-machine", MACHINE, "-nodefaults", "-no-user-config",
                   "-display", "none", "-m", str(memory_mib), "-no-reboot", "-serial", f"file:{console}",
                   "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
        started = time.monotonic()
        _, text, errors = _run(command, timeout, console, KERNEL_REACHED_ROOT)
        took = time.monotonic() - started
    if KERNEL_REACHED_ROOT in text:
        return ProbeResult(True, f"booted {kernel.name} in {took:.1f} s")
    complaint = _complaint(errors) or "QEMU said nothing"
    console_said = f"last console line: {_last_line(text)!r}" if text.strip() else "no console output"
    return ProbeResult(False, f"{kernel.name} did not boot under -accel {accel}: {complaint}; {console_said}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _complaint(errors: str) -> str:
    """QEMU's most telling line: the first that names a KVM failure (a register dump follows it), else the last."""
    for line in errors.splitlines():
        if any(marker in line for marker in KVM_FAILURE_MARKERS):
            return line.strip()
    return _last_line(errors)


def host_kernel(boot: Path = Path("/boot")) -> Path | None:
    """The newest readable kernel in /boot, to probe with when the caller has none."""
    candidates = sorted(boot.glob("vmlinuz-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((path for path in candidates if os.access(path, os.R_OK)), None)


def _kvm_usable(device: Path) -> str | None:
    """None if `device` opens read-write, else why not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{device} does not exist (no KVM on this host, or the kvm module is not loaded)"
    except PermissionError:
        return f"{device} is not writable by this user (add it to group kvm, or run as root)"
    except OSError as exc:
        return f"{device} cannot be opened: {exc.strerror}"
    os.close(fd)
    return None


def _cache_file(cache_dir: Path, kernel: Path, qemu: str, kvm_device: Path) -> Path | None:
    """Where the answer for this boot of the host, this kernel and this QEMU binary is kept; None if unknowable."""
    try:
        identity = {"boot": BOOT_ID.read_text().strip(), "device": str(kvm_device)}
        for key, path in (("kernel", kernel), ("qemu", Path(_qemu(qemu)).resolve())):
            info = path.stat()
            identity[key] = [str(path), info.st_size, info.st_mtime_ns]
    except OSError:
        return None
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir / f"accel-{digest}.json"


def _load(cache: Path | None) -> Accel | None:
    try:
        data = json.loads(cache.read_text()) if cache is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("name") not in ("kvm", "tcg") or not isinstance(data.get("reason"), str):
        return None
    return Accel(data["name"], data["reason"] + " (probed earlier in this boot)")


def _store(cache: Path | None, accel: Accel) -> None:
    """Keep the answer; a cache that cannot be written only costs the next process a probe."""
    if cache is None:
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"name": accel.name, "reason": accel.reason}))
        partial.replace(cache)
    except OSError as exc:
        log.debug("accelerator answer not cached in %s: %s", cache, exc)


@functools.lru_cache(maxsize=None)
def _probe(kernel: Path | None, qemu: str, kvm_device: Path, timeout: float, cache_dir: Path | None) -> Accel:
    problem = _kvm_usable(kvm_device)
    if problem is not None:
        return Accel("tcg", problem)
    if kernel is None:
        return Accel("tcg", "no Linux kernel to verify KVM with (none given, none readable in /boot); "
                     "KVM is used only once a kernel boots under it")
    cache = _cache_file(cache_dir, kernel, qemu, kvm_device) if cache_dir is not None else None
    known = _load(cache)
    if known is not None:
        return known
    accel = _probe_kvm(kernel, qemu, timeout)
    _store(cache, accel)
    return accel


def _probe_kvm(kernel: Path, qemu: str, timeout: float) -> Accel:
    firmware = firmware_probe("kvm", qemu=qemu, timeout=timeout)
    if not firmware.ok:
        return Accel("tcg", f"KVM does not work here: {firmware.detail}")
    booted = kernel_probe("kvm", kernel, qemu=qemu, timeout=timeout)
    if not booted.ok:
        return Accel("tcg", f"KVM runs trivial guests but not Linux (nested virtualisation?): {booted.detail}")
    return Accel("kvm", f"KVM works: {booted.detail}")


def detect(kernel: Path | None = None, *, qemu: str = QEMU, kvm_device: Path = KVM_DEVICE,
           timeout: float = 10.0, cache_dir: Path | None = CACHE_DIR) -> Accel:
    """The accelerator for lab VMs on this host; probed once per boot of the host (per kernel, QEMU and device).

    `kernel` is the Linux kernel to prove KVM with, ideally the one the VMs will boot; without one, the newest
    readable /boot/vmlinuz-* is used, and without that KVM is not trusted. `timeout` bounds each probe step: with
    working KVM a kernel reaches its root mount in a second or two. `cache_dir=None` probes afresh (once per
    process). `STELLWERK_LAB_ACCEL` set to `kvm` or `tcg` skips the probe.
    """
    forced = os.environ.get(OVERRIDE_VARIABLE, "").strip().lower()
    if forced in ("kvm", "tcg"):
        return Accel(forced, f"{OVERRIDE_VARIABLE}={forced}")
    if forced not in ("", "auto"):
        raise LabError(OVERRIDE_VARIABLE, f"is {forced!r}; set it to kvm, tcg or auto (or unset it)")
    kernel = kernel if kernel is not None else host_kernel()
    accel = _probe(Path(kernel).resolve() if kernel is not None else None, qemu, kvm_device, timeout, cache_dir)
    log.info("lab accelerator: %s", accel)
    return accel
