"""lab/network.py: the network XML, read back as XML, and an isolated network on the real libvirt."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import vmboot
from stellwerk.lab import network
from stellwerk.lab.errors import LabError
from stellwerk.lab.network import NetworkSpec, network_xml


def test_isolated_network_has_bridge_and_host_address_but_no_dhcp_dns_or_forward():
    root = ET.fromstring(network_xml(NetworkSpec("lab", "swlab0", "10.213.0.1/24")))
    assert root.tag == "network" and root.findtext("name") == "lab"
    bridge = root.find("bridge")
    assert (bridge.get("name"), bridge.get("stp"), bridge.get("delay")) == ("swlab0", "off", "0")
    assert root.find("forward") is None  # isolated: guests reach the host and each other only
    assert root.find("dns").get("enable") == "no"  # no dnsmasq at all
    ips = root.findall("ip")
    assert [(ip.get("address"), ip.get("prefix")) for ip in ips] == [("10.213.0.1", "24")]
    assert ips[0].find("dhcp") is None  # Stellwerk answers DHCP, not libvirt
    assert root.find("mtu") is None


def test_mtu_is_set_when_asked():
    root = ET.fromstring(network_xml(NetworkSpec("lab", "swlab0", "10.213.0.1/24", mtu=9000)))
    assert root.find("mtu").get("size") == "9000"


def test_spec_reports_address_and_subnet():
    spec = NetworkSpec("lab", "swlab0", "10.213.0.1/24")
    assert spec.address == ipaddress.IPv4Address("10.213.0.1")
    assert spec.subnet == ipaddress.IPv4Network("10.213.0.0/24")


@pytest.mark.parametrize(("args", "message"), [
    (("lab", "a-bridge-name-too-long", "10.213.0.1/24"), "bridge name"),
    (("lab", "sw/0", "10.213.0.1/24"), "bridge name"),
    (("lab", "sw lab", "10.213.0.1/24"), "bridge name"),
    (("bad name", "swlab0", "10.213.0.1/24"), "network name"),
    (("lab", "swlab0", "10.213.0.0/24"), "network or broadcast"),
    (("lab", "swlab0", "10.213.0.255/24"), "network or broadcast"),
])
def test_impossible_networks_are_refused_with_the_field_named(args, message):
    with pytest.raises(ValueError, match=message):
        NetworkSpec(*args)


def test_impossible_mtu_is_refused():
    with pytest.raises(ValueError, match="mtu"):
        NetworkSpec("lab", "swlab0", "10.213.0.1/24", mtu=100)


# ---- against libvirt ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn():
    if os.geteuid() != 0:
        pytest.skip("needs root: libvirt's system instance and a bridge")
    from stellwerk.lab.daemons import connect

    connection = connect()
    yield connection
    connection.close()


@pytest.fixture
def spec() -> NetworkSpec:
    tag = secrets.token_hex(3)
    subnet = vmboot.free_subnet(ipaddress.IPv4Network("10.254.0.0/24"))
    return NetworkSpec(f"stellwerk-test-{tag}", f"swt{tag}", f"{subnet.network_address + 1}/{subnet.prefixlen}")


def addresses_of(interface: str) -> list[str]:
    shown = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", interface], capture_output=True, text=True)
    if shown.returncode != 0:
        return []
    return [f"{info['local']}/{info['prefixlen']}" for link in json.loads(shown.stdout) for info in link["addr_info"]]


def dnsmasq_for(bridge: str) -> list[str]:
    """Command lines of dnsmasq processes whose config mentions `bridge` (libvirt names it in the config)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"dnsmasq"):
            for word in words:
                if word.startswith(b"--conf-file="):
                    conf = Path(word.split(b"=", 1)[1].decode())
                    if conf.exists() and bridge in conf.read_text():
                        found.append(b" ".join(words).decode())
    return found


def test_create_brings_up_the_bridge_with_the_host_address_and_remove_takes_it_away(conn, spec):
    import libvirt

    created = network.create(conn, spec)
    try:
        assert created.isActive() and created.isPersistent()
        assert addresses_of(spec.bridge) == [str(spec.host)]
        assert dnsmasq_for(spec.bridge) == []
        assert network.DNSMASQ_STATE_DIR.is_dir()
        with pytest.raises(LabError, match="already exists in libvirt"):
            network.create(conn, spec)
    finally:
        assert network.remove(conn, spec.name) is True
    assert not (Path("/sys/class/net") / spec.bridge).exists()
    with pytest.raises(libvirt.libvirtError):
        conn.networkLookupByName(spec.name)
    assert network.remove(conn, spec.name) is False


def test_an_existing_interface_is_never_taken_over(conn, spec):
    taken = NetworkSpec(spec.name, "lo", spec.host)
    with pytest.raises(LabError, match="bridge lo: already exists"):
        network.create(conn, taken)
    assert network.remove(conn, spec.name) is False


def test_a_subnet_in_use_is_refused_and_nothing_is_left_defined(conn, spec):
    with network.isolated(conn, spec):
        tag = secrets.token_hex(3)
        clash = NetworkSpec(f"stellwerk-test-{tag}", f"swt{tag}", f"{spec.subnet.network_address + 2}/24")
        with pytest.raises(LabError, match=f"network {clash.name}: cannot start it"):
            network.create(conn, clash)
        assert network.remove(conn, clash.name) is False
        assert not (Path("/sys/class/net") / clash.bridge).exists()
    assert network.remove(conn, spec.name) is False
