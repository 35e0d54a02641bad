"""The HTTP boot service: iPXE scripts, each machine's own config, and the boot files, on one HTTP/1.1 listener.

Layers, as in Matchbox: the store (store.py) answers "which group and profile for these labels", the routes
(routes.py) answer each endpoint with a handler that takes a request and returns a response, the scripts (ipxe.py)
are rendered from templates, and this module, the transport, speaks HTTP. The protocol part is deliberately small: GET and
HEAD, keep-alive, single byte ranges, and one POST (a machine's report) with a small body of known length. One thread
serves one connection; every socket operation has a deadline, so a stalled client only ever holds its own thread.

Every request is untrusted input. What is malformed is answered with a 4xx status, counted and logged as one JSON
line naming the client, what was wrong and the request; the connection is closed when the request could not be
framed. Config contents are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote_to_bytes

from .logs import redact_tokens
from .machines import MachineRegistry
from .messages import HttpError, Request, Response, error_response, truncate
from .routes import BootService
from .store import Store
from .tls import ServerIdentity

log = logging.getLogger("stellwerk.netboot.http")
# Security events (a refused token, a second delivery attempt) go to their own logger, so they can be routed apart.
security_log = logging.getLogger("stellwerk.netboot.security")

MAX_REQUEST_LINE = 8192  # bytes, without the line end; longer: 414
MAX_HEADER_BYTES = 8192  # bytes of header lines after the request line; more: 431
MAX_HEADERS = 64  # header lines; more: 431
_BYTE_COUNT = re.compile(r"[0-9]{1,18}")
MAX_BODY = 16384  # bytes; only POST /report carries a body (a machine's failure log)
LINGER_SECONDS = 2.0  # after an answer that closes the connection, how long to drain what the client still sends
LINGER_BYTES = 1 << 20

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_METHOD = re.compile(r"[A-Z]+")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PUBLIC_URL = re.compile(r"https?://[\x21-\x7e]+")
_SINGLE_HEADERS = {"host", "range", "if-range", "content-length"}


class _Closed(Exception):
    """The connection ended without a request to answer (clean close, or idle keep-alive timeout)."""


class BootServer:
    """The HTTP boot service of one assets directory.

    `host`/`port` is the listener (port 0 picks a free port, see `.port`). `public_url` is the base URL written into
    iPXE scripts and kernel arguments (for example http://10.0.0.2:8080 behind a port forward); without it each
    script names the local address the machine connected to. `request_timeout` bounds the time a request head may
    take to arrive once it has started and the time any send may stall; `idle_timeout` closes keep-alive
    connections that send nothing more. At most `max_connections` connections are served at once; more are answered
    503 and closed.

    With `tls` (the server's HTTPS identity) a second listener on `tls_port` (0: a free one) serves /secrets, and `machines` keeps
    the one-time tokens: the public part of a node's config goes out over HTTP, the secret part only once over
    HTTPS. Without them a config that holds secrets is refused.
    """

    def __init__(self, store: Store, assets_dir: str | Path, host: str, port: int,
                 public_url: str | None = None, *, request_timeout: float = 10.0, idle_timeout: float = 10.0,
                 max_connections: int = 256, serve_controller_secrets: bool = False,
                 tls: ServerIdentity | None = None, tls_port: int = 0, machines: MachineRegistry | None = None,
                 extra_merges: tuple[str, ...] = ()):
        if public_url is not None:
            public_url = public_url.rstrip("/")
            if not _PUBLIC_URL.fullmatch(public_url) or "${" in public_url or "?" in public_url or "#" in public_url:
                raise ValueError(f"public URL {public_url!r} must be http://HOST[:PORT][/PATH] without spaces, "
                                 "query or fragment")
        if request_timeout <= 0 or idle_timeout <= 0 or max_connections < 1:
            raise ValueError("timeouts must be positive and max_connections at least 1")
        self.tls = tls
        self.machines = machines
        for url in extra_merges:
            if not _PUBLIC_URL.fullmatch(url) or "\"" in url:
                raise ValueError(f"merge URL {url!r} must be an http:// or https:// URL without spaces")
        self.assets_dir = Path(assets_dir)
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._stopping = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Listener(self, (host, port), family)
        self.host, self.port = self._server.server_address[:2]
        self._tls_server: _Listener | None = None
        self._tls_thread: threading.Thread | None = None
        self.tls_port: int | None = None
        if tls is not None:
            try:
                self._tls_server = _Listener(self, (host, tls_port), family, secure=True)
            except BaseException as exc:
                self._server.server_close()
                exc.listener = "https"  # type: ignore[attr-defined]  # so the caller names the right option
                raise
            self.tls_port = self._tls_server.server_address[1]
        self.service = BootService(store, self.assets_dir, public_url=public_url, http_port=self.port, tls=tls,
                                   tls_port=self.tls_port, machines=machines,
                                   serve_controller_secrets=serve_controller_secrets, extra_merges=tuple(extra_merges),
                                   count=self._count, security=self._security)

    # -- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> BootServer:
        """Serve in a background thread; returns at once."""
        if self._thread is None:
            self._serving.set()  # before the thread runs, so that an early stop() still shuts it down
            self._thread = threading.Thread(target=self.serve_forever, name="netboot-http", daemon=True)
            self._thread.start()
        if self._tls_server is not None and self._tls_thread is None:
            self._tls_thread = threading.Thread(target=self._tls_server.serve_forever, kwargs={"poll_interval": 0.2},
                                                name="netboot-https", daemon=True)
            self._tls_thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until `stop()` is called from another one."""
        self._serving.set()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving.clear()

    def stop(self) -> None:
        """Stop accepting, close the listener and every open connection, and wait for the serving thread."""
        self._stopping = True
        if self._serving.is_set():
            self._server.shutdown()
        self._server.server_close()
        if self._tls_server is not None:
            if self._tls_thread is not None:
                self._tls_server.shutdown()
            self._tls_server.server_close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in (self._thread, self._tls_thread):
            if thread is not None:
                thread.join(timeout=5)

    def __enter__(self) -> BootServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def store(self) -> Store:
        return self.service.store

    def reload(self) -> Store:
        """Load the store from the assets directory again and swap it in; on a StoreError the old one stays."""
        self.service.store = Store.load(self.assets_dir)
        return self.service.store

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters: requests, status_<code>, bad_requests, refused_paths, timeouts,
        disconnects, unknown_machines, rejected_connections, bytes_sent, sendfile_bytes."""
        with self._lock:
            return dict(self._counters)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    # -- connections --------------------------------------------------------------------------------------------

    def _admit(self, sock: socket.socket, client: str) -> bool:
        if self._slots.acquire(blocking=False):
            with self._lock:
                self._connections.add(sock)
            return True
        # Over the limit: answer without waiting (the accepting thread must never block) and close.
        self._count("rejected_connections")
        body = b"503 Service Unavailable: too many connections; retry later\n"
        try:
            sock.setblocking(False)
            sock.send(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                      b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self._log(logging.WARNING, client, None, 503, 0, error="too many connections; connection refused")
        return False

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)
        self._slots.release()

    def _security(self, client: str, request: Request, event: str, node: str | None) -> None:
        self._count("security_events")
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  "security": event, "client": client, "endpoint": request.path, "node": node}
        security_log.warning(json.dumps(record))

    def _serve_connection(self, sock: socket.socket, address: tuple, secure: bool = False) -> None:
        client = _client(address)
        if not secure:
            _Connection(self, sock, client).run()
            return
        assert self.tls is not None
        try:
            sock.settimeout(self.request_timeout)  # a client that stalls the handshake holds only its own thread
            secure_sock = self.tls.context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self._count("tls_failures")
            self._log(logging.WARNING, client, None, None, 0, error=f"TLS handshake failed: {exc}")
            return
        with self._lock:
            self._connections.discard(sock)  # wrap_socket took over the descriptor
            self._connections.add(secure_sock)
        try:
            _Connection(self, secure_sock, client).run()
        finally:
            with self._lock:
                self._connections.discard(secure_sock)
            try:
                secure_sock.close()
            except OSError:
                pass

    # -- requests -----------------------------------------------------------------------------------------------

    def _respond(self, request: Request, sock: socket.socket) -> Response:
        """Tell the request where it came from, then let the routes answer it."""
        _parse_target(request)
        request.peer = _peer(sock)
        request.client = _client(sock.getpeername())
        host = sock.getsockname()[0].split("%", 1)[0]
        request.local_host = host[len("::ffff:"):] if host.startswith("::ffff:") and "." in host else host
        request.secure = isinstance(sock, ssl.SSLSocket)
        return self.service.handle(request)

    # -- responses and logs -------------------------------------------------------------------------------------

    def _send(self, sock: socket.socket, request: Request, response: Response) -> tuple[int, str | None]:
        """Send the response; (body bytes sent, what went wrong or None)."""
        length = response.length if response.length is not None else len(response.body)
        close = response.close or not request.keep_alive
        lines = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
                 f"Date: {formatdate(usegmt=True)}",
                 "Server: stellwerk-netboot",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {length}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if response.file is None:
            lines.append("Cache-Control: no-store")  # configs hold secrets; scripts are per machine
        if close:
            lines.append("Connection: close")
        elif request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        with_body = request.method != "HEAD"
        sent = 0
        try:
            sock.settimeout(self.request_timeout)
            if response.file is None:
                if with_body and len(response.body) > 16384 and not isinstance(sock, ssl.SSLSocket):
                    _send_vectored(sock, head, response.body)  # a large config: no copy to glue head and body
                else:
                    sock.sendall(head + response.body if with_body else head)
                sent = len(response.body) if with_body else 0
            else:
                fd, offset, count = response.file
                if not with_body or count == 0:
                    sock.sendall(head)
                else:
                    sock.sendall(head, socket.MSG_MORE)
                    with os.fdopen(fd, "rb", buffering=0, closefd=False) as file:
                        sent = sock.sendfile(file, offset, count)
                    self._count("sendfile_bytes", sent)
                    if sent < count:
                        return sent, f"the file shrank while it was sent ({sent} of {count} bytes)"
            return sent, None
        except TimeoutError:
            self._count("timeouts")
            return sent, f"client stalled for {self.request_timeout:g} s while receiving; connection closed"
        except OSError as exc:
            self._count("disconnects")
            return sent, f"connection lost while sending: {exc.strerror or exc}"
        finally:
            self._count("bytes_sent", sent)
            if response.file is not None:
                os.close(response.file[0])

    def _log(self, level: int, client: str, request: Request | None, status: int | None, sent: int, *,
             response: Response | None = None, error: str | None = None, request_line: str | None = None) -> None:
        """One JSON line per request. Error lines also say what was wrong and quote the request line."""
        if not log.isEnabledFor(level):
            return
        record: dict[str, object] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "client": client,
            "method": request.method if request else None,
            "endpoint": truncate(request.path or request.target) if request else None,
            "mac": response.mac if response else None,
            "group": response.group if response else None,
            "status": status,
            "bytes": sent,
        }
        error = error or (response.error if response else None)
        if error or (status or 0) >= 400:
            record["error"] = error
            record["request"] = redact_tokens(request.line if request else request_line)
        log.log(level, json.dumps(record))


class _Connection:
    """One client connection: read a request head, answer it, repeat while keep-alive allows."""

    def __init__(self, boot: BootServer, sock: socket.socket, client: str):
        self.boot, self.sock, self.client = boot, sock, client
        self.buffer = b""  # received bytes not yet consumed (a partial head, or pipelined requests)

    def run(self) -> None:
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._serve()
        except Exception as exc:  # a bug: log it on one line and drop this connection, never the server
            self.boot._count("server_errors")
            self.boot._log(logging.ERROR, self.client, None, None, 0, error=f"internal error: {type(exc).__name__}: "
                           f"{exc}; connection closed", request_line=_first_line(self.buffer))
            log.debug("internal error on a connection from %s", self.client, exc_info=True)

    def _serve(self) -> None:
        boot = self.boot
        while not boot._stopping:
            request: Request | None = None
            try:
                head = self._read_head()
                request = _parse_head(head)
                request.body = self._read_body(request.length)
                response = boot._respond(request, self.sock)
            except _Closed:
                return
            except HttpError as exc:
                boot._count(exc.counter)
                if exc.status == HTTPStatus.REQUEST_TIMEOUT:
                    boot._count("timeouts")
                response = error_response(exc)
                if request is None:  # the request could not be framed: answer, then close
                    response.close = True
                    request = _unparsed(self.buffer)
            except OSError as exc:  # reset by the client while we read
                boot._count("disconnects")
                boot._log(logging.WARNING, self.client, None, None, 0, error=f"connection lost while reading: {exc}",
                          request_line=_first_line(self.buffer))
                return
            boot._count("requests")
            sent, failure = boot._send(self.sock, request, response)
            boot._count(f"status_{response.status}")
            if failure:
                response.error = f"{response.error}; {failure}" if response.error else failure
            if response.status >= 500:
                level = logging.ERROR
            elif response.status >= 400 or failure:
                level = logging.WARNING
            else:
                level = logging.INFO
            boot._log(level, self.client, request, response.status, sent, response=response)
            if failure:
                return
            if response.close or not request.keep_alive:
                self._linger()
                return

    def _linger(self) -> None:
        """Close our side gracefully: send FIN, then read and drop what the client still sends, briefly.

        Closing a socket with unread input makes the kernel send a reset, and a reset can destroy the response
        before the client has read it (an error answer to a client that is still sending, above all).
        """
        deadline = time.monotonic() + min(self.boot.request_timeout, LINGER_SECONDS)
        drained = 0
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    return
                drained += len(data)
        except OSError:  # reset, timeout: nothing more to do
            return

    def _read_body(self, length: int) -> bytes:
        """The `length` bytes that follow the head, within the request deadline."""
        deadline = time.monotonic() + self.boot.request_timeout
        while len(self.buffer) < length:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise HttpError(HTTPStatus.REQUEST_TIMEOUT, f"request body not complete within "
                                f"{self.boot.request_timeout:g} s", close=True)
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise HttpError(HTTPStatus.BAD_REQUEST, "client closed the connection in the middle of a request "
                                "body", close=True)
            self.buffer += data
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def _read_head(self) -> bytes:
        """The next request head (request line and headers, up to the empty line); the rest stays buffered."""
        boot, deadline = self.boot, None
        while True:
            self.buffer = buffer = self.buffer.lstrip(b"\r\n")  # empty lines before a request are ignored (RFC 9112)
            if buffer and deadline is None:
                deadline = time.monotonic() + boot.request_timeout
            line_end = buffer.find(b"\n")
            line_length = (line_end - (buffer[line_end - 1:line_end] == b"\r")) if line_end >= 0 else len(buffer)
            if line_length > MAX_REQUEST_LINE:
                raise HttpError(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line longer than {MAX_REQUEST_LINE} bytes",
                                close=True)
            if line_end >= 0:
                ends = [i for i in (buffer.find(b"\n\r\n", line_end), buffer.find(b"\n\n", line_end)) if i >= 0]
                end = -1
                if ends:
                    first = min(ends)
                    end = first + (3 if buffer[first + 1:first + 2] == b"\r" else 2)
                if (end if end >= 0 else len(buffer)) - line_end - 1 > MAX_HEADER_BYTES + 2:
                    raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                    f"header section larger than {MAX_HEADER_BYTES} bytes", close=True)
                if end >= 0:
                    self.buffer = buffer[end:]
                    return buffer[:end]
            wait = boot.idle_timeout if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                raise HttpError(HTTPStatus.REQUEST_TIMEOUT,
                                f"request head not complete within {boot.request_timeout:g} s", close=True)
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if deadline is None:
                    raise _Closed() from None  # an idle keep-alive connection: close quietly
                raise HttpError(HTTPStatus.REQUEST_TIMEOUT,
                                f"request head not complete within {boot.request_timeout:g} s", close=True) from None
            if not data:
                if buffer:
                    boot._count("disconnects")
                    boot._log(logging.WARNING, self.client, None, None, 0,
                              error="client closed the connection in the middle of a request head",
                              request_line=_first_line(buffer))
                raise _Closed()
            self.buffer += data


class _Listener(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, boot: BootServer, address: tuple[str, int], family: int, secure: bool = False):
        self.address_family = family
        self.boot = boot
        self.secure = secure
        super().__init__(address, _Handler)

    def verify_request(self, request: socket.socket, client_address: tuple) -> bool:
        return self.boot._admit(request, _client(client_address))


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.boot._serve_connection(self.request, self.client_address, self.server.secure)

    def finish(self) -> None:
        self.server.boot._release(self.request)


# -- parsing ------------------------------------------------------------------------------------------------------

def _parse_head(head: bytes) -> Request:
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    try:
        line = lines[0].decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "request line is not ASCII", close=True) from None
    parts = line.split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line; expected METHOD TARGET HTTP/1.1", close=True)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"{version} is not supported; use HTTP/1.1", close=True)
    headers: dict[str, str] = {}
    count = 0
    for raw in lines[1:]:
        if not raw:
            continue
        count += 1
        if count > MAX_HEADERS:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_HEADERS} header lines",
                            close=True)
        if raw[:1] in (b" ", b"\t"):
            raise HttpError(HTTPStatus.BAD_REQUEST, "obsolete header line folding", close=True)
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed header line {_printable(raw[:60])!r}", close=True)
        text = value.strip(b" \t").decode("latin-1")
        if _CONTROL.search(text.replace("\t", " ")):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"control character in header {name.decode()}", close=True)
        key = name.decode("ascii").lower()
        if key in headers:
            if key in _SINGLE_HEADERS:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"header {key} given twice", close=True)
            headers[key] += ", " + text
        else:
            headers[key] = text
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(HTTPStatus.BAD_REQUEST, "HTTP/1.1 request without a Host header", close=True)
    if "transfer-encoding" in headers:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "chunked request bodies are not accepted; send "
                        "Content-Length", close=True)
    length = headers.get("content-length", "0")
    if not _BYTE_COUNT.fullmatch(length):  # ASCII digits only: str.isdigit() also takes "²"
        raise HttpError(HTTPStatus.BAD_REQUEST, f"Content-Length {_printable(length.encode()[:20])!r} is not a "
                        "byte count", close=True)
    if int(length) and method != "POST":
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "only a POST request carries a body", close=True)
    if int(length) > MAX_BODY:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request body is at most {MAX_BODY} bytes",
                        close=True)
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    return Request(method, target, version, headers, "", "", "", keep_alive, truncate(line), length=int(length))


def _parse_target(request: Request) -> None:
    """Split and percent-decode the target. The framing was fine, so errors here keep the connection open."""
    if not request.target.startswith("/") or "#" in request.target:
        raise HttpError(HTTPStatus.BAD_REQUEST, "request target must be a path starting with '/'")
    raw_path, _, query = request.target.partition("?")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "path is not UTF-8 once percent-decoded",
                        counter="refused_paths") from None
    if _CONTROL.search(path):
        raise HttpError(HTTPStatus.BAD_REQUEST, "path holds a control character (NUL, line break, ...)",
                        counter="refused_paths")
    request.path, request.raw_path, request.query = path, raw_path, query


# -- helpers ------------------------------------------------------------------------------------------------------

def _unparsed(buffer: bytes) -> Request:
    """A stand-in for a request that could not be parsed, for the response and the log line."""
    return Request("-", "", "HTTP/1.1", {}, "", "", "", False, _first_line(buffer))


def _first_line(buffer: bytes) -> str:
    return truncate(_printable(buffer.split(b"\n", 1)[0][:300]))


def _send_vectored(sock: socket.socket, head: bytes, body: bytes) -> None:
    """sendall for two buffers in one system call where the kernel takes both."""
    views = [memoryview(head), memoryview(body)]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def _peer(sock: socket.socket) -> str:
    """The client's address without the port: what a one-time token is bound to."""
    host = sock.getpeername()[0]
    return host[len("::ffff:"):] if host.startswith("::ffff:") and "." in host else host


def _client(address: tuple) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _printable(data: bytes) -> str:
    return data.decode("latin-1").rstrip("\r")
