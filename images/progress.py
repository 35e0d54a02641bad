"""How a long image build tells the user where it is.

The builder only calls a `Reporter`; the CLI picks a live Rich display on a
terminal and plain lines otherwise (CI logs, pipes), and tests can collect
the calls. Every phase ends with its duration, so a slow build shows where
the time went.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text


class Reporter(Protocol):
    def phase(self, name: str) -> None:
        """A new phase starts (the previous one, if any, is finished)."""

    def detail(self, text: str) -> None:
        """The latest line of what the current phase is doing."""

    def done(self, summary: str) -> None:
        """The build is over; `summary` is one line."""

    def note(self, text: str) -> None:
        """Something the user should read even when nothing is wrong (a warning, a fallback)."""


class Silent:
    """Reports nothing (library use, tests)."""

    def phase(self, name: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass

    def done(self, summary: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class _Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.phase_name: str | None = None
        self.phase_start = self.start
        self.finished: list[tuple[str, float]] = []

    def next(self, name: str | None) -> tuple[str, float] | None:
        now = time.monotonic()
        ended = (self.phase_name, now - self.phase_start) if self.phase_name else None
        if ended:
            self.finished.append(ended)
        self.phase_name, self.phase_start = name, now
        return ended

    def total(self) -> float:
        return time.monotonic() - self.start


class Lines:
    """One line per phase with its duration: for logs, where a live display would be noise."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.timer = _Timer()

    def _ended(self, ended: tuple[str, float] | None) -> None:
        if ended:
            print(f"  {ended[0]}: {ended[1]:.1f} s", file=self.out, flush=True)

    def phase(self, name: str) -> None:
        self._ended(self.timer.next(name))
        print(f"{name} ...", file=self.out, flush=True)

    def detail(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def done(self, summary: str) -> None:
        self._ended(self.timer.next(None))
        print(f"{summary} ({self.timer.total():.1f} s)", file=self.out, flush=True)


class LiveDisplay:
    """A spinner with the phase, its elapsed time and the tool's latest line; finished phases stay on screen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.timer = _Timer()
        self.last_detail = ""

    def render(self) -> Spinner | Text:
        if self.timer.phase_name is None:
            return Text("")
        elapsed = time.monotonic() - self.timer.phase_start
        text = Text.assemble((self.timer.phase_name or "", "bold"), f"  {elapsed:5.1f} s  ",
                             (self.last_detail[:100], "dim"))
        return Spinner("dots", text=text)

    def _ended(self, ended: tuple[str, float] | None) -> None:
        if ended:
            self.console.print(f"[green]✓[/green] {ended[0]} [dim]{ended[1]:.1f} s[/dim]")

    def phase(self, name: str) -> None:
        self._ended(self.timer.next(name))
        self.last_detail = ""

    def detail(self, text: str) -> None:
        self.last_detail = text.strip()

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{text}[/yellow]")

    def done(self, summary: str) -> None:
        self._ended(self.timer.next(None))
        self.console.print(f"{summary} [dim]({self.timer.total():.1f} s)[/dim]")


@contextmanager
def for_terminal(stream: TextIO | None = None) -> Iterator[Reporter]:
    """A live display when `stream` (default stderr) is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield Lines(stream)
        return
    console = Console(file=stream, highlight=False)
    reporter = LiveDisplay(console)
    # Live redraws on its own clock, so the elapsed time ticks while a tool prints nothing.
    with Live(console=console, get_renderable=reporter.render, refresh_per_second=8, transient=True):
        yield reporter
