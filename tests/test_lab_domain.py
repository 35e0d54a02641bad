"""lab/domain.py: the domain XML, read back as XML, and create/remove against the real libvirt."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import vmboot
from stellwerk.lab import domain
from stellwerk.lab.domain import ROM_OFF, DomainSpec, Nic, domain_xml
from stellwerk.lab.errors import LabError

IPXE_ROM = Path("/usr/lib/ipxe/qemu/pxe-virtio.rom")


def spec(**changes) -> DomainSpec:
    values = dict(name="w1", nics=(Nic("52:54:00:00:00:21", "labnet"),), console_log=Path("/srv/lab/w1.log"))
    values.update(changes)
    return DomainSpec(**values)


def parsed(spec: DomainSpec) -> ET.Element:
    return ET.fromstring(domain_xml(spec))


# ---- XML ----------------------------------------------------------------------------------------


def test_bios_machine_boots_from_its_nic_with_a_logged_serial_console():
    root = parsed(spec(memory_mib=768, vcpus=2))
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "w1"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "768"
    assert root.findtext("vcpu") == "2"
    os_type = root.find("os/type")
    assert (os_type.text, os_type.get("arch"), os_type.get("machine")) == ("hvm", "x86_64", "q35")
    assert [boot.get("dev") for boot in root.findall("os/boot")] == ["network"]
    assert root.find("os/loader") is None and root.find("os/nvram") is None  # SeaBIOS, QEMU's default
    assert root.find("features/acpi") is not None  # poweroff from inside the guest goes through ACPI
    interfaces = root.findall("devices/interface")
    assert len(interfaces) == 1 and interfaces[0].get("type") == "network"
    assert interfaces[0].find("mac").get("address") == "52:54:00:00:00:21"
    assert interfaces[0].find("source").get("network") == "labnet"
    assert interfaces[0].find("model").get("type") == "virtio"
    assert interfaces[0].find("rom") is None  # QEMU's own ROM for the model
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == "/srv/lab/w1.log"
    assert serial.find("source").get("append") == "off"
    assert serial.find("target").get("port") == "0"
    assert [root.findtext(f"on_{event}") for event in ("poweroff", "reboot", "crash")] == \
        ["destroy", "restart", "destroy"]
    assert root.find("devices/graphics") is None
    assert root.find("devices/video/model").get("type") == "none"


def test_uefi_machine_has_readonly_ovmf_and_its_own_nvram_from_the_template():
    root = parsed(spec(firmware="uefi", nvram=Path("/srv/lab/w1_VARS.fd"), domain_type="kvm"))
    assert root.get("type") == "kvm"
    loader = root.find("os/loader")
    assert (loader.text, loader.get("readonly"), loader.get("type")) == (str(domain.OVMF_CODE), "yes", "pflash")
    nvram = root.find("os/nvram")
    assert (nvram.text, nvram.get("template")) == ("/srv/lab/w1_VARS.fd", str(domain.OVMF_VARS))


@pytest.mark.parametrize(("rom", "expected"), [
    (ROM_OFF, {"enabled": "no"}),
    (Path("/usr/lib/ipxe/qemu/pxe-virtio.rom"), {"file": "/usr/lib/ipxe/qemu/pxe-virtio.rom"}),
    ("/usr/lib/ipxe/qemu/efi-virtio.rom", {"file": "/usr/lib/ipxe/qemu/efi-virtio.rom"}),
])
def test_nic_option_rom_can_be_disabled_or_chosen(rom, expected):
    element = parsed(spec(nics=(Nic("52:54:00:00:00:21", "labnet", rom=rom),))).find("devices/interface/rom")
    assert dict(element.attrib) == expected


def test_several_nics_and_boot_devices_keep_their_order():
    nics = (Nic("52:54:00:00:00:21", "prov"), Nic("52-54-00-00-01-21", "data", model="e1000e"))
    root = parsed(spec(nics=nics, boot=("network", "hd")))
    assert [(i.find("mac").get("address"), i.find("source").get("network"), i.find("model").get("type"))
            for i in root.findall("devices/interface")] == \
        [("52:54:00:00:00:21", "prov", "virtio"), ("52:54:00:00:01:21", "data", "e1000e")]
    assert [boot.get("dev") for boot in root.findall("os/boot")] == ["network", "hd"]


def test_paths_with_markup_characters_survive_as_data():
    odd = Path("/srv/lab & co/<w1>'\"console.log")
    assert parsed(spec(console_log=odd)).find("devices/serial/source").get("path") == str(odd)


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": "bad name"}, "domain name"),
    ({"name": ""}, "domain name"),
    ({"domain_type": "xen"}, "domain type"),
    ({"firmware": "coreboot"}, "firmware"),
    ({"firmware": "uefi"}, "UEFI needs an nvram path"),
    ({"nics": ()}, "at least one NIC"),
    ({"memory_mib": 16}, "at least 64 MiB"),
    ({"boot": ("floppy",)}, "boot device"),
    ({"on_reboot": "explode"}, "on_reboot"),
])
def test_impossible_machines_are_refused_with_the_field_named(changes, message):
    with pytest.raises(ValueError, match=message):
        spec(**changes)


@pytest.mark.parametrize("mac", ["52:54:00:00:00", "52:54:00:00:00:zz", "01:00:5e:00:00:01", ""])
def test_bad_or_multicast_macs_are_refused(mac):
    with pytest.raises(ValueError, match="MAC"):
        Nic(mac, "labnet")


# ---- against libvirt ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn():
    if os.geteuid() != 0:
        pytest.skip("needs root: libvirt's system instance")
    from stellwerk.lab.daemons import connect

    connection = connect()
    yield connection
    connection.close()


@pytest.fixture
def machine_dir():
    """A directory libvirt's QEMU user can enter (pytest's tmp_path is root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="stellwerk-labtest-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"stellwerk-test-{prefix}-{secrets.token_hex(3)}"


def test_create_defines_uefi_domain_with_nvram_copy_and_remove_takes_both(conn, machine_dir):
    import libvirt

    nvram = machine_dir / "vars.fd"
    machine = spec(name=unique("uefi"), firmware="uefi", nvram=nvram, console_log=machine_dir / "console.log")
    created = domain.create(conn, machine, start=False)
    try:
        assert nvram.read_bytes() == domain.OVMF_VARS.read_bytes()
        assert not created.isActive() and created.isPersistent()
        defined = ET.fromstring(created.XMLDesc(0))
        assert defined.findtext("os/nvram") == str(nvram)
        assert defined.find("devices/interface/mac").get("address") == "52:54:00:00:00:21"
        # The name is taken now: a second create refuses, and leaves the first one's NVRAM alone.
        with pytest.raises(LabError, match="already exists in libvirt"):
            domain.create(conn, machine, start=False)
        assert nvram.exists()
    finally:
        assert domain.remove(conn, machine.name) is True
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(machine.name)
    assert not nvram.exists()
    assert domain.remove(conn, machine.name) is False


def test_create_never_overwrites_an_nvram_file_it_did_not_make(conn, machine_dir):
    nvram = machine_dir / "vars.fd"
    nvram.write_bytes(b"somebody's variables")
    machine = spec(name=unique("clobber"), firmware="uefi", nvram=nvram, console_log=machine_dir / "console.log")
    with pytest.raises(LabError, match="NVRAM file exists already"):
        domain.create(conn, machine, start=False)
    assert nvram.read_bytes() == b"somebody's variables"
    assert domain.remove(conn, machine.name) is False  # nothing was defined


def test_missing_files_are_named_before_libvirt_is_asked(conn, machine_dir):
    machine = spec(name=unique("rom"), console_log=machine_dir / "console.log",
                   nics=(Nic("52:54:00:00:00:21", "labnet", rom=machine_dir / "no-such.rom"),))
    with pytest.raises(LabError, match="NIC option ROM not found"):
        domain.create(conn, machine, start=False)
    elsewhere = spec(name=unique("dir"), console_log=machine_dir / "missing" / "console.log")
    with pytest.raises(LabError, match="no such directory"):
        domain.create(conn, elsewhere, start=False)


@pytest.mark.vm
def test_a_domain_that_cannot_start_is_undefined_again(conn, machine_dir):
    nvram = machine_dir / "vars.fd"
    machine = spec(name=unique("nonet"), firmware="uefi", nvram=nvram, console_log=machine_dir / "console.log",
                   nics=(Nic("52:54:00:00:00:21", f"no-such-network-{secrets.token_hex(3)}"),))
    with pytest.raises(LabError, match="libvirt cannot start it"):
        domain.create(conn, machine)
    assert domain.remove(conn, machine.name) is False
    assert not nvram.exists()


@pytest.mark.vm
def test_running_domain_logs_its_console_and_is_gone_after_the_block(conn, machine_dir):
    """Boots SeaBIOS with the iPXE ROM on an isolated network: the machine runs until it is removed."""
    from stellwerk.lab import network
    from stellwerk.lab.accel import detect

    if not IPXE_ROM.is_file():
        pytest.skip(f"{IPXE_ROM} missing: install ipxe-qemu")
    tag = secrets.token_hex(3)
    subnet = vmboot.free_subnet(ipaddress.IPv4Network("10.254.0.0/24"))
    net = network.NetworkSpec(name=f"stellwerk-test-{tag}", bridge=f"swt{tag}",
                              host=ipaddress.IPv4Interface(f"{subnet.network_address + 1}/24"))
    console = machine_dir / "console.log"
    accel = detect(vmboot.kernel_for_tests().vmlinuz)
    machine = spec(name=unique("run"), console_log=console, domain_type=accel.domain_type,
                   nics=(Nic("52:54:00:00:00:21", net.name, rom=IPXE_ROM),))
    with network.isolated(conn, net):
        with domain.running(conn, machine) as running:
            assert domain.state(running) == "running"
            assert console.exists()
            assert (Path("/sys/class/net") / net.bridge / "brif").is_dir()
            assert len(list((Path("/sys/class/net") / net.bridge / "brif").iterdir())) == 1  # its tap device
        assert domain.remove(conn, machine.name) is False
        assert list((Path("/sys/class/net") / net.bridge / "brif").iterdir()) == []
    assert console.exists()  # the caller's to keep
