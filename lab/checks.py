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


def check_wireguard(node: NodePlan, report: Mapping, peers: Mapping[str, tuple[str, object]],
                    up: Iterable[str]) -> Check:
    """Every running peer has completed a handshake with this node (`wg show all dump`, peer lines)."""
    wanted = {name for name, _ in peers.values() if name != node.name and name in set(up)}
    shaken: set[str] = set()
    for line in _lines(report.get("wg")):
        fields = line.split("\t")
        if len(fields) == 9 and fields[1] in peers:  # interface, peer key, psk, endpoint, ips, handshake, rx, tx, ka
            if fields[5].isdigit() and int(fields[5]) > 0:
                shaken.add(peers[fields[1]][0])
    missing = sorted(wanted - shaken)
    if missing:
        return Check(node.name, "wireguard", False, "no handshake with " + ", ".join(missing))
    return Check(node.name, "wireguard", True, f"handshakes with {len(wanted)} peers")


def check_pings(node: NodePlan, report: Mapping, plan: Plan, up: Iterable[str]) -> Check:
    """This node pinged every running peer's mesh address through wg0."""
    results = dict(line.split()[:2] for line in _lines(report.get("pings")) if len(line.split()) >= 2)
    up = set(up)
    failed = []
    count = 0
    for peer in plan.nodes:
        if peer.name == node.name or peer.name not in up or peer.mesh_address is None:
            continue
        count += 1
        if results.get(str(peer.mesh_address)) != "ok":
            failed.append(f"{peer.name} ({peer.mesh_address}: {results.get(str(peer.mesh_address), 'not pinged')})")
    if failed:
        return Check(node.name, "mesh ping", False, "unreachable: " + ", ".join(failed))
    return Check(node.name, "mesh ping", True, f"reaches {count} peers over wg0")


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


def etcdctl(assets: Path, endpoints: list[str], *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    binary = shutil.which("etcdctl") or "/usr/bin/etcdctl"
    pki = assets / "pki" / "etcd"
    command = [binary, f"--endpoints={','.join(endpoints)}", f"--cacert={pki / 'ca.crt'}",
               f"--cert={pki / 'healthcheck-client.crt'}", f"--key={pki / 'healthcheck-client.key'}",
               "--dial-timeout=5s", "--command-timeout=10s", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={"ETCDCTL_API": "3",
                          "PATH": "/usr/bin:/bin"})


def check_etcd(plan: Plan, assets: Path, down: Iterable[str]) -> Check:
    """Every running member healthy, and a key written and read back through the cluster."""
    down = set(down)
    members = [f"https://{node.address}:{ETCD_CLIENT_PORT}" for node in plan.controllers]
    running = [f"https://{node.address}:{ETCD_CLIENT_PORT}" for node in plan.controllers if node.name not in down]
    health = etcdctl(assets, members, "endpoint", "health", "-w", "json")
    try:
        statuses = json.loads(health.stdout or "[]")
    except ValueError:
        statuses = []
    healthy = sorted(status["endpoint"] for status in statuses if status.get("health"))
    unhealthy_running = sorted(set(running) - set(healthy))
    if unhealthy_running:
        return Check(None, "etcd", False, "unhealthy: " + ", ".join(unhealthy_running) + (
            f" ({health.stderr.strip().splitlines()[-1]})" if health.stderr.strip() else ""))
    key, value = f"/stellwerk-lab/check/{uuid.uuid4().hex}", f"written {time.time():.0f}"
    put = etcdctl(assets, running, "put", key, value)
    got = etcdctl(assets, running, "get", key, "--print-value-only")
    etcdctl(assets, running, "del", key)
    if put.returncode != 0 or got.stdout.strip() != value:
        return Check(None, "etcd", False, f"write and read back failed: {(put.stderr or got.stderr).strip()}")
    quorum = len(members) // 2 + 1
    if len(healthy) < len(members):
        state = "quorum held" if len(healthy) >= quorum else "quorum lost"
        return Check(None, "etcd", len(healthy) >= quorum,
                     f"degraded, {state}: {len(healthy)}/{len(members)} members healthy; a key was written and "
                     "read back")
    return Check(None, "etcd", True, f"{len(healthy)}/{len(members)} members healthy; a key was written and read back")
