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
