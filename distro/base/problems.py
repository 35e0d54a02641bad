"""The one way a document reader collects what is wrong: it walks the whole document, records each problem with
the path where it is, and raises once at the end, so an operator fixes a file in one pass.

The cluster file's snippets (ignition/butane.py), Ignition configs read back (ignition/model.py) and netboot's
machine store (netboot/store.py) all walk with a ProblemCollector; each adds the checks of its own format.
"""

from __future__ import annotations

from collections.abc import Iterator


class ProblemCollector:
    """(path, message) pairs in the order found; a path is dotted (storage.files[0].path), '' for the document."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.problems)
