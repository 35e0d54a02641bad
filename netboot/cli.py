"""The `stellwerk netboot` command group (wired into the main CLI by distro/cli.py).

The flags' defaults are ServeOptions' own: one declaration, read by the CLI and by whoever builds the options.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from .serve import DHCP_MODES, ServeOptions

DEFAULTS = ServeOptions(assets_dir=Path("."))


@click.group()
def netboot() -> None:
    """Network boot for the machines of a rendered cluster."""


def _range(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    start, sep, end = value.partition("-")
    if not sep or not start or not end:
        raise click.BadParameter("write the dynamic range as FIRST-LAST, e.g. 10.213.0.100-10.213.0.199")
    return start.strip(), end.strip()


def _merge_urls(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not re.fullmatch(r"https?://[\x21-\x7e]+", value) or '"' in value:
            raise click.BadParameter(f"{value!r} must be an http:// or https:// URL without spaces or quotes")
    return values


@netboot.command("serve")
@click.argument("assets_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--listen", default=DEFAULTS.listen, show_default=True, help="Address the HTTP and TFTP servers bind to.")
@click.option("--http-port", default=DEFAULTS.http_port, show_default=True, type=click.IntRange(0, 65535))
@click.option("--https-port", default=DEFAULTS.https_port, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the HTTPS listener that hands out the secret part of configs, once, by token.")
@click.option("--tftp-port", default=DEFAULTS.tftp_port, show_default=True, type=click.IntRange(0, 65535))
@click.option("--dhcp", type=click.Choice(DHCP_MODES), default=DEFAULTS.dhcp, show_default=True,
              help="proxy: answer only PXE options beside an existing DHCP server; full: hand out leases too.")
@click.option("--interface", help="Provisioning network interface (needed for DHCP, and with --listen 0.0.0.0).")
@click.option("--range", "dhcp_range", callback=_range, help="Full DHCP: dynamic range FIRST-LAST (nodes get their reservations).")
@click.option("--merge-url", "merge_urls", multiple=True, callback=_merge_urls, metavar="URL",
              help="Add an Ignition config URL that every node's served config merges last (a site or lab "
                   "overlay); the rendered configs stay untouched. Repeatable.")
@click.option("--serve-controller-secrets", is_flag=True,
              help="Serve controller cloud-configs (they hold CA keys) over plain HTTP. Only on an isolated lab "
                   "network; Ignition nodes get their secrets over HTTPS instead.")
def netboot_serve(assets_dir: Path, listen: str, http_port: int, https_port: int, tftp_port: int, dhcp: str,
                  interface: str | None, dhcp_range: tuple[str, str] | None, merge_urls: tuple[str, ...],
                  serve_controller_secrets: bool) -> None:
    """Serve ASSETS_DIR to booting machines: DHCP (optional), TFTP (iPXE) and HTTP (scripts, configs, images)."""
    from .logs import log_to_stderr
    from .serve import serve

    log_to_stderr()
    serve(ServeOptions(assets_dir=assets_dir, listen=listen, http_port=http_port, https_port=https_port,
                       tftp_port=tftp_port, dhcp=dhcp, interface=interface, dhcp_range=dhcp_range,
                       serve_controller_secrets=serve_controller_secrets, merge_urls=merge_urls),
          announce=click.echo)


@netboot.command("status")
@click.argument("assets_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--history", is_flag=True, help="Also list each machine's recent events.")
def netboot_status(assets_dir: Path, history: bool) -> None:
    """Print each machine's provisioning state: discovered, installing, installed, booted."""
    from .status import print_status

    print_status(assets_dir, history=history)


@netboot.command("reprovision")
@click.argument("assets_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("nodes", nargs=-1, required=True)
def netboot_reprovision(assets_dir: Path, nodes: tuple[str, ...]) -> None:
    """Allow NODES to receive their secrets once more, for a reinstall. Works while `netboot serve` runs."""
    from .status import reprovision

    reprovision(assets_dir, list(nodes))
    click.echo(f"armed for one more delivery of their secrets: {', '.join(nodes)}")
