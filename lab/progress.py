"""The live table `lab up` shows: each node's latest boot step, or the failure it reported, and how long it has
been booting."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .lifecycle import failures_since
from .phases import boot_phases, current_phase


class LiveTable:
    """A rich Live display on terminals; plain lines (one per change) elsewhere, such as in CI logs."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)
        self.started = time.time()
        self.messages: list[str] = []
        self._live: Live | None = None
        self._last: dict[str, str] = {}

    def __enter__(self) -> LiveTable:
        if self.console.is_terminal:
            self._live = Live(self._render({}), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def say(self, message: str) -> None:
        if self._live is not None:
            self.messages.append(message)
            self._live.update(self._render({}))
        else:
            self.console.print(message, markup=False, highlight=False)

    def update(self, lab) -> None:
        phases = boot_phases(lab.plan, lab.directory, since=self.started)
        rows = {node.name: current_phase(phases[node.name]) for node in lab.plan.nodes}
        for node, failure in failures_since(lab, set(rows), self.started).items():
            rows[node] = f"failed: {failure.get('stage')}: {failure.get('reason')}"[:120]
        if self._live is not None:
            self._live.update(self._render(rows))
            return
        for node, phase in rows.items():  # without a terminal: one line per step a node reaches
            if self._last.get(node) != phase:
                self._last[node] = phase
                # a failure's reason came from the machine: printed as it is, never read as markup
                self.console.print(f"{time.time() - self.started:6.1f} s  {node}: {phase}", markup=False,
                                   highlight=False)

    def _render(self, rows: dict[str, str]) -> Group:
        table = Table(title=f"lab up ({time.time() - self.started:.0f} s)", title_justify="left")
        table.add_column("node")
        table.add_column("step")
        for node, phase in rows.items():
            table.add_row(Text(node), Text(phase))
        return Group(*(Text(message) for message in self.messages[-8:]), table)
