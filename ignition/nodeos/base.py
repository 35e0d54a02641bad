"""What a node OS is to Stellwerk: how its nodes get their binaries and config, how they boot from the network,
and what the components may assume of it. One module per family (flatcar.py, lab.py, debian.py) makes one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal


from stellwerk.netboot.documents import CONFIG_FILES, Profile

from stellwerk.base.types import ExtensionImage

from ..model import Config, File, Link

if TYPE_CHECKING:  # the plan imports the spec, which imports the components, which use these
    from stellwerk.plan import NodePlan, Plan

Images = Mapping[str, ExtensionImage]  # the built sysext images, by extension name

ConfigFormat = Literal["ignition", "cloud-config"]
CONSOLE_ARGS = ("console=tty0", "console=ttyS0,115200n8")


def no_parts(plan: Plan, node: NodePlan, images: Images) -> tuple[Config, ...]:
    return ()


def no_extensions(plan: Plan, node: NodePlan) -> tuple[str, ...]:
    return ()


def sysext_config(plan: Plan, names: tuple[str, ...], images: Images) -> Config:
    """Each sysext image from the folder os.sysextBaseURL names, checked by the sha512 it had when it was built,
    kept under /opt/extensions/<name>/ and linked into /etc/extensions, where systemd-sysext merges it at boot."""
    base = plan.spec.os.sysext_base_url
    files, links = [], []
    for name in names:
        image = images[name]
        target = f"/opt/extensions/{name}/{image.image}"
        files.append(File(path=target, source=f"{base}/{image.image}", mode=0o644,
                          verification=f"sha512-{image.sha512}"))
        # The link's name is the extension's: systemd-sysext wants extension-release.<name> inside it.
        links.append(Link(path=f"/etc/extensions/{name}.raw", target=target, hard=False))
    return Config(files=tuple(files), links=tuple(links))


def profile(profile_id: str, *, kernel: str | None, initrd: tuple[str, ...], args: tuple[str, ...],
            config: str) -> Profile:
    """A netboot profile, with the file render writes it to."""
    return Profile(id=profile_id, kernel=kernel, initrd=initrd, args=args, config=config,
                   file=f"netboot/profiles/{profile_id}.json")


@dataclass(frozen=True)
class NodeOS:
    family: str  # its os.family in the cluster file
    config_format: ConfigFormat  # what its nodes read
    provisioner: str  # the tool that applies that config, for messages: Ignition, cloud-init
    binaries: str  # how Kubernetes' and etcd's binaries reach a node, for docs and messages
    # What the components may assume:
    storage: bool  # disks, RAID and filesystems are set up by the config (Ignition's storage section)
    kernel_arguments: bool  # the config can set kernel arguments (Flatcar's Ignition applies and reboots)
    official_extensions: str | None  # the file that lists the OS vendor's own sysexts to merge, if it has them
    # What it adds to every node's config, before the role's parts and the snippets, given the sysext images:
    host_parts: Callable[[Plan, NodePlan, Images], tuple[Config, ...]]
    # How its nodes boot from the network: the netboot profile (matchbox-style JSON), and whether that profile
    # installs the OS to disk first (a two-stage install: installer, then the installed system's own config).
    netboot_profile: Callable[[Plan], Profile]
    installs_to_disk: bool = False
    install_metadata: Callable[[Plan], dict[str, Any]] | None = None  # group metadata the installer reads
    # The systemd-sysext images (stellwerk.extensions) a node merges over /usr, and the os-release fields an
    # image must carry for systemd-sysext to merge it on this OS.
    extensions: Callable[[Plan, NodePlan], tuple[str, ...]] = no_extensions
    extension_release: tuple[tuple[str, str], ...] = ()
    # Where `stellwerk images sysext` takes a binary from when no --binary names one and no pin should be used:
    # the host's own file, for an OS built from the host's distribution (the lab OS).
    host_binaries: tuple[tuple[str, str], ...] = ()

    @property
    def config_file(self) -> str:
        return CONFIG_FILES[self.config_format]
