"""The Ignition model: serialisation, parsing, data URLs, and the real engine applying it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from support.ignition_engine import apply, require_engine, validate
from stellwerk.ignition.model import (
    Config,
    ConfigParseError,
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
    decode_data_url,
    dumps,
    file_contents,
    loads,
    to_dict,
)

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBhKQLDU3aKQVYmSo8rPQTgJwxWKC5GrJTaDiXHT0J8F test@stellwerk"
SERVICE = "[Unit]\nDescription={name}\n\n[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"
TRICKY_TEXT = "100% done #not-a-fragment\nsecond line with ünïcödé ✓ and a+b=c?&/;,\n\ttab\n".encode()
BINARY = bytes(range(256))
GZIPPED = gzip.compress(b"compressed payload\n", mtime=0)


def sha512(data: bytes) -> str:
    return "sha512-" + hashlib.sha512(data).hexdigest()


def full_config() -> Config:
    """A config that sets every field of every type at least once, warning-free for ignition-validate."""
    return Config(
        files=(
            File("/etc/stellwerk/text.conf", contents=TRICKY_TEXT, mode=0o640, user="core", group="systemd-network"),
            File("/opt/bin/blob", contents=BINARY, mode=0o755, user=0, group=0),
            File("/etc/stellwerk/gz", contents=GZIPPED, compression="gzip", verification=sha512(b"compressed payload\n")),
            File("/opt/bin/remote", source="https://example.com/bin", verification=sha512(b"x"), overwrite=True),
            File("/etc/stellwerk/appended", overwrite=None, append=(b"one\n", b"two\n")),
            File("/etc/stellwerk/empty"),
        ),
        directories=(Directory("/var/lib/stellwerk", mode=0o700, user="core", group="core", overwrite=True),),
        links=(
            Link("/etc/stellwerk/current", target="/etc/stellwerk/text.conf", user="core", group=0),
            Link("/etc/stellwerk/hard", target="/etc/stellwerk/text.conf", hard=True, overwrite=False),
        ),
        units=(
            Unit("stellwerk.service", SERVICE.format(name="s"), enabled=True, dropins=(Dropin("10-env.conf", "[Service]\nEnvironment=A=1\n"),)),
            Unit("unwanted.service", mask=True),
            Unit("quiet.service", SERVICE.format(name="q"), enabled=False, mask=False),
        ),
        users=(
            User(
                "core",
                ssh_authorized_keys=(SSH_KEY,),
                groups=("systemd-network",),
                password_hash="$6$salt$hash",
                uid=1500,
                gecos="CoreOS Admin",
                home_dir="/home/core",
                no_create_home=False,
                primary_group="core",
                no_user_group=False,
                shell="/bin/bash",
                system=False,
            ),
        ),
        groups=(Group("core", gid=1500, password_hash="*", system=False),),
        disks=(
            Disk(
                "/dev/disk/by-id/nvme-a",
                wipe_table=True,
                partitions=(
                    Partition(1, label="data", size_mib=1024, start_mib=0, type_guid="0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                              guid="5A4A3B2C-1D0E-4F6A-8B9C-0D1E2F3A4B5C", wipe_partition_entry=True, resize=False),
                    Partition(9, should_exist=False, wipe_partition_entry=True),
                ),
            ),
        ),
        raid=(Raid("md-data", "raid1", ("/dev/disk/by-id/nvme-b", "/dev/disk/by-id/nvme-c"), spares=0, options=("--metadata=1.2",)),),
        filesystems=(
            Filesystem("/dev/md/md-data", "xfs", path="/var/mnt/data", wipe_filesystem=True, label="data",
                       uuid="0b1a6ae1-7b61-4c89-9a34-7a0f4a6c4f11", options=("-m", "crc=1"), mount_options=("noatime",)),
        ),
        merge=(ConfigReference("https://example.com/extra.ign", verification=sha512(b"extra")),),
        replace=None,
        certificate_authorities=(ConfigReference("data:,-----BEGIN%20CERTIFICATE-----"),),
        kernel_arguments_should_exist=("nvme_core.io_timeout=4294967295",),
        kernel_arguments_should_not_exist=("quiet",),
    )  # fmt: skip


# --------------------------------------------------------------------------- serialisation


def test_dumps_is_deterministic_and_formatted() -> None:
    first, second = dumps(full_config()), dumps(full_config())
    assert first == second
    assert first.endswith(b"}\n") and first.startswith(b'{"ignition":{"version":"3.3.0"')
    assert first.count(b"\n") == 1  # compact: one line, for the C encoder's speed
    # keys come out in the model's fixed order, not insertion accidents
    assert list(json.loads(first)) == ["ignition", "kernelArguments", "passwd", "storage", "systemd"]
    assert list(json.loads(first)["storage"]) == ["disks", "raid", "filesystems", "files", "directories", "links"]


@pytest.mark.engine
def test_every_field_passes_ignition_validate() -> None:
    require_engine()
    validate(dumps(full_config()))


@pytest.mark.engine
def test_replace_passes_ignition_validate() -> None:
    require_engine()
    validate(dumps(Config(replace=ConfigReference("https://example.com/other.ign", verification=sha512(b"o")))))


@pytest.mark.engine
def test_validate_helper_rejects_errors_and_warnings() -> None:
    """The harness itself must be able to fail."""
    require_engine()
    with pytest.raises(AssertionError, match="overwrite"):
        validate(b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a","overwrite":true}]}}')
    enabled_without_install = dumps(Config(units=(Unit("x.service", "[Unit]\nDescription=x\n", enabled=True),)))
    with pytest.raises(AssertionError, match="install section"):
        validate(enabled_without_install)
    validate(enabled_without_install, allow_warnings=True)


def test_to_dict_leaves_out_unset_fields_and_writes_modes_in_decimal() -> None:
    d = to_dict(Config(files=(File("/a", contents=b"x", mode=0o600),), directories=(Directory("/d"),)))
    assert d["storage"]["files"] == [{"path": "/a", "overwrite": True, "contents": {"source": "data:,x"}, "mode": 384}]
    assert d["storage"]["directories"] == [{"path": "/d", "mode": 493}]
    assert to_dict(Config()) == {"ignition": {"version": "3.3.0"}}


def test_loads_round_trips_every_field() -> None:
    config = full_config()
    assert loads(dumps(config)) == config


def test_loads_keeps_absent_fields_absent() -> None:
    config = loads(b'{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/a"}],"links":[{"path":"/l","target":"/a"}]}}')
    assert config.files == (File("/a", mode=None, overwrite=None),)
    assert config.links == (Link("/l", "/a", overwrite=None),)
    assert dumps(loads(dumps(config))) == dumps(config)


def test_loads_reports_everything_it_cannot_hold() -> None:
    doc = {
        "ignition": {"version": "3.2.0", "timeouts": {"httpTotal": 5}},
        "storage": {
            "luks": [],
            "files": [{"path": "relative", "mode": "0644", "contents": {"source": "http://x", "httpHeaders": []}}],
        },
        "passwd": {"users": [{"uid": 1, "shouldExist": False}]},
    }
    with pytest.raises(ConfigParseError) as err:
        loads(json.dumps(doc).encode())
    paths = [path for path, _ in err.value.problems]
    assert paths == [
        "ignition.timeouts",
        "ignition.version",
        "passwd.users[0].shouldExist",
        "passwd.users[0].name",
        "storage.luks",
        "storage.files[0].contents.httpHeaders",
        "storage.files[0].mode",
        "storage.files[0]",
    ]


def test_loads_rejects_non_json() -> None:
    with pytest.raises(ConfigParseError, match="not JSON"):
        loads(b"{nope")


# --------------------------------------------------------------------------- data URLs


@pytest.mark.parametrize(
    ("data", "percent_encoded"),
    [
        (b"", True),
        (b"plain", True),
        (TRICKY_TEXT, True),
        (b"windows\r\nline\r\n", True),
        ("only unicode: 日本語\n".encode(), True),
        (b"\x00\x01 nul", False),
        (b"\xff\xfe not utf-8", False),
        (b"\x1b[31mescape", False),
    ],
)
def test_data_url_round_trips(data: bytes, percent_encoded: bool) -> None:
    url = data_url(data)
    assert url.startswith("data:,") == percent_encoded
    assert url.startswith("data:;base64,") != percent_encoded
    assert url.isascii() and "#" not in url and "\n" not in url and " " not in url
    assert decode_data_url(url) == data
    assert loads(dumps(Config(files=(File("/f", contents=data),)))).files[0].contents == data


def test_decode_data_url_accepts_media_types_and_rejects_other_urls() -> None:
    assert decode_data_url("data:text/plain;charset=utf-8;base64,aGk=") == b"hi"
    assert decode_data_url("data:text/plain,a%2Bb+c") == b"a+b+c"  # '+' is not a space in data URLs
    with pytest.raises(ValueError):
        decode_data_url("https://example.com/x")


def test_file_contents_decodes_sources_compression_and_appends() -> None:
    assert file_contents(File("/a", contents=b"x", append=(b"y", b"z"))) == b"xyz"
    assert file_contents(File("/a", source="data:;base64,aGk=")) == b"hi"
    assert file_contents(File("/a", contents=GZIPPED, compression="gzip")) == b"compressed payload\n"
    assert file_contents(File("/a", overwrite=None)) == b""
    with pytest.raises(ValueError, match="unknown until boot"):
        file_contents(File("/a", source="https://example.com/a"))


# --------------------------------------------------------------------------- construction


def test_constructors_normalise_and_reject_mistakes() -> None:
    assert File("/a", contents="text").contents == b"text"
    assert File("/a").contents == b""  # overwrite=True needs a source: an empty file
    assert File("/a", overwrite=None).contents is None
    assert Config(files=[File("/a")]).files == (File("/a"),)
    with pytest.raises(ValueError, match="not both"):
        File("/a", contents=b"x", source="https://x")
    with pytest.raises(ValueError, match="absolute"):
        File("etc/a")
    with pytest.raises(ValueError, match="mode"):
        Directory("/d", mode=0o10000)
    with pytest.raises(TypeError, match="user"):
        File("/a", user=True)
    with pytest.raises(TypeError, match="Config.files takes File"):
        Config(files=(Directory("/d"),))


def test_building_many_node_configs_is_fast() -> None:
    ca = File("/etc/kubernetes/pki/ca.crt", contents=b"-----BEGIN CERTIFICATE-----\n" + b"A" * 1200 + b"\n")
    shared = tuple(File(f"/etc/common/{i}", contents=b"common text\n" * 20) for i in range(40))
    start = time.perf_counter()
    size = 0
    for n in range(1000):
        files = (ca, *shared, File("/etc/hostname", contents=f"node-{n}\n".encode()))
        files += tuple(File(f"/etc/node/{i}", contents=f"node {n} item {i}\n".encode() * 30, mode=0o600) for i in range(20))
        size += len(dumps(Config(files=files, units=(Unit("kubelet.service", SERVICE.format(name="k"), enabled=True),))))
    elapsed = time.perf_counter() - start
    assert size > 1000 * 40 * 200
    assert elapsed < 10, f"1000 node configs took {elapsed:.1f}s"


# --------------------------------------------------------------------------- the real engine


def _ids(path: Path) -> dict[str, int]:
    rows = (line.split(":") for line in path.read_text().splitlines() if line.count(":") >= 3)
    return {row[0]: int(row[2]) for row in rows}


def applied_config() -> Config:
    return Config(
        files=(
            File("/etc/stellwerk/text.conf", contents=TRICKY_TEXT, mode=0o640, user="core", group="systemd-network"),
            File("/opt/bin/blob", contents=BINARY, mode=0o755),
            File("/etc/stellwerk/gz", contents=GZIPPED, compression="gzip", verification=sha512(b"compressed payload\n")),
            File("/etc/stellwerk/appended", contents=b"head\n", append=(b"one\n", b"two\n")),
            File("/etc/stellwerk/empty", mode=0o600, user=0, group="core"),
        ),
        directories=(Directory("/var/lib/stellwerk", mode=0o700, user="core", group="systemd-network"),),
        links=(Link("/etc/stellwerk/current", target="/etc/stellwerk/text.conf"),),
        units=(
            Unit("stellwerk.service", SERVICE.format(name="s"), enabled=True, dropins=(Dropin("10-env.conf", "[Service]\nEnvironment=A=1\n"),)),
            Unit("quiet.service", SERVICE.format(name="q"), enabled=False),
            Unit("unwanted.service", mask=True),
        ),
        users=(User("core", ssh_authorized_keys=(SSH_KEY,)),),
    )  # fmt: skip


@pytest.fixture(scope="module")
def applied_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_engine()
    root = tmp_path_factory.mktemp("root")
    config = dumps(applied_config())
    validate(config)
    apply(config, root)
    return root


@pytest.mark.engine
def test_apply_writes_file_bytes(applied_root: Path) -> None:
    for file in applied_config().files:
        assert (applied_root / file.path.lstrip("/")).read_bytes() == file_contents(file), file.path


@pytest.mark.engine
def test_apply_sets_modes(applied_root: Path) -> None:
    modes = {"/etc/stellwerk/text.conf": 0o640, "/opt/bin/blob": 0o755, "/etc/stellwerk/gz": 0o644, "/etc/stellwerk/empty": 0o600}
    for path, mode in modes.items():
        assert stat.S_IMODE((applied_root / path.lstrip("/")).stat().st_mode) == mode, path
    assert stat.S_IMODE((applied_root / "var/lib/stellwerk").stat().st_mode) == 0o700


@pytest.mark.engine
def test_apply_sets_owners_by_name_in_the_root(applied_root: Path) -> None:
    users, groups = _ids(applied_root / "etc/passwd"), _ids(applied_root / "etc/group")
    assert "core" in users, "Ignition should have created user core in the root"
    text = (applied_root / "etc/stellwerk/text.conf").stat()
    assert (text.st_uid, text.st_gid) == (users["core"], groups["systemd-network"])
    directory = (applied_root / "var/lib/stellwerk").stat()
    assert (directory.st_uid, directory.st_gid) == (users["core"], groups["systemd-network"])
    empty = (applied_root / "etc/stellwerk/empty").stat()
    assert empty.st_uid == 0
    blob = (applied_root / "opt/bin/blob").stat()
    assert (blob.st_uid, blob.st_gid) == (0, 0)


@pytest.mark.engine
def test_apply_creates_links(applied_root: Path) -> None:
    assert os.readlink(applied_root / "etc/stellwerk/current") == "/etc/stellwerk/text.conf"


@pytest.mark.engine
def test_apply_writes_and_enables_units(applied_root: Path) -> None:
    units = applied_root / "etc/systemd/system"
    assert (units / "stellwerk.service").read_text() == SERVICE.format(name="s")
    assert (units / "stellwerk.service.d/10-env.conf").read_text() == "[Service]\nEnvironment=A=1\n"
    preset = (applied_root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert "enable stellwerk.service" in preset
    assert "disable quiet.service" in preset
    assert os.readlink(units / "unwanted.service") == "/dev/null"


@pytest.mark.engine
def test_apply_installs_ssh_keys(applied_root: Path) -> None:
    keys = (applied_root / "home/core/.ssh/authorized_keys.d/ignition").read_text()
    assert keys.strip() == SSH_KEY


@pytest.mark.engine
def test_apply_reports_engine_failures(tmp_path: Path) -> None:
    """A config the engine refuses must surface as an AssertionError with the log."""
    require_engine()
    bad_hash = dumps(Config(files=(File("/etc/x", contents=b"x", verification=sha512(b"other")),)))
    with pytest.raises(AssertionError, match="hash"):
        apply(bad_hash, tmp_path / "root")
