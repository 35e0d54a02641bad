"""The release manifest: every upstream version this Stellwerk release pins.

Defaults in the cluster file come from here, and `cluster.lock.yaml` records the
resolved values, so a cluster renders the same way until the operator changes
its file or upgrades Stellwerk on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

KUBERNETES_VERSION = "1.31.4"
# Minor releases whose flags and API versions the role templates are written for.
KUBERNETES_MINORS = (29, 30, 31, 32)

FLATCAR_CHANNEL = "stable"
FLATCAR_VERSION = "4081.2.0"

IMAGE_REGISTRY = "registry.k8s.io"
CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

# etcd release that Kubernetes 1.29-1.32 are tested against.
ETCD_VERSION = "3.5.16"

# Flatcar hosts get /usr/bin/kubelet and /usr/bin/etcd from systemd-sysext images that `stellwerk images sysext`
# builds from the pinned upstream binaries (stellwerk.binaries); netboot serves them under this path.
SYSEXT_SERVED_PATH = "/assets/sysext"
# The node OS families whose nodes get those binaries as sysexts (each one's NodeOS lists the extensions).
SYSEXT_FAMILIES = ("flatcar", "lab")

CONTAINER_RUNTIME_ENDPOINT = "unix:///run/containerd/containerd.sock"


# The CoreDNS release kubeadm installs with Kubernetes 1.30-1.32 (kubeadm's constants.CoreDNSVersion).
COREDNS_VERSION = "v1.11.3"
COREDNS_IMAGE = f"{IMAGE_REGISTRY}/coredns/coredns:{COREDNS_VERSION}"


def control_plane_image(component: str, kubernetes_version: str) -> str:
    return f"{IMAGE_REGISTRY}/{component}:v{kubernetes_version}"


def kube_proxy_image(kubernetes_version: str) -> str:
    return f"{IMAGE_REGISTRY}/kube-proxy:v{kubernetes_version}"



@dataclass(frozen=True)
class UpstreamManifest:
    """An upstream install manifest, pinned by URL, version and content digest."""

    name: str
    project: str
    version: str
    url: str
    sha256: str
    size: int | None  # bytes, where the pin records them: a download that grows past it is cut off


def _raw(repo: str, tag: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{tag}/{path}"


# Felix's WireGuard listening ports in the pinned Calico (FelixConfiguration wireguardListeningPort and
# wireguardListeningPortV6 defaults, v3.32.1).
CALICO_WIREGUARD_PORTS = {51820: "IPv4", 51821: "IPv6"}

# Digests are of the files as served for the tag; `stellwerk components fetch` refuses anything else.
UPSTREAM: dict[str, UpstreamManifest] = {
    manifest.name: manifest
    for manifest in (
        UpstreamManifest("metallb-native", "metallb", "v0.16.1",
                         _raw("metallb/metallb", "v0.16.1", "config/manifests/metallb-native.yaml"),
                         "bf25feebb7582ca7df845efd52ffbc2960d6cbf4cfc972f47fded9f788b67f0b", 88670),
        UpstreamManifest("metallb-frr", "metallb", "v0.16.1",
                         _raw("metallb/metallb", "v0.16.1", "config/manifests/metallb-frr.yaml"),
                         "2b3574f8a257270117f1ab58c4268c99c56cf3e92f2525e6b88aff0b2208f131", 95579),
        UpstreamManifest("calico", "calico", "v3.32.1",
                         _raw("projectcalico/calico", "v3.32.1", "manifests/calico.yaml"),
                         "a1df919d9721cf667accdc3e72848911b0cb25cfab7d2478ad0c996302c95744", 349572),
        UpstreamManifest("rook-crds", "rook", "v1.20.6",
                         _raw("rook/rook", "v1.20.6", "deploy/examples/crds.yaml"),
                         "7fa7462d44b35d636703a03a88120030692a06a05ac91ec253200cb4ae8c37cf", 965431),
        UpstreamManifest("rook-common", "rook", "v1.20.6",
                         _raw("rook/rook", "v1.20.6", "deploy/examples/common.yaml"),
                         "2d59b3093446dcf7dd69c73ebaef2d41e8cdfd14af564c2e885d49ab8d190457", 28709),
        UpstreamManifest("rook-csi-operator", "rook", "v1.20.6",
                         _raw("rook/rook", "v1.20.6", "deploy/examples/csi-operator.yaml"),
                         "de0bf9160c8370220353d7140a4b60ee6d4b8eda5e260f395fd00cbdc1059ffb", 394233),
        UpstreamManifest("rook-operator", "rook", "v1.20.6",
                         _raw("rook/rook", "v1.20.6", "deploy/examples/operator.yaml"),
                         "c69bb7309b6dfc34a1eeab658a1f9c825c7d156fb26dc1a6a824f6a9735761a4", 12450),
        UpstreamManifest("openebs-lvm", "openebs/lvm-localpv", "v1.5.0",
                         _raw("openebs/lvm-localpv", "v1.5.0", "deploy/lvm-operator.yaml"),
                         "ed41f6e258398120cb8861bd3c8dc748063bbdc983d6c15d06aa34d7b310791d", 85722),
        UpstreamManifest("openebs-zfs", "openebs/zfs-localpv", "v2.6.2",
                         _raw("openebs/zfs-localpv", "v2.6.2", "deploy/zfs-operator.yaml"),
                         "f65c792aca0c3b9a8b0ff757dc18fc24eda127f5c0f91b4be24dbbee0123bac1", 117720),
    )
}
