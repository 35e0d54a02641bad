"""Cluster PKI: layout, extensions, load-or-create rules, and refusal of broken state.

Chains and extensions are checked with the real `openssl` binary; everything
else with real files in a temporary directory. ECDSA is used wherever the
algorithm does not matter, to keep the file fast.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stellwerk import x509 as sx
from stellwerk.base.errors import SecretsError
from stellwerk.pki import (
    PKI,
    ControllerIdentity,
    PKIRequest,
    certificate_statuses,
    load_or_create_pki,
)

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)

CA_NAMES = ("ca", "front-proxy-ca", "etcd/ca")
CLIENTS = {
    # name: (CN, O, CA)
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ["kubeadm:cluster-admins"], "ca"),
    "front-proxy-client": ("front-proxy-client", [], "front-proxy-ca"),
    "etcd/healthcheck-client": ("kube-etcd-healthcheck-client", [], "etcd/ca"),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", [], "etcd/ca"),
    "admin": ("kubernetes-admin", ["system:masters"], "ca"),
    "controller-manager": ("system:kube-controller-manager", [], "ca"),
    "scheduler": ("system:kube-scheduler", [], "ca"),
}

def controller(name: str, address: str) -> ControllerIdentity:
    return ControllerIdentity(name=name, address=ipaddress.ip_address(address))


CONTROLLERS = (controller("c1", "10.0.0.11"), controller("c2", "10.0.0.12"), controller("c3", "10.0.0.13"))


def make_request(algorithm: str = "ecdsa-p256", **changes) -> PKIRequest:
    request = PKIRequest(
        cluster_name="demo",
        key_algorithm=algorithm,
        ca_validity=3650 * DAY,
        cert_validity=365 * DAY,
        api_endpoint="api.demo.example",
        api_service_ip=ipaddress.ip_address("10.96.0.1"),
        cluster_domain="cluster.local",
        controllers=CONTROLLERS,
    )
    return replace(request, **changes)


def layout_names(request: PKIRequest) -> list[str]:
    names = ["ca", "front-proxy-ca", "etcd/ca", "apiserver", *CLIENTS]
    for c in request.controllers:
        names += [f"etcd/server-{c.name}", f"etcd/peer-{c.name}"]
    return names


def issuer_of(name: str) -> str:
    if name in CLIENTS:
        return CLIENTS[name][2]
    return "etcd/ca" if name.startswith("etcd/") else "ca"


def snapshot(root: pathlib.Path) -> dict[str, tuple[bytes | None, int, int]]:
    """Every path under root with its bytes, permission bits and mtime."""
    entries = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.stat()
        data = path.read_bytes() if path.is_file() else None
        entries[path.relative_to(root).as_posix()] = (data, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return entries


def cert(pki_dir: pathlib.Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((pki_dir / f"{name}.crt").read_bytes())


def openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def openssl_extensions(pki_dir: pathlib.Path, name: str) -> dict[str, tuple[bool, str]]:
    """Extensions from `openssl x509 -text`: name -> (critical, value text)."""
    text = openssl("x509", "-noout", "-text", "-in", str(pki_dir / f"{name}.crt"))
    found = {}
    for match in re.finditer(r"^ {12}(X509v3 [^:]+):( critical)?\s*\n {16}(.+)$", text, re.MULTILINE):
        found[match.group(1)] = (bool(match.group(2)), match.group(3).strip())
    return found


# --- fixtures --------------------------------------------------------------------------


Built = Callable[[str], tuple[pathlib.Path, PKI]]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """One PKI per algorithm, created once; tests that mutate it work on copies."""
    cache: dict[str, tuple[pathlib.Path, PKI]] = {}

    def get(algorithm: str) -> tuple[pathlib.Path, PKI]:
        if algorithm not in cache:
            pki_dir = tmp_path_factory.mktemp(algorithm) / "pki"
            cache[algorithm] = (pki_dir, load_or_create_pki(pki_dir, make_request(algorithm), now=NOW))
        return cache[algorithm]

    return get


@pytest.fixture
def pki_dir(built, tmp_path) -> pathlib.Path:
    """A private copy of the ECDSA PKI (modes and mtimes preserved)."""
    source, _ = built("ecdsa-p256")
    target = tmp_path / "assets" / "pki"
    shutil.copytree(source, target)
    return target


# --- creation: layout, chains, extensions ----------------------------------------------------


@pytest.mark.engine
@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_every_chain_verifies_with_openssl(built, algorithm):
    pki_dir, pki = built(algorithm)
    request = make_request(algorithm)
    assert set(pki.pairs) == set(layout_names(request))
    for name in layout_names(request):
        ca_file = pki_dir / f"{issuer_of(name) if name not in CA_NAMES else name}.crt"
        leaf_file = pki_dir / f"{name}.crt"
        out = openssl("verify", "-x509_strict", "-CAfile", str(ca_file), str(leaf_file))
        assert out.strip() == f"{leaf_file}: OK"
        # The key on disk belongs to the certificate, as openssl sees them.
        cert_pub = openssl("x509", "-noout", "-pubkey", "-in", str(leaf_file))
        key_pub = openssl("pkey", "-pubout", "-in", str(pki_dir / f"{name}.key"))
        assert cert_pub == key_pub


@pytest.mark.engine
@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "rsa-2048"])
def test_key_algorithm_and_service_account_pair(built, algorithm):
    pki_dir, pki = built(algorithm)
    for name in layout_names(make_request(algorithm)):
        key = sx.load_private_key((pki_dir / f"{name}.key").read_bytes())
        if algorithm == "ecdsa-p256":
            assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        else:
            assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        assert (pki_dir / f"{name}.key").read_bytes().startswith(b"-----BEGIN " + b"PRIVATE KEY-----\n")
    assert pki.sa_pub_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert openssl("pkey", "-pubout", "-in", str(pki_dir / "sa.key")).encode() == pki.sa_pub_pem
    assert pki.sa_key_pem == (pki_dir / "sa.key").read_bytes()


@pytest.mark.engine
def test_purposes_accepted_by_openssl(built):
    pki_dir, _ = built("ecdsa-p256")
    servers = ["apiserver", "etcd/server-c1", "etcd/peer-c1"]
    clients = [*CLIENTS, "etcd/server-c2", "etcd/peer-c2"]
    for purpose, names in (("sslserver", servers), ("sslclient", clients)):
        for name in names:
            ca = pki_dir / f"{issuer_of(name)}.crt"
            openssl("verify", "-purpose", purpose, "-CAfile", str(ca), str(pki_dir / f"{name}.crt"))
    # A client certificate must not pass as a server one.
    result = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(pki_dir / "ca.crt"), str(pki_dir / "admin.crt")],
        capture_output=True,
        check=False,
    )
    assert result.returncode != 0


@pytest.mark.engine
def test_apiserver_as_openssl_prints_it(built):
    pki_dir, _ = built("ecdsa-p256")
    text = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", str(pki_dir / "apiserver.crt"))
    assert text.strip() == "subject=CN=kube-apiserver"
    ext = openssl_extensions(pki_dir, "apiserver")
    assert ext["X509v3 Key Usage"] == (True, "Digital Signature, Key Encipherment")
    assert ext["X509v3 Basic Constraints"] == (True, "CA:FALSE")
    assert ext["X509v3 Extended Key Usage"] == (False, "TLS Web Server Authentication")
    assert "X509v3 Subject Key Identifier" in ext
    ca_ski = openssl_extensions(pki_dir, "ca")["X509v3 Subject Key Identifier"][1]
    assert ext["X509v3 Authority Key Identifier"][1].removeprefix("keyid:") == ca_ski
    sans = ext["X509v3 Subject Alternative Name"][1].split(", ")
    assert sans == [
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
        "DNS:api.demo.example",
        "DNS:c1",
        "DNS:c2",
        "DNS:c3",
        "IP Address:10.96.0.1",
        "IP Address:127.0.0.1",
        "IP Address:10.0.0.11",
        "IP Address:10.0.0.12",
        "IP Address:10.0.0.13",
    ]


@pytest.mark.engine
@pytest.mark.parametrize("name", CA_NAMES)
def test_ca_extensions_as_openssl_prints_them(built, name):
    pki_dir, _ = built("ecdsa-p256")
    ext = openssl_extensions(pki_dir, name)
    assert ext["X509v3 Key Usage"] == (True, "Digital Signature, Key Encipherment, Certificate Sign")
    assert ext["X509v3 Basic Constraints"] == (True, "CA:TRUE")
    ca = cert(pki_dir, name)
    assert ca.subject == ca.issuer
    expected_cn = {"ca": "kubernetes", "front-proxy-ca": "front-proxy-ca", "etcd/ca": "etcd-ca"}[name]
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected_cn
    assert ca.not_valid_after_utc == NOW + 3650 * DAY
    assert ca.not_valid_before_utc == NOW - datetime.timedelta(minutes=5)


def test_api_endpoint_ip_literal_becomes_ip_san(tmp_path):
    request = make_request(api_endpoint="192.0.2.10", controllers=CONTROLLERS[:1])
    load_or_create_pki(tmp_path / "pki", request, now=NOW)
    dns, ips = sx.cert_sans(cert(tmp_path / "pki", "apiserver"))
    assert ipaddress.ip_address("192.0.2.10") in ips
    assert "192.0.2.10" not in dns


@pytest.mark.parametrize("kind", ["server", "peer"])
def test_etcd_member_certificates(built, kind):
    pki_dir, _ = built("ecdsa-p256")
    for c in CONTROLLERS:
        leaf = cert(pki_dir, f"etcd/{kind}-{c.name}")
        assert leaf.subject.rfc4514_string() == f"CN={c.name}"
        assert leaf.issuer == cert(pki_dir, "etcd/ca").subject
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [c.name, "localhost"]
        assert san.get_values_for_type(x509.IPAddress) == [
            c.address,
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        ]
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_certificates(built, name):
    pki_dir, _ = built("ecdsa-p256")
    common_name, organizations, issuer = CLIENTS[name]
    leaf = cert(pki_dir, name)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name
    assert [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == organizations
    assert leaf.issuer == cert(pki_dir, issuer).subject
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert leaf.not_valid_after_utc == NOW + 365 * DAY
    assert leaf.not_valid_before_utc == NOW - datetime.timedelta(minutes=5)
    assert 0 < leaf.serial_number < 2**127


def test_file_modes(built):
    pki_dir, pki = built("ecdsa-p256")
    for rel, (data, mode, _) in snapshot(pki_dir).items():
        if data is None:
            assert mode == 0o755, rel
        elif rel.endswith(".key"):
            assert mode == 0o600, rel
        else:
            assert mode == 0o644, rel
    assert len(pki.created) == 2 * len(pki.pairs) + 2
    assert sorted(pki.created) == sorted(f"pki/{rel}" for rel, (data, _, _) in snapshot(pki_dir).items() if data)


def test_modes_do_not_depend_on_the_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        load_or_create_pki(tmp_path / "assets" / "pki", make_request(controllers=CONTROLLERS[:1]), now=NOW)
    finally:
        os.umask(previous)
    modes = {rel: mode for rel, (_, mode, _) in snapshot(tmp_path).items()}
    assert modes["assets"] == modes["assets/pki"] == modes["assets/pki/etcd"] == 0o755
    assert modes["assets/pki/ca.crt"] == modes["assets/pki/sa.pub"] == 0o644
    assert modes["assets/pki/ca.key"] == 0o600


def test_leaf_never_outlives_its_ca(tmp_path):
    request = make_request(ca_validity=30 * DAY, cert_validity=365 * DAY, controllers=CONTROLLERS[:1])
    pki = load_or_create_pki(tmp_path / "pki", request, now=NOW)
    for name in pki.pairs:
        leaf = x509.load_pem_x509_certificate(pki.pair(name).cert_pem)
        assert leaf.not_valid_after_utc == NOW + 30 * DAY


# --- load, do not recreate -----------------------------------------------------------------


def test_second_call_changes_nothing(built, pki_dir):
    _, first = built("ecdsa-p256")
    before = snapshot(pki_dir)
    again = load_or_create_pki(pki_dir, make_request())
    assert again.created == () and again.reissued == ()
    assert snapshot(pki_dir) == before
    assert dict(again.pairs) == dict(first.pairs)
    assert (again.sa_key_pem, again.sa_pub_pem) == (first.sa_key_pem, first.sa_pub_pem)
    for name, pair in again.pairs.items():
        assert pair.cert_pem == (pki_dir / f"{name}.crt").read_bytes()
        assert pair.key_pem == (pki_dir / f"{name}.key").read_bytes()


def test_existing_keys_survive_a_change_of_algorithm(pki_dir):
    before = snapshot(pki_dir)
    request = make_request("rsa-2048", controllers=(*CONTROLLERS, controller("c4", "10.0.0.14")))
    pki = load_or_create_pki(pki_dir, request)
    after = snapshot(pki_dir)
    for rel, entry in before.items():
        if entry[0] is not None and rel != "apiserver.crt":  # files only: directories gain entries
            assert after[rel] == entry, rel
    # Only the new member's keys use the new algorithm; its CA stays ECDSA.
    new_key = sx.load_private_key(pki.pair("etcd/server-c4").key_pem)
    assert isinstance(new_key, rsa.RSAPrivateKey)
    assert sx.is_signed_by(cert(pki_dir, "etcd/server-c4"), cert(pki_dir, "etcd/ca"))


def test_adding_a_controller(pki_dir):
    before = snapshot(pki_dir)
    old_apiserver = cert(pki_dir, "apiserver")
    request = make_request(controllers=(*CONTROLLERS, controller("c4", "10.0.0.14")))

    pki = load_or_create_pki(pki_dir, request)

    assert sorted(pki.created) == [
        "pki/etcd/peer-c4.crt",
        "pki/etcd/peer-c4.key",
        "pki/etcd/server-c4.crt",
        "pki/etcd/server-c4.key",
    ]
    retired = f"retired/apiserver-{old_apiserver.serial_number:x}.crt"
    assert pki.reissued == (
        f"pki/apiserver.crt: SANs changed (added c4, 10.0.0.14); old certificate kept as pki/{retired}",
    )
    after = snapshot(pki_dir)
    assert after[retired][0] == before["apiserver.crt"][0]
    assert after[retired][1] == 0o644 and after["retired"][1] == 0o755
    changed = {rel for rel in before if before[rel] != after[rel]}
    # Directories' mtimes move because entries appeared in them; no file but apiserver.crt changed.
    assert changed == {".", "etcd", "apiserver.crt"}

    new_apiserver = cert(pki_dir, "apiserver")
    assert sx.same_public_key(new_apiserver.public_key(), old_apiserver.public_key())
    assert new_apiserver.serial_number != old_apiserver.serial_number
    dns, ips = sx.cert_sans(new_apiserver)
    assert "c4" in dns and ipaddress.ip_address("10.0.0.14") in ips
    assert sx.is_signed_by(new_apiserver, cert(pki_dir, "ca"))
    assert pki.pair("apiserver").cert_pem == (pki_dir / "apiserver.crt").read_bytes()

    # Stable afterwards.
    again = load_or_create_pki(pki_dir, request)
    assert again.created == () and again.reissued == ()


@pytest.mark.engine
def test_reissued_certificates_verify(pki_dir):
    moved = (CONTROLLERS[0], controller("c2", "10.0.0.22"), CONTROLLERS[2])
    pki = load_or_create_pki(pki_dir, make_request(controllers=moved))
    assert pki.created == ()
    assert [line.split(":")[0] for line in pki.reissued] == [
        "pki/apiserver.crt",
        "pki/etcd/server-c2.crt",
        "pki/etcd/peer-c2.crt",
    ]
    assert "(added 10.0.0.22; removed 10.0.0.12)" in pki.reissued[0]
    for name in ("apiserver", "etcd/server-c2", "etcd/peer-c2"):
        ca_file = pki_dir / f"{issuer_of(name)}.crt"
        openssl("verify", "-x509_strict", "-CAfile", str(ca_file), str(pki_dir / f"{name}.crt"))
    _, ips = sx.cert_sans(cert(pki_dir, "etcd/peer-c2"))
    assert ipaddress.ip_address("10.0.0.22") in ips and ipaddress.ip_address("10.0.0.12") not in ips
    assert len(list((pki_dir / "retired").iterdir())) == 3


def test_removing_a_controller_leaves_its_files(pki_dir):
    before = snapshot(pki_dir)
    pki = load_or_create_pki(pki_dir, make_request(controllers=CONTROLLERS[:2]))
    assert pki.created == () and pki.reissued == ()
    assert snapshot(pki_dir) == before
    assert "etcd/server-c3" not in pki.pairs


def test_missing_service_account_public_key_is_derived(pki_dir):
    original = (pki_dir / "sa.pub").read_bytes()
    (pki_dir / "sa.pub").unlink()
    pki = load_or_create_pki(pki_dir, make_request())
    assert pki.created == ("pki/sa.pub",)
    assert (pki_dir / "sa.pub").read_bytes() == original == pki.sa_pub_pem


# --- refusing broken state ----------------------------------------------------------------


def _truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _swap(a: pathlib.Path, b: pathlib.Path) -> None:
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def _foreign_ca(pki_dir: pathlib.Path) -> None:
    key = sx.generate_private_key("ecdsa-p256")
    (pki_dir / "ca.key").write_bytes(sx.private_key_to_pem(key))
    (pki_dir / "ca.crt").write_bytes(sx.cert_to_pem(sx.build_ca(key, "kubernetes", NOW, 10 * DAY)))


BREAKAGES = {
    "garbage certificate": (
        lambda d: (d / "etcd/server-c1.crt").write_bytes(b"not a certificate\n"),
        "pki/etcd/server-c1.crt",
        "delete both pki/etcd/server-c1.crt and pki/etcd/server-c1.key",
    ),
    "truncated key": (lambda d: _truncate(d / "front-proxy-client.key"), "pki/front-proxy-client.key", "restore it"),
    "truncated CA key": (lambda d: _truncate(d / "etcd/ca.key"), "pki/etcd/ca.key", "a new CA would invalidate"),
    "swapped keys": (
        lambda d: _swap(d / "apiserver.key", d / "admin.key"),
        "pki/apiserver.key",
        "does not match pki/apiserver.crt",
    ),
    "foreign CA": (_foreign_ca, "pki/apiserver.crt", "was not issued by pki/ca.crt"),
    "key without certificate": (
        lambda d: (d / "etcd/peer-c2.crt").unlink(),
        "pki/etcd/peer-c2.crt",
        "is missing but pki/etcd/peer-c2.key exists",
    ),
    "certificate without key": (
        lambda d: (d / "apiserver.key").unlink(),
        "pki/apiserver.key",
        "delete both pki/apiserver.crt and pki/apiserver.key to issue a new pair",
    ),
    "CA gone, leaves left": (
        lambda d: [(d / f"etcd/ca.{s}").unlink() for s in ("crt", "key")],
        "pki/etcd/ca.crt",
        "is missing but",
    ),
    "leaf where the CA belongs": (
        lambda d: [shutil.copy(d / f"admin.{s}", d / f"front-proxy-ca.{s}") for s in ("crt", "key")],
        "pki/front-proxy-ca.crt",
        "is not a CA certificate",
    ),
    "service-account keys mismatch": (
        lambda d: (d / "sa.pub").write_bytes(sx.public_key_to_pem(sx.generate_private_key("ecdsa-p256").public_key())),
        "pki/sa.pub",
        "does not match pki/sa.key",
    ),
    "broken certificate of a removed controller": (
        lambda d: _truncate(d / "etcd/peer-c3.crt"),
        "pki/etcd/peer-c3.crt",
        "not a readable PEM certificate",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_state_is_refused_without_writing(pki_dir, breakage):
    break_it, file, hint = BREAKAGES[breakage]
    break_it(pki_dir)
    before = snapshot(pki_dir)
    controllers = CONTROLLERS[:2] if "removed" in breakage else (*CONTROLLERS, controller("c4", "10.0.0.14"))

    with pytest.raises(SecretsError) as caught:
        load_or_create_pki(pki_dir, make_request(controllers=controllers))

    assert snapshot(pki_dir) == before
    [problem] = caught.value.problems
    assert problem.file == file
    assert hint in problem.message
    assert str(caught.value).startswith(f"{file}: ")


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: _truncate(d / "ca.key"),
        lambda d: _swap(d / "scheduler.key", d / "admin.key"),
        lambda d: (d / "sa.key").write_bytes((d / "sa.key").read_bytes().replace(b"KEY-----\n", b"KEY-----\n!", 1)),
    ],
    ids=["truncated", "swapped", "damaged"],
)
def test_errors_never_show_key_material(pki_dir, break_it):
    key_lines = set()
    for path in pki_dir.rglob("*.key"):
        key_lines |= {line for line in path.read_text().splitlines() if not line.startswith("-----")}
    break_it(pki_dir)
    with pytest.raises(SecretsError) as caught:
        load_or_create_pki(pki_dir, make_request())
    message = str(caught.value)
    assert not any(line[:16] in message for line in key_lines if line)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_key_pair_repr_hides_the_key(built):
    _, pki = built("ecdsa-p256")
    assert b"PRIVATE" not in repr(pki.pair("ca")).encode()
    assert "PRIVATE" not in repr(pki)


def test_unknown_algorithm_is_rejected_before_anything(tmp_path):
    with pytest.raises(ValueError, match="unknown key algorithm"):
        load_or_create_pki(tmp_path / "pki", make_request("dsa-1024"))
    assert not (tmp_path / "pki").exists()


# --- certificate statuses ----------------------------------------------------------------------


def test_certificate_statuses(built, pki_dir):
    _, pki = built("ecdsa-p256")
    load_or_create_pki(pki_dir, make_request(controllers=(*CONTROLLERS, controller("c4", "10.0.0.14"))))
    statuses = certificate_statuses(pki_dir, now=NOW + 100 * DAY)

    expected = sorted(f"pki/{name}.crt" for name in [*pki.pairs, "etcd/server-c4", "etcd/peer-c4"])
    assert [s.path for s in statuses] == expected  # sorted, nothing from retired/
    by_path = {s.path: s for s in statuses}
    assert by_path["pki/ca.crt"].days_left == 3550
    assert by_path["pki/ca.crt"].subject == "CN=kubernetes"
    assert by_path["pki/admin.crt"].days_left == 265
    assert by_path["pki/admin.crt"].subject == "CN=kubernetes-admin,O=system:masters"
    assert by_path["pki/admin.crt"].not_after == NOW + 365 * DAY
    assert by_path["pki/etcd/server-c4.crt"].days_left >= 364 - 100  # issued now, not at NOW
    assert certificate_statuses(pki_dir, now=NOW + 400 * DAY)[0].days_left < 0


def test_certificate_statuses_name_a_broken_file(pki_dir):
    (pki_dir / "etcd" / "ca.crt").write_bytes(b"junk")
    with pytest.raises(SecretsError, match=r"pki/etcd/ca\.crt"):
        certificate_statuses(pki_dir)


# --- x509 primitives -----------------------------------------------------------------------


def test_generate_private_key_algorithms():
    assert isinstance(sx.generate_private_key("ecdsa-p256"), ec.EllipticCurvePrivateKey)
    assert sx.generate_private_key("rsa-2048").key_size == 2048
    assert sx.KEY_ALGORITHMS == ("ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096")
    with pytest.raises(ValueError):
        sx.generate_private_key("ed25519")


def test_signature_check_uses_the_signature_not_just_names():
    key = sx.generate_private_key("ecdsa-p256")
    impostor_key = sx.generate_private_key("ecdsa-p256")
    ca = sx.build_ca(key, "kubernetes", NOW, 10 * DAY)
    impostor = sx.build_ca(impostor_key, "kubernetes", NOW, 10 * DAY)  # same subject, other key
    leaf_key = sx.generate_private_key("ecdsa-p256")
    leaf = sx.sign_leaf(leaf_key.public_key(), sx.LeafProfile("x", client_auth=True), ca, key, NOW, DAY)
    assert sx.is_signed_by(leaf, ca)
    assert not sx.is_signed_by(leaf, impostor)
    assert sx.key_matches_cert(leaf_key, leaf) and not sx.key_matches_cert(key, leaf)
    with pytest.raises(sx.PEMError):
        sx.load_private_key(sx.cert_to_pem(leaf))
