"""What `stellwerk render` shows: progress while it works and a summary when done."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TransferSpeedColumn)

from .render import Progress as ProgressCallback
from .render import RenderResult

_console = Console(stderr=True, highlight=False)


@contextmanager
def progress_bar() -> Iterator[ProgressCallback | None]:
    """A live bar on terminals; nothing when output goes to a file or CI log."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(TextColumn("rendering {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        yield update


@contextmanager
def download_bar() -> Iterator[Callable[[str, int, int | None], None] | None]:
    """Bytes per download on terminals; nothing in logs."""
    if not sys.stderr.isatty():
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        yield update


def summary_lines(result: RenderResult) -> list[str]:
    plan, report, secrets = result.plan, result.report, result.secrets
    lines = [
        f"cluster {plan.name}: {len(plan.controllers)} controllers, {len(plan.workers)} workers, "
        f"os {plan.spec.os.family}, kubernetes {plan.spec.kubernetes.version}",
        f"assets: {result.assets_dir}",
    ]
    if "pki/ca.crt" in secrets.created:
        # A brand-new cluster: list what kinds of secrets exist now, not fifty file names.
        groups: dict[str, int] = {}
        for path in secrets.created:
            groups[path.split("/")[0]] = groups.get(path.split("/")[0], 0) + 1
        lines.append("secrets created: " + ", ".join(f"{count} in {group}/" for group, count in groups.items()))
    elif secrets.created:
        lines.append(f"secrets created: {len(secrets.created)} files")
        lines += [f"  + {path}" for path in secrets.created]
    else:
        lines.append("secrets: all loaded, none created")
    lines += [f"  ~ reissued {line}" for line in secrets.reissued]
    lines.append(
        f"files: {len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.removed)} removed, {report.unchanged} unchanged"
    )
    lines += [f"  ~ {path}" for path in report.updated[:20]]
    if len(report.updated) > 20:
        lines.append(f"  ~ ... and {len(report.updated) - 20} more")
    lines += [f"  - {path}" for path in report.removed]
    lines += [f"note: {note}" for note in result.notes]
    return lines


def print_summary(result: RenderResult) -> None:
    for line in summary_lines(result):
        print(line)
