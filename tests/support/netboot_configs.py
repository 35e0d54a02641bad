"""What netboot serves at /ignition, compared with what render wrote: the public part plus a pointer to the rest."""

from __future__ import annotations

import json
from pathlib import Path

from stellwerk.ignition.secretsplit import split


def public_part(path: Path) -> dict:
    return split(json.loads(path.read_bytes()))[0]


def pointer(served: bytes) -> dict:
    """The merge entry netboot added: source (the one-time HTTPS URL) and verification."""
    return json.loads(served)["ignition"]["config"]["merge"][-1]


def without_pointer(served: bytes) -> dict:
    """The served config minus what netboot adds: the last merge entry and the last pinned CA."""
    config = json.loads(served)
    section = config["ignition"]
    _pop_last(section, ("config", "merge"))
    _pop_last(section, ("security", "tls", "certificateAuthorities"))
    return config


def _pop_last(section: dict, path: tuple[str, ...]) -> None:
    """Remove the last entry of the list at `path`, then every container the removal left empty."""
    containers = [section]
    for key in path:
        containers.append(containers[-1][key])
    containers[-1].pop()
    for parent, key, child in reversed(list(zip(containers, path, containers[1:]))):
        if child:
            break
        del parent[key]


def assert_public_part_of(served: bytes, path: Path) -> None:
    assert b"PRIVATE KEY" not in served
    assert without_pointer(served) == public_part(path)
