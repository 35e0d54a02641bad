"""The messages of netboot's HTTP service: a request as the transport parsed it, a response as a handler made it,
and the error a handler raises for a request it refuses. No sockets here: the transport (http.py) reads and writes
them, the handlers (routes.py) only see these."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus


class HttpError(Exception):
    """A request answered with an error status; `message` says what was wrong (it goes to the client and the log)."""

    def __init__(self, status: int, message: str, *, close: bool = False, counter: str = "bad_requests",
                 headers: tuple[tuple[str, str], ...] = (), mac: str | None = None, group: str | None = None):
        super().__init__(message)
        self.status, self.message, self.close, self.counter, self.headers = status, message, close, counter, headers
        self.mac, self.group = mac, group



@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    path: str  # percent-decoded, without the query
    raw_path: str
    query: str
    keep_alive: bool
    line: str  # the request line, for logs
    length: int = 0  # Content-Length of the body (POST only)
    body: bytes = b""
    # Where it came from, set by the transport, so that handlers never need the socket:
    peer: str = ""  # the client's address without the port (what a one-time token is bound to)
    client: str = ""  # the client's address and port, for logs
    local_host: str = ""  # the address the client connected to, for URLs that point back at this server
    secure: bool = False  # it came in over the HTTPS listener


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    file: tuple[int, int, int] | None = None  # (fd, offset, count), sent with sendfile and then closed
    length: int | None = None  # Content-Length when it is not len(body)
    close: bool = False
    # for the log line
    mac: str | None = None
    group: str | None = None
    error: str | None = None


def error_response(exc: HttpError) -> Response:
    phrase = HTTPStatus(exc.status).phrase
    return Response(exc.status, f"{exc.status} {phrase}: {exc.message}\n".encode(), headers=list(exc.headers),
                    close=exc.close, mac=exc.mac, group=exc.group, error=exc.message)


def truncate(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
