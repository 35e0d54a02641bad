"""The documents of netboot's machine store, as one type for render, which writes them, and netboot, which reads
and checks them (netboot/store.py): a Profile says how a machine boots, a Group which machines boot which profile
and which node's config they get. Plain data: this module imports no stage."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# The config file of a node, by the profile's config kind (docs/design.md, section 3): render writes it, netboot
# serves it. An "installer" profile boots a live system that installs the OS to disk; its config is made by netboot
# from the node's (for its ssh keys).
CONFIG_FILES: Mapping[str, str] = MappingProxyType({"ignition": "ignition.json", "cloud-config": "cloud-config.yaml",
                                                    "installer": "ignition.json"})

@dataclass(frozen=True)
class Profile:
    """How a machine boots. `kernel` and `initrd` are URL paths below /assets/ (files in ASSETS/boot/); a profile
    without a kernel boots the machine from its local disk (an installed machine)."""

    id: str
    kernel: str | None
    initrd: tuple[str, ...]
    args: tuple[str, ...]
    config: str
    file: str  # relative to the assets directory, for messages

    def document(self) -> dict[str, object]:
        """The profile as netboot/profiles/<id>.json holds it: a profile without a kernel (it boots the local disk)
        has neither initrds nor arguments."""
        document: dict[str, object] = {"id": self.id}
        if self.kernel is not None:
            document.update(kernel=self.kernel, initrd=list(self.initrd), args=list(self.args))
        document["config"] = self.config
        return document


@dataclass(frozen=True)
class Group:
    """Machines that match `selector` boot `profile` and receive the config of `metadata.node`."""

    name: str
    profile: str
    selector: Mapping[str, str]
    metadata: Mapping[str, object]
    file: str  # relative to the assets directory, for messages
    metadata_json: bytes = field(repr=False, compare=False)  # canonical JSON, as /metadata serves it

    @classmethod
    def make(cls, name: str, profile: str, selector: Mapping[str, str], metadata: Mapping[str, object],
             file: str) -> Group:
        """A group with its selector in key order and its metadata frozen and serialized once."""
        return cls(name=name, profile=profile, selector=MappingProxyType(dict(sorted(selector.items()))),
                   metadata=_freeze(metadata), file=file,
                   metadata_json=json.dumps(_thaw(metadata), sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False).encode())

    def document(self) -> dict[str, object]:
        """The group as netboot/groups/<name>.json holds it."""
        return {"name": self.name, "profile": self.profile, "selector": dict(self.selector),
                "metadata": _thaw(self.metadata)}

    @property
    def node(self) -> str | None:
        node = self.metadata.get("node")
        return node if isinstance(node, str) else None

    @property
    def is_default(self) -> bool:
        return not self.selector

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when every selector key is among the (normalized) labels with the same value."""
        return all(labels.get(key) == value for key, value in self.selector.items())


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_thaw(item) for item in value]
    return value
