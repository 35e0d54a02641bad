"""Validate rendered Kubernetes objects against the real upstream schemas.

Custom resources: the upstream CRDs' openAPIV3Schema documents in
../shared/schemas/openapi (see its INDEX.md). Core objects: the
kubernetes-validate package's schemas for the cluster's Kubernetes version.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .paths import REPO

SCHEMAS = Path(os.environ.get("STELLWERK_SCHEMAS", REPO.parent / "shared" / "schemas"))
CUSTOM_GROUPS = {"metallb.io", "crd.projectcalico.org", "projectcalico.org", "operator.tigera.io", "ceph.rook.io",
                 "objectbucket.io", "local.openebs.io", "zfs.openebs.io", "policy.networking.k8s.io"}


def _require_schemas() -> Path:
    openapi = SCHEMAS / "openapi"
    if not openapi.is_dir():
        message = f"upstream schemas not found at {openapi} (shared/ beside the repository)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return openapi


def _structural_to_json_schema(node: Any) -> Any:
    """Kubernetes structural schemas say `nullable: true`; JSON Schema says type [T, null]."""
    if isinstance(node, list):
        return [_structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _structural_to_json_schema(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


@functools.cache
def _custom_schema(group: str, kind: str, version: str) -> dict[str, Any]:
    path = _require_schemas() / group / f"{kind.lower()}_{version}.json"
    if not path.exists():
        raise AssertionError(f"no upstream schema for {group}/{version} {kind} at {path}")
    schema = json.loads(path.read_text())
    schema.pop("x-source", None)
    return _structural_to_json_schema(schema)


def validate_object(obj: dict[str, Any], kubernetes_version: str) -> None:
    """Raise AssertionError naming the object and every schema violation."""
    api_version = obj["apiVersion"]
    group, _, version = api_version.rpartition("/")
    label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if group in CUSTOM_GROUPS:
        schema = _custom_schema(group, obj["kind"], version)
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(copy.deepcopy(obj)), key=lambda e: list(e.path))
        if errors:
            raise AssertionError(f"{label} ({api_version}) fails the upstream schema:\n" +
                                 "\n".join(f"  {'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors))
        return
    import kubernetes_validate

    minor = ".".join(kubernetes_version.split(".")[:2])
    try:
        kubernetes_validate.validate(copy.deepcopy(obj), minor, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{label} ({api_version}) fails the Kubernetes {minor} schema: {exc}") from None
