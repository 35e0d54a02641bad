"""A component's host requirements on one node, and the Ignition config that puts them in place.

Components describe what they need (kernel modules, sysctls, udev rules, kernel arguments, labels, files and
units); the node config asks each enabled component for its fragment of the node and merges them in component order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .merge import merge
from .model import Config, File


@dataclass(frozen=True)
class NodeFragment:
    """What a component needs on one node; the node config merges it in."""

    component: str
    kernel_modules: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    udev_rules: tuple[tuple[str, str], ...] = ()  # (file name under /etc/udev/rules.d, text)
    kernel_arguments: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    config: Config = field(default_factory=Config)  # files, units, disks, raid, filesystems


def fragment_config(fragment: NodeFragment) -> Config:
    """The Ignition config that puts a fragment's host requirements in place."""
    name = fragment.component
    files: list[File] = []
    if fragment.kernel_modules:
        files.append(File(path=f"/etc/modules-load.d/stellwerk-{name}.conf",
                          contents="".join(f"{module}\n" for module in fragment.kernel_modules).encode()))
    if fragment.sysctls:
        files.append(File(path=f"/etc/sysctl.d/70-stellwerk-{name}.conf",
                          contents="".join(f"{key} = {value}\n" for key, value in fragment.sysctls).encode()))
    for file_name, text in fragment.udev_rules:
        files.append(File(path=f"/etc/udev/rules.d/{file_name}", contents=text.encode()))
    own = Config(files=tuple(files), kernel_arguments_should_exist=tuple(fragment.kernel_arguments))
    return merge(own, fragment.config)
