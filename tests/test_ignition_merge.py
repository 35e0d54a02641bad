"""merge(): Ignition's merge rules, checked by hand and against Ignition's own merge."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from support.ignition_engine import apply, merged_by_ignition, require_engine, validate
from stellwerk.ignition.merge import MergeConflict, merge
from stellwerk.ignition.model import (
    Config,
    ConfigReference,
    Directory,
    Disk,
    Dropin,
    File,
    Filesystem,
    Group,
    Link,
    Partition,
    Raid,
    Unit,
    User,
    data_url,
    dumps,
    loads,
    to_dict,
)


def sha512(data: bytes) -> str:
    return "sha512-" + hashlib.sha512(data).hexdigest()


# --------------------------------------------------------------------------- files, directories, links


def test_later_file_replaces_only_the_fields_it_sets() -> None:
    earlier = File("/etc/a", contents=b"old", mode=0o600, user="core", group="core")
    later = File("/etc/a", mode=0o640, user="etcd", overwrite=None)  # no contents: keep the earlier ones
    assert merge(Config(files=(earlier,)), Config(files=(later,))).files == (
        File("/etc/a", contents=b"old", mode=0o640, user="etcd", group="core"),
    )


def test_later_contents_bring_their_own_hash_and_compression() -> None:
    earlier = File("/opt/bin/tool", source="https://example.com/tool.gz", compression="gzip", verification=sha512(b"t"))
    merged = merge(Config(files=(earlier,)), Config(files=(File("/opt/bin/tool", contents=b"#!/bin/sh\n", mode=0o755),)))
    assert merged.files == (File("/opt/bin/tool", contents=b"#!/bin/sh\n", mode=0o755),)


def test_appends_are_concatenated() -> None:
    merged = merge(
        Config(files=(File("/etc/a", contents=b"x", append=(b"1",)),)),
        Config(files=(File("/etc/a", overwrite=None, mode=None, append=(b"2", b"3")),)),
    )
    assert merged.files == (File("/etc/a", contents=b"x", append=(b"1", b"2", b"3")),)


def test_output_is_in_first_seen_order() -> None:
    merged = merge(
        Config(files=(File("/a", contents=b"1"), File("/b", contents=b"1")), directories=(Directory("/d1"),)),
        Config(files=(File("/c", contents=b"2"), File("/a", contents=b"2")), directories=(Directory("/d0"),)),
    )
    assert [f.path for f in merged.files] == ["/a", "/b", "/c"]
    assert merged.files[0].contents == b"2"
    assert [d.path for d in merged.directories] == ["/d1", "/d0"]


def test_duplicates_within_one_config_are_folded() -> None:
    merged = merge(Config(files=(File("/a", contents=b"1"), File("/a", contents=b"2"))))
    assert merged.files == (File("/a", contents=b"2"),)


def test_directories_and_links_merge_field_by_field() -> None:
    merged = merge(
        Config(directories=(Directory("/d", mode=0o700, user="core"),), links=(Link("/l", "/a", user="core"),)),
        Config(directories=(Directory("/d", mode=None, group="core"),), links=(Link("/l", "/b", overwrite=None),)),
    )
    assert merged.directories == (Directory("/d", mode=0o700, user="core", group="core"),)
    assert merged.links == (Link("/l", "/b", user="core"),)


@pytest.mark.parametrize(
    ("earlier", "later", "kinds"),
    [
        (Config(files=(File("/x"),)), Config(directories=(Directory("/x"),)), ("a file", "a directory")),
        (Config(files=(File("/x"),)), Config(links=(Link("/x", "/y"),)), ("a file", "a link")),
        (Config(links=(Link("/x", "/y"),)), Config(directories=(Directory("/x"),)), ("a link", "a directory")),
        (Config(directories=(Directory("/x"),), files=(File("/x"),)), Config(), ("a file", "a directory")),
    ],
)
def test_a_path_with_two_node_types_conflicts(earlier: Config, later: Config, kinds: tuple[str, str]) -> None:
    with pytest.raises(MergeConflict) as err:
        merge(earlier, later)
    assert err.value.path == "/x"
    assert all(kind in err.value.message for kind in kinds)


# --------------------------------------------------------------------------- units, users, groups


def test_units_merge_by_name_and_dropins_by_name() -> None:
    earlier = Unit("a.service", "[Unit]\n", enabled=True, dropins=(Dropin("10.conf", "one"), Dropin("20.conf", "two")))
    later = Unit("a.service", mask=False, dropins=(Dropin("20.conf", "TWO"), Dropin("30.conf", "three")))
    merged = merge(Config(units=(earlier, Unit("b.service", enabled=True))), Config(units=(later,)))
    assert merged.units == (
        Unit(
            "a.service",
            "[Unit]\n",
            enabled=True,
            mask=False,
            dropins=(Dropin("10.conf", "one"), Dropin("20.conf", "TWO"), Dropin("30.conf", "three")),
        ),
        Unit("b.service", enabled=True),
    )


def test_users_merge_by_name_with_keys_and_groups_deduplicated_in_order() -> None:
    earlier = User("core", ssh_authorized_keys=("k1", "k0"), groups=("wheel",), shell="/bin/bash")
    later = User("core", ssh_authorized_keys=("k2", "k1"), groups=("docker", "wheel"), uid=500)
    merged = merge(Config(users=(earlier,)), Config(users=(later, User("etcd", system=True))))
    assert merged.users == (
        User("core", ssh_authorized_keys=("k1", "k0", "k2"), groups=("wheel", "docker"), shell="/bin/bash", uid=500),
        User("etcd", system=True),
    )


def test_groups_merge_by_name() -> None:
    merged = merge(Config(groups=(Group("etcd", gid=900),)), Config(groups=(Group("etcd", system=True), Group("x"))))
    assert merged.groups == (Group("etcd", gid=900, system=True), Group("x"))


# --------------------------------------------------------------------------- storage


def test_disks_merge_by_device_and_partitions_by_number_or_label() -> None:
    earlier = Disk("/dev/sda", partitions=(Partition(1, label="root", size_mib=100), Partition(label="data")))
    later = Disk(
        "/dev/sda",
        wipe_table=True,
        partitions=(Partition(1, size_mib=200), Partition(label="data", size_mib=0), Partition(label="swap")),
    )
    merged = merge(Config(disks=(earlier,)), Config(disks=(later, Disk("/dev/sdb"))))
    assert merged.disks == (
        Disk(
            "/dev/sda",
            wipe_table=True,
            partitions=(Partition(1, label="root", size_mib=200), Partition(label="data", size_mib=0), Partition(label="swap")),
        ),
        Disk("/dev/sdb"),
    )


def test_raid_devices_are_deduplicated_and_options_appended() -> None:
    merged = merge(
        Config(raid=(Raid("md0", "raid1", ("/dev/a", "/dev/b"), options=("--metadata=1.2",)),)),
        Config(raid=(Raid("md0", "raid5", ("/dev/b", "/dev/c"), spares=1, options=("--metadata=1.2",)),)),
    )
    assert merged.raid == (
        Raid("md0", "raid5", ("/dev/a", "/dev/b", "/dev/c"), spares=1, options=("--metadata=1.2", "--metadata=1.2")),
    )


def test_filesystems_merge_by_device_and_append_options() -> None:
    merged = merge(
        Config(filesystems=(Filesystem("/dev/md0", "ext4", path="/var/mnt/a", options=("-m0",), mount_options=("noatime",)),)),
        Config(filesystems=(Filesystem("/dev/md0", "xfs", label="data", options=("-f",), mount_options=("nodev",)),)),
    )
    assert merged.filesystems == (
        Filesystem("/dev/md0", "xfs", path="/var/mnt/a", label="data", options=("-m0", "-f"), mount_options=("noatime", "nodev")),
    )


# --------------------------------------------------------------------------- ignition section


def test_kernel_arguments_share_one_key_space() -> None:
    merged = merge(
        Config(kernel_arguments_should_exist=("quiet", "a=1"), kernel_arguments_should_not_exist=("b",)),
        Config(kernel_arguments_should_exist=("b", "c"), kernel_arguments_should_not_exist=("quiet",)),
    )
    assert merged.kernel_arguments_should_exist == ("a=1", "b", "c")
    assert merged.kernel_arguments_should_not_exist == ("quiet",)


def test_config_references_merge_by_source_and_the_last_replace_wins() -> None:
    merged = merge(
        Config(merge=(ConfigReference("https://a", "sha512-1"),), replace=ConfigReference("https://r1", "sha512-1")),
        Config(merge=(ConfigReference("https://b"), ConfigReference("https://a")), replace=ConfigReference("https://r2")),
        Config(certificate_authorities=(ConfigReference("data:,ca"),)),
    )
    assert merged.merge == (ConfigReference("https://a", "sha512-1"), ConfigReference("https://b"))
    assert merged.replace == ConfigReference("https://r2")
    assert merged.certificate_authorities == (ConfigReference("data:,ca"),)


def test_merging_nothing_or_one_config() -> None:
    assert merge() == Config()
    single = Config(files=(File("/a", contents=b"x"),), users=(User("core"),))
    assert merge(single) == single


# --------------------------------------------------------------------------- against the real Ignition


def _normalise(doc: Any) -> Any:
    """Drop empty objects and lists, which Ignition writes for unset structs."""
    if isinstance(doc, dict):
        cleaned = {k: _normalise(v) for k, v in doc.items()}
        return {k: v for k, v in cleaned.items() if v not in ({}, [], None)}
    if isinstance(doc, list):
        return [_normalise(v) for v in doc]
    return doc


PARENT = {
    "ignition": {"version": "3.3.0"},
    "kernelArguments": {"shouldExist": ["quiet", "a=1"]},
    "passwd": {
        "users": [{"name": "core", "sshAuthorizedKeys": ["k1", "k0"], "groups": ["wheel"], "shell": "/bin/bash"}],
        "groups": [{"name": "etcd", "gid": 900}],
    },
    "storage": {
        "disks": [{"device": "/dev/sda", "partitions": [{"number": 1, "label": "root", "sizeMiB": 100}, {"label": "data"}]}],
        "raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/a", "/dev/b"], "options": ["--x"]}],
        "filesystems": [{"device": "/dev/md/md0", "format": "ext4", "path": "/var/mnt/a", "options": ["-m0"]}],
        "files": [
            {"path": "/etc/a", "mode": 384, "contents": {"source": "data:,old"}, "user": {"name": "core"}},
            {"path": "/etc/b", "contents": {"source": "data:,b"}, "append": [{"source": "data:,1"}]},
        ],
        "directories": [{"path": "/var/lib/x", "mode": 448}],
        "links": [{"path": "/etc/l", "target": "/etc/a"}],
    },
    "systemd": {
        "units": [
            {"name": "a.service", "enabled": True, "contents": "[Unit]\n", "dropins": [{"name": "10.conf", "contents": "one"}]},
            {"name": "b.service", "mask": True},
        ]
    },
}

CHILD = {
    "ignition": {"version": "3.3.0"},
    "kernelArguments": {"shouldExist": ["b=2"], "shouldNotExist": ["quiet"]},
    "passwd": {
        "users": [{"name": "core", "sshAuthorizedKeys": ["k2", "k1"], "groups": ["docker"], "uid": 500}, {"name": "etcd"}],
        "groups": [{"name": "etcd", "system": True}],
    },
    "storage": {
        "disks": [{"device": "/dev/sda", "wipeTable": True, "partitions": [{"number": 1, "sizeMiB": 200}, {"label": "swap"}]}],
        "raid": [{"name": "md0", "level": "raid5", "devices": ["/dev/b", "/dev/c"], "options": ["--x"], "spares": 1}],
        "filesystems": [{"device": "/dev/md/md0", "format": "xfs", "label": "data", "options": ["-f"]}],
        "files": [
            {"path": "/etc/a", "mode": 420, "contents": {"source": "data:,new"}},
            {"path": "/etc/b", "append": [{"source": "data:,2"}]},
            {"path": "/etc/c", "contents": {"source": "data:,c"}},
        ],
        "directories": [{"path": "/var/lib/x", "user": {"name": "core"}}],
        "links": [{"path": "/etc/l", "target": "/etc/b", "overwrite": True}],
    },
    "systemd": {
        "units": [
            {"name": "a.service", "dropins": [{"name": "10.conf", "contents": "ONE"}, {"name": "20.conf", "contents": "two"}]},
            {"name": "c.service", "enabled": False},
        ]
    },
}


def _with_child(parent: dict[str, Any], *children: dict[str, Any]) -> bytes:
    doc = json.loads(json.dumps(parent))
    refs = [{"source": data_url(json.dumps(child).encode())} for child in children]
    doc["ignition"]["config"] = {"merge": refs}
    return json.dumps(doc).encode()


@pytest.mark.engine
def test_merge_matches_ignitions_own_merge() -> None:
    require_engine()
    ours = to_dict(merge(loads(json.dumps(PARENT).encode()), loads(json.dumps(CHILD).encode())))
    theirs = json.loads(merged_by_ignition(_with_child(PARENT, CHILD)))
    for doc in (ours, theirs):
        doc.pop("ignition")  # Ignition keeps the merge references and its own version
    assert _normalise(theirs) == _normalise(ours)


@pytest.mark.engine
def test_oracle_comparison_can_fail() -> None:
    """Guard for the test above: a wrong merge must show up as a difference."""
    require_engine()
    theirs = json.loads(merged_by_ignition(_with_child(PARENT, CHILD)))
    wrong = to_dict(merge(loads(json.dumps(CHILD).encode()), loads(json.dumps(PARENT).encode())))  # reversed
    theirs.pop("ignition"), wrong.pop("ignition")
    assert _normalise(theirs) != _normalise(wrong)


@pytest.mark.engine
def test_ignition_itself_replaces_across_node_types_where_we_raise() -> None:
    """Documents the deliberate difference: Ignition lets a later directory replace a file."""
    require_engine()
    parent = {"ignition": {"version": "3.3.0"}, "storage": {"files": [{"path": "/x", "contents": {"source": "data:,f"}}]}}
    child = {"ignition": {"version": "3.3.0"}, "storage": {"directories": [{"path": "/x"}]}}
    theirs = json.loads(merged_by_ignition(_with_child(parent, child)))
    assert [d["path"] for d in theirs["storage"]["directories"]] == ["/x"]
    assert not theirs["storage"].get("files")
    with pytest.raises(MergeConflict):
        merge(loads(json.dumps(parent).encode()), loads(json.dumps(child).encode()))


@pytest.mark.engine
def test_merged_config_applies_with_the_later_files_bytes(tmp_path: Path) -> None:
    require_engine()
    earlier = Config(
        files=(File("/etc/app.conf", contents=b"earlier\n", mode=0o600), File("/etc/keep", contents=b"keep\n")),
        directories=(Directory("/var/lib/app", mode=0o700),),
    )
    later = Config(files=(File("/etc/app.conf", contents=b"later\n", mode=0o640),), links=(Link("/etc/app", "/etc/app.conf"),))
    merged = dumps(merge(earlier, later))
    validate(merged)
    apply(merged, tmp_path / "ours")
    # Ignition merging the same two configs itself must leave the same files.
    apply(_with_child(json.loads(dumps(earlier)), json.loads(dumps(later))), tmp_path / "theirs")
    for root in (tmp_path / "ours", tmp_path / "theirs"):
        assert (root / "etc/app.conf").read_bytes() == b"later\n"
        assert stat.S_IMODE((root / "etc/app.conf").stat().st_mode) == 0o640
        assert (root / "etc/keep").read_bytes() == b"keep\n"
        assert (root / "etc/app").readlink() == Path("/etc/app.conf")
        assert stat.S_IMODE((root / "var/lib/app").stat().st_mode) == 0o700
