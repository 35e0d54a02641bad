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
