"""Read-only TFTP server that hands iPXE to plain PXE firmware.

Protocol: RFC 1350 read requests in `octet` and `netascii` mode, with the options of RFC 2347 (negotiation),
RFC 2348 (`blksize`), RFC 2349 (`timeout`, `tsize`) and RFC 7440 (`windowsize`). Write requests are refused.

Layers, top to bottom:
- `parse_request`, `negotiate`, `resolve`: pure functions over one request (easy to test and to fuzz);
- `_OctetBlocks`, `_NetasciiBlocks`: block N of a file, re-readable for retransmissions;
- `_Transfer`: one read transfer's state machine on its own UDP socket (its TID);
- `TFTPServer`: one background thread with one selector loop over the listening socket and every transfer socket.

Everything that arrives from the network is untrusted: malformed packets are counted and dropped, bad requests are
answered with a TFTP ERROR, and nothing a client sends can end the loop.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Opcodes (RFC 1350, RFC 2347).
RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
# Error codes (RFC 1350, RFC 2347).
ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_DISK_FULL, ERR_ILLEGAL_OP, ERR_UNKNOWN_TID = 0, 1, 2, 3, 4, 5
ERR_EXISTS, ERR_NO_USER, ERR_OPTIONS = 6, 7, 8

MAX_REQUEST = 512  # RFC 2347: a request packet (with its options) is at most 512 octets
DEFAULT_BLKSIZE = 512
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349
MIN_WINDOWSIZE, MAX_WINDOWSIZE = 1, 65535  # RFC 7440
MODES = ("octet", "netascii")

_RECV_SIZE = 65536  # larger than any UDP payload, so an oversized packet is seen whole and counted
_DRAIN = 64  # packets read from one socket per wake-up, so one busy client cannot starve the others
_DECIMAL = re.compile(rb"[0-9]{1,10}")

# Linux values; Python 3.11 does not export IP_PKTINFO.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

COUNTERS = (
    "requests",  # well-formed RRQs
    "transfers_started",
    "transfers_completed",
    "transfers_failed",  # gave up after retries, client sent ERROR during the data phase, or server stopped
    "timeouts",  # transfers given up after the retries
    "client_errors",  # transfers ended by an ERROR packet from the client during the data phase
    "ended_after_oack",  # client answered the OACK with ERROR: refused options, or a UEFI size probe (tsize)
    "retransmissions",  # DATA/OACK packets sent again after a timeout
    "duplicate_acks",  # ACKs for the block already acknowledged: ignored (no sorcerer's apprentice)
    "stray_acks",  # ACKs outside the window in flight: ignored
    "duplicate_requests",  # the same RRQ again from the same client TID while its transfer runs: ignored
    "unknown_tid",  # packets on a transfer port from another address: answered with ERROR 5
    "malformed",  # undecodable packets: dropped
    "refused_not_found",
    "refused_access",  # traversal, symlink out of the root, non-regular file, unreadable
    "refused_write",  # WRQ
    "refused_mode",  # mode other than octet/netascii
    "refused_busy",  # max_transfers reached
    "internal_errors",  # a bug or an unexpected OS error while handling one packet; the loop goes on
    "bytes_sent",  # payload bytes acknowledged by clients
)


class Malformed(Exception):
    """A packet that is not TFTP. Counted and dropped, never answered."""


class Refused(Exception):
    """A well-formed request that is answered with a TFTP ERROR."""

    def __init__(self, code: int, message: str, counter: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.counter = counter


@dataclass(frozen=True)
class Request:
    opcode: int  # RRQ or WRQ
    filename: bytes
    mode: str  # lower case
    options: dict[str, bytes] = field(default_factory=dict)  # lower-case name -> raw value, client order


def parse_request(packet: bytes) -> Request:
    """Decode an RRQ/WRQ: opcode, filename NUL, mode NUL, then option NUL value NUL pairs (RFC 2347).

    Raises Malformed for anything else. Trailing NUL padding after the last pair is tolerated; an option named twice
    keeps its first value.
    """
    if len(packet) > MAX_REQUEST:
        raise Malformed(f"oversized request ({len(packet)} bytes, limit {MAX_REQUEST})")
    if len(packet) < 2:
        raise Malformed(f"truncated packet ({len(packet)} bytes)")
    (opcode,) = struct.unpack("!H", packet[:2])
    if opcode not in (RRQ, WRQ):
        if opcode in (DATA, ACK, ERROR, OACK):
            raise Malformed(f"opcode {opcode} sent to the request port")
        raise Malformed(f"bad opcode {opcode}")
    body = packet[2:]
    if not body.endswith(b"\0"):
        raise Malformed("request does not end with NUL")
    fields = body[:-1].split(b"\0")
    if len(fields) < 2:
        raise Malformed("request has no mode")
    filename, mode_raw, rest = fields[0], fields[1], fields[2:]
    while rest and rest[-1] == b"":
        rest.pop()
    if len(rest) % 2:
        raise Malformed("option without a value")
    mode = mode_raw.decode("ascii", "replace").lower()  # a non-ASCII mode is an unsupported mode (ERROR 4)
    options: dict[str, bytes] = {}
    for index in range(0, len(rest), 2):
        name_raw, value = rest[index], rest[index + 1]
        if not name_raw:
            raise Malformed("empty option name")
        name = name_raw.decode("ascii", "replace").lower()
        options.setdefault(name, value)
    return Request(opcode, filename, mode, options)


def _decimal(value: bytes) -> int | None:
    return int(value) if _DECIMAL.fullmatch(value) else None


def negotiate(options: dict[str, bytes], size: Callable[[], int], *, max_blksize: int = MAX_BLKSIZE,
              max_windowsize: int = MAX_WINDOWSIZE) -> dict[str, int]:
    """The options the server accepts, in the client's order; these, and only these, go into the OACK.

    Unknown options and invalid values are ignored (RFC 2347). `blksize` above `max_blksize` and `windowsize` above
    `max_windowsize` are answered with the maximum, which RFC 2348 and RFC 7440 allow. `tsize` in a read request
    is answered with `size()`, the number of bytes the transfer will carry.
    """
    accepted: dict[str, int] = {}
    for name, raw in options.items():
        value = _decimal(raw)
        if value is None:
            continue
        if name == "blksize" and value >= MIN_BLKSIZE:
            accepted[name] = min(value, max_blksize)
        elif name == "timeout" and MIN_TIMEOUT <= value <= MAX_TIMEOUT:
            accepted[name] = value
        elif name == "tsize":
            accepted[name] = size()
        elif name == "windowsize" and MIN_WINDOWSIZE <= value <= MAX_WINDOWSIZE:
            accepted[name] = min(value, max_windowsize)
    return accepted


def resolve(root: str, filename: bytes) -> str:
    """The real path of `filename` inside `root` (itself a real path), or Refused.

    A leading `/` (one or more) is stripped, so `/undionly.kpxe` is `ROOT/undionly.kpxe`; empty and `.` components
    are dropped. Refused: `..` components, backslashes, control characters, names that are not UTF-8, and anything
    whose real path (after following symlinks) is outside the root.
    """
    if not filename:
        raise Refused(ERR_NOT_FOUND, "empty file name", "refused_not_found")
    try:
        name = filename.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(ERR_ACCESS, "file name is not UTF-8", "refused_access") from None
    if "\\" in name:
        raise Refused(ERR_ACCESS, "backslash in file name", "refused_access")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise Refused(ERR_ACCESS, "control character in file name", "refused_access")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise Refused(ERR_ACCESS, "'..' in file name", "refused_access")
    if not parts:
        raise Refused(ERR_NOT_FOUND, "file name names the root directory", "refused_not_found")
    real = os.path.realpath(os.path.join(root, *parts))
    if real != root and os.path.commonpath([real, root]) == root:
        return real
    raise Refused(ERR_ACCESS, "path leads outside the served directory", "refused_access")


def open_file(path: str) -> int:
    """Open a resolved path for reading: a regular file only, never blocking (FIFOs), never a swapped-in symlink."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise Refused(ERR_NOT_FOUND, "file not found", "refused_not_found") from None
    except OSError as exc:
        raise Refused(ERR_ACCESS, f"cannot open: {exc.strerror}", "refused_access") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(ERR_ACCESS, "not a regular file", "refused_access")
    return fd


def netascii(data: bytes) -> bytes:
    """RFC 1350/RFC 764 netascii: LF becomes CR LF, CR becomes CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def netascii_size(fd: int) -> int:
    """Bytes a netascii transfer of the file carries: every CR and every LF adds one."""
    total, offset = 0, 0
    while chunk := os.pread(fd, 1 << 20, offset):
        offset += len(chunk)
        total += len(chunk) + chunk.count(b"\r") + chunk.count(b"\n")
    return total


class _OctetBlocks:
    def __init__(self, fd: int, blksize: int):
        self.fd, self.blksize = fd, blksize

    def block(self, number: int) -> bytes:  # absolute block number, 1-based
        return os.pread(self.fd, self.blksize, (number - 1) * self.blksize)

    def forget_before(self, number: int) -> None:
        pass


class _NetasciiBlocks:
    """Netascii converted on the fly. A mark per block (file offset, pending byte of a CR LF / CR NUL pair cut by the
    block boundary) lets any block of the window in flight be produced again for a retransmission."""

    def __init__(self, fd: int, blksize: int):
        self.fd, self.blksize = fd, blksize
        self.marks: dict[int, tuple[int, bytes]] = {1: (0, b"")}

    def block(self, number: int) -> bytes:
        offset, carry = self.marks[number]
        need = self.blksize - len(carry)
        raw = os.pread(self.fd, need, offset)  # every input byte gives at least one output byte
        out = netascii(raw)
        if len(out) <= need:
            self.marks[number + 1] = (offset + len(raw), b"")
            return carry + out
        prefix = out[:need]
        # Each CR in the converted text starts a two-byte pair; a CR at the very end is a pair cut in half.
        split = prefix.endswith(b"\r")
        consumed = need - (prefix.count(b"\r") - split)
        self.marks[number + 1] = (offset + consumed, out[need:need + 1] if split else b"")
        return carry + prefix

    def forget_before(self, number: int) -> None:
        for old in [n for n in self.marks if n < number]:
            del self.marks[old]


def _packet(opcode: int, *fields: bytes) -> bytes:
    return struct.pack("!H", opcode) + b"".join(fields)


def error_packet(code: int, message: str) -> bytes:
    return _packet(ERROR, struct.pack("!H", code), message.encode("ascii", "replace"), b"\0")


def _peer(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _quoted(raw: bytes, limit: int = 120) -> str:
    """Bytes from the network, safe for a log line: printable ASCII as is, everything else escaped."""
    text = repr(raw[:limit])[2:-1].replace('"', '\\"')
    return f'"{text}"' + ("..." if len(raw) > limit else "")


class _Transfer:
    """One read transfer on its own socket. Block numbers are absolute here (1, 2, ... past 65535); the wire carries
    them modulo 65536, so block 65536 goes out as 0 (rollover)."""

    def __init__(self, server: TFTPServer, sock: socket.socket, client: tuple, request: Request, packet: bytes,
                 fd: int, accepted: dict[str, int]):
        self.server, self.sock, self.client, self.request, self.fd = server, sock, client, request, fd
        self.accepted = accepted
        self.blksize = accepted.get("blksize", DEFAULT_BLKSIZE)
        self.windowsize = accepted.get("windowsize", 1)
        self.timeout = float(accepted["timeout"]) if "timeout" in accepted else server.timeout
        blocks = _NetasciiBlocks if request.mode == "netascii" else _OctetBlocks
        self.blocks = blocks(fd, self.blksize)
        self.oack = (_packet(OACK, *(f"{k}\0{v}\0".encode() for k, v in accepted.items()))
                     if accepted else None)
        self.awaiting_oack_ack = self.oack is not None
        self.acked = 0  # highest block acknowledged
        self.sent = 0  # highest block sent
        self.last: int | None = None  # the final (short) block, once it has been read
        self.last_length = 0
        self.tries = 0  # timeouts since the last progress
        self.retransmissions = 0
        self.deadline = 0.0
        self.key = (client, packet)  # the same request again from the same TID is a duplicate

    # -- sending -------------------------------------------------------------------------------------------------
    def send(self, packet: bytes) -> None:
        try:
            self.sock.sendto(packet, self.client)
        except OSError:
            pass  # a full buffer or an unreachable client is a lost packet; the timeout resends it

    def begin(self, now: float) -> None:
        if self.oack is not None:
            self.send(self.oack)
            self.deadline = now + self.timeout
        else:
            self.send_window(now)

    def send_window(self, now: float) -> None:
        """Send blocks acked+1 ... acked+windowsize (fewer at the end of the file)."""
        number = self.acked
        while number < self.acked + self.windowsize and (self.last is None or number < self.last):
            number += 1
            data = self.blocks.block(number)
            if len(data) < self.blksize:
                self.last, self.last_length = number, len(data)
            self.send(_packet(DATA, struct.pack("!H", number & 0xFFFF), data))
        self.sent = max(self.sent, number)
        self.deadline = now + self.timeout

    # -- receiving -----------------------------------------------------------------------------------------------
    def on_packet(self, packet: bytes, now: float) -> str | None:
        """Handle one packet from the client's TID; returns a result when the transfer is over."""
        opcode = struct.unpack("!H", packet[:2])[0] if len(packet) >= 2 else None
        if opcode == ERROR and len(packet) >= 4:
            code = struct.unpack("!H", packet[2:4])[0]
            message = packet[4:].split(b"\0", 1)[0]
            if self.awaiting_oack_ack:
                # EDK II asks for tsize, reads it from the OACK and aborts with ERROR 8 before fetching for real.
                self.server._count("ended_after_oack")
                return f"ended-after-oack code={code} message={_quoted(message, 80)}"
            self.server._count("client_errors")
            return f"client-error code={code} message={_quoted(message, 80)}"
        if opcode != ACK or len(packet) < 4:
            self.server._malformed(self.client, "expected ACK or ERROR on the transfer port", packet)
            return None
        wire = struct.unpack("!H", packet[2:4])[0]
        if self.awaiting_oack_ack:
            if wire != 0:
                self.server._count("stray_acks")
                return None
            self.awaiting_oack_ack = False
            self.tries = 0
            self.send_window(now)
            return None
        delta = (wire - self.acked) & 0xFFFF
        if delta == 0:
            self.server._count("duplicate_acks")
            return None
        if delta > self.sent - self.acked:
            self.server._count("stray_acks")
            return None
        self.acked += delta
        self.tries = 0
        self.blocks.forget_before(self.acked + 1)
        if self.last is not None and self.acked == self.last:
            return "ok"
        # A whole window acknowledged: the next one. An ACK inside the window (RFC 7440: the client missed the
        # block after it): the window starts again right after it.
        self.send_window(now)
        return None

    def on_timeout(self, now: float) -> str | None:
        if self.tries >= self.server.retries:
            self.server._count("timeouts")
            self.send(error_packet(ERR_UNDEFINED, "timed out waiting for ACK"))
            return f"timeout after {self.tries} retransmissions"
        self.tries += 1
        self.retransmissions += 1
        self.server._count("retransmissions")
        if self.awaiting_oack_ack:
            self.send(self.oack)
            self.deadline = now + self.timeout
        else:
            self.send_window(now)
        return None

    def bytes_done(self) -> int:
        if self.last is not None and self.acked == self.last:
            return (self.last - 1) * self.blksize + self.last_length
        return self.acked * self.blksize

    def close(self) -> None:
        for closer in (self.sock.close, lambda: os.close(self.fd)):
            try:
                closer()
            except OSError:
                pass


class _Limiter:
    """At most `burst` log lines, then one per `interval` seconds; reports how many were suppressed."""

    def __init__(self, burst: int = 10, interval: float = 1.0):
        self.burst, self.interval = burst, interval
        self.allowance, self.last, self.suppressed = float(burst), time.monotonic(), 0

    def allow(self) -> tuple[bool, int]:
        now = time.monotonic()
        self.allowance = min(float(self.burst), self.allowance + (now - self.last) / self.interval)
        self.last = now
        if self.allowance >= 1.0:
            self.allowance -= 1.0
            suppressed, self.suppressed = self.suppressed, 0
            return True, suppressed
        self.suppressed += 1
        return False, 0


class TFTPServer:
    """Read-only TFTP server over the files in `root`.

    `start()` binds `host:port` (port 0 picks a free one; `.port` tells which) and runs the service in a background
    thread; `stop()` ends every transfer and the thread. Each transfer gets its own socket, bound to the address the
    request arrived on. `timeout` (seconds) and `retries` apply when the client does not negotiate `timeout`; after
    `retries` retransmissions without progress a transfer is given up and its socket closed. At most `max_transfers`
    run at once; more requests are answered with ERROR 0 "server busy".
    """

    def __init__(self, root: str | os.PathLike, host: str, port: int = 69, *, timeout: float = 1.0,
                 retries: int = 5, max_transfers: int = 64, max_blksize: int = MAX_BLKSIZE,
                 max_windowsize: int = 64):
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"TFTP root {root} is not a directory")
        if not MIN_BLKSIZE <= max_blksize <= MAX_BLKSIZE:
            raise ValueError(f"max_blksize must be within {MIN_BLKSIZE}..{MAX_BLKSIZE}")
        if not MIN_WINDOWSIZE <= max_windowsize <= MAX_WINDOWSIZE:
            raise ValueError(f"max_windowsize must be within {MIN_WINDOWSIZE}..{MAX_WINDOWSIZE}")
        if timeout <= 0 or retries < 0 or max_transfers < 1:
            raise ValueError("timeout must be positive, retries at least 0, max_transfers at least 1")
        self.host, self.port = host, port
        self.timeout, self.retries, self.max_transfers = timeout, retries, max_transfers
        self.max_blksize, self.max_windowsize = max_blksize, max_windowsize
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()
        self._transfers: dict[tuple, _Transfer] = {}
        self._limiter = _Limiter()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._wake_r = self._wake_w = None
        self._selector: selectors.BaseSelector | None = None
        self._pktinfo = False

    # -- public --------------------------------------------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    @property
    def active_transfers(self) -> int:
        with self._lock:
            return len(self._transfers)

    def start(self) -> TFTPServer:
        if self._thread is not None:
            raise RuntimeError("TFTP server already started")
        family = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_DGRAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.bind((self.host or "::", self.port, 0, 0))
            else:
                sock.bind((self.host or "0.0.0.0", self.port))
            self._pktinfo = self._enable_pktinfo(sock, family)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock, self._family = sock, family
        self.port = sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"tftp-{self.port}", daemon=True)
        self._thread.start()
        log.info("tftp listening address=%s root=%s", _peer((self.host or "*", self.port)), self.root)
        return self

    def stop(self) -> None:
        """End every transfer (clients get ERROR 0), close every socket, join the thread. Safe to call twice."""
        thread = self._thread
        if thread is None or self._stopping.is_set():
            if thread is not None:
                thread.join()
            return
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        thread.join()

    def __enter__(self) -> TFTPServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- loop ----------------------------------------------------------------------------------------------------
    def _enable_pktinfo(self, sock: socket.socket, family: int) -> bool:
        """On a wildcard address, learn the local address of each request so its transfer answers from it."""
        if not sys.platform.startswith("linux"):
            return False
        wildcard = sock.getsockname()[0] in ("0.0.0.0", "::")
        if not wildcard:
            return False
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        return True

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                events = self._selector.select(self._next_wait())
                for key, _ in events:
                    if key.data == "listen":
                        self._drain_listener()
                    elif key.data == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                    else:
                        self._drain_transfer(key.data)
                self._expire(time.monotonic())
        finally:
            self._shutdown()

    def _next_wait(self) -> float:
        with self._lock:
            deadlines = [t.deadline for t in self._transfers.values()]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - time.monotonic()))

    def _expire(self, now: float) -> None:
        with self._lock:
            due = [t for t in self._transfers.values() if t.deadline <= now]
        for transfer in due:
            try:
                result = transfer.on_timeout(now)
            except Exception:
                log.exception("tftp internal error client=%s file=%s", _peer(transfer.client),
                              _quoted(transfer.request.filename))
                self._count("internal_errors")
                result = "internal-error"
            if result is not None:
                self._finish(transfer, result)

    def _shutdown(self) -> None:
        with self._lock:
            transfers = list(self._transfers.values())
        for transfer in transfers:
            transfer.send(error_packet(ERR_UNDEFINED, "server shutting down"))
            self._finish(transfer, "aborted: server stopping")
        for closable in (self._selector, self._sock, self._wake_r, self._wake_w):
            try:
                closable.close()
            except OSError:
                pass
        log.info("tftp stopped address=%s", _peer((self.host or "*", self.port)))

    def _recv(self) -> tuple[bytes, tuple, str | None]:
        """One datagram from the listening socket, with the local address it was sent to (wildcard binds only)."""
        if not self._pktinfo:
            data, client = self._sock.recvfrom(_RECV_SIZE)
            return data, client, None
        data, ancillary, _, client = self._sock.recvmsg(_RECV_SIZE, socket.CMSG_SPACE(20))
        local = None
        for level, kind, payload in ancillary:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= 12:
                local = socket.inet_ntop(socket.AF_INET, payload[4:8])  # ipi_spec_dst
            elif level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(payload) >= 20:
                local = socket.inet_ntop(socket.AF_INET6, payload[:16])
        return data, client, local

    def _drain_listener(self) -> None:
        for _ in range(_DRAIN):
            try:
                packet, client, local = self._recv()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. an ICMP error queued on the socket; nothing to do with it
            try:
                self._on_request(packet, client, local)
            except Exception:
                log.exception("tftp internal error client=%s request=%s", _peer(client), _quoted(packet, 64))
                self._count("internal_errors")

    def _drain_transfer(self, transfer: _Transfer) -> None:
        for _ in range(_DRAIN):
            if transfer.key not in self._transfers:
                return
            try:
                packet, sender = transfer.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ICMP port unreachable from a vanished client: the timeout handles it
            now = time.monotonic()
            if sender[:2] != transfer.client[:2]:
                self._count("unknown_tid")
                self._log_limited(logging.WARNING, "tftp packet from unknown TID client=%s transfer=%s file=%s "
                                  "request=%s", _peer(sender), _peer(transfer.client),
                                  _quoted(transfer.request.filename), _quoted(packet, 32))
                try:
                    transfer.sock.sendto(error_packet(ERR_UNKNOWN_TID, "unknown transfer ID"), sender)
                except OSError:
                    pass
                continue
            try:
                result = transfer.on_packet(packet, now)
            except Exception:
                log.exception("tftp internal error client=%s file=%s request=%s", _peer(sender),
                              _quoted(transfer.request.filename), _quoted(packet, 32))
                self._count("internal_errors")
                result = "internal-error"
            if result is not None:
                self._finish(transfer, result)
                return

    # -- requests ------------------------------------------------------------------------------------------------
    def _on_request(self, packet: bytes, client: tuple, local: str | None) -> None:
        if client[1] == 0:
            self._malformed(client, "source port 0", packet)
            return
        try:
            request = parse_request(packet)
        except Malformed as exc:
            self._malformed(client, str(exc), packet)
            return
        if request.opcode == WRQ:
            self._refuse(client, local, request, Refused(ERR_ACCESS, "write requests are not accepted",
                                                         "refused_write"))
            return
        self._count("requests")
        if (client, packet) in self._transfers:
            self._count("duplicate_requests")
            return
        fd = None
        try:
            if request.mode not in MODES:
                raise Refused(ERR_ILLEGAL_OP, f"unsupported mode {request.mode!r}", "refused_mode")
            if len(self._transfers) >= self.max_transfers:
                raise Refused(ERR_UNDEFINED, "server busy, try again later", "refused_busy")
            fd = open_file(resolve(self.root, request.filename))
            if request.mode == "netascii":
                accepted = negotiate(request.options, lambda: netascii_size(fd), max_blksize=self.max_blksize,
                                     max_windowsize=self.max_windowsize)
            else:
                accepted = negotiate(request.options, lambda: os.fstat(fd).st_size,
                                     max_blksize=self.max_blksize, max_windowsize=self.max_windowsize)
        except Refused as refusal:
            if fd is not None:
                os.close(fd)
            self._refuse(client, local, request, refusal)
            return
        try:
            sock = self._transfer_socket(local)
        except OSError as exc:
            os.close(fd)
            self._refuse(client, local, request, Refused(ERR_UNDEFINED, "cannot open a transfer socket",
                                                         "internal_errors"))
            log.error("tftp cannot open a transfer socket client=%s error=%s", _peer(client), exc)
            return
        transfer = _Transfer(self, sock, client, request, packet, fd, accepted)
        with self._lock:
            self._transfers[transfer.key] = transfer
            self._counters["transfers_started"] += 1
        self._selector.register(sock, selectors.EVENT_READ, transfer)
        transfer.begin(time.monotonic())

    def _transfer_socket(self, local: str | None) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            address = local or self._sock.getsockname()[0]
            sock.bind((address, 0, 0, 0) if self._family == socket.AF_INET6 else (address, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _refuse(self, client: tuple, local: str | None, request: Request, refusal: Refused) -> None:
        """Answer a request with ERROR from a fresh TID, and log it."""
        self._count(refusal.counter)
        kind = "WRQ" if request.opcode == WRQ else "RRQ"
        level = logging.INFO if refusal.code == ERR_NOT_FOUND else logging.WARNING
        self._log_limited(level, "tftp request refused client=%s request=%s file=%s mode=%s result=error-%d "
                          "reason=%s", _peer(client), kind, _quoted(request.filename), _quoted(request.mode.encode()),
                          refusal.code, _quoted(refusal.message.encode()),
                          extra={"tftp": {"client": _peer(client), "request": kind,
                                          "file": repr(request.filename)[2:-1], "bytes": 0,
                                          "result": f"error-{refusal.code}", "reason": refusal.message}})
        try:
            with self._transfer_socket(local) as sock:
                sock.sendto(error_packet(refusal.code, refusal.message), client)
        except OSError:
            pass

    def _finish(self, transfer: _Transfer, result: str) -> None:
        with self._lock:
            if self._transfers.pop(transfer.key, None) is None:
                return
            ok = result == "ok"
            benign = result.startswith("ended-after-oack")
            if not benign:
                self._counters["transfers_completed" if ok else "transfers_failed"] += 1
            self._counters["bytes_sent"] += transfer.bytes_done()
        try:
            self._selector.unregister(transfer.sock)
        except (KeyError, ValueError):
            pass
        transfer.close()
        options = ",".join(f"{k}={v}" for k, v in transfer.accepted.items()) or "-"
        record = {"client": _peer(transfer.client), "file": repr(transfer.request.filename)[2:-1],
                  "mode": transfer.request.mode, "options": dict(transfer.accepted), "bytes": transfer.bytes_done(),
                  "blocks": transfer.acked, "retransmissions": transfer.retransmissions, "result": result}
        log.log(logging.INFO if ok or benign else logging.WARNING,
                "tftp transfer client=%s file=%s mode=%s options=%s bytes=%d blocks=%d retransmissions=%d result=%s",
                record["client"], _quoted(transfer.request.filename), transfer.request.mode, options,
                record["bytes"], record["blocks"], record["retransmissions"], result, extra={"tftp": record})

    # -- accounting ----------------------------------------------------------------------------------------------
    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def _malformed(self, client: tuple, reason: str, packet: bytes) -> None:
        self._count("malformed")
        self._log_limited(logging.WARNING, "tftp malformed packet dropped client=%s reason=%s request=%s",
                          _peer(client), _quoted(reason.encode()), _quoted(packet, 48))

    def _log_limited(self, level: int, message: str, *args, extra: dict | None = None) -> None:
        """Log lines a client can provoke at will go through a rate limit, so a flood cannot fill the disk."""
        if not log.isEnabledFor(level):
            return
        allowed, suppressed = self._limiter.allow()
        if allowed:
            if suppressed:
                message += f" (suppressed {suppressed} similar lines)"
            log.log(level, message, *args, extra=extra)
