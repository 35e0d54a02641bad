"""What every component shares: its options' base model and its patches."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

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
