"""Fixtures every test may use. Shared helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from support.paths import EXAMPLE


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run the real `stellwerk` entry point in-process, as a user would from a shell."""
    from stellwerk.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def example_text() -> str:
    return EXAMPLE.read_text()
