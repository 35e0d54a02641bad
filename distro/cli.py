"""The `stellwerk` command.

User errors exit with 2 and one located line per problem; internal failures
exit with 1. Tracebacks are shown only with STELLWERK_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from . import __version__
from .base.errors import Problem, RunFailed, UserError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stellwerk")
def cli() -> None:
    """Bare-metal Kubernetes from one cluster file."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--platform", type=click.Choice(["lab", "baremetal", "packet"]), default="baremetal", show_default=True,
              help="Which kind of site the starter file is written for.")
def init(directory: Path, platform: str) -> None:
    """Write a commented starter cluster.yaml into DIRECTORY."""
    from .starter import starter_cluster_file

    target = directory / "cluster.yaml"
    if target.exists():
        raise UserError(Problem(str(target), None, "", "already exists; init never overwrites a cluster file"))
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(starter_cluster_file(platform, directory.resolve().name), encoding="utf-8")
    click.echo(f"wrote {target}; edit it, then run: stellwerk validate {target}")


@cli.command()
@click.argument("cluster_file", type=click.Path(dir_okay=False, path_type=Path))
def validate(cluster_file: Path) -> None:
    """Check CLUSTER_FILE; print one line per problem."""
    from .manifests import load_checked

    spec = load_checked(cluster_file).plan.spec
    workers = sum(len(pool.nodes) for pool in spec.worker_pools)
    click.echo(f"{cluster_file}: valid ({len(spec.controllers)} controllers, {workers} workers)")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the cluster file, for editors."""
    from .spec import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


CACHE_OPTION = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Cache of upstream manifests (default $STELLWERK_CACHE_DIR, else ~/.cache/stellwerk).")


@cli.command()
@click.argument("cluster_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Assets directory (default ./assets/<cluster-name>).")
@CACHE_OPTION
def render(cluster_file: Path, output: Path | None, cache_dir: Path | None) -> None:
    """Render CLUSTER_FILE into an assets directory."""
    from .render import render as run_render
    from .summary import print_summary, progress_bar

    with progress_bar() as progress:
        result = run_render(cluster_file, output, progress=progress, cache_dir=cache_dir)
    print_summary(result)


@cli.group()
def components() -> None:
    """Upstream install manifests of the cluster components."""


@components.command("fetch")
@click.argument("cluster_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--all", "everything", is_flag=True, help="Fetch every pinned manifest, not just what CLUSTER_FILE uses.")
@click.option("--mirror", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Copy from this directory instead of downloading (air-gapped sites).")
@CACHE_OPTION
def components_fetch(cluster_file: Path | None, everything: bool, mirror: Path | None, cache_dir: Path | None) -> None:
    """Download and verify the pinned upstream manifests into the cache."""
    from .release import UPSTREAM
    from .summary import download_bar
    from .upstream import default_cache_dir, fetch

    if cluster_file is None and not everything:
        raise UserError(Problem("stellwerk components fetch", None, "", "name a cluster file, or pass --all"))
    if everything:
        names = list(UPSTREAM)
    else:
        from .manifests import load_checked, upstream_uses

        names = list(dict.fromkeys(use.name for use in upstream_uses(load_checked(cluster_file).plan)))
    cache = cache_dir or default_cache_dir()
    with download_bar() as progress:
        results = fetch([UPSTREAM[name] for name in names], cache, mirror=mirror, progress=progress)
    for result in results:
        m = result.manifest
        click.echo(f"{result.state:<8} {m.name:<20} {m.project} {m.version}  sha256:{m.sha256[:16]}")
    if not results:
        click.echo("nothing to fetch: the cluster installs no upstream manifest (no pod network, and no component "
                   "that has one)")
    click.echo(f"cache: {cache}")


@cli.group()
def pki() -> None:
    """Inspect the cluster PKI."""


@pki.command("check")
@click.argument("assets_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--warn-days", default=30, show_default=True, type=click.IntRange(min=0),
              help="Fail when a certificate expires within this many days.")
def pki_check(assets_dir: Path, warn_days: int) -> None:
    """List every certificate with its expiry; exit 1 if one is expired or close to it."""
    from .pki import certificate_statuses

    pki_dir = assets_dir / "pki"
    if not pki_dir.is_dir():
        raise UserError(Problem(str(assets_dir), None, "", "has no pki/ directory; run 'stellwerk render' first"))
    statuses = certificate_statuses(pki_dir, datetime.now(timezone.utc))
    failing = 0
    for status in statuses:
        state = "EXPIRED" if status.days_left < 0 else ("EXPIRING" if status.days_left < warn_days else "ok")
        failing += state != "ok"
        click.echo(f"{state:<9} {status.not_after:%Y-%m-%d} {status.days_left:>6}d  {status.path}  ({status.subject})")
    if failing:
        click.echo(f"{failing} certificate(s) expired or expiring within {warn_days} days", err=True)
        sys.exit(1)


def _add_groups() -> None:
    # The netboot, images and lab groups live with their packages; their imports stay lazy inside each command.
    from .images.cli import images
    from .lab.cli import lab
    from .netboot.cli import netboot

    cli.add_command(netboot)
    cli.add_command(images)
    cli.add_command(lab)


_add_groups()


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="stellwerk", standalone_mode=False)
    except UserError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_USER_ERROR)
    except RunFailed as exc:
        click.echo(str(exc), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USER_ERROR if exc.exit_code == 2 else exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # anything else is our bug, not the user's
        if os.environ.get("STELLWERK_DEBUG") == "1":
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("rerun with STELLWERK_DEBUG=1 for a traceback, and please report it", err=True)
        sys.exit(EXIT_INTERNAL_ERROR)
    sys.exit(code if isinstance(code, int) else 0)
