"""Cluster files the tests write, and where things are in them and in what render made of them."""

from __future__ import annotations

from pathlib import Path


def write_cluster(directory: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str, *, after: str | None = None, occurrence: int | None = None) -> int:
    """The 1-based number of the line holding `needle` (below the first line holding `after`, if given): the only
    such line, or the `occurrence`-th one."""
    lines = text.splitlines()
    start = 0 if after is None else next(i for i, line in enumerate(lines) if after in line) + 1
    hits = [i + 1 for i, line in enumerate(lines) if i >= start and needle in line]
    if occurrence is not None:
        return hits[occurrence - 1]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def component_filesystems(storage: dict) -> list[dict]:
    """An Ignition storage section's filesystems minus the lab OS's state filesystem, which render gives every
    lab node on its install disk: what the components added."""
    from stellwerk.images.contract import STATE_LABEL

    return [fs for fs in storage.get("filesystems", []) if fs.get("label") != STATE_LABEL]
