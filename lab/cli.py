"""The `stellwerk lab` command group (wired into the main CLI by distro/cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

CLUSTER = click.argument("cluster_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
ROOT = click.option("--lab-dir", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
                    help="Where labs keep their files (default $STELLWERK_LAB_ROOT, else /var/lib/stellwerk/lab).")


@click.group()
def lab() -> None:
    """Run the rendered cluster in libvirt VMs that netboot from Stellwerk, check it, inject faults."""
    try:
        import libvirt  # noqa: F401  (an optional dependency: the extra 'lab')
    except ImportError:
        from stellwerk.base.errors import Problem, UserError

        raise UserError(Problem("stellwerk lab", None, "", "needs libvirt's Python binding; install it with "
                                "`pip install 'stellwerk[lab]'` (apt-get install libvirt-dev pkg-config gcc first)"))


@lab.command("up")
@CLUSTER
@ROOT
@click.option("--uefi", "uefi", multiple=True, metavar="NODE", help="Boot NODE with OVMF (UEFI). Repeatable.")
@click.option("--memory", "memory_mib", default=768, show_default=True, type=click.IntRange(256, 65536),
              help="MiB of memory per VM.")
@click.option("--timeout", default=900, show_default=True, type=click.IntRange(30, 7200),
              help="Seconds for every node to report.")
def lab_up(cluster_file: Path, root: Path | None, uefi: tuple[str, ...], memory_mib: int, timeout: int) -> None:
    """Create the lab (replacing one that exists) and wait until every node reports."""
    from .lifecycle import LabOptions, up
    from .progress import LiveTable

    with LiveTable() as table:
        up(LabOptions(cluster_file, root, memory_mib, uefi, float(timeout)), progress=table.update, say=table.say)


@lab.command("check")
@CLUSTER
@ROOT
@click.option("--timeout", default=300, show_default=True, type=click.IntRange(10, 7200),
              help="Seconds for every node to settle and every check to pass; a slow host takes longer, not red.")
def lab_check(cluster_file: Path, root: Path | None, timeout: int) -> None:
    """Check the running lab like production, once its nodes have settled; exit 0 only when every check passes."""
    from .checkrun import check

    if not check(cluster_file, root, timeout=float(timeout)):
        sys.exit(1)


@lab.command("fault")
@CLUSTER
@click.argument("action", type=click.Choice(["power-off", "power-on", "power-cycle"]))
@click.argument("node")
@ROOT
def lab_fault(cluster_file: Path, action: str, node: str, root: Path | None) -> None:
    """Pull NODE's plug, power it on again, or both at once (and wait until it reports)."""
    from .lifecycle import fault

    fault(cluster_file, action, node, root, say=click.echo)


@lab.command("down")
@CLUSTER
@ROOT
def lab_down(cluster_file: Path, root: Path | None) -> None:
    """Remove every domain, network, disk and process the lab created, and nothing else."""
    from .lifecycle import down, load_plan

    down(load_plan(cluster_file).name, root, say=click.echo)
