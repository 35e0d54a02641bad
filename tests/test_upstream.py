"""Fetching pinned upstream manifests: real HTTP on loopback, real digests, a real cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from support.webserver import static_http
from stellwerk.base.errors import UserError
from stellwerk.release import UPSTREAM, UpstreamManifest
from stellwerk.upstream import cache_path, fetch, read_cached

BODY = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: fixture-system\n" * 200



@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "fixture.yaml").write_bytes(BODY)
    (root / "tampered.yaml").write_bytes(BODY.replace(b"fixture", b"evil-00"))
    (root / "huge.yaml").write_bytes(BODY * 3)
    with static_http(root) as base:
        yield base


def pin(url: str, data: bytes = BODY, name: str = "fixture") -> UpstreamManifest:
    return UpstreamManifest(name, "fixture", "v1.0.0", url, hashlib.sha256(data).hexdigest(), len(data))


def test_download_verifies_and_caches_by_digest(server, tmp_path):
    cache = tmp_path / "cache"
    manifest = pin(f"{server}/fixture.yaml")
    seen = []
    results = fetch([manifest], cache, progress=lambda name, done, total: seen.append((name, done, total)))
    assert [r.state for r in results] == ["fetched"]
    assert cache_path(cache, manifest).read_bytes() == BODY
    assert read_cached(cache, manifest) == BODY
    assert seen[-1] == ("fixture", len(BODY), len(BODY))
    assert [r.state for r in fetch([manifest], cache)] == ["cached"]


def test_a_file_that_is_not_the_pinned_one_is_refused_and_not_cached(server, tmp_path):
    cache = tmp_path / "cache"
    manifest = pin(f"{server}/tampered.yaml")  # pinned digest is of BODY, server sends other bytes of the same size
    with pytest.raises(UserError) as caught:
        fetch([manifest], cache)
    assert "not the pinned" in str(caught.value)
    assert read_cached(cache, manifest) is None
    assert not list((cache / "sha256").iterdir())  # no temporary file left behind


def test_oversized_and_missing_files_are_refused(server, tmp_path):
    with pytest.raises(UserError) as caught:
        fetch([pin(f"{server}/huge.yaml")], tmp_path / "cache")
    assert "larger than the pinned" in str(caught.value)
    with pytest.raises(UserError) as caught:
        fetch([pin(f"{server}/absent.yaml")], tmp_path / "cache")
    assert "HTTP 404" in str(caught.value) and "--mirror" in str(caught.value)


def test_unreachable_server_names_the_fix(tmp_path):
    with pytest.raises(UserError) as caught:
        fetch([pin("http://127.0.0.1:9/none.yaml")], tmp_path / "cache", timeout=5)
    assert "cannot download" in str(caught.value)


def test_a_corrupted_cache_entry_is_not_used(server, tmp_path):
    cache = tmp_path / "cache"
    manifest = pin(f"{server}/fixture.yaml")
    fetch([manifest], cache)
    cache_path(cache, manifest).write_bytes(b"garbage")
    assert read_cached(cache, manifest) is None
    assert [r.state for r in fetch([manifest], cache)] == ["fetched"]


def test_mirror_directory_for_air_gapped_sites(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fixture.yaml").write_bytes(BODY)
    manifest = pin("https://example.invalid/releases/v1/fixture.yaml")
    results = fetch([manifest], tmp_path / "cache", mirror=mirror)
    assert [r.state for r in results] == ["copied"]
    other = pin("https://example.invalid/other.yaml", data=b"other\n", name="other")
    with pytest.raises(UserError) as caught:
        fetch([other], tmp_path / "cache", mirror=mirror)
    assert "not in the mirror" in str(caught.value) and str(mirror / "other.yaml") in str(caught.value)


def test_cli_fetch_refuses_files_that_do_not_match_the_release_pins(tmp_path, run_cli):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    manifest = UPSTREAM["metallb-native"]
    (mirror / Path(manifest.url).name).write_bytes(b"not metallb\n")
    result = run_cli("components", "fetch", "--all", "--mirror", mirror, "--cache-dir", tmp_path / "cache")
    assert result.code == 2
    assert "metallb-native v0.16.1: has sha256" in result.err and "not the pinned" in result.err
    assert "calico v3.32.1: not in the mirror" in result.err  # every missing file is named, not just the first
    assert "Traceback" not in result.err
    assert run_cli("components", "fetch").code == 2


def test_an_unusable_cache_is_a_user_error(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fixture.yaml").write_bytes(BODY)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(UserError) as caught:
        fetch([pin("https://example.invalid/fixture.yaml")], blocker / "cache", mirror=mirror)
    assert "use a writable --cache-dir" in str(caught.value)
