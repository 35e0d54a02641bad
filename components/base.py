"""What every component shares: its options' base model, patches, and node fragments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from stellwerk.ignition.merge import merge
from stellwerk.ignition.model import Config, File
from stellwerk.spectypes import StrictModel


class PatchTarget(StrictModel):
    kind: str = Field(description="Kind of the object to change, e.g. IPAddressPool.")
    name: str = Field(description="metadata.name of the object.")
    namespace: str | None = Field(None, description="metadata.namespace, where names repeat across namespaces.")


class Patch(StrictModel):
    """A change to one rendered object: an RFC 6902 JSON patch or a merge overlay."""

    target: PatchTarget
    json_patch: list[dict[str, Any]] | None = Field(None, description="RFC 6902 operations, applied in order.")
    merge: dict[str, Any] | None = Field(
        None, description="Overlay merged into the object: mappings merge key by key, lists and scalars replace, null deletes.")

    @model_validator(mode="after")
    def _one_kind(self) -> "Patch":
        if (self.json_patch is None) == (self.merge is None):
            raise ValueError("give exactly one of jsonPatch or merge")
        return self


class ComponentOptions(StrictModel):
    patches: list[Patch] = Field(default_factory=list, description="Changes to the objects this component renders.")


@dataclass(frozen=True)
class NodeFragment:
    """What a component needs on one node. The plan merges fragments into the node's config."""

    component: str
    kernel_modules: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    udev_rules: tuple[tuple[str, str], ...] = ()  # (file name under /etc/udev/rules.d, text)
    kernel_arguments: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    config: Config = field(default_factory=Config)  # files, units, disks, raid, filesystems


Role = Literal["controller", "worker"]


def fragment_config(fragment: NodeFragment) -> Config:
    """The Ignition config that puts a fragment's host requirements in place."""
    name = fragment.component
    files: list[File] = []
    if fragment.kernel_modules:
        files.append(File(path=f"/etc/modules-load.d/stellwerk-{name}.conf",
                          contents="".join(f"{module}\n" for module in fragment.kernel_modules).encode()))
    if fragment.sysctls:
        files.append(File(path=f"/etc/sysctl.d/70-stellwerk-{name}.conf",
                          contents="".join(f"{key} = {value}\n" for key, value in fragment.sysctls).encode()))
    for file_name, text in fragment.udev_rules:
        files.append(File(path=f"/etc/udev/rules.d/{file_name}", contents=text.encode()))
    own = Config(files=tuple(files), kernel_arguments_should_exist=tuple(fragment.kernel_arguments))
    return merge(own, fragment.config)
