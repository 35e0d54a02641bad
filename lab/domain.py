"""libvirt domains for lab machines: network-booting x86-64 VMs with a serial console logged to a file.

A lab machine is a q35 VM that boots from its NIC: with SeaBIOS (`firmware="bios"`) the NIC's option ROM (iPXE,
from Debian's ipxe-qemu) does PXE; with OVMF (`firmware="uefi"`) the firmware's own network stack does, unless the
ROM is left enabled. The serial console goes to a file, which is how tests and `lab check` see what a machine did.

Files the domain needs must be reachable by libvirt's QEMU user (`libvirt-qemu` on Debian), not just by root: a
UEFI machine's NVRAM and its console log live in a directory the caller chooses, so choose one that QEMU can enter
(not a 0700 temporary directory of root's).

`create` copies the UEFI variable store from OVMF's template into the domain's own NVRAM file and refuses to
overwrite one that exists; `remove` stops and undefines the domain and deletes that NVRAM file. Nothing else is
touched: the console log is the caller's to keep.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from .errors import LabError

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MACHINE = "q35"
FIRMWARES = ("bios", "uefi")
DOMAIN_TYPES = ("kvm", "qemu")  # libvirt's names: "qemu" is TCG
ACTIONS = ("destroy", "restart", "preserve", "rename-restart")  # what libvirt does on poweroff/reboot/crash
BOOT_DEVICES = ("network", "hd", "cdrom")

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
ROM_DEFAULT = "default"  # QEMU's own option ROM for the NIC model (iPXE for virtio)
ROM_OFF = "off"  # no option ROM: the firmware's own driver and PXE client do the network boot


@dataclass(frozen=True)
class Nic:
    """One NIC on a libvirt network. `rom`: ROM_DEFAULT, ROM_OFF, or the path of an option ROM file."""

    mac: str
    network: str
    model: str = "virtio"
    rom: str | Path = ROM_DEFAULT

    def __post_init__(self) -> None:
        mac = self.mac.lower().replace("-", ":")
        if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
            raise ValueError(f"NIC MAC {self.mac!r}: write six hex pairs, e.g. 52:54:00:00:00:21 "
                             "(and not a multicast address)")
        object.__setattr__(self, "mac", mac)
        if isinstance(self.rom, str) and self.rom not in (ROM_DEFAULT, ROM_OFF):
            object.__setattr__(self, "rom", Path(self.rom))


@dataclass(frozen=True)
class DomainSpec:
    """One lab machine. `nvram` is required for UEFI: the machine's own copy of the variable store."""

    name: str
    nics: tuple[Nic, ...]
    console_log: Path
    domain_type: str = "qemu"
    firmware: str = "bios"
    memory_mib: int = 512
    vcpus: int = 1
    nvram: Path | None = None
    nvme_disks: tuple[Path, ...] = ()  # raw disk images, one emulated NVMe controller each: nvme0n1, nvme1n1, ...
    boot: tuple[str, ...] = ("network",)
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    ovmf_code: Path = OVMF_CODE
    ovmf_vars: Path = OVMF_VARS

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"domain name {self.name!r}: use 1 to 64 letters, digits and '._+-'")
        if self.domain_type not in DOMAIN_TYPES:
            raise ValueError(f"domain type {self.domain_type!r}: choose one of {', '.join(DOMAIN_TYPES)}")
        if self.firmware not in FIRMWARES:
            raise ValueError(f"firmware {self.firmware!r}: choose one of {', '.join(FIRMWARES)}")
        if self.firmware == "uefi" and self.nvram is None:
            raise ValueError(f"domain {self.name}: UEFI needs an nvram path (the machine's own variable store)")
        if not self.nics:
            raise ValueError(f"domain {self.name}: a lab machine needs at least one NIC to boot from")
        if self.memory_mib < 64 or self.vcpus < 1:
            raise ValueError(f"domain {self.name}: needs at least 64 MiB and 1 vCPU")
        for device in self.boot:
            if device not in BOOT_DEVICES:
                raise ValueError(f"boot device {device!r}: choose from {', '.join(BOOT_DEVICES)}")
        for event, action in (("poweroff", self.on_poweroff), ("reboot", self.on_reboot), ("crash", self.on_crash)):
            if action not in ACTIONS:
                raise ValueError(f"on_{event} {action!r}: choose one of {', '.join(ACTIONS)}")


QEMU_NAMESPACE = "http://libvirt.org/schemas/domain/qemu/1.0"
# PCI slots on q35's root bus for the NVMe controllers: libvirt, which does not know of them, gives its own devices
# and root ports the low slots, and the chipset sits at 0x1f.
NVME_FIRST_SLOT = 0x10
NVME_MODEL = "QEMU NVMe Ctrl"  # QEMU's model string for its emulated NVMe controller: udev's by-id names use it
NVME_SERIAL_LENGTH = 20  # bytes of the Identify Controller serial number field


def nvme_serial(domain: str, index: int) -> str:
    """The serial of the domain's NVMe controller `index`: it names the disk in /dev/disk/by-id."""
    suffix = f"-{index}"
    return domain[:NVME_SERIAL_LENGTH - len(suffix)] + suffix
ET.register_namespace("qemu", QEMU_NAMESPACE)


def domain_xml(spec: DomainSpec) -> str:
    """libvirt's domain XML for `spec`."""
    root = ET.Element("domain", type=spec.domain_type)
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(root, "vcpu").text = str(spec.vcpus)
    root.append(_os(spec))
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")  # the guest powers itself off through ACPI
    ET.SubElement(features, "apic")
    ET.SubElement(root, "clock", offset="utc")
    ET.SubElement(root, "on_poweroff").text = spec.on_poweroff
    ET.SubElement(root, "on_reboot").text = spec.on_reboot
    ET.SubElement(root, "on_crash").text = spec.on_crash
    devices = ET.SubElement(root, "devices")
    for nic in spec.nics:
        devices.append(_interface(nic))
    serial = ET.SubElement(devices, "serial", type="file")
    # append='off': every boot starts a fresh log, so what a test reads is from this boot only.
    ET.SubElement(serial, "source", path=str(spec.console_log), append="off")
    ET.SubElement(serial, "target", port="0")
    # Nothing a headless lab machine does not need: no display, no USB, no balloon.
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="none")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    if spec.nvme_disks:
        root.append(_nvme_commandline(spec))
    return ET.tostring(root, encoding="unicode")


def _nvme_commandline(spec: DomainSpec) -> ET.Element:
    """Emulated NVMe controllers, one namespace each, through QEMU arguments.

    libvirt 9 (Debian 12) has no emulated NVMe disk bus (`<disk type='nvme'>` is host passthrough), so the drives
    go to QEMU directly. libvirt does not label or chown these files: the caller makes them readable and writable
    by the QEMU user. Each controller's serial is `<domain>-<index>`, which names the disk in /dev/disk/by-id.
    Raw sparse images with cache=unsafe: writes land in the host's page cache at once, so a hard power-off (QEMU
    killed) loses nothing the guest wrote, and the guest's flushes cost no host I/O.
    """
    commandline = ET.Element(f"{{{QEMU_NAMESPACE}}}commandline")
    for index, disk in enumerate(spec.nvme_disks):
        drive = f"stellwerk-nvme{index}"
        for value in ("-drive", f"file={_qemu_value(disk)},format=raw,if=none,id={drive},cache=unsafe",
                      "-device", f"nvme,drive={drive},serial={nvme_serial(spec.name, index)},bus=pcie.0,"
                                 f"addr={NVME_FIRST_SLOT + index:#x}"):
            ET.SubElement(commandline, f"{{{QEMU_NAMESPACE}}}arg", value=value)
    return commandline


def _qemu_value(path: Path) -> str:
    # QEMU option values escape a comma by doubling it.
    return str(path).replace(",", ",,")


def _os(spec: DomainSpec) -> ET.Element:
    os_element = ET.Element("os")
    ET.SubElement(os_element, "type", arch="x86_64", machine=MACHINE).text = "hvm"
    if spec.firmware == "uefi":
        ET.SubElement(os_element, "loader", readonly="yes", type="pflash").text = str(spec.ovmf_code)
        ET.SubElement(os_element, "nvram", template=str(spec.ovmf_vars)).text = str(spec.nvram)
    for device in spec.boot:
        ET.SubElement(os_element, "boot", dev=device)
    return os_element


def _interface(nic: Nic) -> ET.Element:
    interface = ET.Element("interface", type="network")
    ET.SubElement(interface, "mac", address=nic.mac)
    ET.SubElement(interface, "source", network=nic.network)
    ET.SubElement(interface, "model", type=nic.model)
    if nic.rom == ROM_OFF:
        ET.SubElement(interface, "rom", enabled="no")
    elif isinstance(nic.rom, Path):
        ET.SubElement(interface, "rom", file=str(nic.rom))
    return interface


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _check_files(spec: DomainSpec) -> None:
    needed = [("NIC option ROM", nic.rom) for nic in spec.nics if isinstance(nic.rom, Path)]
    if spec.firmware == "uefi":
        needed += [("OVMF firmware", spec.ovmf_code), ("OVMF variable store template", spec.ovmf_vars)]
    for what, path in needed:
        if not path.is_file():
            hint = "install Debian's ovmf package" if "OVMF" in what else "install Debian's ipxe-qemu package"
            raise LabError(str(path), f"{what} not found; {hint}")
    for directory in {spec.console_log.parent, *([spec.nvram.parent] if spec.nvram else [])}:
        if not directory.is_dir():
            raise LabError(str(directory), f"domain {spec.name}: no such directory for its files; create it")


def _copy_nvram(spec: DomainSpec) -> None:
    """The machine's own variable store, from the template; never over an existing file (it may be another's)."""
    assert spec.nvram is not None
    try:
        with open(spec.ovmf_vars, "rb") as source, open(spec.nvram, "xb") as target:
            shutil.copyfileobj(source, target)
    except FileExistsError:
        raise LabError(str(spec.nvram), f"domain {spec.name}: the NVRAM file exists already; remove it if it is a "
                       "leftover of this machine, or choose another path") from None
    os.chmod(spec.nvram, 0o600)  # libvirt hands it to the QEMU user when the domain starts


def create(conn: libvirt.virConnect, spec: DomainSpec, *, start: bool = True) -> libvirt.virDomain:
    """Define (and start) the domain. On any failure, whatever this call made is removed again."""
    if _lookup(conn, spec.name) is not None:
        raise LabError(f"domain {spec.name}", f"already exists in libvirt; remove it ('virsh destroy {spec.name}; "
                       f"virsh undefine --nvram {spec.name}') or choose another name")
    _check_files(spec)
    if spec.firmware == "uefi":
        _copy_nvram(spec)
    domain = None
    try:
        domain = conn.defineXML(domain_xml(spec))
        if start:
            domain.create()
    except BaseException as exc:
        if domain is not None:
            _undefine(domain)  # takes the NVRAM copy along
        elif spec.nvram is not None and spec.firmware == "uefi":
            spec.nvram.unlink(missing_ok=True)
        if not isinstance(exc, libvirt.libvirtError):
            raise
        message = exc.get_error_message()
        hint = ""
        if "Permission denied" in message:
            hint = "; the directories of the console log and NVRAM must be reachable by libvirt's QEMU user"
        raise LabError(f"domain {spec.name}", f"libvirt cannot {'start' if domain else 'define'} it: "
                       f"{message}{hint}") from None
    return domain


def _nvram_path(domain: libvirt.virDomain) -> Path | None:
    element = ET.fromstring(domain.XMLDesc(0)).find("./os/nvram")
    return Path(element.text) if element is not None and element.text else None


def _undefine(domain: libvirt.virDomain) -> None:
    nvram = _nvram_path(domain)
    if domain.isActive():
        try:
            domain.destroy()
        except libvirt.libvirtError:
            if domain.isActive():  # it may have powered off between the check and the call
                raise
    if domain.isPersistent():
        # NVRAM: libvirt deletes the variable store with the definition.
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    if nvram is not None:
        nvram.unlink(missing_ok=True)


def remove(conn: libvirt.virConnect, name: str) -> bool:
    """Stop the domain `name` (hard power-off), undefine it and delete its NVRAM file; False if there was none."""
    domain = _lookup(conn, name)
    if domain is None:
        return False
    _undefine(domain)
    return True


def state(domain: libvirt.virDomain) -> str:
    """libvirt's state of the domain as a word: running, shutoff, paused, crashed, …"""
    names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
             libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_CRASHED: "crashed",
             libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down", libvirt.VIR_DOMAIN_BLOCKED: "blocked",
             libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended", libvirt.VIR_DOMAIN_NOSTATE: "nostate"}
    code, _ = domain.state()
    return names.get(code, f"state-{code}")


@contextlib.contextmanager
def running(conn: libvirt.virConnect, spec: DomainSpec) -> Iterator[libvirt.virDomain]:
    """The started domain for the duration of a `with` block; removed afterwards whatever happened."""
    domain = create(conn, spec)
    try:
        yield domain
    finally:
        remove(conn, spec.name)
