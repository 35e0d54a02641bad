"""Sysext images for the Flatcar clusters tests render, built by the real `stellwerk images sysext`.

No Kubernetes binary reaches this machine, so the kubernetes image holds stand-ins for kubelet and kubectl: the
tests that use these images check configs and delivery, and never run what is inside. The etcd image holds the
host's real etcd (Debian's etcd-server), which the sysext tests do run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .webserver import static_http

STAND_IN = b"#!/bin/sh\n# stand-in: no Kubernetes binary reaches this machine\nexit 0\n"


def local_binaries(directory: Path) -> tuple[str, ...]:
    """--binary arguments for every binary of every extension: etcd's real ones, stand-ins for Kubernetes'."""
    directory.mkdir(parents=True, exist_ok=True)
    arguments = []
    for name in ("kubelet", "kubectl"):
        (directory / name).write_bytes(STAND_IN)
        arguments.append(f"{name}={directory / name}")
    for name in ("etcd", "etcdctl"):
        found = shutil.which(name)
        assert found, f"{name} is not installed (Debian's etcd-server and etcd-client)"
        arguments.append(f"{name}={found}")
    return tuple(arguments)


def build_images(cluster_file: Path, assets_dir: Path) -> list[str]:
    """Build the cluster's sysext images into `assets_dir` from the local binaries; the command's output lines."""
    from stellwerk.images.sysext_command import build_cluster_images

    binaries = local_binaries(assets_dir.parent / f".{assets_dir.name}-binaries")
    wanted = _wanted(cluster_file)
    return list(build_cluster_images(cluster_file, assets_dir, mirror=None, cache_dir=None,
                                     binaries=tuple(b for b in binaries if b.split("=")[0] in wanted)))


def _wanted(cluster_file: Path) -> set[str]:
    from stellwerk.extensions import BINARIES
    from stellwerk.manifests import load_checked
    from stellwerk.render import needed_extensions

    plan = load_checked(cluster_file).plan
    return {binary for name in needed_extensions(plan) for binary in BINARIES[name]}


FLATCAR_OS = "    family: flatcar\n    sysextBaseURL: http://10.213.0.2:8080/assets/sysext\n"


def on_flatcar(text: str) -> str:
    """A lab-family cluster file moved to Flatcar, with the folder its sysext images are served from."""
    assert "    family: lab\n" in text
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("    sysextBaseURL: ")]
    return "".join(lines).replace("    family: lab\n", FLATCAR_OS)


def render_flatcar(cluster_file: Path, assets_dir: Path, **options):
    """Build the sysext images, then render, as an operator does; returns render's result."""
    from stellwerk.render import render

    build_images(cluster_file, assets_dir)
    return render(cluster_file, assets_dir, **options)


LAB_EXAMPLE_URL = "http://10.213.0.1:8080/assets/sysext"


@contextmanager
def served_sysext(cluster_text: str, assets_dir: Path, scratch: Path) -> Iterator[Path]:
    """A copy of the cluster file whose sysextBaseURL is a loopback server of ASSETS/boot/sysext, so the real
    Ignition can fetch the images render builds there; yields the copy's path while the server runs."""
    www = scratch / "www"
    www.mkdir(parents=True)
    (www / "sysext").symlink_to(assets_dir / "boot" / "sysext")  # there once render has built the images
    with static_http(www) as base:
        assert LAB_EXAMPLE_URL in cluster_text
        cluster = scratch / "cluster.yaml"
        cluster.write_text(cluster_text.replace(LAB_EXAMPLE_URL, f"{base}/sysext"))
        yield cluster
