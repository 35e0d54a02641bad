"""What every component shares: its options' base model, its patches, and Component, the registered shape of a
component module (components/__init__.py documents the contract)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
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


def field_name(key: str) -> str:
    """The Python name of a component key, snake case (rookCeph: rook_ceph): its module's name and the attribute
    of spec.components that holds its options. One name, spelt the Python way."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


Hook = Callable[..., Any]


@dataclass(frozen=True)
class Component:
    """A component as the stages use it: its key, its options model and its hooks, read once from its module.

    The required hooks are upstream(options), check(cluster, options), manifests(plan, options) and
    node_fragments(plan, options, node); claims(cluster, options) is optional and None where a component has
    none.
    """

    key: str
    field: str
    summary: str  # the first line of its module's docstring: the description of its spec field
    options: type[ComponentOptions]
    upstream: Callable[[Any], Sequence[str]]
    check: Callable[[Any, Any], Iterable[tuple[tuple, str]]]
    manifests: Callable[[Any, Any], list[dict[str, Any]]]
    node_fragments: Hook
    claims: Hook | None = None

    @classmethod
    def of(cls, module: ModuleType) -> Component:
        """The component a module defines; TypeError naming the module and what breaks the contract."""
        name = module.__name__.rsplit(".", 1)[1]
        key = getattr(module, "KEY", None)
        missing = [hook for hook in ("upstream", "check", "manifests", "node_fragments")
                   if not callable(getattr(module, hook, None))]
        if not isinstance(key, str):
            missing.insert(0, "KEY")
        options = getattr(module, "Options", None)
        if not (isinstance(options, type) and issubclass(options, ComponentOptions)):
            missing.append("Options (a ComponentOptions)")
        if missing:
            raise TypeError(f"component module {module.__name__} lacks {', '.join(missing)}")
        if field_name(key) != name:
            raise TypeError(f"component module {module.__name__} has KEY {key!r}: name the module "
                            f"{field_name(key)}.py, so that file, key and spec field are one name")
        return cls(key=key, field=name, summary=(module.__doc__ or "").strip().splitlines()[0], options=options,
                   upstream=module.upstream, check=module.check, manifests=module.manifests,
                   node_fragments=module.node_fragments, claims=getattr(module, "claims", None))

    def options_in(self, cluster: Any) -> ComponentOptions | None:
        """This component's options in the cluster, or None when the cluster does not enable it."""
        return getattr(cluster.spec.components, self.field)
