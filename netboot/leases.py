"""DHCP address pool, static reservations and the lease table behind the full-mode DHCP server.

Storage and selection only: this module knows nothing of packets. The DHCP server asks it which
address a client may have (`choose`, `check`) and tells it what happened (`bind`, `release`,
`decline`). Every change to the table is written at once to the lease file, atomically (a temp file
in the same directory, fsynced, then renamed over the old one), so a restart finds every lease it
handed out. Expired leases and expired declines are reclaimed when the file is loaded and before
each choice.

Clients are keyed by their hardware address (chaddr), not by option 61: a machine's firmware PXE,
iPXE and the installed OS all send different client identifiers, but the same MAC, and the cluster
file reserves addresses by MAC.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from stellwerk.base.fsutil import replace_file

from .store import normalize_mac  # one MAC spelling rule for the store, DHCP and leases

log = logging.getLogger("stellwerk.netboot.dhcp")

LEASE_FILE_VERSION = 1


class LeaseFileError(ValueError):
    """The lease file exists but cannot be read as a lease table; the message names file and problem."""


def _address(value: Any, what: str) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except ValueError:
        raise ValueError(f"{what}: not an IPv4 address: {value!r}") from None


@dataclass(frozen=True)
class Pool:
    """The subnet full mode serves and what it tells clients about it.

    `start`..`end` (inclusive) is the dynamic range; leave both unset to serve reservations only.
    The server's own address, the router, the network and broadcast addresses and every reserved
    address are never handed out dynamically.
    """

    network: IPv4Network | str
    start: IPv4Address | str | None = None
    end: IPv4Address | str | None = None
    router: IPv4Address | str | None = None
    dns: tuple[IPv4Address | str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600  # seconds; option 51. Renewal (T1) is half of it, rebinding (T2) 7/8.
    mtu: int | None = None  # option 26 when set

    def __post_init__(self) -> None:
        try:
            network = ipaddress.IPv4Network(str(self.network), strict=True)
        except ValueError as exc:
            raise ValueError(f"pool network {self.network!r}: {exc}") from None
        object.__setattr__(self, "network", network)
        if (self.start is None) != (self.end is None):
            raise ValueError("pool: give both start and end of the dynamic range, or neither")
        for name in ("start", "end", "router"):
            value = getattr(self, name)
            if value is not None:
                value = _address(value, f"pool {name}")
                if value not in network:
                    raise ValueError(f"pool {name} {value} is not in {network}")
                object.__setattr__(self, name, value)
        if self.start is not None and self.start > self.end:
            raise ValueError(f"pool range {self.start}-{self.end} is empty: start is after end")
        if self.start is not None and (self.start == network.network_address or self.end == network.broadcast_address):
            raise ValueError(f"pool range {self.start}-{self.end} includes the network or broadcast address of {network}")
        object.__setattr__(self, "dns", tuple(_address(a, "pool dns") for a in self.dns))
        if not isinstance(self.lease_time, int) or not 60 <= self.lease_time <= 2**31 - 1:
            raise ValueError(f"pool lease_time {self.lease_time!r}: give whole seconds, at least 60")
        if self.mtu is not None and not 576 <= self.mtu <= 65535:
            raise ValueError(f"pool mtu {self.mtu!r}: out of range 576..65535")

    @property
    def netmask(self) -> IPv4Address:
        return self.network.netmask  # type: ignore[union-attr]

    @property
    def broadcast(self) -> IPv4Address:
        return self.network.broadcast_address  # type: ignore[union-attr]

    def in_range(self, address: IPv4Address) -> bool:
        return self.start is not None and self.start <= address <= self.end  # type: ignore[operator]

    def range_addresses(self) -> Iterable[IPv4Address]:
        if self.start is None:
            return ()
        return (IPv4Address(n) for n in range(int(self.start), int(self.end) + 1))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reservation:
    """A fixed address for one MAC (a cluster node). `hostname` goes out as option 12."""

    mac: str
    address: IPv4Address | str
    hostname: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalize_mac(self.mac))
        object.__setattr__(self, "address", _address(self.address, f"reservation for {self.mac}"))
        if self.hostname is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?", self.hostname):
            raise ValueError(f"reservation for {self.mac}: hostname {self.hostname!r} is not a valid host name")


def reservations_from_nodes(nodes: Iterable[Any]) -> list[Reservation]:
    """Reservations from objects with `mac`, `address` and `name` (or `hostname`), e.g. the plan's nodes."""
    return [
        Reservation(node.mac, node.address, getattr(node, "hostname", None) or getattr(node, "name", None))
        for node in nodes
    ]


@dataclass(frozen=True)
class Lease:
    mac: str
    address: IPv4Address
    expires: int  # wall-clock seconds since the epoch: the file must mean the same after a restart
    hostname: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mac": self.mac, "address": str(self.address), "expires": self.expires}
        if self.hostname:
            data["hostname"] = self.hostname
        return data


@dataclass
class _Offer:
    address: IPv4Address
    expires: float


@dataclass
class LeaseTable:
    """Leases, pending offers and declined addresses of one pool; thread-safe.

    `path` None keeps the table in memory only. `clock` returns wall-clock seconds (tests pass a
    fake one). `offer_hold` is how long an offered address stays set aside for the client it was
    offered to; `decline_hold` how long an address a client declined (RFC 2131 DHCPDECLINE: someone
    else uses it) is kept out of the pool.
    """

    pool: Pool
    server_ip: IPv4Address
    reservations: Iterable[Reservation] = ()
    path: Path | None = None
    clock: Callable[[], float] = time.time
    offer_hold: int = 60
    decline_hold: int = 600
    _by_mac: dict[str, Lease] = field(default_factory=dict, init=False, repr=False)
    _by_address: dict[IPv4Address, Lease] = field(default_factory=dict, init=False, repr=False)
    _declined: dict[IPv4Address, int] = field(default_factory=dict, init=False, repr=False)
    _offers: dict[str, _Offer] = field(default_factory=dict, init=False, repr=False)
    _reserved_mac: dict[str, Reservation] = field(default_factory=dict, init=False, repr=False)
    _reserved_address: dict[IPv4Address, Reservation] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    # Indexes that keep every request O(1) in the table's size (a rack of 1000 machines booting at
    # once would otherwise cost O(n) per DISCOVER and per REQUEST):
    # - the client each pending offer's address is set aside for;
    _offered_to: dict[IPv4Address, str] = field(default_factory=dict, init=False, repr=False)
    # - the earliest expiry of any lease, decline or offer: `_reclaim` has nothing to do before it;
    _next_expiry: float = field(default=float("inf"), init=False, repr=False)
    # - the lowest range address (as an int) that may be free: every range address below it is
    #   leased, offered, declined, reserved or unusable. Whatever frees an address lowers it.
    _free_from: int = field(default=0, init=False, repr=False)
    # - each lease's lines in the lease file, by address, so a save does not re-encode every lease.
    _lease_text: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    _unusable_addresses: frozenset[IPv4Address] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        self.server_ip = _address(self.server_ip, "server address")
        self._unusable_addresses = frozenset(self._unusable())
        self._free_from = int(self.pool.start) if self.pool.start is not None else 0  # type: ignore[arg-type]
        if self.path is not None:
            self.path = Path(self.path)
        for reservation in self.reservations:
            if reservation.address not in self.pool.network:
                raise ValueError(f"reservation {reservation.mac} -> {reservation.address}: not in {self.pool.network}")
            if reservation.address in self._unusable_addresses:
                raise ValueError(
                    f"reservation {reservation.mac} -> {reservation.address}: that is the server, router, "
                    "network or broadcast address"
                )
            other = self._reserved_address.get(reservation.address)
            if other is not None and other.mac != reservation.mac:
                raise ValueError(f"address {reservation.address} is reserved for both {other.mac} and {reservation.mac}")
            if reservation.mac in self._reserved_mac and self._reserved_mac[reservation.mac].address != reservation.address:
                raise ValueError(f"MAC {reservation.mac} has two reservations")
            self._reserved_mac[reservation.mac] = reservation
            self._reserved_address[reservation.address] = reservation
        self.reservations = tuple(sorted(self._reserved_mac.values(), key=lambda r: r.mac))
        self._load()

    # ---- queries -------------------------------------------------------------------------------

    def reservation(self, mac: str) -> Reservation | None:
        return self._reserved_mac.get(mac)

    def leases(self) -> list[Lease]:
        """Every unexpired lease, in address order."""
        with self._lock:
            self._reclaim()
            return sorted(self._by_mac.values(), key=lambda lease: lease.address)

    def lease_for(self, mac: str) -> Lease | None:
        with self._lock:
            self._reclaim()
            return self._by_mac.get(mac)

    def declined(self) -> dict[IPv4Address, int]:
        with self._lock:
            self._reclaim()
            return dict(self._declined)

    def check(self, mac: str, address: IPv4Address) -> str | None:
        """Why `mac` may not have `address` (a sentence), or None if it may."""
        with self._lock:
            self._reclaim()
            return self._why_not(mac, address)

    def choose(self, mac: str, requested: IPv4Address | None = None) -> IPv4Address | None:
        """The address to offer `mac`, set aside for it for `offer_hold` seconds; None if the pool is full.

        Order: its reservation; its current lease; its pending offer; the address it asked for
        (option 50) if free; the lowest free address of the range.
        """
        with self._lock:
            self._reclaim()
            now = self.clock()
            chosen: IPv4Address | None = None
            reservation = self._reserved_mac.get(mac)
            if reservation is not None:
                chosen = reservation.address
            elif mac in self._by_mac:
                chosen = self._by_mac[mac].address
            elif mac in self._offers and self._why_not(mac, self._offers[mac].address) is None:
                chosen = self._offers[mac].address
            elif requested is not None and self._why_not(mac, requested) is None:
                chosen = requested
            elif self.pool.start is not None:
                # Every address below `_free_from` is taken for any client that gets here (one with a
                # reservation, a lease or a valid offer was answered above), so the scan starts there.
                last = int(self.pool.end)  # type: ignore[arg-type]
                candidate_int = max(self._free_from, int(self.pool.start))  # type: ignore[arg-type]
                while candidate_int <= last:
                    candidate = IPv4Address(candidate_int)
                    if self._why_not(mac, candidate) is None:
                        chosen = candidate
                        break
                    candidate_int += 1
                self._free_from = candidate_int
            if chosen is not None:
                self._set_offer(mac, chosen, now + self.offer_hold)
            return chosen

    # ---- changes (each one is persisted) -------------------------------------------------------

    def bind(self, mac: str, address: IPv4Address, hostname: str | None = None) -> Lease:
        """Lease `address` to `mac` for the pool's lease time; the caller checked it with `check`."""
        with self._lock:
            self._reclaim()
            reservation = self._reserved_mac.get(mac)
            if reservation is not None and reservation.hostname:
                hostname = reservation.hostname
            lease = Lease(mac, address, int(self.clock()) + self.pool.lease_time, hostname)
            free_from = self._free_from
            self._drop_mac(mac)
            self._drop_offer(mac)
            self._add_lease(lease)
            if self._free_from == int(address):  # only the address bound now was let go: nothing is free
                self._free_from = free_from
            self._save()
            return lease

    def release(self, mac: str, address: IPv4Address) -> bool:
        """The client gives `address` back (DHCPRELEASE). False if it held no such lease."""
        with self._lock:
            lease = self._by_mac.get(mac)
            if lease is None or lease.address != address:
                return False
            self._drop_mac(mac)
            self._save()
            return True

    def decline(self, mac: str, address: IPv4Address) -> None:
        """The client found `address` in use (DHCPDECLINE): keep it out of the pool for `decline_hold`."""
        with self._lock:
            lease = self._by_mac.get(mac)
            if lease is not None and lease.address == address:
                self._drop_mac(mac)
            offer = self._offers.get(mac)
            if offer is not None and offer.address == address:
                self._drop_offer(mac)
            until = int(self.clock()) + self.decline_hold
            self._declined[address] = until
            self._next_expiry = min(self._next_expiry, until)
            self._save()

    def forget_offer(self, mac: str) -> None:
        """The client took another server's offer."""
        with self._lock:
            self._drop_offer(mac)

    # ---- internals -----------------------------------------------------------------------------

    def _unusable(self) -> set[IPv4Address]:
        network = self.pool.network
        unusable = {network.network_address, network.broadcast_address, self.server_ip}  # type: ignore[union-attr]
        if self.pool.router is not None:
            unusable.add(self.pool.router)  # type: ignore[arg-type]
        return unusable

    def _why_not(self, mac: str, address: IPv4Address) -> str | None:
        if address not in self.pool.network:
            return f"{address} is not in the served network {self.pool.network}"
        if address in self._unusable_addresses:
            return f"{address} is the server, router, network or broadcast address"
        reservation = self._reserved_mac.get(mac)
        if reservation is not None and reservation.address != address:
            return f"{mac} has the reserved address {reservation.address}"
        reserved = self._reserved_address.get(address)
        if reserved is not None and reserved.mac != mac:
            return f"{address} is reserved for another machine"
        if reserved is None and not self.pool.in_range(address):
            return f"{address} is outside the dynamic range"
        holder = self._by_address.get(address)
        if holder is not None and holder.mac != mac:
            return f"{address} is leased to another client"
        if address in self._declined and reserved is None:
            return f"{address} was declined by a client (in use by someone else) and is held back"
        offered_to = self._offered_to.get(address)
        if offered_to is not None and offered_to != mac and self._offers[offered_to].expires > self.clock():
            return f"{address} is offered to another client"
        return None

    def _freed(self, address: IPv4Address) -> None:
        """`address` may be free again: the next scan for a free address must look at it."""
        self._free_from = min(self._free_from, int(address))

    def _set_offer(self, mac: str, address: IPv4Address, expires: float) -> None:
        old = self._offers.get(mac)
        if old is not None and old.address != address:
            self._drop_offer(mac)
        self._offers[mac] = _Offer(address, expires)
        self._offered_to[address] = mac
        self._next_expiry = min(self._next_expiry, expires)

    def _drop_offer(self, mac: str) -> None:
        offer = self._offers.pop(mac, None)
        if offer is not None:
            if self._offered_to.get(offer.address) == mac:
                del self._offered_to[offer.address]
            self._freed(offer.address)

    def _add_lease(self, lease: Lease) -> None:
        self._by_mac[lease.mac] = lease
        self._by_address[lease.address] = lease
        # The lease as it appears in the lease file, indented for its place in the "leases" list.
        text = json.dumps(lease.to_json(), indent=2, sort_keys=True)
        self._lease_text[int(lease.address)] = "    " + text.replace("\n", "\n    ")
        self._next_expiry = min(self._next_expiry, lease.expires)

    def _drop_mac(self, mac: str) -> None:
        old = self._by_mac.pop(mac, None)
        if old is not None and self._by_address.get(old.address) is old:
            del self._by_address[old.address]
            del self._lease_text[int(old.address)]
            self._freed(old.address)

    def _reclaim(self) -> None:
        now = self.clock()
        if now < self._next_expiry:
            return  # nothing has expired yet: no need to look at every lease
        changed = False
        for lease in [lease for lease in self._by_mac.values() if lease.expires <= now]:
            log.info("dhcp lease-expired mac=%s address=%s", lease.mac, lease.address)
            self._drop_mac(lease.mac)
            changed = True
        for address in [a for a, until in self._declined.items() if until <= now]:
            del self._declined[address]
            self._freed(address)
            changed = True
        for mac in [m for m, offer in self._offers.items() if offer.expires <= now]:
            self._drop_offer(mac)
        self._next_expiry = min(
            [lease.expires for lease in self._by_mac.values()] + list(self._declined.values())
            + [offer.expires for offer in self._offers.values()],
            default=float("inf"),
        )
        if changed:
            self._save()

    def _save(self) -> None:
        """The whole table, as `json.dumps(document, indent=2, sort_keys=True)` writes it; but from
        each lease's text kept since it was bound, so a save costs a join, not an encoding of every lease."""
        if self.path is None:
            return
        declined = [{"address": str(a), "until": until} for a, until in sorted(self._declined.items())]
        declined_text = json.dumps(declined, indent=2, sort_keys=True).replace("\n", "\n  ")
        leases = [self._lease_text[address] for address in sorted(self._lease_text)]
        leases_text = "[\n" + ",\n".join(leases) + "\n  ]" if leases else "[]"
        text = (f'{{\n  "declined": {declined_text},\n  "leases": {leases_text},\n'
                f'  "version": {LEASE_FILE_VERSION}\n}}\n')
        replace_file(self.path, text.encode(), 0o644)

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            document = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LeaseFileError(f"{self.path}: cannot read the lease file: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != LEASE_FILE_VERSION:
            raise LeaseFileError(f"{self.path}: not a version {LEASE_FILE_VERSION} lease file")
        try:
            for index, entry in enumerate(document.get("leases", [])):
                mac = normalize_mac(entry["mac"])
                address = _address(entry["address"], "address")
                expires = entry["expires"]
                hostname = entry.get("hostname")
                if not isinstance(expires, int) or (hostname is not None and not isinstance(hostname, str)):
                    raise ValueError("expires must be an integer and hostname a string")
                if mac in self._by_mac or address in self._by_address:
                    raise ValueError(f"a second lease for {mac} or {address}")
                self._add_lease(Lease(mac, address, expires, hostname))
            for entry in document.get("declined", []):
                until = entry["until"]
                if not isinstance(until, int):
                    raise ValueError("until must be an integer")
                self._declined[_address(entry["address"], "address")] = until
                self._next_expiry = min(self._next_expiry, until)
        except (KeyError, TypeError, ValueError) as exc:
            raise LeaseFileError(f"{self.path}: bad entry: {exc}") from None
        # Leases the current configuration no longer allows (pool or reservations changed) are dropped.
        dropped = False
        for lease in list(self._by_mac.values()):
            why = self._why_not(lease.mac, lease.address)
            if why is not None:
                log.warning("dhcp lease-dropped mac=%s address=%s reason=%r", lease.mac, lease.address, why)
                self._drop_mac(lease.mac)
                dropped = True
        if dropped:
            self._save()
        log.info("dhcp leases-loaded file=%s leases=%d declined=%d", self.path, len(self._by_mac), len(self._declined))
        self._reclaim()
