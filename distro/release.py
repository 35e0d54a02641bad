"""The release manifest: every upstream version this Stellwerk release pins.

Defaults in the cluster file come from here, and `cluster.lock.yaml` records the
resolved values, so a cluster renders the same way until the operator changes
its file or upgrades Stellwerk on purpose.
"""

from __future__ import annotations

KUBERNETES_VERSION = "1.31.4"
# Minor releases whose flags and API versions the role templates are written for.
KUBERNETES_MINORS = (29, 30, 31, 32)

FLATCAR_CHANNEL = "stable"
FLATCAR_VERSION = "4081.2.0"

IMAGE_REGISTRY = "registry.k8s.io"
CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

# etcd release that Kubernetes 1.29-1.32 are tested against.
ETCD_VERSION = "3.5.16"

# Where Flatcar hosts get /usr/bin/kubelet and /usr/bin/etcd: systemd-sysext
# images from Flatcar's sysext bakery, named <name>-v<version>-x86-64.raw.
SYSEXT_BASE_URL = "https://github.com/flatcar/sysext-bakery/releases/download/latest"

CONTAINER_RUNTIME_ENDPOINT = "unix:///run/containerd/containerd.sock"


def control_plane_image(component: str, kubernetes_version: str) -> str:
    return f"{IMAGE_REGISTRY}/{component}:v{kubernetes_version}"


def sysext_image_name(name: str, version: str) -> str:
    return f"{name}-v{version}-x86-64.raw"
