"""The first stage of a two-stage install: the config of the live system that writes the OS to the install disk.

Flatcar boots over the network with this config. A oneshot unit runs `flatcar-install` against the node's
`installDisk`, taking the image from netboot's own /assets/flatcar/<channel>/ (so the rack needs no internet), and
leaves on the disk a pointer config whose only content is "replace me with /ignition?mac=…&os=installed". It then
reports `installed` to netboot and reboots. The installed system's Ignition follows the pointer at its first boot
and gets the node's final config (the public part here, the secrets once over HTTPS).

The live system gets the node's ssh keys and nothing else of the node's config: no secret is on the install path.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from stellwerk.base.templating import environment

from .store import Group

POINTER_PATH = "/opt/stellwerk/installed.ign"
INSTALLED_LABEL = ("os", "installed")  # what the installed system adds to its config URL
REPORT_EVENTS = ("installed", "install-failed")


class InstallerError(ValueError):
    """The group lacks what an install needs (render writes it; a hand-written store may not)."""


def _unit_word(value: object) -> str:
    text = str(value)
    if any(ch.isspace() or ch in "\"'\\" for ch in text) or not text.isprintable():
        raise InstallerError(f"{text!r} cannot be one word of a systemd command line")
    return text.replace("%", "%%")  # systemd expands %-specifiers in ExecStart=


def _render(template: str, **values: object) -> str:
    env = environment("stellwerk.netboot")
    env.filters.setdefault("unit", _unit_word)
    return env.get_template(template).render(**values)


def installed_config_url(base_url: str, mac: str) -> str:
    return f"{base_url}/ignition?" + urllib.parse.urlencode({"mac": mac.replace(":", "-"), INSTALLED_LABEL[0]:
                                                             INSTALLED_LABEL[1]})


def report_url(base_url: str, mac: str, event: str) -> str:
    return f"{base_url}/report?" + urllib.parse.urlencode({"mac": mac.replace(":", "-"), "event": event})


def installer_config(group: Group, public: dict[str, Any], base_url: str, mac: str) -> bytes:
    """The live system's Ignition config, as compact JSON. InstallerError when the group lacks install data."""
    disk = group.metadata.get("installDisk")
    flatcar = group.metadata.get("flatcar")
    if not isinstance(disk, str) or not isinstance(flatcar, Mapping) or not all(
            isinstance(flatcar.get(key), str) for key in ("channel", "version")):
        raise InstallerError(f"group {group.name!r} ({group.file}) needs metadata.installDisk and "
                             "metadata.flatcar.channel/version for an install; run `stellwerk render` again")
    node = group.node or group.name
    pointer = {"ignition": {"version": "3.3.0",
                            "config": {"replace": {"source": installed_config_url(base_url, mac)}}}}
    values = {"node": node, "disk": disk, "version": flatcar["version"], "pointer_path": POINTER_PATH,
              "image_base": f"{base_url}/assets/flatcar/{flatcar['channel']}"}
    install_unit = _render("stellwerk-install.service.j2", **values,
                           report_url=report_url(base_url, mac, "installed"))
    failed_unit = _render("stellwerk-install-failed.service.j2", node=node,
                          report_url=report_url(base_url, mac, "install-failed"))
    users = [{key: user[key] for key in ("name", "sshAuthorizedKeys") if key in user}
             for user in (public.get("passwd") or {}).get("users", []) if isinstance(user, dict) and "name" in user]
    config: dict[str, Any] = {"ignition": {"version": "3.3.0"}}
    if users:
        config["passwd"] = {"users": users}
    config["storage"] = {"files": [{"path": POINTER_PATH, "mode": 0o644, "overwrite": True, "contents": {
        "source": "data:," + urllib.parse.quote(json.dumps(pointer, separators=(",", ":")), safe="")}}]}
    config["systemd"] = {"units": [
        {"name": "stellwerk-install.service", "enabled": True, "contents": install_unit},
        {"name": "stellwerk-install-failed.service", "contents": failed_unit},
    ]}
    return (json.dumps(config, separators=(",", ":")) + "\n").encode()
