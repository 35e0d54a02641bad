"""`stellwerk images list`: every image the rendered cluster names, each pinned, found independently of the
command by reading every rendered manifest and node config as text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support.paths import REPO, SHARED
from support.sysext import render_flatcar

RACK = REPO / "examples/rack-cluster.yaml"
IMAGE_LINE = re.compile(r"^[ \t]*(?:-[ \t]+)?image:[ \t]*[\"']?([^\s\"'#]+)", re.M)


def named_images(assets: Path) -> set[str]:
    """Every `image:` in the rendered manifests and in the files of the nodes' configs (static pods)."""
    from stellwerk.ignition.model import decode_data_url

    found = set()
    for path in (assets / "manifests").rglob("*.yaml"):
        found |= set(IMAGE_LINE.findall(path.read_text()))
    for config in (assets / "nodes").glob("*/ignition.json"):
        for entry in json.loads(config.read_text())["storage"]["files"]:
            source = entry.get("contents", {}).get("source", "")
            if source.startswith("data:") and entry["path"].endswith(".yaml"):
                found |= set(IMAGE_LINE.findall(decode_data_url(source).decode()))
    return found


def test_every_image_the_rendered_cluster_names_is_listed_and_pinned(tmp_path, run_cli):
    cache = tmp_path / "cache"
    assert run_cli("components", "fetch", RACK, "--mirror", SHARED / "upstream", "--cache-dir", cache).code == 0
    render_flatcar(RACK, tmp_path / "assets", cache_dir=cache)
    named = named_images(tmp_path / "assets")
    assert len(named) > 8 and "registry.k8s.io/kube-apiserver:v1.31.4" in named

    listed = run_cli("images", "list", RACK, "--cache-dir", cache)
    assert listed.code == 0, listed.err
    images = listed.out.split()
    assert images == sorted(set(images))
    # the same set, each way: nothing named is left out, nothing listed is named nowhere (the CephCluster's
    # cephVersion.image, which Rook runs Ceph's daemons from, among them)
    assert set(images) == named, (sorted(named - set(images)), sorted(set(images) - named))
    assert "quay.io/ceph/ceph:v20.2.4" in images
    where = run_cli("images", "list", RACK, "--cache-dir", cache, "--where").out
    assert "registry.k8s.io/kube-proxy:v1.31.4  (manifests/cluster-addons DaemonSet kube-system/kube-proxy)" in where


def test_without_the_upstream_manifests_the_list_says_it_is_incomplete(tmp_path, run_cli):
    result = run_cli("images", "list", RACK, "--cache-dir", tmp_path / "empty")
    assert result.code == 1 and "registry.k8s.io/kube-proxy:v1.31.4" in result.out
    assert "not listed: the images of calico, metallb-native" in result.err
    assert f"run `stellwerk components fetch {RACK}` first" in result.err


@pytest.mark.parametrize("image, pinned", [
    ("registry.k8s.io/kube-proxy:v1.31.4", True), ("quay.io/calico/node@sha256:" + "a" * 64, True),
    ("busybox", False), ("busybox:latest", False), ("localhost:5000/busybox", False),
    ("localhost:5000/busybox:1.36", True),
])
def test_pinned_means_one_tag_or_a_digest(image, pinned):
    from stellwerk.imagelist import pinned as is_pinned

    assert is_pinned(image) is pinned
