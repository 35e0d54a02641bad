"""What netboot knows about each machine: its provisioning state and its one-time secrets token.

Persisted in ASSETS/state/machines.json (0600: it holds live tokens). The server and the `stellwerk netboot`
commands share the file, so every change happens under an exclusive lock on state/machines.lock and is written
atomically: a reader sees the old or the new file, never a mix.

States follow a machine through a (two-stage) install:

- discovered: it asked for its iPXE script;
- installing: it was sent an installer profile;
- installed: its installer reported success;
- booted: it fetched its final config;
- failed: it reported that provisioning failed, with the stage, the reason and its last log lines (a later state
  clears it).

Secrets (private keys, credentials) are delivered once per provisioning: the first fetch of a node's config mints a
token bound to the node and the client address; the token is good for one fetch of the secret part over HTTPS. A
token that was used, or one presented from another address, is refused and logged as a security event. After the
secrets went out, the node's config is refused until an operator runs `stellwerk netboot reprovision`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stellwerk.base.errors import Problem, UserError
from stellwerk.base.fsutil import make_dirs, replace_file

from .logs import redact_tokens

STATES = ("discovered", "installing", "installed", "booted", "failed")
STATE_FILE = "state/machines.json"
LOCK_FILE = "state/machines.lock"
FORMAT = 1
TOKEN_BYTES = 32
HISTORY = 20  # events kept per machine


class TokenRefused(Exception):
    """A secrets token that must not be honoured; `reason` is safe to log (it never repeats the token)."""

    def __init__(self, reason: str, node: str | None = None):
        super().__init__(reason)
        self.reason, self.node = reason, node


class SecretsSpent(Exception):
    """The node's secrets were already delivered in this provisioning."""

    def __init__(self, node: str, used: str, used_by: str):
        super().__init__(f"node {node}: its secrets were delivered at {used} to {used_by}")
        self.node, self.used, self.used_by = node, used, used_by


class MachineStateError(UserError):
    pass


@dataclass(frozen=True)
class MachineStatus:
    node: str
    mac: str | None
    state: str | None
    updated: str | None
    client: str | None
    secrets: str  # "pending", "token issued", "delivered <time> to <client>", "none"
    history: tuple[dict[str, str], ...]
    failure: dict[str, str] | None = None  # state failed: time, stage, reason, log, previous (the state before)

    @property
    def installed(self) -> bool:
        """Its install finished: it boots its disk. A failure report does not undo that (anyone on the provisioning
        network can send one), so a forged report cannot send an installed machine to the installer again; only
        `stellwerk netboot reprovision` does."""
        state = (self.failure or {}).get("previous") if self.state == "failed" else self.state
        return state in ("installed", "booted")


@dataclass(frozen=True)
class Failure:
    """What a machine reported when its provisioning failed. All of it came from the machine: untrusted text."""

    stage: str  # e.g. "disks": Ignition's stage, or the step of the OS's own provisioning
    reason: str  # one line
    log: str  # its last log lines


PROVISION_FAILED = "provision-failed"  # the report event of a machine whose provisioning failed
FAILURE_LOG_LINES = 40
FAILURE_LINE_CHARS = 500  # the lab OS initrd cuts its report's lines to this too
# A line of Ignition's log that repeats a whole config: it may hold secrets, and it says nothing of the failure.
_CONFIG_DUMP = re.compile(r'"ignition"\s*:\s*\{')


def _printable(line: str) -> str:
    """The line without control, format (bidi overrides, say) and unassigned characters; tabs become spaces."""
    return "".join(" " if ch == "\t" else ch for ch in line if ch == "\t" or unicodedata.category(ch)[0] != "C")


def failure_from(stage: str, body: bytes) -> Failure:
    """A machine's failure report: its first line is the reason, the rest its log. Untrusted: control and format
    characters are dropped, so nothing it sends can forge lines of a status table or reorder what a reader sees;
    one-time tokens and config dumps are left out, as they are of every log; each line is cut to
    FAILURE_LINE_CHARS and the log to its last FAILURE_LOG_LINES lines."""
    text = body.decode("utf-8", errors="replace")
    lines = [redact_tokens(_printable(line)).rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip() and not _CONFIG_DUMP.search(line)]
    reason = lines[0][:FAILURE_LINE_CHARS] if lines else "no reason given"
    return Failure(stage, reason, "\n".join(line[:FAILURE_LINE_CHARS] for line in lines[1:][-FAILURE_LOG_LINES:]))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class MachineRegistry:
    """The machine state file of one assets directory; safe to share between threads and processes."""

    def __init__(self, assets_dir: str | Path):
        self.assets_dir = Path(assets_dir)
        self.path = self.assets_dir / STATE_FILE
        self._lock_path = self.assets_dir / LOCK_FILE
        self._thread_lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int] | None, dict[str, Any]] = (None, {})

    # -- file access --------------------------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def _read(self) -> dict[str, Any]:
        stamp = self._stamp()
        if stamp is not None and stamp == self._cache[0]:
            return self._cache[1]
        if stamp is None:
            data: dict[str, Any] = {"format": FORMAT, "machines": {}}
        else:
            try:
                data = json.loads(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                raise MachineStateError(Problem(str(self.path), None, "", f"cannot be read ({exc}); move it aside "
                                                "to start the machine states afresh")) from None
            if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("machines"), dict):
                raise MachineStateError(Problem(str(self.path), None, "", f"is not a format-{FORMAT} machine state "
                                                "file; move it aside to start the machine states afresh"))
        self._cache = (stamp, data)
        return data

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under the file lock; the yielded data is written back when the block ends cleanly."""
        with self._thread_lock:
            make_dirs(self._lock_path.parent)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = json.loads(json.dumps(self._read()))  # a private copy: the cache stays as on disk
                yield data
                replace_file(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), 0o600)
                self._cache = (self._stamp(), data)
            finally:
                os.close(fd)  # releases the lock

    # -- events -------------------------------------------------------------------------------------------------

    def record(self, node: str, mac: str | None, state: str, client: str | None) -> None:
        """Move `node` to `state`; 'discovered' only ever applies to a machine not seen before."""
        if state not in STATES:
            raise ValueError(f"unknown machine state {state!r}")
        with self._thread_lock:
            current = self._read()["machines"].get(node)
        if current is not None and (state == "discovered" or current.get("state") == state):
            return  # nothing changes: no write on every boot
        with self._locked() as data:
            machine = data["machines"].setdefault(node, {})
            if state == "discovered" and machine.get("state"):
                return
            self._event(machine, mac, state, client)

    def fail(self, node: str, mac: str | None, failure: Failure, client: str | None) -> None:
        """Move `node` to `failed`, keeping what it said of the failure and the state it was in."""
        with self._locked() as data:
            machine = data["machines"].setdefault(node, {})
            previous = (machine.get("failure") or {}).get("previous") if machine.get("state") == "failed" \
                else machine.get("state")
            self._event(machine, mac, "failed", client)
            machine["failure"] = {"time": machine["updated"], "stage": failure.stage, "reason": failure.reason,
                                  "log": failure.log, "previous": previous}
            machine["history"][-1]["event"] = f"failed: {failure.stage}: {failure.reason}"

    def note(self, node: str, mac: str | None, event: str, client: str | None) -> None:
        """Keep an event in the node's history without changing its state (a failed install, say)."""
        with self._locked() as data:
            self._event(data["machines"].setdefault(node, {}), mac, event, client)

    @staticmethod
    def _event(machine: dict[str, Any], mac: str | None, event: str, client: str | None) -> None:
        now = _now()
        if event in STATES:
            machine["state"] = event
            machine.pop("failure", None)  # a failure is news until the machine gets any further
        machine["mac"] = mac or machine.get("mac")
        machine["updated"], machine["client"] = now, client
        history = machine.setdefault("history", [])
        history.append({"time": now, "event": event, "client": client or ""})
        del history[:-HISTORY]

    # -- one-time secrets tokens --------------------------------------------------------------------------------

    def token_for(self, node: str, mac: str, client: str) -> str:
        """The token `client` may use once to fetch `node`'s secrets; minted on first use. SecretsSpent when the
        secrets of this provisioning were already delivered."""
        with self._thread_lock:
            provisioning = (self._read()["machines"].get(node) or {}).get("provisioning") or {}
        if provisioning.get("token") and not provisioning.get("used") and provisioning.get("issuedTo") == client:
            return provisioning["token"]
        with self._locked() as data:
            machine = data["machines"].setdefault(node, {})
            provisioning = machine.get("provisioning") or {}
            if provisioning.get("used"):
                raise SecretsSpent(node, provisioning["used"], provisioning.get("usedBy", "?"))
            if provisioning.get("token") and provisioning.get("issuedTo") == client:
                return provisioning["token"]
            # A new token (the first, or one for a new client address): an older unused one stops working.
            machine["provisioning"] = {"token": secrets.token_urlsafe(TOKEN_BYTES), "issuedTo": client,
                                       "issued": _now(), "used": None, "usedBy": None}
            self._event(machine, mac, "token issued", client)
            return machine["provisioning"]["token"]

    def redeem(self, token: str, client: str) -> str:
        """The node whose secrets `token` unlocks for `client`; the token is spent before this returns.
        TokenRefused (with a reason fit for a security log) otherwise; the refusal is kept in the node's history."""
        refusal: TokenRefused | None = None
        with self._locked() as data:
            node, machine = _find_token(data, token)
            if node is None:
                raise TokenRefused("unknown or superseded token")  # nothing to record it against
            provisioning = machine["provisioning"]
            if provisioning.get("used"):
                self._event(machine, None, "token replay refused", client)
                refusal = TokenRefused(f"token already used at {provisioning['used']} by "
                                       f"{provisioning.get('usedBy')}; replay refused", node)
            elif provisioning.get("issuedTo") != client:
                self._event(machine, None, "token from another address refused", client)
                refusal = TokenRefused(f"token was issued to {provisioning.get('issuedTo')}, presented by {client}",
                                       node)
            else:
                provisioning["used"], provisioning["usedBy"] = _now(), client
                self._event(machine, None, "secrets delivered", client)
        if refusal is not None:
            raise refusal
        return node

    def reprovision(self, node: str) -> None:
        """Allow one more delivery of `node`'s secrets (the machine is being installed again)."""
        with self._locked() as data:
            machine = data["machines"].setdefault(node, {})
            machine.pop("provisioning", None)
            machine.pop("failure", None)
            machine["state"] = "discovered" if machine.get("state") else None
            self._event(machine, None, "reprovision armed", "operator")

    # -- reading ------------------------------------------------------------------------------------------------

    def statuses(self, nodes: list[str]) -> list[MachineStatus]:
        """One status per node, in the order given; nodes never seen are listed with state None."""
        with self._thread_lock:
            machines = self._read()["machines"]
        out = []
        for node in nodes:
            machine = machines.get(node) or {}
            provisioning = machine.get("provisioning") or {}
            if provisioning.get("used"):
                secrets_state = f"delivered {provisioning['used']} to {provisioning.get('usedBy')}"
            elif provisioning.get("token"):
                secrets_state = f"token issued {provisioning.get('issued')} to {provisioning.get('issuedTo')}"
            else:
                secrets_state = "pending"
            out.append(MachineStatus(node, machine.get("mac"), machine.get("state"), machine.get("updated"),
                                     machine.get("client"), secrets_state, tuple(machine.get("history") or ()),
                                     machine.get("failure")))
        return out


def _find_token(data: dict[str, Any], token: str) -> tuple[str | None, dict[str, Any]]:
    found: tuple[str | None, dict[str, Any]] = (None, {})
    for node, machine in data["machines"].items():
        known = (machine.get("provisioning") or {}).get("token")
        # Compare every candidate in constant time, and do not stop early: the time taken says nothing.
        if isinstance(known, str) and hmac.compare_digest(known.encode(), token.encode()):
            found = (node, machine)
    return found
