"""`stellwerk netboot status` and `reprovision`: the operator's view of machine states (with what a failed machine
reported), and re-arming secrets."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from stellwerk.base.errors import Problem, UserError

from .machines import MachineRegistry
from .store import Store


def _nodes(store: Store) -> list[str]:
    return sorted({group.node for group in store.groups if group.node is not None})


def print_status(assets_dir: Path, history: bool = False, console: Console | None = None) -> None:
    store = Store.load(assets_dir)
    statuses = MachineRegistry(assets_dir).statuses(_nodes(store))
    console = console or Console(highlight=False, soft_wrap=True)
    table = Table(title=f"machines of {assets_dir}", title_justify="left")
    for column in ("node", "mac", "state", "since", "from", "secrets"):
        table.add_column(column)
    for status in statuses:
        state = status.state or "not seen"
        if status.failure:
            state = f"failed: {status.failure.get('stage')}"
        table.add_row(status.node, status.mac or "-", state, status.updated or "-", status.client or "-",
                      status.secrets)
    console.print(table)
    for status in statuses:
        if status.failure:
            failure = status.failure
            console.print(f"{status.node} failed in stage {failure.get('stage')} at {failure.get('time')}: "
                          f"{failure.get('reason')}", markup=False)
            for line in (failure.get("log") or "").splitlines():
                console.print(f"  {line}", markup=False)
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.state or "not seen"] = counts.get(status.state or "not seen", 0) + 1
    console.print(", ".join(f"{count} {state}" for state, count in sorted(counts.items())))
    if history:
        for status in statuses:
            for event in status.history:
                console.print(f"{status.node}  {event['time']}  {event['event']}  {event.get('client') or ''}")


def reprovision(assets_dir: Path, nodes: list[str]) -> None:
    known = set(_nodes(Store.load(assets_dir)))
    unknown = [node for node in nodes if node not in known]
    if unknown:
        raise UserError([Problem("NODES", None, "", f"{node!r} is not a node of {assets_dir}; known nodes: "
                                 f"{', '.join(sorted(known)) or 'none'}") for node in unknown])
    registry = MachineRegistry(assets_dir)
    for node in nodes:
        registry.reprovision(node)
