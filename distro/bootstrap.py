"""Cluster objects for kubelet TLS bootstrap, as kubeadm sets them up.

A new kubelet authenticates with the bootstrap token, asks for a client
certificate, and the controller-manager approves and signs it. These objects
make that work on a fresh cluster: the token Secret and the RBAC bindings that
let bootstrappers create CSRs and let nodes renew their certificates.
"""

from __future__ import annotations

from typing import Any

from .tokens import BootstrapToken

BOOTSTRAPPERS_GROUP = "system:bootstrappers:stellwerk:default-node-token"


def bootstrap_objects(token: BootstrapToken) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"bootstrap-token-{token.token_id}", "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "description": "Stellwerk TLS-bootstrap token for joining nodes.",
                "token-id": token.token_id,
                "token-secret": token.secret,
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": BOOTSTRAPPERS_GROUP,
            },
        },
        _binding("stellwerk:kubelet-bootstrap", "system:node-bootstrapper", BOOTSTRAPPERS_GROUP),
        _binding(
            "stellwerk:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            BOOTSTRAPPERS_GROUP,
        ),
        _binding(
            "stellwerk:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ),
        # The apiserver's client certificate for kubelets carries this group.
        _binding("kubeadm:cluster-admins", "cluster-admin", "kubeadm:cluster-admins"),
    ]


def _binding(name: str, role: str, group: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    }
