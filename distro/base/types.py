"""Types every layer speaks: where a value sits in a document, the two node roles, a file of the assets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# A path into a YAML or JSON document: ("spec", "nodes", 2, "mac"). Problems carry one.
Location = tuple[str | int, ...]

Role = Literal["controller", "worker"]
ROLES: tuple[Role, ...] = ("controller", "worker")


@dataclass(frozen=True)
class AssetFile:
    data: bytes = field(repr=False)
    mode: int = 0o644


@dataclass(frozen=True)
class ExtensionImage:
    """One built image, as recorded: what it is, where it came from, and its digest."""

    name: str
    version: str  # the upstream version, or "local-<digest>" when built from the operator's own binaries
    image: str  # file name in ASSETS/boot/sysext/
    sha512: str
    source: str  # the pinned artifacts (URL and sha256 each), or the local binaries' sha256
    os_release: str  # the os-release fields it is built for, as its extension-release holds them

    @property
    def pinned(self) -> bool:
        return not self.version.startswith("local-")
