"""The node OSes, one module per os.family. Adding one is a module here, its entry in BY_FAMILY, its name in
spec.OS.family, and its tests."""

from __future__ import annotations

from collections.abc import Callable

from . import debian, flatcar, lab
from .base import NodeOS

BY_FAMILY: dict[str, NodeOS] = {module.OS.family: module.OS for module in (flatcar, lab, debian)}


def node_os(family: str) -> NodeOS:
    """The node OS of an os.family the spec accepted."""
    return BY_FAMILY[family]


def families_that(can: Callable[[NodeOS], bool]) -> str:
    """The families that can do something, as prose for a message: 'flatcar or lab'."""
    names = [nodeos.family for nodeos in BY_FAMILY.values() if can(nodeos)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
