"""`stellwerk lab check`: every check of checks.py over a running lab, judged on settled nodes only.

A check run has one deadline. Until it passes, the run re-reads the nodes' reports (they come every few seconds):

- a node counts once it has sent a report, after the run began, that says its boot has finished
  (`systemctl is-system-running` is running or degraded); every fact of that report was gathered after that answer;
- a check of the node's own state (Ignition, units, NVMe queues, the array) is judged on its first settled report;
- a check that depends on peers or on the network (WireGuard sessions, mesh pings, the firewall probe, etcd) is
  tried again, on each new report or with back-off for the host's probes, until it passes or the deadline comes.

So a slow machine makes the run slower, not red; a node that cannot get there still fails, with the last evidence
of the check that never settled. Every result carries how long it took to pass.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stellwerk.extensions import read_record
from stellwerk.plan import NodePlan

from . import checks
from .checks import Check
from .collector import read_report
from .lifecycle import Lab, open_lab

DEFAULT_TIMEOUT = 300.0  # seconds for the whole run
POLL = 2.0  # seconds between reads of the reports
FIRST_RETRY, LONGEST_RETRY = 2.0, 20.0  # back-off of the host's own probes (firewall, etcd)


def component_options(lab: Lab, key: str):
    from stellwerk.components import BY_KEY

    return BY_KEY[key].options_in(lab.plan.cluster)


@dataclass
class Course:
    """One check through a run: its latest result, when it first passed, and whether it is decided."""

    latest: Check
    retried: bool
    passed_after: float | None = None
    tries: int = 0
    decided: bool = False


@dataclass
class Backoff:
    due: float = 0.0  # time.monotonic() of the next try
    delay: float = FIRST_RETRY

    def ready(self, now: float) -> bool:
        return now >= self.due

    def wait(self, now: float) -> None:
        self.due = now + self.delay
        self.delay = min(self.delay * 2, LONGEST_RETRY)


@dataclass
class CheckRun:
    """What a run found: one result per check with its timing, and when each node settled."""

    results: list[tuple[Check, float | None]]  # (check, seconds after the start it passed, or None)
    settled: dict[str, float]  # node -> seconds from its power-on to the end of its boot's start-up
    elapsed: float
    timeout: float

    @property
    def ok(self) -> bool:
        return all(check.ok for check, _ in self.results)


@dataclass
class _Run:
    lab: Lab
    timeout: float
    started: float = field(default_factory=time.time)
    courses: dict[tuple[str | None, str], Course] = field(default_factory=dict)
    settled_at: dict[str, float] = field(default_factory=dict)  # node -> `received` of its first settled report
    boot_finished: dict[str, float | None] = field(default_factory=dict)  # node -> when that boot finished starting
    evidence: dict[str, Check] = field(default_factory=dict)  # node -> its latest settle check
    judged: dict[str, float] = field(default_factory=dict)  # node -> `received` of the report last judged
    latest: dict[str, dict] = field(default_factory=dict)  # node -> its latest settled report of this run
    firewall: Backoff = field(default_factory=Backoff)
    etcd: Backoff = field(default_factory=Backoff)
    deadline: float | None = None  # monotonic; set when the run starts

    def __post_init__(self) -> None:
        plan = self.lab.plan
        self.down = set(self.lab.state.powered_off)
        self.expected: list[NodePlan] = [node for node in plan.nodes if node.name not in self.down]
        self.up = {node.name for node in self.expected}
        self.peers = checks.mesh_peers(plan, self.lab.assets) if plan.spec.wireguard.enabled else {}
        self.nvme = component_options(self.lab, "nvme")
        self.images = read_record(self.lab.assets)  # the sysext images built for the nodes
        protection = component_options(self.lab, "hostProtection")
        self.policy = None
        if protection is not None:
            from stellwerk.components.host_protection import policy

            self.policy = policy(plan, protection)

    def record(self, check: Check, retried: bool) -> None:
        course = self.courses.get((check.node, check.name))
        if course is None:
            course = self.courses[(check.node, check.name)] = Course(check, retried)
        course.latest, course.tries = check, course.tries + 1
        if check.ok and course.passed_after is None:
            course.passed_after = time.time() - self.started
        course.decided = check.ok or not retried

    def pending(self, node: str | None, name: str) -> bool:
        course = self.courses.get((node, name))
        return course is None or not course.decided

    # -- from the reports ---------------------------------------------------------------------------------------

    def read_reports(self) -> None:
        changed = False
        for node in self.expected:
            report = read_report(self.lab.directory, node.name)
            if report is None or report.get("received", 0) < self.started:
                continue  # nothing from this run's time yet
            settle = checks.check_settled(node.name, report)
            if node.name not in self.settled_at:
                self.evidence[node.name] = settle
                if not settle.ok:
                    continue
                self.settled_at[node.name] = report["received"]
                self.boot_finished[node.name] = checks.boot_finished_at(report)
            elif not settle.ok:
                continue  # it rebooted during the run: this boot's facts count once it has settled too
            if report["received"] != self.judged.get(node.name):
                self.judged[node.name] = report["received"]
                self.latest[node.name] = report
                changed = True
        if not changed:
            return
        # A check of one node can depend on a peer's report (both sides of a WireGuard session): any new report
        # is a reason to look again at every check still open.
        for node in self.expected:
            if node.name in self.latest:
                for check, retried in self.report_checks(node, self.latest[node.name]):
                    if self.pending(check.node, check.name):
                        self.record(check, retried)

    def report_checks(self, node: NodePlan, report: dict) -> Iterator[tuple[Check, bool]]:
        """(check, retried) for one settled report of `node`."""
        plan = self.lab.plan
        yield checks.check_ignition(node.name, report), False
        yield checks.check_units(node.name, report), False
        if "etcd" in self.images and node.is_controller:
            # Against what the node's own config was rendered with, not the record: a rebuild since would blame it.
            yield checks.check_etcd_image(node.name, report, rendered_sha512(self.lab, node.name, "etcd")), False
        if plan.spec.wireguard.enabled:
            yield checks.check_wireguard(node, report, self.peers, self.up, self.latest), True
            yield checks.check_pings(node, report, plan, self.up), True
        nvme = self.nvme
        if nvme is not None and (nvme.nodes is None or node.name in nvme.nodes):
            yield checks.check_nvme(node.name, report, nvme), False
        if nvme is not None and nvme.raid is not None:
            raid_nodes = nvme.raid.nodes if nvme.raid.nodes is not None else [n.name for n in plan.workers]
            if node.name in raid_nodes:
                yield checks.check_raid(node.name, report, nvme.raid), False
                yield checks.check_data_marker(node.name, report), False

    # -- from the host ------------------------------------------------------------------------------------------

    def probe_firewalls(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.policy is None or not (final or self.firewall.ready(now)):
            return
        nodes = [node for node in self.expected if node.name in self.settled_at
                 and self.pending(node.name, "firewall")]
        if not nodes:
            return
        source = ipaddress.IPv4Address(self.lab.state.host_address)
        probes = checks.probe_tcp([(str(node.address), port) for node in nodes for port in checks.PROBE_PORTS])
        for node in nodes:
            self.record(checks.check_firewall(node, self.policy, source, probes), True)
        self.firewall.wait(time.monotonic())

    def ask_etcd(self, final: bool = False) -> None:
        plan = self.lab.plan
        if not plan.controllers or not self.pending(None, "etcd"):
            return
        waiting = [node.name for node in plan.controllers if node.name in self.up and node.name not in self.settled_at]
        if not final and (waiting or not self.etcd.ready(time.monotonic())):
            return
        self.record(checks.check_etcd(plan, self.lab.assets, self.down, self.deadline), True)
        self.etcd.wait(time.monotonic())

    # -- the run ------------------------------------------------------------------------------------------------

    def done(self) -> bool:
        if any(name not in self.settled_at for name in self.up):
            return False
        if any(not course.decided for course in self.courses.values()):
            return False
        wanted = [(None, "etcd")] if self.lab.plan.controllers else []
        if self.policy is not None:
            wanted += [(name, "firewall") for name in self.up]
        return all(key in self.courses for key in wanted)

    def run(self, poll: float, sleep: Callable[[float], None]) -> CheckRun:
        self.deadline = deadline = time.monotonic() + self.timeout
        while True:
            self.read_reports()
            self.probe_firewalls()
            self.ask_etcd()
            if self.done():
                break
            if time.monotonic() >= deadline:
                # Once more, so a check that waited for settled nodes still says what it sees.
                self.probe_firewalls(final=True)
                self.ask_etcd(final=True)
                break
            sleep(poll)
        return self.outcome()

    def outcome(self) -> CheckRun:
        elapsed = time.time() - self.started
        results: list[tuple[Check, float | None]] = []
        settled: dict[str, float] = {}
        by_node: dict[str | None, list[Course]] = {}
        for (node, _name), course in self.courses.items():
            by_node.setdefault(node, []).append(course)
        for node in self.lab.plan.nodes:
            if node.name in self.down:
                results.append((Check(node.name, "power", True, "powered off by `lab fault`", skipped=True), None))
                continue
            if node.name in self.settled_at:
                powered_on = self.lab.state.powered_on.get(node.name, self.lab.state.started)
                finished = self.boot_finished.get(node.name)
                detail = self.evidence[node.name].detail
                if finished is not None:  # the boot's own finish time, whenever the check ran
                    settled[node.name] = max(0.0, finished - powered_on)
                    detail += f", boot finished {settled[node.name]:.0f} s after power-on"
                waited = max(0.0, self.settled_at[node.name] - self.started)
                results.append((Check(node.name, "settled", True, detail), waited))
            else:
                results.append((self.unsettled(node), None))
            for course in by_node.get(node.name, []):
                results.append((self.final_result(course), course.passed_after))
        for course in by_node.get(None, []):
            results.append((self.final_result(course), course.passed_after))
        return CheckRun(results, settled, elapsed, self.timeout)

    def unsettled(self, node: NodePlan) -> Check:
        waited = f"within {self.timeout:.0f} s"
        if node.name in self.evidence:
            return Check(node.name, "settled", False, f"not settled {waited}: {self.evidence[node.name].detail}")
        last = read_report(self.lab.directory, node.name)
        if last is None:
            return Check(node.name, "settled", False, f"never reported {waited}; its console log is "
                         f"{self.lab.directory / 'console' / (node.name + '.log')}")
        before = self.started - last.get("received", 0)
        state = (last.get("system") or "").strip() or "unknown"
        return Check(node.name, "settled", False, f"no report {waited}; the last came {before:.0f} s before the "
                     f"check began (system {state})")

    def final_result(self, course: Course) -> Check:
        check = course.latest
        if check.ok or not course.retried:
            return check
        return Check(check.node, check.name, False, f"did not settle within {self.timeout:.0f} s ({course.tries} "
                     f"tries); last: {check.detail}")


def run_checks(lab: Lab, timeout: float = DEFAULT_TIMEOUT, poll: float = POLL,
               sleep: Callable[[float], None] = time.sleep) -> CheckRun:
    return _Run(lab, timeout).run(poll, sleep)


def print_results(run: CheckRun, console: Console | None = None) -> bool:
    """The tables and the summary; True when every check passed."""
    console = console or Console(highlight=False, soft_wrap=False)
    nodes = [node for node in dict.fromkeys(check.node for check, _ in run.results) if node is not None]
    for node in nodes:
        _table(console, f"node {node}", [(check, after) for check, after in run.results if check.node == node])
    _table(console, "cluster", [(check, after) for check, after in run.results if check.node is None])
    failed = [check for check, _ in run.results if not check.ok]
    passed = sum(1 for check, _ in run.results if check.ok and not check.skipped)
    if run.settled:
        console.print("boot finished after power-on: " + ", ".join(f"{node} {seconds:.0f} s"
                                                             for node, seconds in run.settled.items()))
    timed = [(after, check) for check, after in run.results if after is not None and check.name != "settled"]
    if timed:
        after, slowest = max(timed, key=lambda item: item[0])
        console.print(f"slowest check: {slowest.node or 'cluster'} {slowest.name}, passed after {after:.0f} s")
    if failed:
        console.print(f"FAILED: {len(failed)} of {len(run.results)} checks after {run.elapsed:.0f} s: "
                      + "; ".join(f"{c.node or 'cluster'} {c.name}" for c in failed))
    else:
        console.print(f"all {passed} checks passed in {run.elapsed:.0f} s"
                      + (", some nodes powered off on purpose" if any(c.skipped for c, _ in run.results) else ""))
    return not failed


def _table(console: Console, title: str, rows: list[tuple[Check, float | None]]) -> None:
    table = Table(title=title, title_justify="left", show_header=True)
    table.add_column("check")
    table.add_column("result")
    table.add_column("after", justify="right")
    table.add_column("detail", overflow="fold")
    for check, after in rows:
        # details quote the nodes' reports and etcdctl: text, never markup
        table.add_row(check.name, _mark(check), "" if after is None else f"{after:.0f} s", Text(check.detail))
    console.print(table)


def _mark(check: Check) -> str:
    if check.skipped:
        return "skipped"
    return "ok" if check.ok else "FAIL"


def check(cluster_file: Path, root: Path | None = None, console: Console | None = None,
          timeout: float = DEFAULT_TIMEOUT) -> bool:
    return print_results(run_checks(open_lab(cluster_file, root), timeout), console)


def rendered_sha512(lab: Lab, node: str, extension: str) -> str | None:
    """The sha512 the node's rendered Ignition config checks its `extension` sysext image by, if it has one."""
    import json

    try:
        config = json.loads((lab.assets / "nodes" / node / "ignition.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in config.get("storage", {}).get("files", []):
        if entry.get("path", "").startswith(f"/opt/extensions/{extension}/"):
            found = (entry.get("contents", {}).get("verification") or {}).get("hash", "")
            return found.removeprefix("sha512-") or None
    return None
