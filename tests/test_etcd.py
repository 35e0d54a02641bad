"""A real three-member etcd cluster from the rendered configs, on loopback addresses.

Each member runs the exact ExecStart of the etcd.service that the real Ignition
wrote into its scratch root, chrooted into that root with the host's /usr
bind-mounted in (as an OS image provides /usr/bin/etcd), so the flags, paths,
certificates and key modes are all the rendered ones.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from conftest import require_tool, write_cluster
from ignition_engine import apply

CLUSTER = """\
apiVersion: stellwerk.dev/v1alpha1
kind: Cluster
metadata: {name: loop}
spec:
  kubernetes: {apiEndpoint: 127.0.0.11}
  os: {family: lab}
  network: {nodeCIDR: 127.0.0.0/24}
  controllers:
    - {name: c1, mac: "52:54:00:00:01:11", address: 127.0.0.11}
    - {name: c2, mac: "52:54:00:00:01:12", address: 127.0.0.12}
    - {name: c3, mac: "52:54:00:00:01:13", address: 127.0.0.13}
"""
MEMBERS = {"c1": "127.0.0.11", "c2": "127.0.0.12", "c3": "127.0.0.13"}


def exec_start(unit: str) -> list[str]:
    joined = unit.replace("\\\n", " ")
    line = next(l for l in joined.splitlines() if l.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def start_member(root: Path, log: Path) -> subprocess.Popen:
    argv = exec_start((root / "etc/systemd/system/etcd.service").read_text())
    assert argv[0] == "/usr/bin/etcd"
    (root / "var/lib/etcd").mkdir(parents=True, mode=0o700, exist_ok=True)
    (root / "usr").mkdir(exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        if not (root / link).exists():
            (root / link).symlink_to(target)
    script = f"mount --rbind /usr {shlex.quote(str(root / 'usr'))} && exec chroot {shlex.quote(str(root))} " + shlex.join(argv)
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.mark.engine
def test_rendered_etcd_cluster_is_healthy_with_tls(tmp_path, run_cli):
    require_tool("etcd")
    etcdctl = require_tool("etcdctl")
    require_tool("unshare")
    assets = tmp_path / "assets"
    result = run_cli("render", write_cluster(tmp_path, CLUSTER), "-o", assets)
    assert result.code == 0, result.err
    processes = []
    try:
        for name in MEMBERS:
            root = tmp_path / "roots" / name
            apply((assets / f"nodes/{name}/ignition.json").read_bytes(), root)
            processes.append(start_member(root, tmp_path / f"{name}.log"))
        pki = assets / "pki"
        client = [etcdctl, f"--endpoints={','.join(f'https://{a}:2379' for a in MEMBERS.values())}",
                  f"--cacert={pki / 'etcd/ca.crt'}", f"--cert={pki / 'etcd/healthcheck-client.crt'}",
                  f"--key={pki / 'etcd/healthcheck-client.key'}", "--dial-timeout=3s", "--command-timeout=5s"]
        deadline = time.monotonic() + 60
        while True:
            health = subprocess.run([*client, "endpoint", "health", "--cluster"], capture_output=True, text=True)
            if health.returncode == 0 or time.monotonic() > deadline:
                break
            for process in processes:
                assert process.poll() is None, _logs(tmp_path)
            time.sleep(1)
        assert health.returncode == 0, health.stdout + health.stderr + _logs(tmp_path)
        assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr
        members = subprocess.run([*client, "member", "list"], capture_output=True, text=True, check=True).stdout
        for name, address in MEMBERS.items():
            assert f"{name}, https://{address}:2380, https://{address}:2379" in members
        subprocess.run([*client, "put", "/stellwerk/check", "ok"], capture_output=True, text=True, check=True)
        got = subprocess.run([*client, "get", "/stellwerk/check", "--print-value-only"], capture_output=True, text=True, check=True)
        assert got.stdout.strip() == "ok"
        # Client TLS is enforced: a client without a certificate is refused.
        anonymous = subprocess.run([etcdctl, "--endpoints=https://127.0.0.11:2379", f"--cacert={pki / 'etcd/ca.crt'}",
                                    "--dial-timeout=3s", "--command-timeout=3s", "get", "/stellwerk/check"],
                                   capture_output=True, text=True)
        assert anonymous.returncode != 0
        # A certificate from the other CA is refused too.
        foreign = subprocess.run([etcdctl, "--endpoints=https://127.0.0.11:2379", f"--cacert={pki / 'etcd/ca.crt'}",
                                  f"--cert={pki / 'admin.crt'}", f"--key={pki / 'admin.key'}",
                                  "--dial-timeout=3s", "--command-timeout=3s", "get", "/stellwerk/check"],
                                 capture_output=True, text=True)
        assert foreign.returncode != 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
