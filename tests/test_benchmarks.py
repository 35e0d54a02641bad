"""The benchmarks keep working: each runs on a tiny size and prints its figures (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_render_benchmark_prints_its_figures():
    run = subprocess.run([sys.executable, str(REPO / "benchmarks/render.py"), "5"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].split() == ["workers", "run", "seconds", "nodes/s", "peak", "MB", "files", "MB", "out"]
    first, unchanged = (line.split() for line in lines[1:3])
    assert first[:2] == ["5", "first"] and unchanged[:2] == ["5", "unchanged"]
    assert int(first[5]) > 0 and unchanged[5] == "0"  # a re-render with nothing changed writes no file
