"""What a controller adds: the control-plane PKI, etcd and the control plane's static pods.

Only what the control plane runs with goes to the host. ca.key is there because
the controller-manager signs kubelet certificates with it; the etcd and
front-proxy CA keys never leave the assets directory.
"""

from __future__ import annotations

from stellwerk.kubeconfig import kubeconfig
from stellwerk.plan import NodePlan

from . import kubernetes as k8s
from .context import RenderContext
from .model import Config, Directory, File, Unit
from stellwerk.base.templating import render_template

LOCAL_APISERVER = "https://127.0.0.1:6443"

# (name in the assets' pki/, path under /etc/kubernetes/pki, ship the key?)
_CONTROL_PLANE_PAIRS = (
    ("ca", "ca", True),
    ("apiserver", "apiserver", True),
    ("apiserver-kubelet-client", "apiserver-kubelet-client", True),
    ("front-proxy-ca", "front-proxy-ca", False),
    ("front-proxy-client", "front-proxy-client", True),
    ("apiserver-etcd-client", "apiserver-etcd-client", True),
    ("etcd/ca", "etcd/ca", False),
    ("etcd/healthcheck-client", "etcd/healthcheck-client", True),
)


def controller_config(context: RenderContext, node: NodePlan) -> Config:
    pki = context.secrets.pki
    files: list[File] = []
    for name, on_host, with_key in _CONTROL_PLANE_PAIRS:
        files += _pair_files(context, name, on_host, with_key)
    files += _pair_files(context, f"etcd/server-{node.name}", "etcd/server", True)
    files += _pair_files(context, f"etcd/peer-{node.name}", "etcd/peer", True)
    files += [
        File(path=f"{k8s.PKI}/sa.key", contents=pki.sa_key_pem, mode=0o600),
        File(path=f"{k8s.PKI}/sa.pub", contents=pki.sa_pub_pem, mode=0o644),
        File(path=k8s.CONTROLLER_MANAGER_KUBECONFIG, contents=_local_kubeconfig(context, "controller-manager", "system:kube-controller-manager"), mode=0o600),
        File(path=k8s.SCHEDULER_KUBECONFIG, contents=_local_kubeconfig(context, "scheduler", "system:kube-scheduler"), mode=0o600),
        File(path="/etc/kubernetes/admin.conf", contents=_local_kubeconfig(context, "admin", "kubernetes-admin"), mode=0o600),
    ]
    files += [
        File(path=f"{k8s.STATIC_POD_PATH}/{name}", contents=text.encode(), mode=0o644)
        for name, text in k8s.static_pods(context.plan, node).items()
    ]
    units = (
        Unit(name="etcd.service", enabled=True,
             contents=render_template("stellwerk.ignition", "etcd.service.j2", name=node.name, cluster=context.plan.name,
                                      flags=k8s.etcd_flags(context.plan, node))),
    )
    directories = (Directory(path=k8s.STATIC_POD_PATH, mode=0o755),)
    return Config(files=tuple(files), units=units, directories=directories)


def _pair_files(context: RenderContext, name: str, on_host: str, with_key: bool) -> list[File]:
    pair = context.secrets.pki.pair(name)
    files = [File(path=f"{k8s.PKI}/{on_host}.crt", contents=pair.cert_pem, mode=0o644)]
    if with_key:
        files.append(File(path=f"{k8s.PKI}/{on_host}.key", contents=pair.key_pem, mode=0o600))
    return files


def _local_kubeconfig(context: RenderContext, pair_name: str, user: str) -> bytes:
    pair = context.secrets.pki.pair(pair_name)
    return kubeconfig(
        context.plan.name, LOCAL_APISERVER, context.ca_cert_pem, user,
        client_cert_pem=pair.cert_pem, client_key_pem=pair.key_pem,
    )
