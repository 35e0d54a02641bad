"""The cloud-config renderer, checked with the real cloud-init 22.4 (schema and write_files)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from support.ignition_engine import require
from stellwerk.ignition.cloudinit import SUDO_CORE, UnsupportedByCloudInit, render_cloud_config
from stellwerk.ignition.model import (
    Config,
    Directory,
    Disk,
    Dropin,
    File,
    Filesystem,
    Group,
    Link,
    Raid,
    Unit,
    User,
    file_contents,
)

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBhKQLDU3aKQVYmSo8rPQTgJwxWKC5GrJTaDiXHT0J8F test@stellwerk"
SERVICE = "[Unit]\nDescription=etcd\n[Service]\nExecStart=/usr/bin/etcd\n[Install]\nWantedBy=multi-user.target\n"

# Not a key: only the PEM frame, built from parts so no tracked file looks like a private key.
FAKE_PEM = b"-----BEGIN " + b"PRIVATE KEY-----\nMIIE\n-----END " + b"PRIVATE KEY-----\n"


def node_config() -> Config:
    return Config(
        files=(
            File("/etc/hostname", contents=b"node-1\n"),
            File("/etc/stellwerk/tricky", contents="  leading spaces\n100% #x: {y}\n'quotes' \"too\"\nünï ✓\n\ttab\ntrailing space \n".encode()),
            File("/etc/stellwerk/no-newline", contents=b"no newline at end"),
            File("/etc/kubernetes/pki/ca.key", contents=FAKE_PEM, mode=0o600),
            File("/opt/bin/blob", contents=bytes(range(256)), mode=0o755, user=0, group=0),
            File("/home/core/.config/app.conf", contents=b"owned\n", user="core", group="core"),
            File("/etc/stellwerk/etcd-owned", contents=b"id owned\n", user=990, group="etcd"),
            File("/etc/stellwerk/crlf", contents=b"dos\r\nline\r\n"),
            File("/etc/stellwerk/appended", contents=b"head\n", append=(b"tail\n",)),
            File("/etc/stellwerk/append-only", overwrite=None, append=(b"more\n",)),
            File("/etc/stellwerk/empty"),
        ),
        directories=(Directory("/var/lib/etcd", mode=0o700, user="etcd", group="etcd"), Directory("/var/mnt/data")),
        links=(Link("/etc/localtime", "/usr/share/zoneinfo/UTC"), Link("/usr/local/bin/kubectl", "/opt/bin/kubectl", user="core")),
        units=(
            Unit("etcd.service", SERVICE, enabled=True, dropins=(Dropin("10-tls.conf", "[Service]\nEnvironment=TLS=1\n"),)),
            Unit("kubelet.service", dropins=(Dropin("20-node.conf", "[Service]\nEnvironment=NODE=1\n"),), enabled=True),
            Unit("systemd-timesyncd.service", mask=True),
            Unit("apt-daily.timer", enabled=False),
        ),
        users=(
            User("core", ssh_authorized_keys=(SSH_KEY,), groups=("sudo", "adm"), shell="/bin/bash"),
            User("etcd", uid=990, system=True, no_create_home=True, home_dir="/var/lib/etcd", primary_group="etcd",
                 no_user_group=True, gecos="etcd", password_hash="$6$salt$hash"),
        ),
        groups=(Group("etcd", gid=990, system=True), Group("observers")),
    )  # fmt: skip


def cloud_init_python() -> str | None:
    """The interpreter cloud-init runs with, which can import its modules."""
    exe = shutil.which("cloud-init")
    if exe is None:
        return None
    first_line = Path(exe).read_text(errors="replace").splitlines()[0]
    return first_line[2:].strip() if first_line.startswith("#!") else None


def require_cloud_init() -> str:
    python = cloud_init_python()
    require(python is not None, "cloud-init")
    assert python is not None
    return python


def check_schema(path: Path) -> None:
    """`cloud-init schema` must accept the file without errors and without deprecation notes."""
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == f"Valid cloud-config: {path}", output


_WRITE_FILES = """
import sys
from cloudinit import util
from cloudinit.config import cc_write_files

config = util.load_yaml(open(sys.argv[1]).read())
files = []
for entry in config.get("write_files", []):
    entry = dict(entry, path=sys.argv[2] + entry["path"])
    entry.pop("owner", None)  # the owners live on the node, not on this host
    files.append(entry)
cc_write_files.write_files("write_files", files, "root:root")
"""


def write_files_with_cloud_init(python: str, document: Path, root: Path) -> None:
    """Run cloud-init's own write_files code with every path moved under `root`."""
    subprocess.run([python, "-c", _WRITE_FILES, str(document), str(root)], check=True, timeout=120)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    path = tmp_path / "cloud-config.yaml"
    path.write_bytes(render_cloud_config(node_config(), "node-1"))
    return path


# --------------------------------------------------------------------------- real cloud-init


@pytest.mark.engine
def test_rendered_config_passes_cloud_init_schema(rendered: Path) -> None:
    require_cloud_init()
    check_schema(rendered)


@pytest.mark.engine
def test_schema_check_can_fail(tmp_path: Path) -> None:
    require_cloud_init()
    broken = tmp_path / "broken.yaml"
    broken.write_text("#cloud-config\nwrite_files:\n- path: /a\n  permissions: 420\n")
    with pytest.raises(AssertionError, match="not of type"):
        check_schema(broken)
    deprecated = tmp_path / "deprecated.yaml"
    deprecated.write_text("#cloud-config\nusers:\n- name: a\n  lock-passwd: false\n")
    with pytest.raises(AssertionError, match="deprecat"):
        check_schema(deprecated)


@pytest.mark.engine
def test_cloud_init_writes_the_models_bytes_and_modes(rendered: Path, tmp_path: Path) -> None:
    python = require_cloud_init()
    root = tmp_path / "root"
    write_files_with_cloud_init(python, rendered, root)
    config = node_config()
    for file in config.files:
        written = root / file.path.lstrip("/")
        assert written.read_bytes() == file_contents(file), file.path
        assert stat.S_IMODE(written.stat().st_mode) == (file.mode if file.mode is not None else 0o644), file.path
    units = root / "etc/systemd/system"
    assert (units / "etcd.service").read_text() == SERVICE
    assert (units / "etcd.service.d/10-tls.conf").read_text() == "[Service]\nEnvironment=TLS=1\n"
    assert (units / "kubelet.service.d/20-node.conf").read_text() == "[Service]\nEnvironment=NODE=1\n"
    assert not (units / "kubelet.service").exists()


# --------------------------------------------------------------------------- document structure


def load(config: Config, hostname: str = "node-1") -> dict:
    data = render_cloud_config(config, hostname)
    assert data.startswith(b"#cloud-config\n")
    return yaml.safe_load(data)


def entries_by_path(doc: dict) -> dict[str, dict]:
    return {entry["path"]: entry for entry in doc["write_files"]}


def test_hostname_users_and_groups() -> None:
    doc = load(node_config())
    assert doc["hostname"] == "node-1" and "fqdn" not in doc
    core, etcd = doc["users"]
    assert core == {
        "name": "core",
        "shell": "/bin/bash",
        "groups": ["sudo", "adm"],
        "ssh_authorized_keys": [SSH_KEY],
        "sudo": SUDO_CORE,
    }
    assert etcd["uid"] == 990 and etcd["system"] is True and etcd["homedir"] == "/var/lib/etcd"
    assert etcd["hashed_passwd"] == "$6$salt$hash" and etcd["lock_passwd"] is False
    assert "sudo" not in etcd
    assert doc["groups"] == ["observers"]
    assert doc["bootcmd"] == ["getent group etcd >/dev/null || groupadd --gid 990 --system etcd"]


def test_files_owned_by_users_cloud_init_creates_are_deferred() -> None:
    files = entries_by_path(load(node_config()))
    assert files["/home/core/.config/app.conf"]["owner"] == "core:core"
    assert files["/home/core/.config/app.conf"]["defer"] is True
    assert "defer" not in files["/etc/hostname"] and "owner" not in files["/etc/hostname"]
    assert files["/etc/kubernetes/pki/ca.key"]["permissions"] == "0600"
    # write_files takes names only; numeric owners are set by runcmd after the fact
    assert "owner" not in files["/opt/bin/blob"] and "owner" not in files["/etc/stellwerk/etcd-owned"]


def test_text_stays_readable_and_binary_is_base64() -> None:
    files = entries_by_path(load(node_config()))
    assert files["/etc/hostname"]["content"] == "node-1\n" and "encoding" not in files["/etc/hostname"]
    assert files["/opt/bin/blob"]["encoding"] == "b64"
    assert files["/etc/stellwerk/append-only"]["append"] is True
    assert files["/etc/stellwerk/empty"]["content"] == ""
    assert b"content: |\n    [Unit]\n" in render_cloud_config(node_config(), "node-1")


def test_runcmd_creates_directories_links_and_starts_units_in_order() -> None:
    runcmd = load(node_config())["runcmd"]
    assert runcmd == [
        ["install", "-d", "-m", "0700", "-o", "etcd", "-g", "etcd", "/var/lib/etcd"],
        ["install", "-d", "-m", "0755", "/var/mnt/data"],
        ["mkdir", "-p", "/etc"],
        ["ln", "-sfn", "/usr/share/zoneinfo/UTC", "/etc/localtime"],
        ["mkdir", "-p", "/usr/local/bin"],
        ["ln", "-sfn", "/opt/bin/kubectl", "/usr/local/bin/kubectl"],
        ["chown", "-h", "core:root", "/usr/local/bin/kubectl"],
        ["chown", "0:0", "/opt/bin/blob"],
        ["chown", "990:etcd", "/etc/stellwerk/etcd-owned"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "mask", "systemd-timesyncd.service"],
        ["systemctl", "enable", "--now", "etcd.service"],
        ["systemctl", "enable", "--now", "kubelet.service"],
        ["systemctl", "disable", "apt-daily.timer"],
    ]


def test_output_is_deterministic() -> None:
    assert render_cloud_config(node_config(), "node-1") == render_cloud_config(node_config(), "node-1")
    assert render_cloud_config(Config(), "n") == b"#cloud-config\nhostname: n\n"


@pytest.mark.parametrize(
    ("config", "what"),
    [
        (Config(disks=(Disk("/dev/sda"),)), "storage.disks"),
        (Config(raid=(Raid("md0", "raid1", ("/dev/a", "/dev/b")),)), "storage.raid"),
        (Config(filesystems=(Filesystem("/dev/sdb", "ext4"),)), "storage.filesystems"),
        (Config(files=(File("/opt/bin/x", source="https://example.com/x"),)), "https://example.com/x"),
        (Config(kernel_arguments_should_exist=("quiet",)), "kernelArguments"),
        (Config(groups=(Group("g", password_hash="*"),)), "passwordHash"),
    ],
)
def test_what_cloud_init_cannot_do_is_refused(config: Config, what: str) -> None:
    with pytest.raises(UnsupportedByCloudInit) as err:
        render_cloud_config(config, "n")
    assert what in err.value.what


def test_inline_hash_is_checked_at_render_time() -> None:
    with pytest.raises(ValueError, match="do not match"):
        render_cloud_config(Config(files=(File("/a", contents=b"x", verification="sha256-" + "0" * 64),)), "n")
