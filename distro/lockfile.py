"""cluster.lock.yaml: the resolved cluster, every default filled in and every version pinned.

One typed document for render, which writes it, and for its readers (netboot serve): LockFile is the cluster
file's own model plus what render resolved, so a reader gets typed values, never string keys, and a lock file
that does not fit is refused with the field that is wrong.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from . import __version__, release
from .base.errors import Problem, UserError
from .base.types import Role
from .base.yamlout import dump_yaml
from .plan import Plan
from .spec import Cluster
from .spectypes import StrictModel

LOCK_FILE = "cluster.lock.yaml"
_HEADER = "# Written by `stellwerk render`; do not edit. The cluster file is the source of truth.\n"


class ResolvedNode(StrictModel):
    name: str
    role: Role
    pool: str | None = None
    mac: str
    address: ipaddress.IPv4Address
    mesh_address: ipaddress.IPv4Address | None = None


class Resolved(StrictModel):
    stellwerk_version: str
    images: dict[str, str]
    api_service_ip: ipaddress.IPv4Address = Field(alias="apiServiceIP")
    dns_service_ip: ipaddress.IPv4Address = Field(alias="dnsServiceIP")
    nodes: list[ResolvedNode]


class LockFile(Cluster):
    resolved: Resolved


def lock_document(plan: Plan) -> str:
    """The lock file's text. It is checked against LockFile before it is written, so what render writes is what
    readers accept."""
    document: dict[str, Any] = plan.cluster.model_dump(by_alias=True, mode="json")
    kubernetes_version = plan.spec.kubernetes.version
    document["resolved"] = {
        "stellwerkVersion": __version__,
        "images": {
            **{component: release.control_plane_image(component, kubernetes_version)
               for component in release.CONTROL_PLANE_COMPONENTS},
            "kube-proxy": release.kube_proxy_image(kubernetes_version),
            "coredns": release.COREDNS_IMAGE,
        },
        "apiServiceIP": str(plan.api_service_ip),
        "dnsServiceIP": str(plan.dns_service_ip),
        "nodes": [
            {
                "name": node.name,
                "role": node.role,
                **({"pool": node.pool} if node.pool else {}),
                "mac": node.mac,
                "address": str(node.address),
                **({"meshAddress": str(node.mesh_address)} if node.mesh_address else {}),
            }
            for node in plan.nodes
        ],
    }
    LockFile.model_validate(document)
    return _HEADER + dump_yaml(document)


def read_lock(assets_dir: Path) -> LockFile:
    """The lock file of a rendered assets directory; UserError naming the file, the field and the fix."""
    path = assets_dir / LOCK_FILE
    rerender = "run 'stellwerk render' again"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(Problem(str(path), None, "", f"does not exist; {rerender}")) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(Problem(str(path), None, "", f"cannot be read ({exc}); {rerender}")) from None
    try:
        return LockFile.model_validate(data)
    except ValidationError as exc:
        raise UserError([Problem(str(path), None, ".".join(str(part) for part in error["loc"]),
                                 f"{error['msg']}; {rerender}") for error in exc.errors()]) from None
