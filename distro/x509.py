"""X.509 primitives for the cluster PKI, on top of `cryptography`.

Only what kubeadm-compatible material needs: keys of a few algorithms, self-signed
CAs, leaves with SANs and EKUs, PEM in and out, and the two consistency checks
the loader relies on (key matches certificate, certificate issued by CA).

Errors raised here never carry key bytes: callers put the messages in front of
users, and a private key must never end up in a terminal or a log.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Kubernetes components accept RSA and ECDSA keys; anything else (Ed25519) breaks
# at least the service-account token signer, so it is not offered.
KEY_ALGORITHMS: tuple[str, ...] = ("ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096")
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}

# Clocks on freshly booted bare-metal nodes are often behind until NTP settles;
# a certificate that is "not yet valid" there would fail the first TLS handshake.
CLOCK_SKEW = datetime.timedelta(minutes=5)


class PEMError(ValueError):
    """A PEM blob that cannot be used; the message is safe to show (no key bytes)."""


@dataclass(frozen=True)
class LeafProfile:
    """What goes into a leaf certificate besides its key, issuer and validity."""

    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IPAddress, ...] = ()
    server_auth: bool = False
    client_auth: bool = False


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = _RSA_BITS.get(algorithm)
    if bits is None:
        raise ValueError(f"unknown key algorithm {algorithm!r}; expected one of {', '.join(KEY_ALGORITHMS)}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_serial() -> int:
    # Exactly 127 random-ish bits with the top one set: positive, never zero, and
    # always the same DER length, well inside RFC 5280's 20-octet limit.
    return secrets.randbits(126) | (1 << 126)


def build_ca(
    key: PrivateKey,
    common_name: str,
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.Certificate:
    """A self-signed CA certificate with kubeadm's extensions."""
    name = _name(common_name, ())
    not_before, not_after = _validity(now, now + validity)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            _key_usage(digital_signature=True, key_encipherment=True, key_cert_sign=True),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def sign_leaf(
    public_key: PublicKey,
    profile: LeafProfile,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.Certificate:
    """A leaf certificate for `public_key`, issued by the CA, never outliving it."""
    not_before, not_after = _validity(now, min(now + validity, ca_cert.not_valid_after_utc))
    if not_after <= not_before:
        raise ValueError(f"the CA {ca_cert.subject.rfc4514_string()} expires before the certificate would start")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(profile.common_name, profile.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(new_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )
    usages = _extended_key_usages(profile)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans = subject_alt_names(profile)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def subject_alt_names(profile: LeafProfile) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(profile.dns_names)]
    names += [x509.IPAddress(ip) for ip in dict.fromkeys(profile.ip_addresses)]
    return names


def cert_sans(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[IPAddress]]:
    """DNS names (lower case, as DNS compares them) and IP addresses a certificate covers."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    dns = frozenset(d.lower() for d in ext.get_values_for_type(x509.DNSName))
    # IP SANs may also hold networks (name constraints style); those cover no address.
    ips = frozenset(
        ip
        for ip in ext.get_values_for_type(x509.IPAddress)
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    )
    return dns, ips


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# --- PEM ---------------------------------------------------------------------


def private_key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def public_key_to_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Parse an unencrypted PEM private key (PKCS8, or the PKCS1/SEC1 forms kubeadm writes)."""
    # The underlying exception text is dropped on purpose: it is not worth the risk
    # of a library ever echoing part of the input back.
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise PEMError("the private key is encrypted; stellwerk needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PEMError("not a readable PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PEMError(f"unsupported private key type {type(key).__name__}; only RSA and ECDSA keys are used")
    return key


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise PEMError("not a readable PEM certificate") from None


def load_public_key(pem: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise PEMError("not a readable PEM public key") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise PEMError(f"unsupported public key type {type(key).__name__}; only RSA and ECDSA keys are used")
    return key


# --- consistency checks --------------------------------------------------------


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    return _spki(a) == _spki(b)


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    try:
        cert_public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return _spki(key.public_key()) == _spki(cert_public)


def is_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True if `ca_cert` issued `cert`: issuer name matches and the signature verifies."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


# --- helpers -------------------------------------------------------------------


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _name(common_name: str, organizations: tuple[str, ...]) -> x509.Name:
    # O before CN, the order Go's crypto/x509 (and so kubeadm) writes them in.
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _validity(now: datetime.datetime, not_after: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    # Certificates carry whole seconds; truncating here keeps the planned and the
    # encoded times identical, which matters for the "never beyond the CA" cap.
    start = _utc(now).replace(microsecond=0) - CLOCK_SKEW
    return start, _utc(not_after).replace(microsecond=0)


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _key_usage(
    *, digital_signature: bool = False, key_encipherment: bool = False, key_cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # Reuse the CA's own SKI when it has one, so the AKI matches it byte for byte
    # even for CAs made by other tools with a different SKI method.
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _extended_key_usages(profile: LeafProfile) -> list[x509.ObjectIdentifier]:
    usages = []
    if profile.server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if profile.client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return usages

