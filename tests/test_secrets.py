"""The secrets stage on its own: load what is on disk, create only what is missing, never replace anything."""

from __future__ import annotations

import stat
import subprocess

import pytest

from stellwerk.base.errors import SecretsError
from stellwerk.load import parse_cluster
from stellwerk.plan import make_plan
from stellwerk.secrets import load_or_create_secrets, pki_request
from support.paths import EXAMPLE, REPO
from support.tools import require_tool


@pytest.fixture
def plan():
    cluster, _ = parse_cluster(EXAMPLE.read_text(), "cluster.yaml")
    return make_plan(cluster, REPO / "examples")


def files_of(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_first_load_creates_the_pki_the_mesh_keys_and_the_token_with_private_modes(tmp_path, plan):
    secrets = load_or_create_secrets(tmp_path, plan)
    assert set(secrets.wireguard) == {"c1", "c2", "c3", "w1"}
    assert "auth/bootstrap-token" in secrets.created and "wireguard/w1.key" in secrets.created
    assert {"pki/ca.key", "pki/etcd/server-c2.crt"} <= set(secrets.created)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            private = path.suffix == ".key" or path.name == "bootstrap-token"
            assert stat.S_IMODE(path.stat().st_mode) == (0o600 if private else 0o644), path
    openssl = require_tool("openssl")
    verified = subprocess.run([openssl, "verify", "-CAfile", tmp_path / "pki/etcd/ca.crt",
                               tmp_path / "pki/etcd/peer-c3.crt"], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr


def test_a_second_load_creates_nothing_and_reads_the_same_secrets(tmp_path, plan):
    first = load_or_create_secrets(tmp_path, plan)
    before = files_of(tmp_path)
    again = load_or_create_secrets(tmp_path, plan)
    assert again.created == () and again.reissued == ()
    assert files_of(tmp_path) == before
    assert again.wireguard == first.wireguard and again.bootstrap_token == first.bootstrap_token


def test_a_missing_public_key_is_derived_and_the_private_key_is_left_alone(tmp_path, plan):
    first = load_or_create_secrets(tmp_path, plan)
    key = (tmp_path / "wireguard/c2.key").read_bytes()
    (tmp_path / "wireguard/c2.pub").unlink()
    again = load_or_create_secrets(tmp_path, plan)
    assert again.created == ("wireguard/c2.pub",)
    assert (tmp_path / "wireguard/c2.key").read_bytes() == key
    assert (tmp_path / "wireguard/c2.pub").read_text().strip() == first.wireguard["c2"].public_key


def test_a_broken_key_stops_the_stage_before_anything_is_written(tmp_path, plan):
    load_or_create_secrets(tmp_path, plan)
    (tmp_path / "wireguard/w1.key").write_text("not a key\n")
    (tmp_path / "auth/bootstrap-token").unlink()
    before = files_of(tmp_path)
    with pytest.raises(SecretsError) as raised:
        load_or_create_secrets(tmp_path, plan)
    assert "wireguard/w1.key" in str(raised.value) and "restore it" in str(raised.value)
    assert files_of(tmp_path) == before  # the missing token was not made either


def test_secrets_never_show_their_private_parts(tmp_path, plan):
    secrets = load_or_create_secrets(tmp_path, plan)
    shown = repr(secrets) + repr(secrets.wireguard) + repr(secrets.pki)
    assert all(key.private_key not in shown for key in secrets.wireguard.values())
    assert b"PRIVATE KEY" not in shown.encode()


def test_the_pki_request_takes_the_plans_names_and_addresses(plan):
    request = pki_request(plan)
    assert request.cluster_name == "lab" and str(request.api_service_ip) == "10.3.0.1"
    assert [(c.name, str(c.address)) for c in request.controllers] == [
        ("c1", "10.213.0.11"), ("c2", "10.213.0.12"), ("c3", "10.213.0.13")]
