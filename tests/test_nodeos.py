"""Every node OS keeps its promises: the spec offers exactly the registered families, and what each says of
itself (config format, netboot profile, install to disk, host parts) is what render makes of a cluster on it."""

from __future__ import annotations

import typing

import pytest

from stellwerk.ignition.nodeos import BY_FAMILY, families_that, node_os
from stellwerk.load import parse_cluster
from stellwerk.plan import make_plan
from stellwerk.spec import OS
from support.paths import BASE_EXAMPLE_TEXT, REPO
from support.sysext import build_images, on_flatcar


def plan_on(family: str):
    text = BASE_EXAMPLE_TEXT.replace("    family: lab\n", f"    family: {family}\n")
    cluster, _ = parse_cluster(text, "cluster.yaml")
    return make_plan(cluster, REPO / "examples")


def test_the_spec_offers_exactly_the_registered_families():
    assert set(typing.get_args(OS.model_fields["family"].annotation)) == set(BY_FAMILY)


@pytest.mark.parametrize("family", sorted(BY_FAMILY))
def test_the_netboot_profile_agrees_with_what_the_os_says_of_itself(family):
    nodeos, plan = node_os(family), plan_on(family)
    profile = nodeos.netboot_profile(plan)
    assert profile.config == ("installer" if nodeos.installs_to_disk else nodeos.config_format)
    assert (nodeos.install_metadata is not None) == nodeos.installs_to_disk
    assert profile.kernel.startswith("/assets/") and all(i.startswith("/assets/") for i in profile.initrd)
    assert profile.file == f"netboot/profiles/{profile.id}.json"


@pytest.mark.parametrize("family", sorted(BY_FAMILY))
def test_render_writes_the_config_the_os_reads_with_its_host_parts(family, tmp_path):
    from stellwerk.render import render

    cluster = tmp_path / "cluster.yaml"
    text = BASE_EXAMPLE_TEXT.replace("    family: lab\n", f"    family: {family}\n")
    cluster.write_text(on_flatcar(BASE_EXAMPLE_TEXT) if family == "flatcar" else text)
    build_images(cluster, tmp_path / "assets")  # nothing to build where the OS brings its own binaries
    render(cluster, tmp_path / "assets")
    nodeos = node_os(family)
    written = tmp_path / "assets" / "nodes" / "c1" / nodeos.config_file
    assert written.is_file() and [p.name for p in written.parent.iterdir()] == [nodeos.config_file]
    text = written.read_text()
    if family == "flatcar":
        assert "/etc/extensions/kubernetes.raw" in text and "/etc/extensions/etcd.raw" in text
    if family == "lab":
        assert '"label":"stellwerk-state"' in text
    if family == "debian":
        assert text.startswith("#cloud-config\n")
    groups = sorted(p.name for p in (tmp_path / "assets" / "netboot" / "groups").iterdir())
    assert ("c1-installed.json" in groups) == nodeos.installs_to_disk


def test_capabilities_read_as_prose_in_messages():
    assert families_that(lambda nodeos: nodeos.storage) == "flatcar or lab"
    assert families_that(lambda nodeos: nodeos.kernel_arguments) == "flatcar"
