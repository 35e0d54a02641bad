"""The lab's reporting path without VMs: the real report script (bash, jq, curl, nft, findmnt, systemctl, wg) run on
this host, posting to the real collector on loopback; and the checks over reports."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse

import pytest
import requests

from support import ignition_engine
from support.tools import require_tool
from support.webserver import free_port
from stellwerk.lab import checks
from stellwerk.lab.collector import MAX_REPORT, OVERLAY, read_report
from stellwerk.lab.overlay import REPORT_SCRIPT, overlay, overlay_bytes


@pytest.fixture
def collector(tmp_path):
    port = free_port()
    (tmp_path / OVERLAY).write_bytes(overlay_bytes(f"http://127.0.0.1:{port}/report"))
    process = subprocess.Popen([sys.executable, "-m", "stellwerk.lab.collector", str(tmp_path), "--listen",
                                "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert "collecting on" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        process.terminate()
        process.wait(timeout=10)


def script_of(config: dict) -> str:
    entry = next(f for f in config["storage"]["files"] if f["path"] == REPORT_SCRIPT)
    return urllib.parse.unquote(entry["contents"]["source"].removeprefix("data:,"))


@pytest.mark.engine
def test_the_overlay_is_a_valid_ignition_config_that_enables_the_reporter():
    ignition_engine.require_engine()
    config = overlay("http://10.213.0.1:8099/report", "/var/mnt/data")
    ignition_engine.validate(json.dumps(config).encode())
    units = {unit["name"]: unit for unit in config["systemd"]["units"]}
    assert units["stellwerk-lab-report.timer"]["enabled"]
    # Only the timer starts the report: a target that wanted it would wait for it, and on a busy host a run longer
    # than the interval kept the next one queued before multi-user.target, so boots never finished (the soak found
    # it). And the next run is timed from the end of the last.
    service = units["stellwerk-lab-report.service"]
    assert "enabled" not in service and "[Install]" not in service["contents"]
    assert "OnUnitInactiveSec=" in units["stellwerk-lab-report.timer"]["contents"]
    assert "OnUnitActiveSec=" not in units["stellwerk-lab-report.timer"]["contents"]
    assert "report_url=http://10.213.0.1:8099/report" in script_of(config)
    assert "/var/mnt/data/.stellwerk-lab-marker" in script_of(config)


def test_the_report_script_posts_the_hosts_facts_to_the_collector(collector, tmp_path):
    for tool in ("jq", "curl", "nft", "findmnt", "unshare"):
        require_tool(tool)
    base, directory = collector
    assert requests.get(f"{base}/{OVERLAY}", timeout=10).json()["ignition"]["version"] == "3.3.0"
    script = tmp_path / "report"
    script.write_text(script_of(overlay(f"{base}/report")))
    # In its own UTS namespace, so the hostname it reports as is a node name and the host's stays as it is.
    run = subprocess.run(["unshare", "--uts", "sh", "-c", f"hostname w1 && bash {script}"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = read_report(directory, "w1")
    assert report is not None and report["node"] == "w1" and report["from"] == "127.0.0.1"
    assert len(report["bootId"]) == 36 and report == read_report(directory, "w1", first=True)
    assert isinstance(report["nft"], dict) and "nftables" in report["nft"]  # nft -j: parsed JSON
    assert isinstance(report["mounts"], dict) and report["mounts"]["filesystems"][0]["target"] == "/"
    assert float(report["uptime"].split()[0]) > 0 and report["dataMarker"] == ""
    assert isinstance(report["units"], str) and isinstance(report["pings"], str)


def test_the_collector_refuses_what_is_not_a_report(collector):
    base, directory = collector
    assert requests.post(f"{base}/report/Bad_Name", data=b"{}", timeout=10).status_code == 404
    assert requests.post(f"{base}/report/w1", data=b"not json", timeout=10).status_code == 400
    assert requests.post(f"{base}/report/w1", data=b"[1]", timeout=10).status_code == 400
    assert requests.post(f"{base}/report/w1", data=b"x" * (MAX_REPORT + 1), timeout=30).status_code == 413
    assert requests.get(f"{base}/reports/w1", timeout=10).status_code == 404
    assert read_report(directory, "w1") is None


def test_a_new_boot_replaces_the_first_report_and_later_ones_do_not(collector):
    base, directory = collector
    for boot, uptime in (("a", "1"), ("a", "2"), ("b", "3")):
        assert requests.post(f"{base}/report/c1", json={"bootId": boot, "uptime": uptime}, timeout=10).ok
        if (boot, uptime) == ("a", "2"):
            assert read_report(directory, "c1", first=True)["uptime"] == "1"
    assert read_report(directory, "c1", first=True)["uptime"] == "3"
    assert read_report(directory, "c1")["uptime"] == "3"


# -- checks over reports ------------------------------------------------------------------------------------------

class Node:
    def __init__(self, name, mesh, role="worker", address="10.213.0.21"):
        self.name, self.mesh_address, self.role = name, mesh, role
        import ipaddress

        self.address = ipaddress.ip_address(address)


class Plan:
    def __init__(self, nodes):
        self.nodes = nodes


WG_NOW = 1732260100  # the node's clock when it dumped wg0 (the report's wgTime)


def dump(*peers: tuple[str, int, int, int], private: str = "PRIV") -> str:
    """`wg show all dump` of wg0 with peers (key, latest handshake, rx bytes, tx bytes)."""
    lines = [f"wg0\t{private}\tPUB\t51871\toff"]
    lines += [f"wg0\t{key}\t(none)\t10.213.0.1:51871\t10.250.0.1/32\t{handshake}\t{rx}\t{tx}\t25"
              for key, handshake, rx, tx in peers]
    return "\n".join(lines) + "\n"


PEERS = {"KEYC1": ("c1", "10.250.0.11"), "KEYC2": ("c2", "10.250.0.12"), "KEYW1": ("w1", "10.250.0.21")}


def c1_side(handshake: int = WG_NOW - 10) -> dict:
    """c1's report: a session with w1."""
    return {"wg": dump(("KEYW1", handshake, 2100, 4300)), "wgTime": str(WG_NOW)}


def test_wireguard_and_ping_checks_read_wg_dump_and_ping_lines():
    w1 = Node("w1", "10.250.0.21")
    report = {"wg": dump(("KEYC1", WG_NOW - 12, 4300, 2100), ("KEYC2", 0, 0, 148)), "wgTime": f"{WG_NOW}\n",
              "pings": "10.250.0.11 ok try=1 rtt=0.61ms\n10.250.0.12 fail\n"}
    others = {"c1": c1_side(), "c2": {"wg": dump(("KEYW1", 0, 148, 0)), "wgTime": str(WG_NOW)}}
    result = checks.check_wireguard(w1, report, PEERS, {"c1", "c2", "w1"}, others)
    assert not result.ok and result.detail == ("c2: no handshake yet (sent 148 B, received 0 B); "
                                               "w1 (in c2's report): no handshake yet (sent 0 B, received 148 B)")
    alone = checks.check_wireguard(w1, report, PEERS, {"c1", "w1"}, others)  # c2 is off: not blamed
    assert alone.ok and alone.detail == "sessions with 1 peers, both sides: c1 12 s ago (rx 4.2 KiB, tx 2.1 KiB)"
    plan = Plan([Node("c1", "10.250.0.11"), Node("c2", "10.250.0.12"), w1])
    ping = checks.check_pings(w1, report, plan, up={"c1", "c2", "w1"})
    assert not ping.ok and "c2 (10.250.0.12: fail)" in ping.detail
    good = checks.check_pings(w1, report, plan, up={"c1", "w1"})
    assert good.ok and good.detail == "reaches 1 peers over wg0: c1 0.61ms"


def test_a_session_only_one_side_remembers_is_no_session():
    w1 = Node("w1", "10.250.0.21")
    report = {"wg": dump(("KEYC1", WG_NOW - 12, 4300, 2100)), "wgTime": str(WG_NOW)}
    # c1 rebooted without its key: w1 still remembers the session of c1's previous boot.
    keyless = {"wg": dump(("KEYW1", 0, 0, 0), private="(none)"), "wgTime": str(WG_NOW)}
    result = checks.check_wireguard(w1, report, PEERS, {"c1", "w1"}, {"c1": keyless})
    assert not result.ok and result.detail.startswith("c1 has no session with w1: wg0 has no private key")
    unknown = checks.check_wireguard(w1, report, PEERS, {"c1", "w1"}, {})
    assert not unknown.ok and "c1 has not sent a settled report" in unknown.detail


def test_a_handshake_older_than_a_session_lives_is_no_session():
    w1 = Node("w1", "10.250.0.21")
    age = checks.HANDSHAKE_FRESH + 1
    report = {"wg": dump(("KEYC1", WG_NOW - age, 10, 10)), "wgTime": str(WG_NOW)}
    result = checks.check_wireguard(w1, report, PEERS, {"c1", "w1"}, {"c1": c1_side(WG_NOW - age)})
    assert not result.ok and result.detail == (f"c1: last handshake {age} s ago, its session has expired; "
                                               f"w1 (in c1's report): last handshake {age} s ago, its session has "
                                               "expired")
    fresh = {"wg": dump(("KEYC1", WG_NOW - checks.HANDSHAKE_FRESH, 10, 10)), "wgTime": str(WG_NOW)}
    assert checks.check_wireguard(w1, fresh, PEERS, {"c1", "w1"}, {"c1": c1_side()}).ok


def test_a_missing_interface_or_key_is_named_not_blamed_on_the_peers():
    w1 = Node("w1", "10.250.0.21")
    none = checks.check_wireguard(w1, {"wg": "", "wgTime": str(WG_NOW)}, PEERS, {"c1", "w1"}, {"c1": c1_side()})
    assert not none.ok and none.detail.startswith("no wg0 interface")
    keyless = {"wg": dump(("KEYC1", 0, 0, 0), private="(none)"), "wgTime": str(WG_NOW)}
    result = checks.check_wireguard(w1, keyless, PEERS, {"c1", "w1"}, {"c1": c1_side()})
    assert not result.ok and result.detail.startswith("wg0 has no private key")


def test_the_report_dumps_wireguard_after_the_pings_so_the_two_checks_cannot_disagree():
    script = script_of(overlay("http://10.213.0.1:8099/report"))
    assert script.index("systemctl is-system-running") < script.index("ping -c 1")
    assert script.index("ping -c 1") < script.index("wg show all dump") < script.index("date +%s > wg-time.txt")


def test_only_a_finished_boot_counts_as_settled():
    for state, settled in (("running", True), ("degraded", True), ("starting", False), ("initializing", False),
                           ("", False)):
        assert checks.check_settled("c1", {"system": state + "\n"}).ok is settled, state
    waiting = checks.check_settled("c1", {"system": "starting\n", "jobs": (
        "121 multi-user.target start waiting\n130 stellwerk-lab-report.service start running\n"
        "120 systemd-networkd-wait-online.service start running\n")})
    # what runs first, then what waits; the report's own run is no news
    assert waiting.detail == ("system starting; waiting for systemd-networkd-wait-online.service start (running), "
                              "multi-user.target start")


def test_nvme_raid_and_unit_checks():
    class Options:
        scheduler, nr_requests, read_ahead_kb, dirty_ratio, dirty_background_ratio = "mq-deadline", None, 256, 10, 5

    class Raid:
        level, mount_path, filesystem, label = 1, "/var/mnt/data", "xfs", "data"

    good = {"nvme": "nvme0n1 [mq-deadline] none 1023 256\nnvme1n1 [mq-deadline] none 1023 256\n",
            "sysctl": "10\n5\n",
            "mdstat": "Personalities : [raid1]\nmd127 : active raid1 nvme2n1[1] nvme1n1[0]\n",
            "mounts": {"filesystems": [{"target": "/", "children": [
                {"target": "/var/mnt/data", "source": "/dev/md127", "fstype": "xfs", "label": "data"}]}]},
            "units": "etcd.service loaded active running etcd\nkubelet.service loaded inactive dead kubelet\n",
            "system": "running\n", "ignition": {"provisioningDate": "2026-11-22T10:00:00Z"},
            "dataMarker": "abc\n", "bootId": "def"}
    assert checks.check_nvme("w1", good, Options).ok
    assert checks.check_raid("w1", good, Raid).ok
    assert checks.check_units("w1", good).ok and checks.check_ignition("w1", good).ok
    assert "earlier boot" in checks.check_data_marker("w1", good).detail
    bad = dict(good, nvme="nvme0n1 mq-deadline [none] 1023 128\n", units=good["units"] + "x.service loaded failed failed X\n",
               mounts={"filesystems": [{"target": "/"}]}, ignition=None, dataMarker="")
    assert checks.check_nvme("w1", bad, Options).detail == "nvme0n1 scheduler none; nvme0n1 read_ahead_kb 128"
    assert checks.check_raid("w1", bad, Raid).detail == "/var/mnt/data is not mounted"
    assert checks.check_units("w1", bad).detail == "failed: x.service"
    assert not checks.check_ignition("w1", bad).ok and not checks.check_data_marker("w1", bad).ok


def test_firewall_expectations_follow_the_policy():
    import ipaddress

    from stellwerk.components import hostpolicy

    rule = hostpolicy.Rule("ssh", "ssh", "tcp", (ipaddress.ip_network("10.213.0.0/24"),), frozenset({"worker"}),
                           ports=(hostpolicy.PortRange(22, 22),))
    policy = hostpolicy.HostPolicy((rule,))
    node = Node("w1", None)
    source = ipaddress.ip_address("10.213.0.1")
    assert checks.expected_open(policy, node, source, 22) and not checks.expected_open(policy, node, source, 80)
    probes = {("10.213.0.21", port): "filtered" for port in checks.PROBE_PORTS}
    probes[("10.213.0.21", 22)] = "closed"
    assert checks.check_firewall(node, policy, source, probes).ok
    probes[("10.213.0.21", 80)] = "open"
    assert checks.check_firewall(node, policy, source, probes).detail == "80 open, policy filters it"
