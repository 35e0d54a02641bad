"""Boot files from ASSETS/boot, opened without following a link and answered whole or as one byte range."""

from __future__ import annotations

import errno
import os
import re
import stat
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path

from .messages import HttpError, Request, Response

_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


def open_beneath(root: Path, parts: list[str]) -> int:
    """Open root/parts... without following any symbolic link, one component at a time (race-free)."""
    try:
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise HttpError(HTTPStatus.NOT_FOUND, "ASSETS/boot does not exist; the boot files have not been built",
                        counter="not_found") from None
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | (
                os.O_NONBLOCK | os.O_NOCTTY if last else os.O_DIRECTORY)  # NONBLOCK: a FIFO must not hang us
            try:
                fd = os.open(part, flags, dir_fd=directory)
            except OSError as exc:
                shown = "/".join(parts[:index + 1])
                if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and _is_link(part, directory)):
                    raise HttpError(HTTPStatus.FORBIDDEN, f"asset {shown!r} is a symbolic link; links are not "
                                    "followed in ASSETS/boot", counter="refused_paths") from None
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise HttpError(HTTPStatus.FORBIDDEN, f"asset {shown!r} is not readable", counter="refused_paths"
                                    ) from None
                raise HttpError(HTTPStatus.NOT_FOUND, f"no asset {'/'.join(parts)!r}", counter="not_found") from None
            if last:
                return fd
            os.close(directory)
            directory = fd
    finally:
        os.close(directory)
    raise AssertionError("unreachable")


def _is_link(name: str, directory: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=directory).st_mode)
    except OSError:
        return False


def check_contained(fd: int, root: Path) -> None:
    """Second line of defence: the opened file's real path is below the real path of ASSETS/boot."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return  # no /proc: the component-wise open above already refused links and '..'
    base = os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise HttpError(HTTPStatus.FORBIDDEN, "asset resolves outside ASSETS/boot", counter="refused_paths")


def file_response(request: Request, fd: int, info: os.stat_result) -> Response:
    size = info.st_size
    etag = f'"{size:x}-{info.st_mtime_ns:x}"'
    modified = formatdate(info.st_mtime, usegmt=True)
    headers = [("Accept-Ranges", "bytes"), ("ETag", etag), ("Last-Modified", modified)]
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if wanted is not None and (if_range is None or if_range in (etag, modified)):
        match = _RANGE.fullmatch(wanted.strip())
        # Anything but one well-formed byte range (several ranges, other units) is ignored: the whole file is sent.
        if match and (match[1] or match[2]) and not (match[1] and match[2] and int(match[2]) < int(match[1])):
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]), size - 1) if match[2] else size - 1
            else:
                start, end = max(size - int(match[2]), 0), size - 1
            if start >= size or (not match[1] and int(match[2]) == 0):
                os.close(fd)
                return Response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                                f"416 Range Not Satisfiable: {wanted} is outside the file's {size} bytes\n".encode(),
                                headers=[("Content-Range", f"bytes */{size}")] + headers,
                                error=f"range {wanted!r} outside {size} bytes")
            count = end - start + 1
            return Response(HTTPStatus.PARTIAL_CONTENT, content_type="application/octet-stream", file=(fd, start, count),
                            length=count, headers=[("Content-Range", f"bytes {start}-{end}/{size}")] + headers)
    return Response(200, content_type="application/octet-stream", file=(fd, 0, size), length=size, headers=headers)
