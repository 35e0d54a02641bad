"""lab/routeradv.py: the advertisement as scapy reads it, and an advertiser answering on a veth pair."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6ND_RS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import Ether

from stellwerk.lab.routeradv import ETH_P_IPV6, RouterAdvertiser, advertisement, is_solicitation, link_local

MAC = bytes.fromhex("525400123456")


def solicitation(mac: str = "52:54:00:00:00:21") -> bytes:
    return bytes(Ether(src=mac, dst="33:33:00:00:00:02") / IPv6(src="fe80::5054:ff:fe00:21", dst="ff02::2", hlim=255)
                 / ICMPv6ND_RS())


def test_link_local_address_is_the_eui64_one():
    assert socket.inet_ntop(socket.AF_INET6, link_local(MAC)) == "fe80::5054:ff:fe12:3456"


def test_advertisement_announces_a_router_that_configures_nothing():
    frame = Ether(advertisement(MAC))
    assert (frame.src, frame.dst) == ("52:54:00:12:34:56", "33:33:00:00:00:01")
    ip = frame[IPv6]
    assert (ip.src, ip.dst, ip.hlim) == ("fe80::5054:ff:fe12:3456", "ff02::1", 255)
    ra = frame[ICMPv6ND_RA]
    assert (ra.routerlifetime, ra.M, ra.O) == (0, 0, 0)  # no default route, no DHCPv6
    assert frame[ICMPv6NDOptSrcLLAddr].lladdr == "52:54:00:12:34:56"
    assert not frame.haslayer("ICMPv6NDOptPrefixInfo")  # no addresses to configure
    # The checksum is the one scapy computes for the same message.
    sent = ra.cksum
    del frame[ICMPv6ND_RA].cksum
    assert Ether(bytes(frame))[ICMPv6ND_RA].cksum == sent


def test_only_router_solicitations_are_recognised():
    assert is_solicitation(solicitation())
    assert not is_solicitation(advertisement(MAC))
    assert not is_solicitation(solicitation()[:50])
    assert not is_solicitation(bytes(Ether() / IP() / UDP(sport=68, dport=67) / (b"\0" * 40)))


@pytest.fixture
def veth():
    """A veth pair in this namespace, made for the test and deleted after it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a veth pair and packet sockets")
    tag = secrets.token_hex(3)
    a, b = f"swraa{tag}", f"swrab{tag}"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True, capture_output=True)
    try:
        for name in (a, b):
            subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


def test_a_solicitation_is_answered_on_the_link(veth):
    advertiser_side, client_side = veth
    mac = Path(f"/sys/class/net/{advertiser_side}/address").read_text().strip()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6)) as client:
        client.bind((client_side, ETH_P_IPV6))
        client.settimeout(0.5)
        with RouterAdvertiser(advertiser_side) as advertiser:
            deadline = time.monotonic() + 10
            answer = None
            while answer is None and time.monotonic() < deadline:
                client.send(solicitation())
                try:
                    while True:
                        frame = Ether(client.recv(2048))
                        if frame.haslayer(ICMPv6ND_RA):
                            answer = frame
                            break
                except TimeoutError:
                    pass
            assert answer is not None, "no router advertisement within 10 s"
            assert answer.src == mac and answer[IPv6].dst == "ff02::1"
            assert advertiser.running and advertiser.answered >= 1
        assert not advertiser.running
