"""The cluster PKI in kubeadm's file layout: load what exists, create what is missing.

The PKI is persisted state, not output: once a key is on disk it is the key, and
re-rendering must never swap it for another (docs/design.md, section 3). So this module
works in three phases:

1. read and validate every file that exists; any problem raises SecretsError
   before a single byte is written;
2. plan, in memory, the material that is missing, plus the few serving
   certificates whose SANs no longer cover the cluster (same key, same CA);
3. write the plan, never clobbering a file except to put a reissued
   certificate in place after the old one was kept under pki/retired/.

Besides kubeadm's files, the client certificates for the admin, controller-manager
and scheduler kubeconfigs are kept as pki/<name>.{crt,key}: kubeadm only embeds
them in *.conf files, but keeping them as files lets them be loaded back unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509 as cx509

from .base.errors import SecretsError
from .base.fsutil import recover_interrupted, replace_file, write_new_files
from .x509 import (
    KEY_ALGORITHMS,
    IPAddress,
    LeafProfile,
    PEMError,
    PrivateKey,
    build_ca,
    cert_sans,
    cert_to_pem,
    generate_private_key,
    is_ca,
    is_signed_by,
    key_matches_cert,
    load_cert,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_pem,
    same_public_key,
    sign_leaf,
)

KEY_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o755
RETIRED_DIR = "retired"

_T = TypeVar("_T")

# Controller names become file names and DNS SANs, so they must be DNS-1123 names.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --- public API -----------------------------------------------------------------


@dataclass(frozen=True)
class ControllerIdentity:
    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PKIRequest:
    cluster_name: str
    key_algorithm: str  # one of stellwerk.x509.KEY_ALGORITHMS
    ca_validity: datetime.timedelta
    cert_validity: datetime.timedelta
    api_endpoint: str  # DNS name or IP literal
    api_service_ip: ipaddress.IPv4Address | ipaddress.IPv6Address  # first IP of the service CIDR
    cluster_domain: str  # e.g. cluster.local
    controllers: tuple[ControllerIdentity, ...]


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        # Keeps private keys out of tracebacks, debug logs and assertion diffs.
        return f"KeyPair(cert_pem=<{len(self.cert_pem)} bytes>, key_pem=<redacted>)"


@dataclass(frozen=True)
class PKI:
    pairs: Mapping[str, KeyPair]  # layout name without suffix: "ca", "etcd/server-c1", ...
    sa_key_pem: bytes
    sa_pub_pem: bytes
    created: tuple[str, ...]  # files created by this call, e.g. "pki/etcd/server-c4.crt"
    reissued: tuple[str, ...]  # one human-readable line per reissued certificate

    def pair(self, name: str) -> KeyPair:
        try:
            return self.pairs[name]
        except KeyError:
            raise KeyError(f"no key pair {name!r} in the PKI; known: {', '.join(self.pairs)}") from None

    def __repr__(self) -> str:
        return f"PKI(pairs=[{', '.join(self.pairs)}], created={self.created!r}, reissued={self.reissued!r})"


@dataclass(frozen=True)
class CertificateStatus:
    path: str  # relative to the assets dir, e.g. "pki/etcd/ca.crt"
    subject: str
    not_after: datetime.datetime
    days_left: int


def load_or_create_pki(
    pki_dir: pathlib.Path, request: PKIRequest, now: datetime.datetime | None = None
) -> PKI:
    """Load the PKI under `pki_dir`, creating only what is missing.

    Raises SecretsError, with nothing on disk changed, if any existing file is
    unusable. See the module docstring for what is (rarely) reissued.
    """
    now = _utc_now(now)
    _check_request(request)
    recover_interrupted(pki_dir)
    files = _Files(pki_dir)
    leaves = _leaves(request)

    # Phase 1: read and validate everything that exists.
    cas = {ca.name: files.read_pair(ca.name, is_ca=True) for ca in _CAS}
    for ca in _CAS:
        _check_is_ca(files, ca.name, cas[ca.name])
    requested = {leaf.name: files.read_pair(leaf.name, is_ca=False) for leaf in leaves}
    stale = {
        name: files.read_pair(name, is_ca=False) for name in _stale_etcd_names(files, set(requested))
    }
    for name, material in [*requested.items(), *stale.items()]:
        if material is not None:
            _check_issued(files, name, _issuer_of(name), material, cas)
    sa_key, sa_key_pem, sa_pub_pem = _read_service_account(files)

    # Phase 2: plan the missing material in memory.
    plan = _Plan(files)
    for ca in _CAS:
        if cas[ca.name] is None:
            cas[ca.name] = plan.new_ca(ca, request, now)
    pairs: dict[str, KeyPair] = {name: _key_pair(m) for name, m in cas.items() if m is not None}
    for leaf in leaves:
        current = requested[leaf.name]
        issuer = cas[leaf.issuer]
        assert issuer is not None  # every CA exists or was just planned
        if current is None:
            current = plan.new_leaf(leaf, issuer, request, now)
        elif leaf.tracks_sans:
            current = plan.reissue_if_sans_changed(leaf, current, issuer, request, now)
        pairs[leaf.name] = _key_pair(current)
    sa_key_pem, sa_pub_pem = plan.service_account(sa_key, sa_key_pem, sa_pub_pem, request)

    # Phase 3: write.
    plan.apply()
    return PKI(
        pairs=types.MappingProxyType(pairs),
        sa_key_pem=sa_key_pem,
        sa_pub_pem=sa_pub_pem,
        created=tuple(plan.created),
        reissued=tuple(plan.reissued),
    )


def certificate_statuses(
    pki_dir: pathlib.Path, now: datetime.datetime | None = None
) -> list[CertificateStatus]:
    """Every *.crt under `pki_dir` (except retired ones) with its expiry, sorted by path."""
    now = _utc_now(now)
    files = _Files(pki_dir)
    if not pki_dir.is_dir():
        raise SecretsError(files.label(""), "no such directory; render the cluster first")
    statuses = []
    for path in pki_dir.rglob("*.crt"):
        rel = path.relative_to(pki_dir).as_posix()
        if rel.split("/", 1)[0] == RETIRED_DIR or not path.is_file():
            continue
        data = files.read(rel)
        assert data is not None  # just listed
        try:
            cert = load_cert(data)
        except PEMError as e:
            raise SecretsError(files.label(rel), f"{e}; restore it from backup") from None
        not_after = cert.not_valid_after_utc
        statuses.append(
            CertificateStatus(
                path=files.label(rel),
                subject=cert.subject.rfc4514_string(),
                not_after=not_after,
                days_left=(not_after - now).days,
            )
        )
    return sorted(statuses, key=lambda s: s.path)


# --- layout ---------------------------------------------------------------------


@dataclass(frozen=True)
class _CA:
    name: str
    common_name: str


@dataclass(frozen=True)
class _Leaf:
    name: str
    issuer: str
    profile: LeafProfile
    # Serving certificates follow the cluster's addresses; when those grow, the
    # certificate is reissued with the same key. Client certificates never are.
    tracks_sans: bool = False


_CAS = (
    _CA("ca", "kubernetes"),
    _CA("front-proxy-ca", "front-proxy-ca"),
    _CA("etcd/ca", "etcd-ca"),
)

# Leaves whose CA is not "ca"; per-controller etcd certificates are matched by prefix.
_ISSUERS = {
    "front-proxy-client": "front-proxy-ca",
    "apiserver-etcd-client": "etcd/ca",
}


def _issuer_of(name: str) -> str:
    if name.startswith("etcd/"):
        return "etcd/ca"
    return _ISSUERS.get(name, "ca")


def _leaves(request: PKIRequest) -> list[_Leaf]:
    leaves = [
        _Leaf("apiserver", "ca", _apiserver_profile(request), tracks_sans=True),
        _client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "kubeadm:cluster-admins"),
        _client("front-proxy-client", "front-proxy-client"),
    ]
    for controller in request.controllers:
        for kind in ("server", "peer"):
            leaves.append(_Leaf(f"etcd/{kind}-{controller.name}", "etcd/ca", _etcd_profile(controller), True))
    leaves += [
        _client("etcd/healthcheck-client", "kube-etcd-healthcheck-client"),
        _client("apiserver-etcd-client", "kube-apiserver-etcd-client"),
        _client("admin", "kubernetes-admin", "system:masters"),
        _client("controller-manager", "system:kube-controller-manager"),
        _client("scheduler", "system:kube-scheduler"),
    ]
    return leaves


def _client(name: str, common_name: str, *organizations: str) -> _Leaf:
    profile = LeafProfile(common_name=common_name, organizations=organizations, client_auth=True)
    return _Leaf(name, _issuer_of(name), profile)


def _apiserver_profile(request: PKIRequest) -> LeafProfile:
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{request.cluster_domain}",
        # The controller-manager, the scheduler and the admin.conf on a controller
        # talk to their local apiserver over loopback.
        "localhost",
    ]
    ips: list[IPAddress] = [request.api_service_ip, ipaddress.IPv4Address("127.0.0.1")]
    endpoint = _as_ip(request.api_endpoint)
    if endpoint is None:
        dns.append(request.api_endpoint)
    else:
        ips.append(endpoint)
    dns += [c.name for c in request.controllers]
    ips += [c.address for c in request.controllers]
    return LeafProfile(
        common_name="kube-apiserver",
        dns_names=tuple(dict.fromkeys(dns)),
        ip_addresses=tuple(dict.fromkeys(ips)),
        server_auth=True,
    )


def _etcd_profile(controller: ControllerIdentity) -> LeafProfile:
    # etcd uses the same certificate as server and as client (peer connections and
    # its own health probes), hence both usages on both kinds.
    return LeafProfile(
        common_name=controller.name,
        dns_names=(controller.name, "localhost"),
        ip_addresses=tuple(
            dict.fromkeys([controller.address, ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")])
        ),
        server_auth=True,
        client_auth=True,
    )


def _stale_etcd_names(files: _Files, requested: set[str]) -> list[str]:
    """Per-controller etcd pairs on disk for controllers no longer requested.

    They stay untouched, but they are still checked: they are signed by the live
    etcd CA and a broken one is worth knowing about.
    """
    etcd = files.root / "etcd"
    if not etcd.is_dir():
        return []
    names = set()
    try:
        entries = list(etcd.iterdir())
    except OSError as e:
        raise SecretsError(files.label("etcd"), f"cannot be listed ({e.strerror}); fix its permissions") from None
    for path in entries:
        if path.suffix in (".crt", ".key") and path.stem.startswith(("server-", "peer-")):
            names.add(f"etcd/{path.stem}")
    return sorted(names - requested)


# --- reading and validation ------------------------------------------------------


@dataclass(frozen=True)
class _Material:
    cert: cx509.Certificate
    key: PrivateKey
    cert_pem: bytes
    key_pem: bytes


class _Files:
    """File access under pki_dir, with the user-facing labels for messages."""

    def __init__(self, root: pathlib.Path):
        self.root = root

    def label(self, rel: str) -> str:
        return f"{self.root.name}/{rel}" if rel else self.root.name

    def read(self, rel: str) -> bytes | None:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            message = f"cannot be read ({e.strerror}); fix its permissions or restore it"
            raise SecretsError(self.label(rel), message) from None

    def read_pair(self, name: str, *, is_ca: bool) -> _Material | None:
        crt, key = f"{name}.crt", f"{name}.key"
        cert_pem, key_pem = self.read(crt), self.read(key)
        if cert_pem is None and key_pem is None:
            return None
        if key_pem is None or cert_pem is None:
            missing, present = (key, crt) if key_pem is None else (crt, key)
            raise SecretsError(
                self.label(missing), f"is missing but {self.label(present)} exists; {self._fix(name, is_ca, 'it')}"
            )
        cert = self._load(crt, cert_pem, load_cert, name, is_ca)
        private = self._load(key, key_pem, load_private_key, name, is_ca)
        if not key_matches_cert(private, cert):
            raise SecretsError(
                self.label(key),
                f"does not match {self.label(crt)}; {self._fix(name, is_ca, 'the matching key')}",
            )
        return _Material(cert=cert, key=private, cert_pem=cert_pem, key_pem=key_pem)

    def _load(self, rel: str, data: bytes, loader: Callable[[bytes], _T], name: str, is_ca: bool) -> _T:
        try:
            return loader(data)
        except PEMError as e:
            raise SecretsError(self.label(rel), f"{e}; {self._fix(name, is_ca, 'it')}") from None

    def _fix(self, name: str, is_ca: bool, what: str) -> str:
        crt, key = self.label(f"{name}.crt"), self.label(f"{name}.key")
        if is_ca:
            return (
                f"restore {what} from backup (a new CA would invalidate every certificate it issued; "
                f"to start over, delete {crt}, {key} and every certificate it signed)"
            )
        return f"restore {what} from backup, or delete both {crt} and {key} to issue a new pair"


def _check_is_ca(files: _Files, name: str, material: _Material | None) -> None:
    if material is not None and not is_ca(material.cert):
        raise SecretsError(
            files.label(f"{name}.crt"),
            "is not a CA certificate (no BasicConstraints CA:TRUE); restore the CA from backup",
        )


def _check_issued(
    files: _Files, name: str, issuer: str, material: _Material, cas: Mapping[str, _Material | None]
) -> None:
    crt, key = files.label(f"{name}.crt"), files.label(f"{name}.key")
    ca_crt, ca_key = files.label(f"{issuer}.crt"), files.label(f"{issuer}.key")
    ca = cas[issuer]
    if ca is None:
        raise SecretsError(
            ca_crt,
            f"is missing but {crt} exists and was issued by it; restore {ca_crt} and {ca_key} from backup, "
            f"or delete every certificate it signed (such as {crt} and {key}) to start a new CA",
        )
    if not is_signed_by(material.cert, ca.cert):
        raise SecretsError(
            crt,
            f"was not issued by {ca_crt} (was the CA replaced?); restore the original {ca_crt} and {ca_key} "
            f"from backup, or delete both {crt} and {key} to issue a new pair from the current CA",
        )


def _read_service_account(files: _Files) -> tuple[PrivateKey | None, bytes | None, bytes | None]:
    key_pem, pub_pem = files.read("sa.key"), files.read("sa.pub")
    key_label, pub_label = files.label("sa.key"), files.label("sa.pub")
    new_pair = (
        f"delete both {key_label} and {pub_label} to create a new pair "
        "(issued service-account tokens then stop working)"
    )
    derive = f"restore it from backup, or delete it to derive it from {key_label}"
    if key_pem is None:
        if pub_pem is not None:
            raise SecretsError(key_label, f"is missing but {pub_label} exists; restore it from backup, or {new_pair}")
        return None, None, None
    try:
        key = load_private_key(key_pem)
    except PEMError as e:
        raise SecretsError(key_label, f"{e}; restore it from backup, or {new_pair}") from None
    if pub_pem is not None:
        try:
            public = load_public_key(pub_pem)
        except PEMError as e:
            raise SecretsError(pub_label, f"{e}; {derive}") from None
        if not same_public_key(public, key.public_key()):
            raise SecretsError(pub_label, f"does not match {key_label}; {derive}")
    return key, key_pem, pub_pem


# --- planning ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Write:
    rel: str
    data: bytes
    mode: int
    replace: bool = False  # only a reissued certificate replaces a file


class _Plan:
    """Material to write, built in memory so that nothing is written on error."""

    def __init__(self, files: _Files):
        self.files = files
        self.writes: list[_Write] = []
        self.created: list[str] = []
        self.reissued: list[str] = []
        self._keys: dict[str, PrivateKey] = {}

    def new_ca(self, ca: _CA, request: PKIRequest, now: datetime.datetime) -> _Material:
        key = generate_private_key(request.key_algorithm)
        cert = build_ca(key, ca.common_name, now, request.ca_validity)
        return self._add_new(ca.name, key, cert)

    def new_leaf(self, leaf: _Leaf, issuer: _Material, request: PKIRequest, now: datetime.datetime) -> _Material:
        self._check_usable(leaf.issuer, issuer, now)
        key = generate_private_key(request.key_algorithm)
        cert = sign_leaf(key.public_key(), leaf.profile, issuer.cert, issuer.key, now, request.cert_validity)
        return self._add_new(leaf.name, key, cert)

    def reissue_if_sans_changed(
        self, leaf: _Leaf, current: _Material, issuer: _Material, request: PKIRequest, now: datetime.datetime
    ) -> _Material:
        added, removed = _san_diff(current.cert, leaf.profile)
        if not added:
            return current
        self._check_usable(leaf.issuer, issuer, now)
        cert = sign_leaf(current.key.public_key(), leaf.profile, issuer.cert, issuer.key, now, request.cert_validity)
        crt = f"{leaf.name}.crt"
        retired = f"{RETIRED_DIR}/{leaf.name.replace('/', '-')}-{current.cert.serial_number:x}.crt"
        self._retire(retired, current.cert_pem)
        cert_pem = cert_to_pem(cert)
        self.writes.append(_Write(crt, cert_pem, PUBLIC_MODE, replace=True))
        change = f"added {', '.join(added)}" + (f"; removed {', '.join(removed)}" if removed else "")
        self.reissued.append(
            f"{self.files.label(crt)}: SANs changed ({change}); old certificate kept as {self.files.label(retired)}"
        )
        return _Material(cert=cert, key=current.key, cert_pem=cert_pem, key_pem=current.key_pem)

    def service_account(
        self, key: PrivateKey | None, key_pem: bytes | None, pub_pem: bytes | None, request: PKIRequest
    ) -> tuple[bytes, bytes]:
        if key is None or key_pem is None:
            key = generate_private_key(request.key_algorithm)
            key_pem = private_key_to_pem(key)
            self._add("sa.key", key_pem, KEY_MODE)
        if pub_pem is None:
            # sa.pub is a function of sa.key, so a missing one is derived, not an error.
            pub_pem = public_key_to_pem(key.public_key())
            self._add("sa.pub", pub_pem, PUBLIC_MODE)
        return key_pem, pub_pem

    def apply(self) -> None:
        _apply(self.files, self.writes)

    def _add_new(self, name: str, key: PrivateKey, cert: cx509.Certificate) -> _Material:
        key_pem, cert_pem = private_key_to_pem(key), cert_to_pem(cert)
        # Key first: if writing stops half-way, a key without a certificate is
        # reported on the next run, and no certificate ever points at a lost key.
        self._add(f"{name}.key", key_pem, KEY_MODE)
        self._add(f"{name}.crt", cert_pem, PUBLIC_MODE)
        return _Material(cert=cert, key=key, cert_pem=cert_pem, key_pem=key_pem)

    def _add(self, rel: str, data: bytes, mode: int) -> None:
        self.writes.append(_Write(rel, data, mode))
        self.created.append(self.files.label(rel))

    def _retire(self, rel: str, cert_pem: bytes) -> None:
        # The old certificate is written out before its replacement goes in, so a
        # run that stops in between still has both.
        existing = self.files.read(rel)
        if existing is None:
            self.writes.append(_Write(rel, cert_pem, PUBLIC_MODE))
            return
        if existing == cert_pem:
            return  # kept by an earlier run that stopped before replacing
        raise SecretsError(
            self.files.label(rel),
            "already exists with other content, so the certificate it would keep cannot be retired; move it elsewhere",
        )

    def _check_usable(self, name: str, ca: _Material, now: datetime.datetime) -> None:
        if ca.cert.not_valid_after_utc <= now:
            raise SecretsError(
                self.files.label(f"{name}.crt"),
                f"expired on {ca.cert.not_valid_after_utc:%Y-%m-%d}, so it cannot issue certificates; "
                "rotate the CA explicitly",
            )


def _san_diff(cert: cx509.Certificate, profile: LeafProfile) -> tuple[list[str], list[str]]:
    """SANs the profile needs that the certificate lacks, and ones it has beyond the profile."""
    have_dns, have_ips = cert_sans(cert)
    want_dns = {d.lower() for d in profile.dns_names}
    want_ips = set(profile.ip_addresses)
    added = [d for d in dict.fromkeys(profile.dns_names) if d.lower() not in have_dns]
    added += [str(ip) for ip in dict.fromkeys(profile.ip_addresses) if ip not in have_ips]
    removed = sorted(have_dns - want_dns)
    removed += [str(ip) for ip in sorted(have_ips - want_ips, key=lambda ip: (ip.version, int(ip)))]
    return added, removed


# --- writing -----------------------------------------------------------------------


def _apply(files: _Files, writes: list[_Write]) -> None:
    # New files first: a reissued certificate's old copy lands in retired/
    # before the certificate itself is replaced.
    current = None
    try:
        write_new_files(((files.root / w.rel, w.data, w.mode) for w in writes if not w.replace), journal_dir=files.root)
        for write in writes:
            if write.replace:
                current = write
                replace_file(files.root / write.rel, write.data, write.mode)
    except FileExistsError as exc:
        raise SecretsError(
            _label_of(files, exc.filename, current),
            "appeared while stellwerk was writing it (is another stellwerk running on this directory?); "
            "it was left as it is",
        ) from None
    except OSError as exc:
        raise SecretsError(_label_of(files, exc.filename, current), f"cannot be written ({exc.strerror})") from None


def _label_of(files: _Files, filename: str | None, current: _Write | None) -> str:
    if current is not None:
        return files.label(current.rel)
    if filename:
        try:
            return files.label(str(pathlib.Path(filename).relative_to(files.root)))
        except ValueError:
            pass
    return files.root.name


# --- small helpers -----------------------------------------------------------------


def _key_pair(material: _Material) -> KeyPair:
    return KeyPair(cert_pem=material.cert_pem, key_pem=material.key_pem)


def _check_request(request: PKIRequest) -> None:
    # The spec validates all of this for users; these guard the code paths that
    # would otherwise write odd file names or generate the wrong keys.
    if request.key_algorithm not in KEY_ALGORITHMS:
        expected = ", ".join(KEY_ALGORITHMS)
        raise ValueError(f"unknown key algorithm {request.key_algorithm!r}; expected one of {expected}")
    names = [c.name for c in request.controllers]
    for name in names:
        if not _NODE_NAME.match(name):
            raise ValueError(f"controller name {name!r} is not a DNS-1123 name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate controller names: {', '.join(duplicates)}")


def _utc_now(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is None:
        return now.replace(tzinfo=datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc)


def _as_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None

