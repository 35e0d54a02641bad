"""What a machine receives as its Ignition config over plain HTTP, and what only over HTTPS with a token.

A node's rendered ignition.json is split (stellwerk.ignition.secretsplit): the public part is served at /ignition
with two additions to its `ignition` section: the cluster CA in `security.tls.certificateAuthorities`, and a
`config.merge` entry that points at /secrets on the HTTPS listener with the machine's one-time token and the
sha512 of the secret part. Ignition fetches that entry over TLS, checks the server against the pinned CA and the
document against the hash, and merges it: the node ends up with exactly its rendered config, while nothing secret
ever crossed the network in the clear.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stellwerk.ignition.secretsplit import split

CACHE_ENTRIES = 1024  # parsed configs kept; a served config is rebuilt from them cheaply


@dataclass(frozen=True)
class ConfigParts:
    public: dict[str, Any] = field(repr=False)
    public_bytes: bytes = field(repr=False)  # served as is when there is no secret part
    secret_bytes: bytes | None = field(repr=False)
    secret_hash: str | None  # "sha512-<hex>", as Ignition's verification.hash wants it


def _compact(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def config_parts(data: bytes) -> ConfigParts:
    """The parts of one rendered Ignition config; ValueError when it is not a JSON object."""
    config = json.loads(data)
    if not isinstance(config, dict):
        raise ValueError("an Ignition config must be a JSON object")
    public, secret = split(config)
    if secret is None:
        return ConfigParts(public, data, None, None)
    secret_bytes = _compact(secret)
    return ConfigParts(public, _compact(public), secret_bytes, "sha512-" + hashlib.sha512(secret_bytes).hexdigest())


def secrets_url(host: str, port: int, token: str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}/secrets?" + urllib.parse.urlencode({"token": token})


def served_config(parts: ConfigParts, url: str | None, ca_pem: bytes | None, extra_merges: tuple[str, ...] = ()
                  ) -> bytes:
    """The public part with, in its `ignition` section, the secret part's merge entry and the pinned CA (when
    `url` is given), then one merge entry per extra URL (an overlay the operator adds to every node, such as the
    lab's reporting unit; later merges win)."""
    section = json.loads(json.dumps(parts.public.get("ignition") or {"version": "3.3.0"}))
    merges = section.setdefault("config", {}).setdefault("merge", [])
    if url is not None and ca_pem is not None:
        merges.append({"source": url, "verification": {"hash": parts.secret_hash}})
        tls = section.setdefault("security", {}).setdefault("tls", {})
        ca_source = "data:;base64," + base64.b64encode(ca_pem).decode("ascii")
        tls.setdefault("certificateAuthorities", []).append({"source": ca_source})
    merges.extend({"source": extra} for extra in extra_merges)
    return _compact({**parts.public, "ignition": section})


class PartsCache:
    """Parsed configs by file, revalidated by (inode, mtime, size) so a re-render is picked up without a restart."""

    def __init__(self, entries: int = CACHE_ENTRIES):
        self._entries = entries
        self._lock = threading.Lock()
        self._cache: OrderedDict[Path, tuple[tuple[int, int, int], ConfigParts]] = OrderedDict()
        self._served: OrderedDict[tuple, tuple[tuple[int, int, int], bytes]] = OrderedDict()

    def get(self, path: Path) -> ConfigParts:
        """OSError when the file cannot be read; ValueError when it is not JSON."""
        return self._get(path)[1]

    def entry(self, path: Path) -> tuple[tuple[int, int, int], ConfigParts]:
        """(file version, parts): what `served_from` takes, so that one request reads the file's metadata once."""
        return self._get(path)

    def served_from(self, path: Path, entry: tuple[tuple[int, int, int], ConfigParts], url: str | None,
                    ca_pem: bytes | None, extra_merges: tuple[str, ...] = ()) -> bytes:
        """`served_config` for the file at `path`, built once per (file version, URL): a machine that retries, or
        many fetching at once, costs no JSON encoding."""
        stamp, parts = entry
        key = (path, url, extra_merges)
        with self._lock:
            cached = self._served.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        body = served_config(parts, url, ca_pem, extra_merges)
        with self._lock:
            self._served[key] = (stamp, body)
            while len(self._served) > self._entries:
                self._served.popitem(last=False)
        return body

    def _get(self, path: Path) -> tuple[tuple[int, int, int], ConfigParts]:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as handle:
            info = os.fstat(handle.fileno())
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            with self._lock:
                cached = self._cache.get(path)
                if cached is not None and cached[0] == stamp:
                    self._cache.move_to_end(path)
                    return cached
            parts = config_parts(handle.read())
        with self._lock:
            self._cache[path] = (stamp, parts)
            self._cache.move_to_end(path)
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
        return stamp, parts
