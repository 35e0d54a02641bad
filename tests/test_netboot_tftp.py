"""The TFTP server with real clients over real sockets on 127.0.0.1 (and ::1, and a private network namespace).

Clients: curl (TFTP with options), tftp-hpa's `tftp` (plain RFC 1350, netascii conversion), and `RawClient` below, a
small RFC 1350/2347/7440 client on a raw UDP socket that can misbehave on purpose (drop blocks, repeat ACKs, stop
ACKing, send from another port).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.tools import require_tool
from stellwerk.netboot import tftp
from stellwerk.netboot.tftp import (ACK, DATA, ERROR, OACK, RRQ, WRQ, Malformed, Refused, TFTPServer, netascii,
                                    parse_request, resolve)

IPXE = Path("/usr/lib/ipxe")
WAIT = 20.0  # bound on every wait for the server; never an assertion about speed


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def wait_for(predicate, what: str, limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


class TFTPError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(f"ERROR {code}: {message}")
        self.code, self.message = code, message


def request(opcode: int, filename: bytes, mode: bytes = b"octet", options: dict | None = None) -> bytes:
    body = filename + b"\0" + mode + b"\0"
    for name, value in (options or {}).items():
        body += f"{name}\0{value}\0".encode()
    return struct.pack("!H", opcode) + body


def ack(number: int) -> bytes:
    return struct.pack("!HH", ACK, number & 0xFFFF)


def parse_oack(packet: bytes) -> dict[str, str]:
    fields = packet[2:].split(b"\0")[:-1]
    return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}


@dataclass
class Received:
    data: bytes
    oack: dict[str, str] | None
    tid: tuple
    data_packets: int = 0  # every DATA packet that arrived, repeats included
    first_copies: dict[int, int] = field(default_factory=dict)  # absolute block -> copies received
    last_block_length: int = -1


class RawClient:
    """A TFTP read client on a plain UDP socket. Block numbers are tracked absolutely (past 65535)."""

    def __init__(self, port: int, host: str = "127.0.0.1", family: int = socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(5)
        self.server = (host, port)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def send(self, packet: bytes, to: tuple | None = None) -> None:
        self.sock.sendto(packet, to or self.server)

    def recv(self) -> tuple[bytes, tuple]:
        return self.sock.recvfrom(70000)

    def get(self, filename: bytes | str, mode: str = "octet", options: dict | None = None, *,
            drop: set[int] = frozenset(), ack_twice: bool = False, between=None) -> Received:
        """Read a file. `drop`: absolute blocks to pretend lost the first time they arrive. `ack_twice`: send every
        ACK twice. `between(tid, block)`: called after each in-order block (for injecting traffic)."""
        if isinstance(filename, str):
            filename = filename.encode()
        self.send(request(RRQ, filename, mode.encode(), options))
        packet, tid = self.recv()
        opcode = struct.unpack("!H", packet[:2])[0]
        if opcode == ERROR:
            raise TFTPError(struct.unpack("!H", packet[2:4])[0], packet[4:].split(b"\0")[0].decode())
        oack = None
        blksize, window = 512, 1
        if opcode == OACK:
            oack = parse_oack(packet)
            blksize = int(oack.get("blksize", 512))
            window = int(oack.get("windowsize", 1))
            self._ack(0, tid, ack_twice)
            packet, sender = self.recv()
        # Short waits for a window's end, so a lost last block costs little; RFC 1350 lock-step waits longer.
        self.sock.settimeout(0.3 if window > 1 else 5)
        result = Received(b"", oack, tid)
        chunks: list[bytes] = []
        expected, in_window, dropped = 1, 0, set()
        timeouts = 0
        while True:
            opcode = struct.unpack("!H", packet[:2])[0]
            if opcode == ERROR:
                raise TFTPError(struct.unpack("!H", packet[2:4])[0], packet[4:].split(b"\0")[0].decode())
            assert opcode == DATA, packet[:16]
            result.data_packets += 1
            wire = struct.unpack("!H", packet[2:4])[0]
            if wire == expected & 0xFFFF and expected in drop and expected not in dropped:
                dropped.add(expected)  # lost in transit, as far as this client knows
            elif wire == expected & 0xFFFF:
                data = packet[4:]
                chunks.append(data)
                result.first_copies[expected] = result.first_copies.get(expected, 0) + 1
                in_window += 1
                if len(data) < blksize:
                    result.last_block_length = len(data)
                    self._ack(expected, tid, ack_twice)
                    break
                if in_window == window:
                    self._ack(expected, tid, ack_twice)
                    in_window = 0
                if between:
                    between(tid, expected)
                expected += 1
            else:
                # RFC 7440: out of order means a gap; acknowledge the last block received in order.
                if (wire - expected) & 0xFFFF < 0x8000:
                    self._ack(expected - 1, tid, ack_twice)
                    in_window = 0
                elif wire == (expected - 1) & 0xFFFF:
                    result.first_copies[expected - 1] = result.first_copies.get(expected - 1, 0) + 1
            while True:
                try:
                    packet, sender = self.recv()
                except TimeoutError:
                    # RFC 7440: a receiver that waited long enough acknowledges what it has, in order (this also
                    # covers a lost last block of a window, which leaves no gap to notice).
                    timeouts += 1
                    assert timeouts < 30, "server stopped sending"
                    self._ack(expected - 1, tid, False)
                    in_window = 0
                    continue
                assert sender == tid, f"packet from {sender}, transfer is {tid}"
                break
        self.sock.settimeout(5)
        result.data = b"".join(chunks)
        return result

    def _ack(self, number: int, tid: tuple, twice: bool) -> None:
        for _ in range(2 if twice else 1):
            self.send(ack(number), tid)

    def expect_error(self) -> tuple[int, str, tuple]:
        packet, sender = self.recv()
        assert struct.unpack("!H", packet[:2])[0] == ERROR, packet[:16]
        return struct.unpack("!H", packet[2:4])[0], packet[4:].split(b"\0")[0].decode(), sender


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    directory.mkdir()
    return directory


@pytest.fixture
def serve(root: Path):
    servers: list[TFTPServer] = []

    def start(host: str = "127.0.0.1", **settings) -> TFTPServer:
        server = TFTPServer(root, host, 0, **settings).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def curl(server: TFTPServer, name: str, out: Path, *args: str, host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    require_tool("curl")
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "120", *args,
                           f"tftp://{host}:{server.port}/{name}", "-o", str(out)],
                          capture_output=True, text=True, timeout=180)


def tftp_hpa(server: TFTPServer, mode: str, *command: str) -> subprocess.CompletedProcess:
    tool = require_tool("tftp")
    return subprocess.run([tool, "-m", mode, "127.0.0.1", str(server.port), "-c", *command],
                          capture_output=True, text=True, timeout=120)


def settled(server: TFTPServer, **expected: int) -> dict[str, int]:
    """Counters, once the server has caught up with what the client already finished."""
    wait_for(lambda: all(server.counters[k] >= v for k, v in expected.items()) and server.active_transfers == 0,
             f"counters {expected}")
    return server.counters


# -- real clients: curl and tftp-hpa ----------------------------------------------------------------------------

CURL_OPTIONS = {"curl-defaults": [], "blksize-1468": ["--tftp-blksize", "1468"],
                "rfc1350-only": ["--tftp-no-options"]}


# curl (7.88) rejects an OACK with tsize 0, which is the right answer for an empty file; so the empty file goes
# through curl without options here, and through RawClient with tsize in test_empty_file_...
@pytest.mark.parametrize("size,options", [(size, name) for size in (0, 511, 512, 1468 * 3, 300_000)
                                          for name in CURL_OPTIONS if size or name == "rfc1350-only"])
def test_curl_gets_the_file_byte_for_byte(serve, root, tmp_path, size, options):
    options = CURL_OPTIONS[options]
    (root / "file.bin").write_bytes(payload(size))
    server = serve()
    result = curl(server, "file.bin", tmp_path / "out", *options)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == payload(size)
    counters = settled(server, transfers_completed=1)
    assert counters["bytes_sent"] == size
    assert counters["transfers_failed"] == counters["malformed"] == counters["internal_errors"] == 0


def test_block_number_rollover_with_curl_at_blksize_8(serve, root, tmp_path):
    size = 65536 * 8 + 777  # 65634 blocks: block 65536 goes out as 0, then 1, 2, ... again
    (root / "big.bin").write_bytes(payload(size))
    server = serve()
    result = curl(server, "big.bin", tmp_path / "out", "--tftp-blksize", "8")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == payload(size)
    assert settled(server, transfers_completed=1)["bytes_sent"] == size


def test_block_number_rollover_with_a_window(serve, root):
    size = 65536 * 8 * 2 + 3  # wraps twice
    (root / "big.bin").write_bytes(payload(size, seed=3))
    server = serve()
    with RawClient(server.port) as client:
        got = client.get("big.bin", options={"blksize": 8, "windowsize": 16})
    assert got.oack == {"blksize": "8", "windowsize": "16"}
    assert got.data == payload(size, seed=3)
    assert len(got.first_copies) == size // 8 + 1 > 2 * 65536


def test_tftp_hpa_client_octet_and_netascii(serve, root, tmp_path):
    text = b"first line\nwindows line\r\nbare cr\rend\n" * 200 + b"\r"
    (root / "text.txt").write_bytes(text)
    (root / "file.bin").write_bytes(payload(70_000))
    server = serve()
    result = tftp_hpa(server, "octet", "get", "file.bin", str(tmp_path / "bin"))
    assert result.returncode == 0 and "Error" not in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "bin").read_bytes() == payload(70_000)
    # tftp-hpa turns netascii back into the local form: what it writes equals the original file.
    result = tftp_hpa(server, "netascii", "get", "text.txt", str(tmp_path / "text"))
    assert result.returncode == 0 and "Error" not in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "text").read_bytes() == text


def test_netascii_on_the_wire(serve, root, tmp_path):
    text = b"a\nb\r\nc\rd\n\n\r\r" * 1000 + bytes(range(256))
    (root / "text.txt").write_bytes(text)
    server = serve(timeout=0.2)  # with windowsize 1 a lost block is only noticed by the server's timeout
    # curl does not convert: it writes the netascii bytes as received.
    result = curl(server, "text.txt;mode=netascii", tmp_path / "out", "--tftp-blksize", "8")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == netascii(text)
    with RawClient(server.port) as client:
        # Odd block sizes cut CR LF and CR NUL pairs at block boundaries; dropped blocks make the server produce
        # blocks of the window again.
        for blksize, window in ((8, 1), (9, 4), (1468, 3)):
            got = client.get("text.txt", "netascii", {"blksize": blksize, "windowsize": window, "tsize": 0},
                             drop={2, 5, 6, 40})
            assert got.data == netascii(text)
            assert int(got.oack["tsize"]) == len(netascii(text))
        got = client.get("text.txt", "NetASCII")  # mode names are case-insensitive
        assert got.data == netascii(text)


def test_tsize_blksize_timeout_in_the_oack(serve, root):
    (root / "file.bin").write_bytes(payload(10_000))
    server = serve()
    with RawClient(server.port) as client:
        got = client.get("file.bin", options={"tsize": 0, "blksize": 1468, "timeout": 3})
        assert got.oack == {"tsize": "10000", "blksize": "1468", "timeout": "3"}
        assert got.data == payload(10_000)
        assert sorted(got.first_copies) == list(range(1, 8)) and got.last_block_length == 10_000 - 6 * 1468
        # Option names are case-insensitive; the OACK keeps the client's order.
        got = client.get("file.bin", options={"TIMEOUT": 255, "BlkSize": 65464})
        assert got.oack == {"timeout": "255", "blksize": "65464"}
        assert got.data == payload(10_000)


def test_empty_file_and_exact_multiples_end_with_a_short_block(serve, root):
    (root / "empty").write_bytes(b"")
    (root / "two.bin").write_bytes(payload(1024))
    server = serve()
    with RawClient(server.port) as client:
        got = client.get("empty", options={"tsize": 0})
        assert got.oack == {"tsize": "0"} and got.data == b"" and got.last_block_length == 0
        got = client.get("two.bin")
        assert got.data == payload(1024) and sorted(got.first_copies) == [1, 2, 3] and got.last_block_length == 0


def test_unknown_and_invalid_options_are_left_out_of_the_oack(serve, root):
    (root / "file.bin").write_bytes(payload(3000))
    server = serve()
    with RawClient(server.port) as client:
        # Nothing acceptable: no OACK at all, DATA 1 comes straight away (RFC 2347).
        got = client.get("file.bin", options={"multicast": "", "blksize": 7, "timeout": 0, "windowsize": 0,
                                              "tsize": "abc", "foo": "bar"})
        assert got.oack is None and got.data == payload(3000)
        got = client.get("file.bin", options={"timeout": 256, "blksize": "12x", "windowsize": 70000, "rollover": 0})
        assert got.oack is None and got.data == payload(3000)
        got = client.get("file.bin", options={"foo": "bar", "windowsize": 2, "timeout": 300})
        assert got.oack == {"windowsize": "2"} and got.data == payload(3000)


def test_oversized_options_are_answered_with_the_maximum(serve, root):
    (root / "file.bin").write_bytes(payload(200_000))
    server = serve(max_windowsize=8)
    with RawClient(server.port) as client:
        got = client.get("file.bin", options={"blksize": 100_000, "windowsize": 65535})
    assert got.oack == {"blksize": "65464", "windowsize": "8"}
    assert got.data == payload(200_000)


def test_windowsize_with_lost_blocks(serve, root):
    size = 1468 * 40 + 5
    (root / "file.bin").write_bytes(payload(size))
    # Blocks lost inside a window: the client acknowledges the last block it got in order and the server starts
    # the window again right after it (RFC 7440), without waiting for a timeout.
    server = serve(timeout=30)
    with RawClient(server.port) as client:
        got = client.get("file.bin", options={"blksize": 1468, "windowsize": 8}, drop={2, 5, 19})
    assert got.oack == {"blksize": "1468", "windowsize": "8"}
    assert got.data == payload(size)
    counters = settled(server, transfers_completed=1)
    assert counters["timeouts"] == counters["retransmissions"] == 0
    # The first block of a window, the last one, the file's last: the client's repeated ACK is a duplicate, which
    # the server ignores (sorcerer's apprentice); its own timeout sends the window again.
    server = serve(timeout=0.2)
    with RawClient(server.port) as client:
        got = client.get("file.bin", options={"blksize": 1468, "windowsize": 8}, drop={8, 9, 17, 41})
    assert got.data == payload(size)
    assert settled(server, transfers_completed=1)["retransmissions"] >= 1


def test_duplicate_acks_do_not_multiply_data(serve, root):
    """Sorcerer's apprentice: if duplicate ACKs triggered sends, every block would arrive twice, then 4 times."""
    (root / "file.bin").write_bytes(payload(512 * 50))
    server = serve(timeout=30)
    with RawClient(server.port) as client:
        got = client.get("file.bin", ack_twice=True)
        assert got.data == payload(512 * 50)
        assert got.data_packets == 51 and set(got.first_copies.values()) == {1}
    counters = settled(server, transfers_completed=1)
    assert counters["duplicate_acks"] == 50  # the copy of the final ACK finds the transfer's port closed
    assert counters["retransmissions"] == 0


def test_many_transfers_at_once(serve, root, tmp_path):
    require_tool("curl")
    for index in range(12):
        (root / f"f{index}.bin").write_bytes(payload(50_000 + index * 997, seed=index))
    server = serve()
    processes = []
    for index in range(12):
        blksize = ("512", "1468", "8", "65464")[index % 4]
        processes.append(subprocess.Popen(
            ["curl", "--silent", "--show-error", "--max-time", "120", "--tftp-blksize", blksize,
             f"tftp://127.0.0.1:{server.port}/f{index}.bin", "-o", str(tmp_path / f"out{index}")],
            stderr=subprocess.PIPE, text=True))
    for process in processes:
        assert process.wait(timeout=180) == 0, process.stderr.read()
    for index in range(12):
        assert (tmp_path / f"out{index}").read_bytes() == payload(50_000 + index * 997, seed=index)
    assert settled(server, transfers_completed=12)["transfers_failed"] == 0


# -- refusals -------------------------------------------------------------------------------------------------

def test_path_traversal_is_refused(serve, root, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not serve me")
    (root / "sub").mkdir()
    (root / "sub" / "inner.bin").write_bytes(b"inner")
    (root / "file.bin").write_bytes(b"top")
    (root / "escape").symlink_to(secret)
    (root / "outdir").symlink_to(tmp_path)
    (root / "sub" / "up").symlink_to("../..")
    (root / "alias.bin").symlink_to("sub/inner.bin")  # inside the root: fine
    server = serve()
    refused = [b"../secret.txt", b"sub/../../secret.txt", b"/../secret.txt", b"..", b"sub/..",
               b"..\\secret.txt", b"sub\\inner.bin", b"escape", b"outdir/secret.txt", b"sub/up/secret.txt",
               b"\xff\xfe", b"file.bin\n", b"sub", b"/", b"."]
    not_found = [b"/etc/passwd", b"/" + str(secret).encode(), b"missing", b"", b"file.bin/x"]
    with RawClient(server.port) as client:
        for name in refused:
            with pytest.raises(TFTPError) as caught:
                client.get(name)
            assert caught.value.code == (tftp.ERR_NOT_FOUND if name in (b"/", b".") else tftp.ERR_ACCESS), name
        for name in not_found:
            with pytest.raises(TFTPError) as caught:
                client.get(name)
            assert caught.value.code == tftp.ERR_NOT_FOUND, name
        # A leading slash is stripped and the rest resolved inside the root; so are empty and `.` components.
        assert client.get("/file.bin").data == b"top"
        assert client.get("//sub/./inner.bin").data == b"inner"
        assert client.get("alias.bin").data == b"inner"
    result = curl(server, "../secret.txt", tmp_path / "out", "--path-as-is")
    assert result.returncode == 69  # CURLE_TFTP_PERM: ERROR 2, access violation
    assert not (tmp_path / "out").exists() or b"do not" not in (tmp_path / "out").read_bytes()
    counters = settled(server, refused_access=14)
    assert counters["refused_access"] == 14 and counters["refused_not_found"] == 7
    assert counters["transfers_started"] == 3


def test_special_files_are_refused_without_blocking(serve, root):
    os.mkfifo(root / "fifo")
    (root / "dir").mkdir()
    server = serve()
    with RawClient(server.port) as client:
        for name in ("fifo", "dir"):
            with pytest.raises(TFTPError) as caught:
                client.get(name)
            assert caught.value.code == tftp.ERR_ACCESS


def test_write_requests_are_refused(serve, root, tmp_path):
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload(2000))
    server = serve()
    with RawClient(server.port) as client:
        client.send(request(WRQ, b"new.bin", b"octet", {"tsize": 2000}))
        code, message, _ = client.expect_error()
    assert code == tftp.ERR_ACCESS and "write" in message
    result = curl(server, "new.bin", tmp_path / "ignored", "-T", str(upload))
    assert result.returncode == 69  # CURLE_TFTP_PERM
    result = tftp_hpa(server, "octet", "put", str(upload), "new2.bin")
    assert "Error code 2" in result.stdout, result.stdout
    assert sorted(p.name for p in root.iterdir()) == []
    counters = settled(server, refused_write=3)
    assert counters["transfers_started"] == 0


def test_unsupported_modes_are_refused(serve, root):
    (root / "file.bin").write_bytes(b"x")
    server = serve()
    with RawClient(server.port) as client:
        for mode in (b"mail", b"binary", b"\xe9octet"):
            client.send(request(RRQ, b"file.bin", mode))
            code, message, _ = client.expect_error()
            assert code == tftp.ERR_ILLEGAL_OP and "mode" in message
    assert settled(server, refused_mode=3)["transfers_started"] == 0


def test_busy_server_refuses_then_recovers(serve, root):
    (root / "file.bin").write_bytes(payload(5000))
    server = serve(max_transfers=1, timeout=0.2, retries=2)
    with RawClient(server.port) as stalled, RawClient(server.port) as second:
        stalled.send(request(RRQ, b"file.bin"))
        stalled.recv()  # DATA 1, never acknowledged
        second.send(request(RRQ, b"file.bin"))
        code, message, _ = second.expect_error()
        assert code == tftp.ERR_UNDEFINED and "busy" in message
        wait_for(lambda: server.active_transfers == 0, "the stalled transfer to be given up")
        assert second.get("file.bin").data == payload(5000)
    assert server.counters["refused_busy"] == 1


# -- transfer identifiers, timeouts, client errors ------------------------------------------------------------

def test_each_transfer_has_its_own_port_and_unknown_tids_get_error_5(serve, root):
    (root / "file.bin").write_bytes(payload(512 * 20 + 1))
    server = serve(timeout=30)
    tids = set()
    with RawClient(server.port) as client, RawClient(server.port) as stranger:
        def intrude(tid, block):
            tids.add(tid)
            if block % 5 == 0:
                stranger.send(ack(block + 1), tid)  # would skip a block if the server believed it
                code, _, sender = stranger.expect_error()
                assert code == tftp.ERR_UNKNOWN_TID and sender == tid
        got = client.get("file.bin", between=intrude)
        assert got.data == payload(512 * 20 + 1)
        second = client.get("file.bin")
    assert len(tids) == 1 and second.tid not in tids and server.port not in {t[1] for t in tids | {second.tid}}
    counters = settled(server, transfers_completed=2)
    assert counters["unknown_tid"] == 4 and counters["transfers_failed"] == 0


def test_client_that_stops_acking_is_given_up_and_freed(serve, root):
    (root / "file.bin").write_bytes(payload(5000))
    server = serve(timeout=0.1, retries=3)
    with RawClient(server.port) as client:
        client.send(request(RRQ, b"file.bin"))
        copies = []
        while True:
            packet, tid = client.recv()
            if struct.unpack("!H", packet[:2])[0] == ERROR:
                break
            copies.append(packet)
        assert len(copies) == 4 and len(set(copies)) == 1 and copies[0][:4] == struct.pack("!HH", DATA, 1)
        counters = settled(server, timeouts=1)
        assert counters["transfers_failed"] == 1 and counters["retransmissions"] == 3
        # The transfer's port is closed: the kernel answers with port unreachable.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(5)
        probe.connect(tid)
        with pytest.raises(ConnectionRefusedError):
            probe.send(ack(1))
            probe.recv(100)
        probe.close()
        # Same for a client that never acknowledges the OACK.
        client.send(request(RRQ, b"file.bin", options={"blksize": 1024}))
        oacks = []
        while True:
            packet, _ = client.recv()
            if struct.unpack("!H", packet[:2])[0] == ERROR:
                break
            oacks.append(packet)
        assert len(oacks) == 4 and parse_oack(oacks[0]) == {"blksize": "1024"}
    assert settled(server, timeouts=2)["transfers_failed"] == 2


def test_a_client_error_ends_the_transfer(serve, root):
    (root / "file.bin").write_bytes(payload(5000))
    server = serve(timeout=30)
    with RawClient(server.port) as client:
        client.send(request(RRQ, b"file.bin", options={"blksize": 1024, "bigfoot": 1}))
        packet, tid = client.recv()
        assert parse_oack(packet) == {"blksize": "1024"}
        client.send(struct.pack("!HH", ERROR, tftp.ERR_OPTIONS) + b"option refused\0", tid)  # RFC 2347
        counters = settled(server, ended_after_oack=1)
        assert counters["transfers_failed"] == 0
        client.send(request(RRQ, b"file.bin"))
        packet, tid = client.recv()
        client.send(struct.pack("!HH", ERROR, 0) + b"disk on fire\0", tid)
        client.send(request(RRQ, b"file.bin", options={"blksize": 1024}))
        packet, tid = client.recv()
        client.send(ack(0), tid)
        packet, _ = client.recv()
        assert packet[:4] == struct.pack("!HH", DATA, 1)
        client.send(struct.pack("!HH", ERROR, 3) + b"disk full\0", tid)
    counters = settled(server, client_errors=2)
    assert counters["transfers_failed"] == 2 and counters["ended_after_oack"] == 1


def test_uefi_size_probe_is_not_a_failure(serve, root):
    """EDK II's PXE asks for tsize, reads it from the OACK and ends the transfer with ERROR 8 on purpose."""
    (root / "file.bin").write_bytes(payload(5000))
    server = serve(timeout=30)
    with RawClient(server.port) as client:
        client.send(request(RRQ, b"file.bin", options={"tsize": 0, "blksize": 1468}))
        packet, tid = client.recv()
        assert parse_oack(packet) == {"tsize": "5000", "blksize": "1468"}
        client.send(struct.pack("!HH", ERROR, tftp.ERR_OPTIONS) + b"User aborted the transfer\0", tid)
        counters = settled(server, ended_after_oack=1)
        assert counters["transfers_failed"] == counters["client_errors"] == 0
        assert client.get("file.bin", options={"blksize": 1468}).data == payload(5000)


def test_a_repeated_request_does_not_start_a_second_transfer(serve, root):
    (root / "file.bin").write_bytes(payload(2000))
    server = serve(timeout=30)
    with RawClient(server.port) as client:
        client.send(request(RRQ, b"file.bin"))
        got = client.get("file.bin")  # sends the same RRQ again from the same port
        assert got.data == payload(2000) and got.data_packets == 4
    counters = settled(server, transfers_completed=1)
    assert counters["duplicate_requests"] == 1 and counters["transfers_started"] == 1


def test_stop_ends_running_transfers(root):
    (root / "file.bin").write_bytes(payload(5000))
    server = TFTPServer(root, "127.0.0.1", 0, timeout=30).start()
    with RawClient(server.port) as client:
        client.send(request(RRQ, b"file.bin"))
        client.recv()
        server.stop()
        code, message, _ = client.expect_error()
        assert code == tftp.ERR_UNDEFINED and "shutting down" in message
        assert server.active_transfers == 0 and server.counters["transfers_failed"] == 1
        server.stop()  # twice is fine
        client.sock.settimeout(0.5)
        client.send(request(RRQ, b"file.bin"))
        with pytest.raises((TimeoutError, ConnectionRefusedError)):
            client.recv()


# -- untrusted input ------------------------------------------------------------------------------------------

def malformed_packets(rng: random.Random) -> list[tuple[bytes, bool]]:
    """(packet, surely malformed) pairs: hand-made breakage, mutated requests and noise."""
    good = [request(RRQ, f"missing-{i}".encode(), b"octet", {"blksize": 1468, "tsize": 0}) for i in range(5)]
    packets: list[tuple[bytes, bool]] = []
    for _ in range(800):
        base = rng.choice(good)
        kind = rng.randrange(10)
        if kind == 0:
            packets.append((rng.randbytes(rng.randrange(2)), True))  # truncated
        elif kind == 1:
            opcode = rng.choice([0, DATA, ACK, ERROR, OACK, 7, 255, 65535])
            packets.append((struct.pack("!H", opcode) + rng.randbytes(rng.randrange(40)), True))
        elif kind == 2:
            packets.append((base.rstrip(b"\0") + b"x", True))  # missing the final NUL
        elif kind == 3:
            packets.append((base + rng.randbytes(513), True))  # oversized
        elif kind == 4:
            packets.append((struct.pack("!H", RRQ) + b"file.bin\0", True))  # no mode
        elif kind == 5:
            packets.append((base + b"blksize\0", True))  # option without value
        elif kind == 6:
            cut = rng.randrange(2, len(base))
            packets.append((base[:cut], not base[:cut].endswith(b"\0") or cut < len(b"missing-0\0") + 2))
        elif kind == 7:
            mutated = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            packets.append((bytes(mutated), False))
        else:
            packets.append((rng.randbytes(rng.randrange(600)), False))
    return packets


def test_fuzzed_request_port_survives_and_counts(serve, root, tmp_path):
    (root / "file.bin").write_bytes(payload(100_000))
    server = serve(timeout=0.2, retries=1)
    rng = random.Random(20240611)
    sent, surely = 0, 0
    with RawClient(server.port) as probe:
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        try:
            for sender in senders:
                sender.bind(("127.0.0.1", 0))
            for round_ in range(5):
                batch = malformed_packets(rng)
                for index, (packet, malformed) in enumerate(batch):
                    rng.choice(senders).sendto(packet, ("127.0.0.1", server.port))
                    sent += 1
                    surely += malformed
                    if index % 40 == 39:  # keep the server's receive queue from overflowing: wait until it caught up
                        probe.send(request(RRQ, b"probe"))
                        sent += 1
                        assert probe.expect_error()[0] == tftp.ERR_NOT_FOUND
        finally:
            for sender in senders:
                sender.close()
        probe.send(request(RRQ, b"probe"))
        sent += 1
        assert probe.expect_error()[0] == tftp.ERR_NOT_FOUND
    counters = server.counters
    assert counters["malformed"] >= surely > 2000
    # Every packet is accounted for: dropped as malformed, refused as a write, or handled as a read request.
    assert counters["malformed"] + counters["refused_write"] + counters["requests"] == sent
    assert counters["internal_errors"] == 0
    result = curl(server, "file.bin", tmp_path / "out", "--tftp-blksize", "1468")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == payload(100_000)


def test_garbage_on_the_transfer_port_does_not_disturb_it(serve, root):
    (root / "file.bin").write_bytes(payload(512 * 30 + 9))
    server = serve(timeout=30)
    rng = random.Random(5)
    with RawClient(server.port) as client, RawClient(server.port) as stranger:
        def garbage(tid, block):
            for _ in range(3):
                # From the client's own port: anything but ACK and ERROR (those are meaningful) is dropped.
                opcode = rng.choice([0, RRQ, WRQ, DATA, OACK, 9, 4000])
                client.send(struct.pack("!H", opcode) + rng.randbytes(rng.randrange(30)), tid)
                client.send(rng.randbytes(rng.randrange(2)), tid)
                # From anywhere else: anything at all, each answered with ERROR 5.
                stranger.send(rng.randbytes(rng.randrange(100)), tid)
        got = client.get("file.bin", between=garbage)
    assert got.data == payload(512 * 30 + 9)
    counters = settled(server, transfers_completed=1)
    assert counters["malformed"] == 30 * 6 and counters["unknown_tid"] == 30 * 3


@given(st.binary(max_size=700))
@settings(max_examples=2000, deadline=None)
def test_parse_request_only_ever_raises_malformed(packet):
    try:
        parsed = parse_request(packet)
    except Malformed:
        return
    assert parsed.opcode in (RRQ, WRQ) and len(packet) <= tftp.MAX_REQUEST


NAME_PARTS = st.sampled_from(["..", ".", "", "a", "b", "link", "out", "sub", "x\\y", "\x00", "\u00e9", "/", "//"])


@given(st.one_of(st.binary(max_size=60), st.lists(NAME_PARTS, max_size=6).map(lambda p: "/".join(p).encode())))
@settings(max_examples=1500, deadline=None)
def test_resolve_never_leaves_the_root(tmp_path_factory, name):
    base = tmp_path_factory.getbasetemp() / "resolve"
    root = base / "root"
    if not root.exists():
        (root / "sub").mkdir(parents=True)
        (root / "a").write_bytes(b"a")
        (root / "link").symlink_to("sub")
        (root / "out").symlink_to("..")
        (root / "sub" / "b").symlink_to("../../root/a")  # leaves and re-enters: fine
    real_root = os.path.realpath(root)
    try:
        path = resolve(real_root, name)
    except Refused as refusal:
        assert refusal.code in (tftp.ERR_ACCESS, tftp.ERR_NOT_FOUND)
        return
    assert path.startswith(real_root + os.sep) and os.path.realpath(path) == path


@given(st.binary(max_size=400).map(lambda b: b.replace(b"x", b"\r").replace(b"y", b"\n")),
       st.integers(min_value=8, max_value=40))
@settings(max_examples=400, deadline=None)
def test_netascii_blocks_reassemble_and_repeat(tmp_path_factory, data, blksize):
    path = tmp_path_factory.mktemp("na") / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = tftp._NetasciiBlocks(fd, blksize)
        out, number = [], 1
        while True:
            block = blocks.block(number)
            assert blocks.block(number) == block  # a retransmission gets the same bytes
            out.append(block)
            if len(block) < blksize:
                break
            assert len(block) == blksize
            number += 1
        assert b"".join(out) == netascii(data)
        assert tftp.netascii_size(fd) == len(netascii(data))
    finally:
        os.close(fd)


# -- logging --------------------------------------------------------------------------------------------------

def test_one_log_line_per_transfer(serve, root, caplog):
    caplog.set_level(logging.INFO, logger="stellwerk.netboot.tftp")
    (root / "file.bin").write_bytes(payload(3000))
    server = serve()
    with RawClient(server.port) as client:
        client.get("file.bin", options={"blksize": 1024})
        with pytest.raises(TFTPError):
            client.get("../etc/shadow")
        settled(server, transfers_completed=1, refused_access=1)
        port = client.sock.getsockname()[1]
    records = [r for r in caplog.records if hasattr(r, "tftp")]
    assert [r.tftp["result"] for r in records] == ["ok", "error-2"]
    done = records[0].tftp
    assert done["client"] == f"127.0.0.1:{port}" and done["file"] == "file.bin" and done["bytes"] == 3000
    assert done["options"] == {"blksize": 1024}
    assert records[0].getMessage() == (f"tftp transfer client=127.0.0.1:{port} file=\"file.bin\" mode=octet "
                                       "options=blksize=1024 bytes=3000 blocks=3 retransmissions=0 result=ok")
    assert "../etc/shadow" in records[1].getMessage() and "'..'" in records[1].getMessage()


# -- addresses ------------------------------------------------------------------------------------------------

def test_ipv6_loopback(root, tmp_path):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    (root / "file.bin").write_bytes(payload(9000))
    with TFTPServer(root, "::1", 0) as server:
        result = curl(server, "file.bin", tmp_path / "out", "--tftp-blksize", "1468", host="[::1]")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out").read_bytes() == payload(9000)
        with RawClient(server.port, "::1", socket.AF_INET6) as client:
            assert client.get("file.bin").data == payload(9000)


WILDCARD_SCRIPT = textwrap.dedent("""
    import socket, struct, sys
    from stellwerk.netboot.tftp import TFTPServer
    root = sys.argv[1]
    with TFTPServer(root, "0.0.0.0", 0) as server:
        for target in ("127.0.0.9", "127.0.0.23"):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.bind(("127.0.0.1", 0))
            client.settimeout(5)
            client.sendto(struct.pack("!H", 1) + b"file.bin\\0octet\\0", (target, server.port))
            packet, sender = client.recvfrom(1000)
            assert packet[:4] == struct.pack("!HH", 3, 1), packet[:4]
            assert sender[0] == target and sender[1] != server.port, (sender, target)
            client.sendto(struct.pack("!HH", 4, 1), sender)
            client.sendto(struct.pack("!H", 1) + b"missing\\0octet\\0", (target, server.port))
            packet, sender = client.recvfrom(1000)
            assert packet[:4] == struct.pack("!HH", 5, 1) and sender[0] == target, (packet, sender)
    print("ok")
""")


def test_wildcard_listener_answers_from_the_address_asked(root, tmp_path):
    """Bound to 0.0.0.0, each transfer answers from the address its request went to (PXE firmware checks it).
    Runs in a new network namespace, so the wildcard socket is reachable from nowhere else."""
    require_tool("unshare")
    require_tool("ip")
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    (root / "file.bin").write_bytes(b"hello")
    script = tmp_path / "wildcard.py"
    script.write_text(WILDCARD_SCRIPT)
    result = subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
                             sys.executable, str(script), str(root)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


# -- the real iPXE ---------------------------------------------------------------------------------------------

def require_ipxe() -> None:
    if not (IPXE / "undionly.kpxe").is_file():
        message = "Debian's ipxe package is not installed (./dev.sh test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_serves_the_real_ipxe_binaries(serve, root, tmp_path):
    require_ipxe()
    names = ["undionly.kpxe"] + (["ipxe.efi"] if (IPXE / "ipxe.efi").exists() else [])
    for name in names:
        shutil.copyfile(IPXE / name, root / name)  # follows Debian's ipxe.efi -> /boot/ipxe.efi symlink
    server = serve()
    digests = {name: hashlib.sha256((IPXE / name).read_bytes()).hexdigest() for name in names}
    for name in names:
        for index, options in enumerate(([], ["--tftp-blksize", "1468"], ["--tftp-no-options"])):
            out = tmp_path / f"{name}.{index}"
            result = curl(server, name, out, *options)
            assert result.returncode == 0, result.stderr
            assert hashlib.sha256(out.read_bytes()).hexdigest() == digests[name]
    result = tftp_hpa(server, "octet", "get", "undionly.kpxe", str(tmp_path / "hpa.kpxe"))
    assert result.returncode == 0 and "Error" not in result.stdout, result.stdout
    assert hashlib.sha256((tmp_path / "hpa.kpxe").read_bytes()).hexdigest() == digests["undionly.kpxe"]
    with RawClient(server.port) as client:
        got = client.get("/undionly.kpxe", options={"tsize": 0, "blksize": 1432, "windowsize": 4})
    assert int(got.oack["tsize"]) == (IPXE / "undionly.kpxe").stat().st_size
    assert hashlib.sha256(got.data).hexdigest() == digests["undionly.kpxe"]
