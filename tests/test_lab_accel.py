"""lab/accel.py: the probes run real QEMU guests; the choice follows what the probes see."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import vmboot
from support.tools import require_tool
from stellwerk.lab import accel
from stellwerk.lab.errors import LabError


@pytest.fixture(scope="module")
def qemu() -> str:
    return require_tool("qemu-system-x86_64")


@pytest.fixture(scope="module")
def kernel() -> Path:
    return vmboot.kernel_for_tests().vmlinuz


def test_probe_firmware_writes_to_the_debug_exit_port_at_the_reset_vector():
    image = accel.firmware_image()
    assert len(image) == 0x10000  # QEMU loads BIOS images in 64 KiB units
    # mov al, 0x21 ; out 0xf4, al ; hlt
    assert image[0xFFF0:0xFFF5] == bytes([0xB0, accel.FIRMWARE_VALUE, 0xE6, accel.DEBUG_EXIT_PORT, 0xF4])
    assert accel.FIRMWARE_EXIT_STATUS == 0x43


@pytest.mark.vm
def test_firmware_probe_sees_guest_code_run_under_tcg(qemu):
    result = accel.firmware_probe("tcg")
    assert result.ok, result.detail


@pytest.mark.vm
def test_firmware_probe_fails_when_the_accelerator_cannot_run(qemu):
    result = accel.firmware_probe("no-such-accel")
    assert not result.ok and "no-such-accel" in result.detail


@pytest.mark.vm
def test_kernel_probe_boots_a_real_kernel_under_tcg(qemu, kernel):
    result = accel.kernel_probe("tcg", kernel, timeout=120)
    assert result.ok, result.detail
    assert result.detail.startswith(f"booted {kernel.name} in ")


@pytest.mark.vm
def test_kernel_probe_gives_up_on_a_kernel_that_does_not_get_there_in_time(qemu, kernel):
    result = accel.kernel_probe("tcg", kernel, timeout=0.5)
    assert not result.ok and "no result within 0.5 s" in result.detail


@pytest.mark.vm
def test_kernel_probe_fails_at_once_when_qemu_refuses_the_kernel(qemu, tmp_path):
    bogus = tmp_path / "vmlinuz"
    bogus.write_text("not a kernel\n")
    started = time.monotonic()
    result = accel.kernel_probe("tcg", bogus, timeout=120)
    assert not result.ok and "did not boot under -accel tcg" in result.detail
    assert "kernel" in result.detail.split(": ", 1)[1]  # QEMU's own complaint is passed on
    assert time.monotonic() - started < 60  # QEMU exited: the probe did not sit out its timeout


def test_no_kvm_device_means_tcg_and_says_why(tmp_path):
    chosen = accel.detect(tmp_path / "vmlinuz", kvm_device=tmp_path / "kvm", cache_dir=None)
    assert (chosen.name, chosen.domain_type) == ("tcg", "qemu")
    assert f"{tmp_path / 'kvm'} does not exist" in chosen.reason


def test_a_kvm_device_that_is_no_device_means_tcg(tmp_path):
    directory = tmp_path / "kvm"
    directory.mkdir()
    chosen = accel.detect(tmp_path / "vmlinuz", kvm_device=directory, cache_dir=None)
    assert chosen.name == "tcg" and "cannot be opened" in chosen.reason


@pytest.mark.parametrize("forced", ["kvm", "tcg", "KVM"])
def test_the_override_skips_the_probe(monkeypatch, tmp_path, forced):
    monkeypatch.setenv(accel.OVERRIDE_VARIABLE, forced)
    chosen = accel.detect(tmp_path / "vmlinuz", kvm_device=tmp_path / "kvm", cache_dir=None)
    assert chosen.name == forced.lower() and accel.OVERRIDE_VARIABLE in chosen.reason
    assert chosen.domain_type == ("kvm" if forced.lower() == "kvm" else "qemu")


def test_a_bad_override_is_a_user_error(monkeypatch):
    monkeypatch.setenv(accel.OVERRIDE_VARIABLE, "hvf")
    with pytest.raises(LabError, match="set it to kvm, tcg or auto"):
        accel.detect()


def test_host_kernel_is_the_newest_readable_one(tmp_path):
    assert accel.host_kernel(tmp_path) is None
    older, newer = tmp_path / "vmlinuz-6.1.0-1-amd64", tmp_path / "vmlinuz-6.1.0-2-amd64"
    older.write_bytes(b"old")
    newer.write_bytes(b"new")
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    assert accel.host_kernel(tmp_path) == newer


@pytest.mark.vm
def test_detect_probes_once_and_later_processes_reuse_the_answer(qemu, kernel, tmp_path, monkeypatch):
    monkeypatch.delenv(accel.OVERRIDE_VARIABLE, raising=False)
    first = accel.detect(kernel, cache_dir=tmp_path)
    assert first.name in ("kvm", "tcg") and first.reason
    assert accel.detect(kernel, cache_dir=tmp_path) is first  # this process: not probed again
    assert len(list(tmp_path.glob("accel-*.json"))) == 1
    # Another process finds the answer for this boot of the host, without probing (no 10 s KVM timeout).
    code = ("import sys; from pathlib import Path; from stellwerk.lab.accel import detect; "
            "a = detect(Path(sys.argv[1]), cache_dir=Path(sys.argv[2])); print(a.name); print(a.reason)")
    other = subprocess.run([sys.executable, "-c", code, str(kernel), str(tmp_path)], capture_output=True, text=True,
                           timeout=5, env={k: v for k, v in os.environ.items() if k != accel.OVERRIDE_VARIABLE})
    assert other.returncode == 0, other.stderr
    name, reason = other.stdout.splitlines()
    assert name == first.name and reason == f"{first.reason} (probed earlier in this boot)"
    if first.name == "kvm":  # then KVM must really boot the kernel
        assert accel.kernel_probe("kvm", kernel).ok
