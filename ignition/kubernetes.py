"""What Kubernetes needs on a host: kubelet, its config, and the control plane's static pods.

Every object here is built as data and serialized; the flags follow kubeadm's
on-host layout (/etc/kubernetes, /etc/kubernetes/pki, /etc/kubernetes/manifests)
so operators find things where kubeadm clusters keep them.
"""

from __future__ import annotations

from typing import Any

from stellwerk import release
from stellwerk.plan import NodePlan, Plan
from stellwerk.base.yamlout import dump_yaml

PKI = "/etc/kubernetes/pki"
BOOTSTRAP_KUBECONFIG = "/etc/kubernetes/bootstrap-kubelet.conf"
KUBELET_KUBECONFIG = "/etc/kubernetes/kubelet.conf"
KUBELET_CONFIG = "/etc/kubernetes/kubelet.yaml"
STATIC_POD_PATH = "/etc/kubernetes/manifests"
CONTROLLER_MANAGER_KUBECONFIG = "/etc/kubernetes/controller-manager.conf"
SCHEDULER_KUBECONFIG = "/etc/kubernetes/scheduler.conf"


def kubelet_flags(node: NodePlan, labels: tuple[tuple[str, str], ...]) -> list[str]:
    """The kubelet's command line; `labels` are the node's and its components' (RenderContext.node_labels)."""
    flags = [
        f"--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}",
        f"--kubeconfig={KUBELET_KUBECONFIG}",
        f"--config={KUBELET_CONFIG}",
        f"--node-ip={node.address}",
        f"--hostname-override={node.name}",
        "--node-labels=" + ",".join(f"{key}={value}" for key, value in labels),
    ]
    if node.taints:
        flags.append("--register-with-taints=" + ",".join(f"{t.key}={t.value}:{t.effect}" for t in node.taints))
    return flags


def kubelet_configuration(plan: Plan, is_controller: bool) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": f"{PKI}/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": [str(plan.dns_service_ip)],
        "clusterDomain": plan.spec.kubernetes.cluster_domain,
        "containerRuntimeEndpoint": release.CONTAINER_RUNTIME_ENDPOINT,
        "readOnlyPort": 0,
        "rotateCertificates": True,
    }
    if is_controller:
        config["staticPodPath"] = STATIC_POD_PATH
    return dump_yaml(config)


def etcd_flags(plan: Plan, node: NodePlan) -> list[str]:
    address = node.address
    members = ",".join(f"{c.name}=https://{c.address}:2380" for c in plan.controllers)
    return [
        f"--name={node.name}",
        "--data-dir=/var/lib/etcd",
        # Only the node address: nothing on the host needs plain loopback access, and
        # members sharing one host (the loopback test cluster) must not collide.
        f"--listen-client-urls=https://{address}:2379",
        f"--advertise-client-urls=https://{address}:2379",
        f"--listen-peer-urls=https://{address}:2380",
        f"--initial-advertise-peer-urls=https://{address}:2380",
        f"--initial-cluster={members}",
        f"--initial-cluster-token={plan.name}",
        "--initial-cluster-state=new",
        "--client-cert-auth=true",
        f"--trusted-ca-file={PKI}/etcd/ca.crt",
        f"--cert-file={PKI}/etcd/server.crt",
        f"--key-file={PKI}/etcd/server.key",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={PKI}/etcd/ca.crt",
        f"--peer-cert-file={PKI}/etcd/peer.crt",
        f"--peer-key-file={PKI}/etcd/peer.key",
        # No plain-HTTP metrics listener: metrics stay behind client-certificate auth on :2379.
        "--snapshot-count=10000",
    ]


def static_pods(plan: Plan, node: NodePlan) -> dict[str, str]:
    """The control plane as static pods, keyed by file name under /etc/kubernetes/manifests."""
    return {
        "kube-apiserver.yaml": dump_yaml(_apiserver(plan, node)),
        "kube-controller-manager.yaml": dump_yaml(_controller_manager(plan)),
        "kube-scheduler.yaml": dump_yaml(_scheduler(plan)),
    }


def _apiserver(plan: Plan, node: NodePlan) -> dict[str, Any]:
    kubernetes = plan.spec.kubernetes
    etcd_servers = ",".join(f"https://{c.address}:2379" for c in plan.controllers)
    command = [
        "kube-apiserver",
        f"--advertise-address={node.address}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={PKI}/ca.crt",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--etcd-cafile={PKI}/etcd/ca.crt",
        f"--etcd-certfile={PKI}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={PKI}/apiserver-etcd-client.key",
        f"--etcd-servers={etcd_servers}",
        f"--kubelet-client-certificate={PKI}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={PKI}/apiserver-kubelet-client.key",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        f"--proxy-client-cert-file={PKI}/front-proxy-client.crt",
        f"--proxy-client-key-file={PKI}/front-proxy-client.key",
        "--requestheader-allowed-names=front-proxy-client",
        f"--requestheader-client-ca-file={PKI}/front-proxy-ca.crt",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        "--secure-port=6443",
        f"--service-account-issuer=https://kubernetes.default.svc.{kubernetes.cluster_domain}",
        f"--service-account-key-file={PKI}/sa.pub",
        f"--service-account-signing-key-file={PKI}/sa.key",
        f"--service-cluster-ip-range={kubernetes.service_cidr}",
        f"--tls-cert-file={PKI}/apiserver.crt",
        f"--tls-private-key-file={PKI}/apiserver.key",
    ]
    probe_host = str(node.address)
    return _static_pod(
        plan, "kube-apiserver", command,
        probes={"host": probe_host, "port": 6443, "scheme": "HTTPS", "liveness": "/livez", "readiness": "/readyz"},
        requests_cpu="250m",
        annotations={"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": f"{node.address}:6443"},
    )


def _controller_manager(plan: Plan) -> dict[str, Any]:
    kubernetes = plan.spec.kubernetes
    command = [
        "kube-controller-manager",
        f"--authentication-kubeconfig={CONTROLLER_MANAGER_KUBECONFIG}",
        f"--authorization-kubeconfig={CONTROLLER_MANAGER_KUBECONFIG}",
        "--bind-address=127.0.0.1",
        f"--client-ca-file={PKI}/ca.crt",
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={kubernetes.pod_cidr}",
        f"--cluster-name={plan.name}",
        f"--cluster-signing-cert-file={PKI}/ca.crt",
        f"--cluster-signing-key-file={PKI}/ca.key",
        "--controllers=*,bootstrapsigner,tokencleaner",
        f"--kubeconfig={CONTROLLER_MANAGER_KUBECONFIG}",
        "--leader-elect=true",
        f"--requestheader-client-ca-file={PKI}/front-proxy-ca.crt",
        f"--root-ca-file={PKI}/ca.crt",
        f"--service-account-private-key-file={PKI}/sa.key",
        f"--service-cluster-ip-range={kubernetes.service_cidr}",
        "--use-service-account-credentials=true",
    ]
    return _static_pod(
        plan, "kube-controller-manager", command,
        probes={"host": "127.0.0.1", "port": 10257, "scheme": "HTTPS", "liveness": "/healthz"},
        requests_cpu="200m",
        extra_mounts=[("kubeconfig", CONTROLLER_MANAGER_KUBECONFIG, "File")],
    )


def _scheduler(plan: Plan) -> dict[str, Any]:
    command = [
        "kube-scheduler",
        f"--authentication-kubeconfig={SCHEDULER_KUBECONFIG}",
        f"--authorization-kubeconfig={SCHEDULER_KUBECONFIG}",
        "--bind-address=127.0.0.1",
        f"--kubeconfig={SCHEDULER_KUBECONFIG}",
        "--leader-elect=true",
    ]
    return _static_pod(
        plan, "kube-scheduler", command,
        probes={"host": "127.0.0.1", "port": 10259, "scheme": "HTTPS", "liveness": "/healthz"},
        requests_cpu="100m",
        extra_mounts=[("kubeconfig", SCHEDULER_KUBECONFIG, "File")],
        mount_pki=False,
    )


def _static_pod(
    plan: Plan,
    component: str,
    command: list[str],
    *,
    probes: dict[str, Any],
    requests_cpu: str,
    extra_mounts: list[tuple[str, str, str]] = (),
    annotations: dict[str, str] | None = None,
    mount_pki: bool = True,
) -> dict[str, Any]:
    mounts = [("k8s-certs", PKI, "DirectoryOrCreate")] if mount_pki else []
    mounts += [("ca-certs", "/etc/ssl/certs", "DirectoryOrCreate")] if mount_pki else []
    mounts += list(extra_mounts)

    def probe(path: str, failure_threshold: int) -> dict[str, Any]:
        return {
            "httpGet": {"host": probes["host"], "path": path, "port": probes["port"], "scheme": probes["scheme"]},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 15,
            "failureThreshold": failure_threshold,
        }

    container: dict[str, Any] = {
        "name": component,
        "image": release.control_plane_image(component, plan.spec.kubernetes.version),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "livenessProbe": probe(probes["liveness"], 8),
        # As kubeadm: a slow first start (image pulls, etcd not yet up) gets four minutes before liveness counts.
        "startupProbe": probe(probes["liveness"], 24),
        "resources": {"requests": {"cpu": requests_cpu}},
        "volumeMounts": [{"name": name, "mountPath": path, "readOnly": True} for name, path, _ in mounts],
    }
    if "readiness" in probes:
        container["readinessProbe"] = probe(probes["readiness"], 3)
    metadata: dict[str, Any] = {
        "name": component,
        "namespace": "kube-system",
        "labels": {"component": component, "tier": "control-plane"},
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [container],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": name, "hostPath": {"path": path, "type": kind}} for name, path, kind in mounts],
        },
    }
