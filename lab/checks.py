"""What `lab check` verifies, one function per fact, from the nodes' reports and from probes run on the host.

Report checks are plain functions of a node's report and the plan; the host probes (etcd through etcdctl, the
firewall through scapy) touch only the lab network. Nodes the lab powered off on purpose (`lab fault power-off`)
are expected to be down: they are skipped, and the others are not blamed for not reaching them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from stellwerk.plan import NodePlan, Plan

# Units that may fail on the lab OS, and why (docs/lab.md lists them too). Empty: any failed unit is a failure.
EXPECTED_FAILED: Mapping[str, str] = {}
# Ports probed on every node: each is either allowed for the lab host by the policy (an answer: open or closed)
# or not (no answer: filtered).
PROBE_PORTS = (22, 80, 179, 443, 2379, 2380, 4789, 6443, 7946, 8080, 10250, 10255, 30080)
ETCD_CLIENT_PORT = 2379


@dataclass(frozen=True)
class Check:
    node: str | None  # None: the cluster as a whole
    name: str
    ok: bool
    detail: str
    skipped: bool = False


def _lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip()]


# -- from the reports ---------------------------------------------------------------------------------------------

SETTLED_STATES = ("running", "degraded")  # `systemctl is-system-running`: the boot has finished, well or not


def check_settled(node: str, report: Mapping) -> Check:
    """Has this boot finished starting? Only a report that says so is judged: before that, a missing handshake
    or a silent etcd member is a node still on its way, not a fault."""
    state = (report.get("system") or "").strip() or "unknown"
    if state in SETTLED_STATES:
        return Check(node, "settled", True, f"system {state}")
    # What is running holds the boot up; what waits only follows it. The report's own run is left out: it is
    # always running when it reports, and the boot does not wait for it.
    jobs = [line.split() for line in _lines(report.get("jobs"))]
    jobs = [fields for fields in jobs if len(fields) >= 4 and fields[1] != "stellwerk-lab-report.service"]
    ordered = sorted(jobs, key=lambda fields: fields[3] != "running")[:6]
    shown = [f"{fields[1]} {fields[2]}" + (" (running)" if fields[3] == "running" else "") for fields in ordered]
    waiting = f"; waiting for {', '.join(shown)}" if shown else ""
    return Check(node, "settled", False, f"system {state}{waiting}")


def boot_finished_at(report: Mapping) -> float | None:
    """When this boot finished starting, on the lab host's clock: the kernel started `uptime` seconds before the
    report was received, and systemd finished FinishTimestampMonotonic microseconds after that. None when the
    report lacks either (a boot still starting has no finish time)."""
    try:
        uptime = float((report.get("uptime") or "").split()[0])
        finished = int((report.get("bootFinished") or "").strip()) / 1e6
        received = float(report["received"])
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    return received - uptime + finished if finished > 0 else None


def check_ignition(node: str, report: Mapping) -> Check:
    result = report.get("ignition")
    if not isinstance(result, dict):
        return Check(node, "ignition", False, "no /etc/.ignition-result.json: Ignition did not finish")
    provisioned = result.get("provisioningDate", "?")
    return Check(node, "ignition", True, f"applied {provisioned}")


def check_units(node: str, report: Mapping, expected_failed: Mapping[str, str] = EXPECTED_FAILED) -> Check:
    failed, kubelet = [], None
    for line in _lines(report.get("units")):
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        unit, _load, active, sub = fields[:4]
        if active == "failed" and unit not in expected_failed:
            failed.append(unit)
        if unit == "kubelet.service":
            kubelet = active
    if failed:
        logs = report.get("failedLogs") or ""
        why = " | ".join(line.strip() for line in logs.splitlines()[-6:] if line.strip() and not line.startswith("=="))
        return Check(node, "units", False, "failed: " + ", ".join(sorted(failed)) + (f" ({why})" if why else ""))
    if kubelet not in (None, "inactive"):
        return Check(node, "units", False, f"kubelet.service is {kubelet}, expected inactive by its condition")
    state = (report.get("system") or "").strip()
    return Check(node, "units", True, f"none failed (system {state or 'unknown'})")


def mesh_peers(plan: Plan, assets: Path) -> dict[str, tuple[str, ipaddress.IPv4Address | None]]:
    """WireGuard public key -> (node, mesh address), from the rendered wireguard/<node>.pub files."""
    peers = {}
    for node in plan.nodes:
        key = (assets / "wireguard" / f"{node.name}.pub").read_text().strip()
        peers[key] = (node.name, node.mesh_address)
    return peers


# WireGuard drops a session 180 s after its handshake (REJECT_AFTER_TIME in the protocol) and renews it every 120 s
# while packets flow; a peer whose latest handshake is older than this has no session that can carry a packet.
HANDSHAKE_FRESH = 180


@dataclass(frozen=True)
class WireGuardPeer:
    """One peer line of `wg show all dump`: what WireGuard itself knows of the tunnel to that peer."""

    node: str
    handshake_age: int | None  # seconds before the dump; None: never
    received: int  # bytes
    sent: int


def wireguard_state(report: Mapping, peers: Mapping[str, tuple[str, object]]) -> tuple[str | None, dict[str, WireGuardPeer]]:
    """(what is wrong with wg0 itself, or None; its peers by node) from the report's `wg show all dump`."""
    interface = None
    found: dict[str, WireGuardPeer] = {}
    try:
        now = int((report.get("wgTime") or "").strip())
    except ValueError:
        now = None  # then no handshake has a known age: none counts as fresh
    for line in _lines(report.get("wg")):
        fields = line.split("\t")
        if len(fields) == 5 and fields[0] == "wg0":  # interface, private key, public key, port, fwmark
            interface = fields
        elif len(fields) == 9 and fields[1] in peers:  # interface, peer key, psk, endpoint, ips, handshake, rx, tx, ka
            node = peers[fields[1]][0]
            stamp = int(fields[5]) if fields[5].isdigit() else 0
            age = None if stamp == 0 or now is None else max(0, now - stamp)
            found[node] = WireGuardPeer(node, age, _int(fields[6]), _int(fields[7]))
    if interface is None:
        return "no wg0 interface (networkd did not create it; its journal is in the report)", found
    if interface[1] == "(none)":
        return "wg0 has no private key (is /etc/systemd/network/wg0.key there and readable by networkd?)", found
    return None, found


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count >= 1024 else f"{count} B"


def check_wireguard(node: NodePlan, report: Mapping, peers: Mapping[str, tuple[str, object]], up: Iterable[str],
                    others: Mapping[str, Mapping]) -> Check:
    """This node and every running peer share a live WireGuard session: each side's latest handshake with the other
    is younger than HANDSHAKE_FRESH, in this node's report and in the peer's (`others`: the peers' latest settled
    reports). One side alone proves nothing after a reboot: the node that stayed up remembers a session the
    rebooted peer no longer has. What this proves is the key exchange; that packets get through is the mesh ping's
    to prove."""
    wanted = sorted(name for name, _ in peers.values() if name != node.name and name in set(up))
    broken, found = wireguard_state(report, peers)
    if broken is not None:
        return Check(node.name, "wireguard", False, broken)
    stale, live = [], []
    for name in wanted:
        here = _session(found.get(name), name)
        there = _far_side(others.get(name), peers, node.name, name)
        if here is not None or there is not None:
            stale.append("; ".join(part for part in (here, there) if part))
        else:
            peer = found[name]
            live.append(f"{name} {peer.handshake_age} s ago (rx {_size(peer.received)}, tx {_size(peer.sent)})")
    if stale:
        return Check(node.name, "wireguard", False, "; ".join(stale))
    return Check(node.name, "wireguard", True, f"sessions with {len(wanted)} peers, both sides: " + ", ".join(live))


def _session(peer: WireGuardPeer | None, name: str, side: str = "") -> str | None:
    """What is wrong with one side's view of a session, or None when it is live."""
    if peer is None:
        return f"{name}{side}: not a peer of wg0"
    if peer.handshake_age is None:
        return f"{name}{side}: no handshake yet (sent {_size(peer.sent)}, received {_size(peer.received)})"
    if peer.handshake_age > HANDSHAKE_FRESH:
        return f"{name}{side}: last handshake {peer.handshake_age} s ago, its session has expired"
    return None


def _far_side(other: Mapping | None, peers: Mapping[str, tuple[str, object]], node: str, name: str) -> str | None:
    if other is None:
        return f"{name} has not sent a settled report, so its side of the session is unknown"
    broken, found = wireguard_state(other, peers)
    if broken is not None:
        return f"{name} has no session with {node}: {broken}"
    return _session(found.get(node), node, f" (in {name}'s report)")


def check_pings(node: NodePlan, report: Mapping, plan: Plan, up: Iterable[str]) -> Check:
    """This node pinged every running peer's mesh address through wg0 (up to three echoes each)."""
    results = {fields[0]: fields[1:] for fields in (line.split() for line in _lines(report.get("pings")))
               if len(fields) >= 2}
    up = set(up)
    failed, reached = [], []
    for peer in plan.nodes:
        if peer.name == node.name or peer.name not in up or peer.mesh_address is None:
            continue
        answer = results.get(str(peer.mesh_address))
        if not answer or answer[0] != "ok":
            failed.append(f"{peer.name} ({peer.mesh_address}: {answer[0] if answer else 'not pinged'})")
        else:
            rtt = next((word.removeprefix("rtt=") for word in answer[1:] if word.startswith("rtt=")), None)
            reached.append(f"{peer.name}" + (f" {rtt}" if rtt else ""))
    if failed:
        return Check(node.name, "mesh ping", False, "unreachable: " + ", ".join(failed))
    return Check(node.name, "mesh ping", True, f"reaches {len(reached)} peers over wg0: " + ", ".join(reached))


def check_etcd_image(node: str, report: Mapping, sha512: str | None) -> Check:
    """etcd runs from the sysext image render handed the node (`sha512`, from its config): the one Ignition fetched
    by that digest, merged over /usr."""
    facts = dict(line.split("=", 1) for line in _lines(report.get("etcdExtension")) if "=" in line)
    if sha512 is None:
        return Check(node, "etcd image", False, "its rendered config fetches no etcd sysext image")
    if not facts:
        return Check(node, "etcd image", False, "no /etc/extensions/etcd.raw on the node")
    wrong = []
    if facts.get("IMAGE_SHA512") != sha512:
        wrong.append(f"its image has sha512 {facts.get('IMAGE_SHA512', '?')[:16]}…, render gave "
                     f"{sha512[:16]}…")
    if facts.get("USR_FSTYPE") != "overlay" or facts.get("STELLWERK_EXTENSION") != "etcd":
        wrong.append(f"systemd-sysext did not merge it (/usr is {facts.get('USR_FSTYPE') or 'not a mount'})")
    if facts.get("ETCD") != "/usr/bin/etcd":
        wrong.append(f"etcd is at {facts.get('ETCD') or 'nowhere'}, not /usr/bin/etcd")
    if wrong:
        return Check(node, "etcd image", False, "; ".join(wrong))
    source = facts.get("STELLWERK_SOURCE", "").strip('"')
    return Check(node, "etcd image", True, f"/usr/bin/etcd from the sysext {Path(facts['IMAGE']).name} "
                 f"(sha512 {sha512[:16]}…, merged over /usr), built from {source}")


def check_nvme(node: str, report: Mapping, options) -> Check:
    """Scheduler, nr_requests and read-ahead of every NVMe namespace, and the write-back sysctls."""
    devices = [line.split() for line in _lines(report.get("nvme"))]
    if not devices:
        return Check(node, "nvme", False, "no NVMe namespace reported")
    wrong = []
    for fields in devices:
        name, rest = fields[0], fields[1:]
        active = next((word.strip("[]") for word in rest if word.startswith("[")), None)
        numbers = [word for word in rest if word.isdigit()]
        nr_requests, read_ahead = (numbers + ["?", "?"])[:2] if len(numbers) >= 2 else ("?", "?")
        if active != options.scheduler:
            wrong.append(f"{name} scheduler {active}")
        if options.nr_requests is not None and nr_requests != str(options.nr_requests):
            wrong.append(f"{name} nr_requests {nr_requests}")
        if read_ahead != str(options.read_ahead_kb):
            wrong.append(f"{name} read_ahead_kb {read_ahead}")
    sysctls = _lines(report.get("sysctl"))
    if sysctls[:2] != [str(options.dirty_ratio), str(options.dirty_background_ratio)]:
        wrong.append(f"vm.dirty_ratio/dirty_background_ratio {'/'.join(sysctls[:2]) or 'unknown'}")
    if wrong:
        return Check(node, "nvme", False, "; ".join(wrong))
    return Check(node, "nvme", True, f"{len(devices)} namespaces: {options.scheduler}, read-ahead "
                 f"{options.read_ahead_kb} KiB")


def check_raid(node: str, report: Mapping, raid) -> Check:
    mdstat = report.get("mdstat") or ""
    level = f"raid{raid.level}"
    active = [line for line in mdstat.splitlines() if re.match(r"md\S* : active ", line) and level in line]
    if not active:
        return Check(node, "raid", False, f"no active {level} array in /proc/mdstat")
    mounts = report.get("mounts") or {}
    found = [fs for fs in _walk_mounts(mounts.get("filesystems", [])) if fs.get("target") == raid.mount_path]
    if not found:
        return Check(node, "raid", False, f"{raid.mount_path} is not mounted")
    fs = found[0]
    if fs.get("fstype") != raid.filesystem or fs.get("label") != raid.label:
        return Check(node, "raid", False, f"{raid.mount_path} is {fs.get('fstype')} labelled {fs.get('label')}, "
                     f"expected {raid.filesystem} labelled {raid.label}")
    return Check(node, "raid", True, f"{level} {fs.get('source')} {raid.filesystem} on {raid.mount_path}")


def check_data_marker(node: str, report: Mapping) -> Check:
    """The marker the node keeps on its data array: written in its first boot, read back in every later one."""
    marker = (report.get("dataMarker") or "").strip()
    if not marker:
        return Check(node, "data", False, "no marker on the data array (not mounted, or not writable)")
    if marker == report.get("bootId"):
        return Check(node, "data", True, "marker written in this boot")
    return Check(node, "data", True, "marker from an earlier boot read back: the data survived")


def _walk_mounts(filesystems: list) -> Iterable[dict]:
    for fs in filesystems:
        yield fs
        yield from _walk_mounts(fs.get("children", []))


# -- from the host ------------------------------------------------------------------------------------------------

def expected_open(policy, node: NodePlan, source: ipaddress.IPv4Address, port: int) -> bool:
    """Does the host policy let `source` reach tcp `port` on `node`?"""
    for rule in policy.for_role(node.role):
        if rule.protocol != "tcp":
            continue
        if any(r.first <= port <= r.last for r in rule.ports) and any(source in net for net in rule.sources):
            return True
    return False


def probe_tcp(targets: list[tuple[str, int]], timeout: float = 4.0, rounds: int = 2) -> dict[tuple[str, int], str]:
    """SYN probes from this host: 'open' (SYN-ACK), 'closed' (RST) or 'filtered' (no answer after `rounds`)."""
    from scapy.all import IP, TCP, conf, sr  # scapy is slow to import; only the check needs it

    conf.verb = 0
    results: dict[tuple[str, int], str] = {}
    pending = list(targets)
    for _ in range(rounds):
        if not pending:
            break
        packets = [IP(dst=address) / TCP(sport=40000 + index % 20000, dport=port, flags="S", seq=1000 + index)
                   for index, (address, port) in enumerate(pending)]
        answered, _ = sr(packets, timeout=timeout, retry=0)
        for sent, received in answered:
            if received.haslayer(TCP):
                flags = received[TCP].flags
                results[(sent[IP].dst, sent[TCP].dport)] = "open" if flags & 0x12 == 0x12 else "closed"
        pending = [target for target in pending if target not in results]
    for target in pending:
        results[target] = "filtered"
    return results


def check_firewall(node: NodePlan, policy, source: ipaddress.IPv4Address,
                   probes: Mapping[tuple[str, int], str]) -> Check:
    wrong = []
    for port in PROBE_PORTS:
        seen = probes.get((str(node.address), port), "not probed")
        allowed = expected_open(policy, node, source, port)
        if allowed and seen not in ("open", "closed"):
            wrong.append(f"{port} {seen}, policy allows it")
        if not allowed and seen != "filtered":
            wrong.append(f"{port} {seen}, policy filters it")
    if wrong:
        return Check(node.name, "firewall", False, "; ".join(wrong))
    allowed = [str(port) for port in PROBE_PORTS if expected_open(policy, node, source, port)]
    return Check(node.name, "firewall", True, f"{len(PROBE_PORTS)} ports as the policy says (allowed from the lab "
                 f"host: {', '.join(allowed) or 'none'})")


ETCDCTL_TIMEOUT = 20.0  # seconds for one etcdctl call: its own dial (5 s) and command (10 s) timeouts, and slack
ETCDCTL_LEAST = 3.0  # seconds an etcdctl call gets however little time is left


def etcdctl(assets: Path, endpoints: list[str], *args: str,
            timeout: float = ETCDCTL_TIMEOUT) -> subprocess.CompletedProcess:
    binary = shutil.which("etcdctl") or "/usr/bin/etcdctl"
    pki = assets / "pki" / "etcd"
    command = [binary, f"--endpoints={','.join(endpoints)}", f"--cacert={pki / 'ca.crt'}",
               f"--cert={pki / 'healthcheck-client.crt'}", f"--key={pki / 'healthcheck-client.key'}",
               "--dial-timeout=5s", "--command-timeout=10s", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={"ETCDCTL_API": "3",
                          "PATH": "/usr/bin:/bin"})


@dataclass(frozen=True)
class MemberAnswer:
    """What one etcd member says of itself: `etcdctl endpoint health` and `endpoint status` against it alone."""

    node: str
    healthy: bool
    error: str = ""
    member_id: int | None = None
    leader_id: int | None = None
    raft_index: int | None = None
    raft_term: int | None = None

    @property
    def is_leader(self) -> bool:
        return self.member_id is not None and self.member_id == self.leader_id

    def describe(self) -> str:
        if not self.healthy:
            return f"{self.node} unhealthy: {self.error or 'no answer'}"
        role = "leader" if self.is_leader else "follower"
        return f"{self.node} {role}, raft index {self.raft_index}, term {self.raft_term}"


def _first_json(text: str) -> list:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _time_left(until: float | None) -> float:
    """The timeout of the next etcdctl call, so that a check ends near its deadline (monotonic), not a minute on."""
    if until is None:
        return ETCDCTL_TIMEOUT
    return max(ETCDCTL_LEAST, min(ETCDCTL_TIMEOUT, until - time.monotonic()))


def ask_member(assets: Path, node: NodePlan, until: float | None = None) -> MemberAnswer:
    endpoint = f"https://{node.address}:{ETCD_CLIENT_PORT}"
    try:
        health = etcdctl(assets, [endpoint], "endpoint", "health", "-w", "json", timeout=_time_left(until))
        status = etcdctl(assets, [endpoint], "endpoint", "status", "-w", "json", timeout=_time_left(until))
    except subprocess.TimeoutExpired:
        return MemberAnswer(node.name, False, "etcdctl did not return within its timeout")
    answers = _first_json(health.stdout)
    answer = answers[0] if answers and isinstance(answers[0], dict) else {}
    if not answer.get("health"):
        error = str(answer.get("error") or "").strip() or _last_line(health.stderr) or "no answer"
        return MemberAnswer(node.name, False, error)
    states = _first_json(status.stdout)
    state = (states[0].get("Status") or {}) if states and isinstance(states[0], dict) else {}
    header = state.get("header") or {}
    if not state:
        return MemberAnswer(node.name, False, "healthy, but no status: " + (_last_line(status.stderr) or "empty"))
    return MemberAnswer(node.name, True, member_id=header.get("member_id"), leader_id=state.get("leader"),
                        raft_index=state.get("raftIndex"), raft_term=state.get("raftTerm"))


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_etcd(plan: Plan, assets: Path, down: Iterable[str], until: float | None = None) -> Check:
    """Each running member's own answer (health, leader, raft index), one leader agreed on by all, and a key
    written and read back through the cluster; every etcdctl call is cut to the time left before `until`."""
    down = set(down)
    members = list(plan.controllers)
    running = [node for node in members if node.name not in down]
    with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
        answers = list(pool.map(lambda node: ask_member(assets, node, until), running))
    said = "; ".join(answer.describe() for answer in answers)
    healthy = [answer for answer in answers if answer.healthy]
    if len(healthy) < len(answers):
        return Check(None, "etcd", False, f"{len(healthy)}/{len(members)} members healthy: {said}")
    leaders = {answer.leader_id for answer in healthy}
    if len(leaders) != 1 or not any(answer.is_leader for answer in healthy):
        return Check(None, "etcd", False, f"members do not agree on a leader among them: {said}")
    endpoints = [f"https://{node.address}:{ETCD_CLIENT_PORT}" for node in running]
    key, value = f"/stellwerk-lab/check/{uuid.uuid4().hex}", f"written {time.time():.0f}"
    try:
        put = etcdctl(assets, endpoints, "put", key, value, timeout=_time_left(until))
        got = etcdctl(assets, endpoints, "get", key, "--print-value-only", timeout=_time_left(until))
        etcdctl(assets, endpoints, "del", key, timeout=_time_left(until))
    except subprocess.TimeoutExpired:
        return Check(None, "etcd", False, f"a write or read did not return within its timeout; {said}")
    if put.returncode != 0 or got.stdout.strip() != value:
        return Check(None, "etcd", False, f"write and read back failed: {(put.stderr or got.stderr).strip()}; "
                     f"{said}")
    quorum = len(members) // 2 + 1
    if len(healthy) < len(members):
        state = "quorum held" if len(healthy) >= quorum else "quorum lost"
        off = ", ".join(sorted(node.name for node in members if node.name in down))
        return Check(None, "etcd", len(healthy) >= quorum,
                     f"degraded, {state}: {len(healthy)}/{len(members)} members healthy ({off} powered off); a key "
                     f"was written and read back; {said}")
    return Check(None, "etcd", True, f"{len(healthy)}/{len(members)} members healthy; a key was written and read "
                 f"back; {said}")
