"""When each lab node reached each step of its boot, from the netboot server's log and the nodes' reports.

The netboot log (LAB_DIR/netboot.log) is one JSON object per line: DHCP exchanges name the client's MAC, HTTP
requests its MAC (scripts, configs) or address (boot files, secrets). The first report of a boot comes from the
collector. Used for the live progress of `lab up` and by the lab benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

from stellwerk.plan import Plan

from .collector import read_report

# In boot order: the step and how the log shows it.
PHASES = ("dhcp", "ipxe", "kernel", "initrd", "ignition", "secrets", "reported")


def _http(record: dict) -> dict | None:
    if record.get("logger") != "stellwerk.netboot.http":
        return None
    try:
        message = json.loads(record.get("message", ""))
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def boot_phases(plan: Plan, directory: Path, since: float = 0.0) -> dict[str, dict[str, float]]:
    """node -> phase -> first time (Unix seconds) at or after `since`."""
    by_mac = {node.mac.lower(): node.name for node in plan.nodes}
    by_address = {str(node.address): node.name for node in plan.nodes}
    seen: dict[str, dict[str, float]] = {node.name: {} for node in plan.nodes}

    def mark(node: str | None, phase: str, when: float) -> None:
        if node is not None and when >= since:
            seen[node].setdefault(phase, when)

    try:
        lines = (directory / "netboot.log").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        when = float(record.get("time", 0))
        message = str(record.get("message", ""))
        if record.get("logger") == "stellwerk.netboot.dhcp" and message.startswith("dhcp exchange "):
            fields = dict(word.split("=", 1) for word in message.split() if "=" in word)
            if fields.get("reply") == "ACK":
                mark(by_mac.get(fields.get("client", "").lower()), "dhcp", when)
            continue
        http = _http(record)
        if http is None or http.get("status") not in (200, 206):
            continue
        node = by_mac.get(str(http.get("mac") or "").lower()) or by_address.get(
            str(http.get("client", "")).rsplit(":", 1)[0])
        endpoint = str(http.get("endpoint", ""))
        phase = {"/ipxe": "ipxe", "/ignition": "ignition", "/secrets": "secrets"}.get(endpoint)
        if phase is None and endpoint.startswith("/assets/"):
            phase = "kernel" if endpoint.endswith("vmlinuz") else "initrd"
        if phase is not None:
            mark(node, phase, when)
    for node in plan.nodes:
        report = read_report(directory, node.name, first=True)
        if report is not None:
            mark(node.name, "reported", float(report.get("received", 0)))
    return seen


def current_phase(phases: dict[str, float]) -> str:
    reached = [phase for phase in PHASES if phase in phases]
    return reached[-1] if reached else "powered on"
