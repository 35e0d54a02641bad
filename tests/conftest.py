from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "lab-cluster.yaml"


def _without_components(text: str) -> str:
    """The example without its `components:` block, for tests that add components of their own."""
    start = text.index("  components:\n")
    end = text.index("  snippets:\n", start)
    return text[:start] + text[end:]


# The lab example as it was before it enabled nvme and hostProtection: the base that component tests extend.
BASE_EXAMPLE_TEXT = _without_components(EXAMPLE.read_text())


def require_tool(name: str, *fallbacks: str) -> str:
    """Path of a real engine; missing in CI is a failure, elsewhere a skip."""
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else None)
        if found:
            return found
    message = f"{name} is not installed (./dev.sh test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


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


def write_cluster(directory: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@contextmanager
def static_http(directory: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving `directory`; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def component_filesystems(storage: dict) -> list[dict]:
    """An Ignition storage section's filesystems minus the lab OS's state filesystem, which render gives every
    lab node on its install disk: what the components added."""
    from stellwerk.images.contract import STATE_LABEL

    return [fs for fs in storage.get("filesystems", []) if fs.get("label") != STATE_LABEL]
