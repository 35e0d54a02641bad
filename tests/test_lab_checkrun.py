"""`lab check` over a lab without VMs: the real collector takes the reports the nodes would send, real etcd members
(from the rendered configs, on loopback) answer the etcd check, and the check run waits, retries and times out as a
busy host needs it to."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import requests

from support import etcd_members
from support.sysext import served_sysext
from support.tools import require_tool
from stellwerk.lab import checkrun, checks
from stellwerk.lab.lifecycle import Lab, load_plan
from stellwerk.lab.state import LabState
from support.webserver import free_port

CLUSTER = """\
apiVersion: stellwerk.dev/v1alpha1
kind: Cluster
metadata: {name: loopcheck}
spec:
  kubernetes: {apiEndpoint: 127.0.0.21}
  os: {family: lab, sysextBaseURL: "http://10.213.0.1:8080/assets/sysext"}
  network: {nodeCIDR: 127.0.0.0/24}
  wireguard: {network: 10.250.0.0/24}
  controllers:
    - {name: c1, mac: "52:54:00:00:02:21", address: 127.0.0.21}
    - {name: c2, mac: "52:54:00:00:02:22", address: 127.0.0.22}
    - {name: c3, mac: "52:54:00:00:02:23", address: 127.0.0.23}
"""
NODES = ("c1", "c2", "c3")
# Each node's boot as its reports tell it: the kernel starts KERNEL_AFTER s after power-on, and systemd finishes
# starting BOOT_TAKES s after that.
KERNEL_AFTER, BOOT_TAKES = 5.0, 20.0


@pytest.fixture(scope="module")
def loop_lab(tmp_path_factory) -> Iterator[tuple[Lab, str, dict]]:
    """A lab record over rendered assets, its collector, and the three etcd members running."""
    require_tool("etcd")
    etcdctl = require_tool("etcdctl")
    require_tool("unshare")
    from stellwerk.render import render

    work = tmp_path_factory.mktemp("loop-lab")
    assets = work / "lab" / "assets"
    served = ExitStack()  # the controllers' Ignition fetches their etcd image from it
    cluster_file = served.enter_context(served_sysext(CLUSTER, assets, work))
    render(cluster_file, assets)
    plan = load_plan(cluster_file)
    state = LabState(cluster=plan.name, cluster_file=str(cluster_file), assets=str(assets), host_address="127.0.0.1",
                     started=time.time(), powered_on={name: time.time() for name in NODES})
    lab = Lab(plan, work / "lab", state)
    port = free_port()
    collector = subprocess.Popen([sys.executable, "-m", "stellwerk.lab.collector", str(lab.directory), "--listen",
                                  "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE, text=True,
                                 stderr=(work / "collector.log").open("wb"))
    try:
        assert "collecting on" in collector.stdout.readline()
        addresses = [str(node.address) for node in plan.nodes]
        with etcd_members.members(assets, list(NODES), work) as processes:
            health = etcd_members.wait_healthy(etcdctl, assets, addresses, processes.values(), work)
            assert health.returncode == 0, health.stderr + etcd_members.logs(work)
            yield lab, f"http://127.0.0.1:{port}", processes
    finally:
        collector.terminate()
        collector.wait(timeout=10)
        served.close()


def etcd_extension(lab: Lab, node: str) -> str:
    """The report's etcd facts, read from the root the real Ignition applied the node's config to: the image it
    fetched, its sha512 and the release file inside it; a booted node adds that systemd-sysext merged it."""
    root = lab.directory.parent / "roots" / node
    if not (root / "etc/extensions/etcd.raw").is_symlink():
        return ""
    target = str((root / "etc/extensions/etcd.raw").readlink())
    image = root / target.lstrip("/")
    release = subprocess.run(["unsquashfs", "-cat", str(image), "usr/lib/extension-release.d/extension-release.etcd"],
                             capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha512(image.read_bytes()).hexdigest()
    return release + f"IMAGE={target}\nIMAGE_SHA512={digest}\nUSR_FSTYPE=overlay\nETCD=/usr/bin/etcd\n"


def node_report(lab: Lab, node: str, system: str = "running", jobs: str = "", broken: frozenset = frozenset()) -> dict:
    """What the report script sends from a node of the loop lab: a settled boot with live sessions to every peer,
    unless `system` says it is still starting. The nodes in `broken` booted without their WireGuard key: they have
    no session, and the others still remember the session of their previous boot."""
    now = int(time.time())
    keyless = node in broken
    lines = [f"wg0\t{'(none)' if keyless else 'PRIV'}\tPUB\t51871\toff"]
    pings = []
    for peer in lab.plan.nodes:
        if peer.name == node:
            continue
        public = (lab.assets / "wireguard" / f"{peer.name}.pub").read_text().strip()
        handshake = 0 if keyless else now - 100 if peer.name in broken else now - 3
        lines.append(f"wg0\t{public}\t(none)\t{peer.address}:51871\t{peer.mesh_address}/32\t{handshake}\t900\t700\t25")
        reached = not keyless and peer.name not in broken
        pings.append(f"{peer.mesh_address} {'ok try=1 rtt=0.4ms' if reached else 'fail'}")
    uptime = time.time() - (lab.state.powered_on[node] + KERNEL_AFTER)
    finished = int(BOOT_TAKES * 1e6) if system in checks.SETTLED_STATES else 0
    return {"node": node, "bootId": f"boot-{node}", "system": system + "\n", "jobs": jobs, "units": "",
            "ignition": {"provisioningDate": "2026-12-03T10:00:00Z"}, "wg": "\n".join(lines) + "\n",
            "wgTime": f"{now}\n", "pings": "\n".join(pings) + "\n", "uptime": f"{uptime:.2f} {uptime:.2f}\n",
            "bootFinished": f"{finished}\n", "etcdExtension": etcd_extension(lab, node)}


@contextmanager
def nodes_reporting(url: str, report: Callable[[str], dict], every: float = 0.3) -> Iterator[None]:
    """Every node posts `report(node)` to the collector every `every` seconds while the block runs."""
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            for node in NODES:
                requests.post(f"{url}/report/{node}", json=report(node), timeout=10).raise_for_status()
            stop.wait(every)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def results(run: checkrun.CheckRun) -> dict[tuple[str | None, str], checks.Check]:
    return {(check.node, check.name): check for check, _ in run.results}


def test_nodes_still_starting_are_not_judged_and_the_run_passes_once_they_settle(loop_lab):
    lab, url, _ = loop_lab
    started = time.time()
    settle_at = started + 3

    def report(node: str) -> dict:
        # Before they settle, the nodes say what a busy boot says: no sessions yet. None of it may be judged.
        if time.time() < settle_at:
            return node_report(lab, node, system="starting", broken=frozenset(NODES),
                               jobs="7 systemd-networkd-wait-online.service start running\n")
        return node_report(lab, node)

    with nodes_reporting(url, report):
        run = checkrun.run_checks(lab, timeout=120, poll=0.2)
    found = results(run)
    assert run.ok, [str(check) for check, _ in run.results if not check.ok]
    for node in NODES:
        # the boot's own finish time, not when the check saw it: the same however late the check runs
        assert found[(node, "settled")].detail.startswith("system running, boot finished ")
        assert abs(run.settled[node] - (KERNEL_AFTER + BOOT_TAKES)) < 2
        assert found[(node, "wireguard")].detail.startswith("sessions with 2 peers, both sides: ")
        assert found[(node, "mesh ping")].ok
    etcd = found[(None, "etcd")]
    assert etcd.detail.startswith("3/3 members healthy; a key was written and read back; ")
    assert etcd.detail.count(" leader, raft index ") == 1 and etcd.detail.count(" follower, raft index ") == 2
    # Every result says when it passed, and nothing passed before the nodes settled.
    timed = {(check.node, check.name): after for check, after in run.results}
    assert all(after is not None and after >= settle_at - started - 0.5 for after in timed.values())
    assert set(run.settled) == set(NODES)


def test_a_node_without_its_wireguard_key_fails_with_both_facts_after_the_deadline(loop_lab):
    lab, url, _ = loop_lab
    with nodes_reporting(url, lambda node: node_report(lab, node, broken=frozenset({"c2"}))):
        run = checkrun.run_checks(lab, timeout=6, poll=0.2)
    found = results(run)
    assert not run.ok
    broken = found[("c2", "wireguard")]
    assert not broken.ok and broken.detail.startswith("did not settle within 6 s (")
    assert "last: wg0 has no private key" in broken.detail
    assert not found[("c2", "mesh ping")].ok
    # Its peers still remember a session of c2's last boot; c2 has none, and both checks say so.
    for node in ("c1", "c3"):
        assert f"last: c2 has no session with {node}: wg0 has no private key" in found[(node, "wireguard")].detail
        assert "unreachable: c2 (10.250.0.22: fail)" in found[(node, "mesh ping")].detail
    assert found[("c2", "settled")].ok and found[("c2", "ignition")].ok  # only what is broken fails
    assert sorted(f"{c.node} {c.name}" for c, _ in run.results if not c.ok) == [
        "c1 mesh ping", "c1 wireguard", "c2 mesh ping", "c2 wireguard", "c3 mesh ping", "c3 wireguard"]


def test_a_node_that_never_settles_is_named_with_what_it_waits_for(loop_lab):
    lab, url, _ = loop_lab

    def report(node: str) -> dict:
        if node == "c3":
            return node_report(lab, node, system="starting", jobs="42 stellwerk-slow.service start running\n")
        return node_report(lab, node)

    with nodes_reporting(url, report):
        run = checkrun.run_checks(lab, timeout=5, poll=0.2)
    found = results(run)
    assert found[("c3", "settled")].detail == ("not settled within 5 s: system starting; waiting for "
                                                "stellwerk-slow.service start (running)")
    assert ("c3", "wireguard") not in found  # nothing of a node still starting is judged
    assert found[("c1", "settled")].ok and found[(None, "etcd")].ok


def test_etcd_names_each_member_and_what_it_answered(loop_lab):
    lab, _, processes = loop_lab
    healthy = checks.check_etcd(lab.plan, lab.assets, down=())
    assert healthy.ok and "c1 " in healthy.detail and "c2 " in healthy.detail and "c3 " in healthy.detail
    processes["c3"].terminate()
    processes["c3"].wait(timeout=20)
    try:
        degraded = checks.check_etcd(lab.plan, lab.assets, down=())
        assert not degraded.ok and degraded.detail.startswith("2/3 members healthy: ")
        assert "c3 unhealthy: " in degraded.detail and " leader, raft index " in degraded.detail
        off = checks.check_etcd(lab.plan, lab.assets, down={"c3"})
        assert off.ok and off.detail.startswith("degraded, quorum held: 2/3 members healthy (c3 powered off)")
    finally:  # the other tests of this module share the members: c3 comes back with its data
        work = lab.directory.parent
        processes["c3"] = etcd_members.start_member(work / "roots" / "c3", work / "c3-again.log")
        addresses = [str(node.address) for node in lab.plan.nodes]
        health = etcd_members.wait_healthy(require_tool("etcdctl"), lab.assets, addresses, processes.values(), work)
        assert health.returncode == 0, health.stderr + etcd_members.logs(work)


def test_a_failure_a_node_reported_to_netboot_ends_the_wait_at_once(loop_lab, tmp_path):
    from stellwerk.lab.errors import NodeFailed
    from stellwerk.lab.lifecycle import wait_for_reports
    from stellwerk.netboot.machines import Failure, MachineRegistry

    lab, _, _ = loop_lab
    since = time.time() - 1
    MachineRegistry(lab.assets).fail("c2", "52:54:00:00:02:22", Failure(
        "disks", "Ignition's disks stage failed (exit 1); its log is above",
        "waiting for devices [/dev/sda]\ndisks failed"), "127.0.0.22")
    calls = []
    with pytest.raises(NodeFailed) as failed:
        wait_for_reports(lab, {"c2"}, since, timeout=3600, progress=calls.append)
    assert len(calls) == 1  # the first look saw the failure: no waiting for the hour
    assert str(failed.value).startswith("c2: provisioning failed in stage disks: Ignition's disks stage failed")
    assert "  waiting for devices [/dev/sda]" in str(failed.value)
    MachineRegistry(lab.assets).record("c2", "52:54:00:00:02:22", "booted", "127.0.0.22")  # news no more
    assert MachineRegistry(lab.assets).statuses(["c2"])[0].failure is None


def test_what_nodes_and_etcdctl_said_is_printed_as_text_never_as_markup():
    import io

    from rich.console import Console

    said = "mdadm: cannot open [/dev/nvme1n1p3]: No such file [bold]or[/bold] directory"
    run = checkrun.CheckRun([(checks.Check("c1", "raid", False, said), None)], {}, 1.0, 5.0)
    out = io.StringIO()
    assert checkrun.print_results(run, Console(file=out, width=300)) is False
    assert said in out.getvalue()


def test_the_live_table_prints_a_reported_reason_as_it_came(loop_lab):
    import io

    from rich.console import Console

    from stellwerk.lab.progress import LiveTable
    from stellwerk.netboot.machines import Failure, MachineRegistry

    lab, _, _ = loop_lab
    reason = "disks: [/dev/x] [/bold] unbalanced"  # rich would refuse this as markup
    out = io.StringIO()
    with LiveTable(Console(file=out, width=300)) as table:
        MachineRegistry(lab.assets).fail("c1", "52:54:00:00:02:21", Failure("disks", reason, ""), "127.0.0.21")
        try:
            table.update(lab)
        finally:
            MachineRegistry(lab.assets).record("c1", "52:54:00:00:02:21", "booted", "127.0.0.21")
    assert f"c1: failed: disks: {reason}" in out.getvalue()
