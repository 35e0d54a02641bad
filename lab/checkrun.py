"""`stellwerk lab check`: every check of checks.py over a running lab, as a table per node and a cluster summary."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import checks
from .checks import Check
from .collector import read_report
from .lifecycle import Lab, open_lab

STALE_AFTER = 60.0  # seconds: a node that has not reported for longer is not counted as up


def component_options(lab: Lab, key: str):
    for module, options in lab.plan.components():
        if module.KEY == key:
            return options
    return None


FRESH_WAIT = 45.0  # seconds `lab check` waits for every running node to report anew


def wait_for_fresh_reports(lab: Lab, since: float, timeout: float = FRESH_WAIT) -> None:
    """Until each running node has reported after `since`, or `timeout`: facts that one node's report shows (a
    handshake another node started) must not be judged from an older report of it."""
    expected = [node.name for node in lab.plan.nodes if node.name not in lab.state.powered_off]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reports = [read_report(lab.directory, name) for name in expected]
        if all(report is not None and report.get("received", 0) >= since for report in reports):
            return
        time.sleep(1)


def run_checks(lab: Lab, now: float | None = None) -> list[Check]:
    started = time.time()
    wait_for_fresh_reports(lab, started)
    now = now or time.time()
    plan, assets = lab.plan, lab.assets
    down = set(lab.state.powered_off)
    results: list[Check] = []
    reports = {node.name: read_report(lab.directory, node.name) for node in plan.nodes}
    up = set()
    for node in plan.nodes:
        report = reports[node.name]
        if node.name in down:
            continue
        if report is None:
            results.append(Check(node.name, "report", False, "never reported"))
        elif now - report.get("received", 0) > STALE_AFTER:
            results.append(Check(node.name, "report", False,
                                 f"last report {now - report['received']:.0f} s ago (it should come every few s)"))
        else:
            up.add(node.name)
    peers = checks.mesh_peers(plan, assets)
    nvme = component_options(lab, "nvme")
    protection = component_options(lab, "hostProtection")
    for node in plan.nodes:
        if node.name not in up:
            if node.name in down:
                results.append(Check(node.name, "power", True, "powered off by `lab fault`", skipped=True))
            continue
        report = reports[node.name]
        results.append(checks.check_ignition(node.name, report))
        results.append(checks.check_units(node.name, report))
        if plan.spec.wireguard.enabled:
            results.append(checks.check_wireguard(node, report, peers, up))
            results.append(checks.check_pings(node, report, plan, up))
        if nvme is not None and (nvme.nodes is None or node.name in nvme.nodes):
            results.append(checks.check_nvme(node.name, report, nvme))
        if nvme is not None and nvme.raid is not None:
            raid_nodes = nvme.raid.nodes if nvme.raid.nodes is not None else [n.name for n in plan.workers]
            if node.name in raid_nodes:
                results.append(checks.check_raid(node.name, report, nvme.raid))
                results.append(checks.check_data_marker(node.name, report))
    if protection is not None:
        from stellwerk.components.calico import policy

        host_policy = policy(plan, protection)
        source = ipaddress.IPv4Address(lab.state.host_address)
        targets = [(str(node.address), port) for node in plan.nodes if node.name in up for port in checks.PROBE_PORTS]
        probes = checks.probe_tcp(targets)
        for node in plan.nodes:
            if node.name in up:
                results.append(checks.check_firewall(node, host_policy, source, probes))
    if plan.controllers:
        results.append(checks.check_etcd(plan, assets, down))
    return results


def print_results(results: list[Check], console: Console | None = None) -> bool:
    """The table and the summary; True when every check passed."""
    console = console or Console(highlight=False, soft_wrap=False)
    nodes = sorted({check.node for check in results if check.node is not None})
    for node in nodes:
        table = Table(title=f"node {node}", title_justify="left", show_header=True)
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        for check in results:
            if check.node == node:
                table.add_row(check.name, _mark(check), check.detail)
        console.print(table)
    cluster = [check for check in results if check.node is None]
    table = Table(title="cluster", title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in cluster:
        table.add_row(check.name, _mark(check), check.detail)
    console.print(table)
    failed = [check for check in results if not check.ok]
    passed = sum(1 for check in results if check.ok and not check.skipped)
    if failed:
        console.print(f"FAILED: {len(failed)} of {len(results)} checks: "
                      + "; ".join(f"{c.node or 'cluster'} {c.name}" for c in failed))
    else:
        console.print(f"all {passed} checks passed" + (", some nodes powered off on purpose"
                                                       if any(c.skipped for c in results) else ""))
    return not failed


def _mark(check: Check) -> str:
    if check.skipped:
        return "skipped"
    return "ok" if check.ok else "FAIL"


def check(cluster_file: Path, root: Path | None = None, console: Console | None = None) -> bool:
    return print_results(run_checks(open_lab(cluster_file, root)), console)
