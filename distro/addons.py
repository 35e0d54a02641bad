"""The add-ons every cluster runs, as kubeadm installs them: kube-proxy (Services work) and CoreDNS (cluster DNS).

Built as data and written under manifests/addons/, applied after the bootstrap objects. kube-proxy reaches the
apiserver by the cluster's API endpoint, never by a Service address: Services are what it sets up. CoreDNS answers
at the tenth address of the service network, which every kubelet names as its clusterDNS.
"""

from __future__ import annotations

from typing import Any

from . import release
from .plan import Plan

KUBE_PROXY = "kube-proxy"
COREDNS = "coredns"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBE_PROXY_DIR = "/var/lib/kube-proxy"
CONTROL_PLANE_TOLERATION = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def addon_objects(plan: Plan) -> list[dict[str, Any]]:
    return [*kube_proxy_objects(plan), *coredns_objects(plan)]


def kube_proxy_configuration(plan: Plan) -> dict[str, Any]:
    """KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1): iptables mode, the pod network as cluster CIDR."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "bindAddress": "0.0.0.0",
        "clientConnection": {"kubeconfig": f"{KUBE_PROXY_DIR}/kubeconfig.conf"},
        "clusterCIDR": str(plan.spec.kubernetes.pod_cidr),
        "mode": "iptables",
        "metricsBindAddress": "0.0.0.0:10249",
        "healthzBindAddress": "0.0.0.0:10256",
    }


def _kube_proxy_kubeconfig(plan: Plan) -> dict[str, Any]:
    # The ServiceAccount's own token and CA, by file: kube-proxy rereads a rotated token.
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default", "cluster": {"server": plan.api_server_url,
                                                    "certificate-authority": f"{SA_DIR}/ca.crt"}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "namespace": "default",
                                                    "user": "default"}}],
        "current-context": "default",
        "users": [{"name": "default", "user": {"tokenFile": f"{SA_DIR}/token"}}],
    }


def kube_proxy_objects(plan: Plan) -> list[dict[str, Any]]:
    import yaml

    labels = {"k8s-app": KUBE_PROXY}
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": KUBE_PROXY, "namespace": "kube-system", "labels": labels},
        "data": {
            "config.conf": yaml.safe_dump(kube_proxy_configuration(plan), sort_keys=True),
            "kubeconfig.conf": yaml.safe_dump(_kube_proxy_kubeconfig(plan), sort_keys=True),
        },
    }
    container = {
        "name": KUBE_PROXY,
        "image": release.kube_proxy_image(plan.spec.kubernetes.version),
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/kube-proxy", f"--config={KUBE_PROXY_DIR}/config.conf",
                    "--hostname-override=$(NODE_NAME)"],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "securityContext": {"privileged": True},
        "volumeMounts": [
            {"name": KUBE_PROXY, "mountPath": KUBE_PROXY_DIR, "readOnly": True},
            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
            {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
        ],
    }
    daemon_set = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": KUBE_PROXY, "namespace": "kube-system", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": KUBE_PROXY,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # Every node, whatever its taints: without kube-proxy no Service reaches it.
                    "tolerations": [{"operator": "Exists"}],
                    "volumes": [
                        {"name": KUBE_PROXY, "configMap": {"name": KUBE_PROXY}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                    ],
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": KUBE_PROXY, "namespace": "kube-system"}},
        # system:node-proxier is one of the ClusterRoles the apiserver creates itself.
        _cluster_role_binding("stellwerk:node-proxier", "system:node-proxier", KUBE_PROXY),
        config_map,
        daemon_set,
    ]


def corefile(plan: Plan) -> str:
    domain = plan.spec.kubernetes.cluster_domain
    return (
        ".:53 {\n"
        "    errors\n"
        "    health {\n        lameduck 5s\n    }\n"
        "    ready\n"
        f"    kubernetes {domain} in-addr.arpa ip6.arpa {{\n"
        "        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n        max_concurrent 1000\n    }\n"
        "    cache 30\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


def coredns_objects(plan: Plan) -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    probe = {"initialDelaySeconds": 60, "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": 5}
    container = {
        "name": COREDNS,
        "image": release.COREDNS_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"}, **probe},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"add": ["NET_BIND_SERVICE"],
                                                                                "drop": ["ALL"]},
                            "readOnlyRootFilesystem": True},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": COREDNS, "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": COREDNS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    # Before any worker joins, the controllers carry DNS; the CriticalAddonsOnly taint is honoured.
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}, CONTROL_PLANE_TOLERATION],
                    # Two replicas on two nodes: one node down leaves the cluster its DNS.
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [container],
                    "dnsPolicy": "Default",
                    "volumes": [{"name": "config-volume", "configMap": {"name": COREDNS,
                                                                        "items": [{"key": "Corefile",
                                                                                   "path": "Corefile"}]}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {**labels, "kubernetes.io/name": "CoreDNS"},
                     "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {
            "selector": labels,
            "clusterIP": str(plan.dns_service_ip),
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                      {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}],
        },
    }
    cluster_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": COREDNS, "namespace": "kube-system"}},
        cluster_role,
        _cluster_role_binding("system:coredns", "system:coredns", COREDNS),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": COREDNS, "namespace": "kube-system"},
         "data": {"Corefile": corefile(plan)}},
        deployment,
        service,
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": COREDNS, "namespace": "kube-system", "labels": labels},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}},
    ]


def _cluster_role_binding(name: str, role: str, service_account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": "kube-system"}],
    }
