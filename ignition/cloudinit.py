"""Render the same host state as an Ignition config as a #cloud-config document.

For Debian nodes, whose first boot runs cloud-init 22.4 instead of Ignition.
The mapping, module by module (in the order cloud-init runs them):

- bootcmd (init stage, before users-groups): groups that need a gid or to be
  system groups, which cloud-init's own `groups` cannot say.
- write_files (init stage): files and systemd unit files and drop-ins. A file
  owned by a user or group that cloud-init itself creates is deferred to the
  final stage (`defer: true`), because write_files runs before users-groups and
  chown would fail on an unknown name.
- users-groups: groups and users; user `core` gets passwordless sudo, as on Flatcar.
- runcmd (final stage, after deferred files): directories (`install -d`), links
  (`ln`), numeric owners (`chown`, since write_files only takes names), then
  `systemctl daemon-reload`, mask/unmask and enable --now/disable.

Disks, RAID, filesystems, remote file sources and config references have no
cloud-init equivalent here and raise UnsupportedByCloudInit.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import shlex
from dataclasses import replace
from typing import Any

import yaml

from .model import Config, Directory, File, Link, Unit, User, file_contents, is_text

SUDO_CORE = "ALL=(ALL) NOPASSWD:ALL"
_UNIT_DIR = "/etc/systemd/system"


class UnsupportedByCloudInit(Exception):
    """The config says something cloud-init cannot do; `what` names it."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"cloud-init cannot express {what}")


# --------------------------------------------------------------------------- checks


def _reject_unsupported(config: Config) -> None:
    unsupported = (
        ("disks", "storage.disks (partitioning)"),
        ("raid", "storage.raid (RAID arrays)"),
        ("filesystems", "storage.filesystems (mkfs and mounts)"),
        ("merge", "ignition.config.merge (fetched configs)"),
        ("certificate_authorities", "ignition.security.tls.certificateAuthorities"),
        ("kernel_arguments_should_exist", "kernelArguments.shouldExist"),
        ("kernel_arguments_should_not_exist", "kernelArguments.shouldNotExist"),
    )
    for attr, what in unsupported:
        if getattr(config, attr):
            raise UnsupportedByCloudInit(what)
    if config.replace is not None:
        raise UnsupportedByCloudInit("ignition.config.replace (a fetched config)")
    for group in config.groups:
        if group.password_hash is not None:
            raise UnsupportedByCloudInit(f"passwd.groups {group.name}: passwordHash")


def _payload(file: File) -> bytes:
    """The file's bytes, with an inline hash checked now: cloud-init cannot check it at boot."""
    try:
        data = file_contents(file)
    except ValueError:
        what = f"file {file.path}: contents from {file.source} (no URL sources in cloud-init 22.4)"
        raise UnsupportedByCloudInit(what) from None
    if file.verification is not None:
        algorithm, _, expected = file.verification.partition("-")
        # the hash covers the contents, not the appended fragments
        if hashlib.new(algorithm, file_contents(replace(file, append=()))).hexdigest() != expected:
            raise ValueError(f"file {file.path}: contents do not match {file.verification}")
    return data


def _created_names(config: Config) -> frozenset[str]:
    """Users and groups that exist only once cloud-init's users-groups module has run."""
    return frozenset({g.name for g in config.groups} | {u.name for u in config.users})


def _owner_name(owner: str | int | None) -> str:
    return "root" if owner is None else str(owner)


def _octal(mode: int | None, default: int) -> str:
    return f"{default if mode is None else mode:04o}"


def _content_fields(data: bytes) -> dict[str, Any]:
    if is_text(data):
        return {"content": data.decode("utf-8")}
    return {"content": base64.b64encode(data).decode("ascii"), "encoding": "b64"}


def _file_entry(file: File, created: frozenset[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": file.path, **_content_fields(_payload(file))}
    # write_files resolves owners by name only; numeric ones go to runcmd (_numeric_chown)
    named_owner = (file.user, file.group) != (None, None) and not any(
        isinstance(o, int) for o in (file.user, file.group)
    )
    if named_owner:
        entry["owner"] = f"{_owner_name(file.user)}:{_owner_name(file.group)}"
    entry["permissions"] = _octal(file.mode, 0o644)
    if file.contents is None and file.source is None and file.append:
        entry["append"] = True  # Ignition keeps an existing file and only appends
    if named_owner and (file.user in created or file.group in created):
        entry["defer"] = True
    return entry


def _unit_entries(unit: Unit) -> list[dict[str, Any]]:
    """Unit file and drop-ins, root-owned 0644 as Ignition writes them."""
    texts = [(f"{_UNIT_DIR}/{unit.name}", unit.contents)]
    texts += [(f"{_UNIT_DIR}/{unit.name}.d/{d.name}", d.contents) for d in unit.dropins]
    return [
        {"path": path, **_content_fields(text.encode("utf-8")), "permissions": "0644"}
        for path, text in texts
        if text is not None
    ]


def _numeric_chown(file: File) -> list[str] | None:
    if isinstance(file.user, int) or isinstance(file.group, int):
        return ["chown", f"{_owner_name(file.user)}:{_owner_name(file.group)}", file.path]
    return None


def _directory_command(d: Directory) -> list[str]:
    command = ["install", "-d", "-m", _octal(d.mode, 0o755)]
    if d.user is not None:
        command += ["-o", str(d.user)]
    if d.group is not None:
        command += ["-g", str(d.group)]
    return [*command, d.path]


def _link_commands(link: Link) -> list[list[str]]:
    # Ignition creates missing parent directories; ln does not.
    commands = [["mkdir", "-p", posixpath.dirname(link.path) or "/"]]
    if link.hard:
        commands.append(["ln", "-f", link.target, link.path])
        return commands  # Ignition ignores owners of hard links
    commands.append(["ln", "-sfn", link.target, link.path])
    if link.user is not None or link.group is not None:
        commands.append(["chown", "-h", f"{_owner_name(link.user)}:{_owner_name(link.group)}", link.path])
    return commands


def _systemctl_commands(units: tuple[Unit, ...]) -> list[list[str]]:
    if not units:
        return []
    commands = [["systemctl", "daemon-reload"]]
    for unit in units:
        if unit.mask is not None:
            commands.append(["systemctl", "mask" if unit.mask else "unmask", unit.name])
    for unit in units:
        if unit.enabled and not unit.mask:
            commands.append(["systemctl", "enable", "--now", unit.name])
        elif unit.enabled is False:
            commands.append(["systemctl", "disable", unit.name])
    return commands


def _user_entry(user: User) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": user.name}
    optional = (
        ("gecos", user.gecos),
        ("homedir", user.home_dir),
        ("no_create_home", user.no_create_home),
        ("primary_group", user.primary_group),
        ("no_user_group", user.no_user_group),
        ("shell", user.shell),
        ("system", user.system),
        ("uid", user.uid),
    )
    entry.update((k, v) for k, v in optional if v is not None)
    if user.groups:
        entry["groups"] = list(user.groups)
    if user.password_hash is not None:
        # hashed_passwd also applies to an existing user, like Ignition's usermod
        entry["hashed_passwd"] = user.password_hash
        entry["lock_passwd"] = False
    if user.ssh_authorized_keys:
        entry["ssh_authorized_keys"] = list(user.ssh_authorized_keys)
    if user.name == "core":
        entry["sudo"] = SUDO_CORE
    return entry


def _group_bootcmd(config: Config) -> list[str]:
    """groupadd for groups needing a gid or system flag; guarded since bootcmd runs every boot."""
    commands = []
    for g in config.groups:
        if g.gid is None and not g.system:
            continue
        args = ["groupadd"] + (["--gid", str(g.gid)] if g.gid is not None else []) + (["--system"] if g.system else [])
        name = shlex.quote(g.name)
        commands.append(f"getent group {name} >/dev/null || {shlex.join([*args, g.name])}")
    return commands


# --------------------------------------------------------------------------- document


class _Command(list):
    """A runcmd/bootcmd argument vector, written on one line: [systemctl, enable, x]."""


class _Dumper(yaml.SafeDumper):
    """Literal blocks for multi-line text, one-line commands, no anchors, no line folding."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_command(dumper: yaml.SafeDumper, value: _Command) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Command, _represent_command)


def render_cloud_config(config: Config, hostname: str) -> bytes:
    """A #cloud-config document for `config` on a host named `hostname` (deterministic bytes)."""
    _reject_unsupported(config)
    created = _created_names(config)
    doc: dict[str, Any] = {"hostname": hostname}
    plain_groups = [g.name for g in config.groups if g.gid is None and not g.system]
    if plain_groups:
        doc["groups"] = plain_groups
    bootcmd = _group_bootcmd(config)
    if bootcmd:
        doc["bootcmd"] = bootcmd
    if config.users:
        doc["users"] = [_user_entry(u) for u in config.users]
    write_files = [_file_entry(f, created) for f in config.files]
    for unit in config.units:
        write_files += _unit_entries(unit)
    if write_files:
        doc["write_files"] = write_files
    runcmd = [_directory_command(d) for d in config.directories]
    for link in config.links:
        runcmd += _link_commands(link)
    runcmd += [c for c in map(_numeric_chown, config.files) if c]  # install -d takes ids itself
    runcmd += _systemctl_commands(config.units)
    if runcmd:
        doc["runcmd"] = [_Command(c) for c in runcmd]
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 30)
    return b"#cloud-config\n" + body.encode("utf-8")
