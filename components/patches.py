"""Operator patches to rendered objects: RFC 6902 JSON patches or merge overlays.

A patch names its target by kind, name and (optionally) namespace. A patch that
matches no object, or more than one, is an error: a silent no-op would hide a
typo until the cluster misbehaves.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from .base import Patch


class PatchError(Exception):
    def __init__(self, index: int, message: str):
        self.index = index
        self.message = message
        super().__init__(f"patches[{index}]: {message}")


def apply_patches(objects: list[dict[str, Any]], patches: list[Patch]) -> list[dict[str, Any]]:
    """Return new objects with every patch applied in order; the inputs are not changed."""
    result = [copy.deepcopy(obj) for obj in objects]
    for index, patch in enumerate(patches):
        matches = [i for i, obj in enumerate(result) if _matches(obj, patch)]
        if not matches:
            raise PatchError(index, f"no rendered object is {_describe(patch)}; rendered: {_inventory(result)}")
        if len(matches) > 1:
            raise PatchError(index, f"{len(matches)} objects are {_describe(patch)}; add target.namespace")
        position = matches[0]
        if patch.json_patch is not None:
            try:
                result[position] = jsonpatch.apply_patch(result[position], patch.json_patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise PatchError(index, f"jsonPatch does not apply to {_describe(patch)}: {exc}") from None
            except (TypeError, KeyError, ValueError) as exc:
                raise PatchError(index, f"jsonPatch is malformed: {exc}") from None
        else:
            result[position] = merge_overlay(result[position], patch.merge or {})
        problem = _identity_problem(result, position)
        if problem:
            raise PatchError(index, problem)
    return result


def _identity_problem(objects: list[Any], position: int) -> str | None:
    """A patched object must stay a well-formed, unique Kubernetes object."""
    obj = objects[position]
    if not isinstance(obj, dict):
        return "the patch replaced the whole object; patch its fields instead"
    metadata = obj.get("metadata")
    for field, value in (("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind")),
                         ("metadata.name", metadata.get("name") if isinstance(metadata, dict) else None)):
        if not isinstance(value, str) or not value:
            return f"the patched object has no {field} (a non-empty string); leave it as rendered"
    identity = _identity(obj)
    if any(_identity(other) == identity for i, other in enumerate(objects) if i != position):
        return f"the patched object is now {identity[0]} {identity[2]!r}, like another rendered object; names must stay unique"
    return None


def _identity(obj: Any) -> tuple[Any, Any, Any]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    return obj.get("kind") if isinstance(obj, dict) else None, metadata.get("namespace"), metadata.get("name")


def merge_overlay(base: Any, overlay: Any) -> Any:
    """Mappings merge key by key; None deletes a key (also inside new mappings); lists and scalars replace."""
    if not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    if not isinstance(base, dict):
        base = {}
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_overlay(base.get(key), value)
    return merged


def _matches(obj: dict[str, Any], patch: Patch) -> bool:
    metadata = obj.get("metadata") or {}
    if obj.get("kind") != patch.target.kind or metadata.get("name") != patch.target.name:
        return False
    return patch.target.namespace is None or metadata.get("namespace") == patch.target.namespace


def _describe(patch: Patch) -> str:
    where = f" in namespace {patch.target.namespace}" if patch.target.namespace else ""
    return f"{patch.target.kind} {patch.target.name!r}{where}"


def _inventory(objects: list[dict[str, Any]]) -> str:
    names = [f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}" for obj in objects]
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
