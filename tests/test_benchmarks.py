"""The benchmarks keep working: each runs on a tiny size and prints its figures (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

from support.paths import REPO


def test_render_benchmark_prints_its_figures():
    run = subprocess.run([sys.executable, str(REPO / "benchmarks/render.py"), "5"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].split() == ["workers", "run", "seconds", "nodes/s", "peak", "MB", "files", "MB", "out"]
    first, unchanged = (line.split() for line in lines[1:3])
    assert first[:2] == ["5", "first"] and unchanged[:2] == ["5", "unchanged"]
    assert int(first[5]) > 0 and unchanged[5] == "0"  # a re-render with nothing changed writes no file


def test_netboot_dhcp_benchmark_completes_dora_with_both_servers():
    import os
    import re

    import pytest

    if os.geteuid() != 0:
        pytest.skip("the DHCP benchmark needs root: it creates network namespaces and sends from raw sockets")

    def benchmark_namespaces() -> set[str]:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return {line.split()[0] for line in listing.splitlines() if line.startswith("swbench-")}

    before = benchmark_namespaces()
    run = subprocess.run([sys.executable, str(REPO / "benchmarks/netboot_dhcp.py"), "--clients", "20", "--rounds", "1",
                          "--limit", "60"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].split() == ["server", "clients", "completed", "seconds", "p50", "ms", "p99", "ms"]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert set(rows) == {"stellwerk", "dnsmasq"}, lines
    for name, row in rows.items():
        assert row[1:3] == ["20", "20"], f"{name}: not every client completed DORA: {row}"
        seconds, p50, p99 = (float(value) for value in row[3:6])
        assert seconds > 0 and 0 < p50 <= p99, row
    assert re.fullmatch(r"stellwerk/dnsmasq time: \d+\.\d\dx \(target <= 2x\)", lines[3]), lines[3]
    assert "warning" not in run.stderr, run.stderr
    assert benchmark_namespaces() <= before  # its namespaces (and with them the veth pair) are gone
