"""The `stellwerk images` command group (wired into the main CLI by distro/cli.py)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def images() -> None:
    """Fetch, verify and build boot artifacts."""


@images.command("build-lab-os")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("lab-os"),
              show_default=True, help="Directory that gets vmlinuz, initrd.img and manifest.json.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build cache (default $STELLWERK_IMAGES_CACHE, else /var/cache/stellwerk/images).")
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True, help="Debian mirror URL.")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite the OS is built from.")
def build_lab_os_command(output: Path, cache_dir: Path | None, mirror: str, suite: str) -> None:
    """Build the lab OS from Debian packages: a kernel and one initrd holding the read-only root.

    Boot it with: ignition.firstboot ignition.platform.id=metal console=ttyS0,115200n8
    ignition.config.url=URL. A filesystem labelled "stellwerk-state" becomes the
    persistent layer of its root; without one, every boot starts clean.
    """
    from . import cache, debian
    from .labos import BuildOptions, build_lab_os
    from .progress import for_terminal

    options = BuildOptions(output=output, cache_dir=cache_dir or cache.default_dir(),
                           mirror=debian.Mirror(url=mirror, suite=suite))
    with for_terminal() as reporter:
        result = build_lab_os(options, reporter)
    for name in ("vmlinuz", "initrd.img", "manifest.json"):
        click.echo(str(result.output / name))


@images.command("sysext")
@click.argument("cluster_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Assets directory (default ./assets/<cluster-name>); the images go to its boot/sysext/.")
@click.option("--mirror", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Take the pinned upstream files from this directory instead of downloading (air-gapped sites).")
@click.option("--binary", "binaries", multiple=True, metavar="NAME=PATH",
              help="Build from this binary of your own instead of the pinned upstream one (kubelet, kubectl, etcd, "
                   "etcdctl). Repeatable; an extension takes all its binaries from here or none.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Download cache (default $STELLWERK_CACHE_DIR, else ~/.cache/stellwerk).")
def sysext_command(cluster_file: Path, output: Path | None, mirror: Path | None, binaries: tuple[str, ...],
                   cache_dir: Path | None) -> None:
    """Build the systemd-sysext images CLUSTER_FILE's nodes merge over /usr (kubelet, kubectl; etcd on controllers).

    From the pinned upstream releases, each download checked by its sha256; netboot serves the images as
    /assets/sysext/, and render gives every node's Ignition their sha512.
    """
    from .sysext_command import build_cluster_images

    for line in build_cluster_images(cluster_file, output, mirror=mirror, binaries=binaries, cache_dir=cache_dir):
        click.echo(line)


@images.command("list")
@click.argument("cluster_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache of upstream manifests (default $STELLWERK_CACHE_DIR, else ~/.cache/stellwerk).")
@click.option("--where", is_flag=True, help="Also say where each image is named.")
def list_command(cluster_file: Path, cache_dir: Path | None, where: bool) -> None:
    """Print every container image CLUSTER_FILE's cluster pulls, one per line, to mirror them ahead of time."""
    from stellwerk.base.errors import RunFailed
    from stellwerk.imagelist import cluster_images, pinned
    from stellwerk.manifests import load_checked
    from stellwerk.upstream import default_cache_dir

    checked = load_checked(cluster_file)
    uses, missing = cluster_images(checked.plan, checked.components, cache_dir or default_cache_dir())
    by_image: dict[str, list[str]] = {}
    for use in uses:
        by_image.setdefault(use.image, []).append(use.where)
    for image in sorted(by_image):
        click.echo(f"{image}  ({'; '.join(sorted(set(by_image[image])))})" if where else image)
    unpinned = sorted(image for image in by_image if not pinned(image))
    if missing:
        click.echo(f"not listed: the images of {', '.join(missing)}, which is not in the cache; run `stellwerk "
                   f"components fetch {cluster_file}` first", err=True)
    if unpinned:  # the images of a patch the operator wrote, say
        raise RunFailed(f"{cluster_file}: not pinned to a tag or digest, so not mirrorable as one image: "
                        f"{', '.join(unpinned)}")
    if missing:
        raise RunFailed("the list is incomplete (see above)")
