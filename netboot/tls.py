"""The HTTPS identity of the netboot server: a certificate from the cluster CA for the addresses machines reach.

Nodes trust it because their public config pins the cluster CA (`ignition.security.tls.certificateAuthorities`),
so the secret part of a config is only ever sent to a machine over a connection it has authenticated.

The key lives in ASSETS/state/tls/netboot.key (0600), created once. The certificate next to it is reused while it
is signed by the current CA, names every address asked for and has more than REISSUE_BEFORE left; otherwise it is
issued again for the same key.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from stellwerk.base.errors import Problem, UserError
from stellwerk.base.fsutil import make_dirs, replace_file, write_new_file
from stellwerk.x509 import (LeafProfile, PEMError, cert_sans, cert_to_pem, generate_private_key, is_signed_by,
                            key_matches_cert, load_cert, load_private_key, private_key_to_pem, sign_leaf)

TLS_DIR = "state/tls"
VALIDITY = datetime.timedelta(days=365)
REISSUE_BEFORE = datetime.timedelta(days=30)
KEY_ALGORITHM = "ecdsa-p256"


@dataclass(frozen=True)
class ServerIdentity:
    context: ssl.SSLContext
    ca_pem: bytes  # what nodes pin
    cert_path: Path


def server_identity(assets_dir: str | Path, addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
                    now: datetime.datetime | None = None) -> ServerIdentity:
    """An SSL server context for `addresses`, issuing or reissuing the certificate when needed."""
    assets = Path(assets_dir)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    wanted = tuple(dict.fromkeys(ipaddress.ip_address(str(a)) for a in addresses))
    ca_pem, ca_cert, ca_key = _cluster_ca(assets)
    directory = assets / TLS_DIR
    key_path, cert_path = directory / "netboot.key", directory / "netboot.crt"
    make_dirs(directory)
    if not key_path.exists():
        write_new_file(key_path, private_key_to_pem(generate_private_key(KEY_ALGORITHM)), 0o600)
    try:
        key = load_private_key(key_path.read_bytes())
    except (OSError, PEMError) as exc:
        raise UserError(Problem(str(key_path), None, "", f"cannot be used as the netboot TLS key ({exc}); "
                                "remove it and a new one is made")) from None
    if not _still_good(cert_path, key, ca_cert, wanted, now):
        cert = sign_leaf(key.public_key(), LeafProfile(common_name="stellwerk-netboot", ip_addresses=wanted,
                                                       server_auth=True), ca_cert, ca_key, now, VALIDITY)
        replace_file(cert_path, cert_to_pem(cert), 0o644)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return ServerIdentity(context, ca_pem, cert_path)


def _cluster_ca(assets: Path):
    cert_path, key_path = assets / "pki/ca.crt", assets / "pki/ca.key"
    try:
        ca_pem = cert_path.read_bytes()
        return ca_pem, load_cert(ca_pem), load_private_key(key_path.read_bytes())
    except FileNotFoundError as exc:
        raise UserError(Problem(str(exc.filename), None, "", "not found; netboot's HTTPS certificate is issued by "
                                "the cluster CA, so run `stellwerk render` first")) from None
    except (OSError, PEMError) as exc:
        raise UserError(Problem(str(cert_path.parent), None, "", f"the cluster CA cannot be used ({exc})")) from None


def _still_good(cert_path: Path, key, ca_cert: x509.Certificate, wanted: tuple, now: datetime.datetime) -> bool:
    try:
        cert = load_cert(cert_path.read_bytes())
    except (OSError, PEMError):
        return False
    _, ips = cert_sans(cert)
    return (key_matches_cert(key, cert) and is_signed_by(cert, ca_cert) and set(wanted) <= set(ips)
            and cert.not_valid_after_utc - now > REISSUE_BEFORE)
