"""A real three-member etcd cluster from the rendered configs, on loopback addresses.

Each member runs the exact ExecStart of the etcd.service that the real Ignition
wrote into its scratch root, chrooted into that root with the host's /usr
bind-mounted in (as an OS image provides /usr/bin/etcd), so the flags, paths,
certificates and key modes are all the rendered ones.
"""

from __future__ import annotations

import subprocess

import pytest

from support import etcd_members
from support.sysext import served_sysext
from support.tools import require_tool

CLUSTER = """\
apiVersion: stellwerk.dev/v1alpha1
kind: Cluster
metadata: {name: loop}
spec:
  kubernetes: {apiEndpoint: 127.0.0.11}
  os: {family: lab, sysextBaseURL: "http://10.213.0.1:8080/assets/sysext"}
  network: {nodeCIDR: 127.0.0.0/24}
  controllers:
    - {name: c1, mac: "52:54:00:00:01:11", address: 127.0.0.11}
    - {name: c2, mac: "52:54:00:00:01:12", address: 127.0.0.12}
    - {name: c3, mac: "52:54:00:00:01:13", address: 127.0.0.13}
"""
MEMBERS = {"c1": "127.0.0.11", "c2": "127.0.0.12", "c3": "127.0.0.13"}


@pytest.mark.engine
def test_rendered_etcd_cluster_is_healthy_with_tls(tmp_path, run_cli):
    require_tool("etcd")
    etcdctl = require_tool("etcdctl")
    require_tool("unshare")
    # The controllers' Ignition fetches their etcd sysext image from a loopback server of the assets.
    with served_sysext(CLUSTER, tmp_path / "assets", tmp_path) as cluster:
        assets = tmp_path / "assets"
        result = run_cli("render", cluster, "-o", assets)
        assert result.code == 0, result.err
        with etcd_members.members(assets, list(MEMBERS), tmp_path) as processes:
            pki = assets / "pki"
            client = etcd_members.client(etcdctl, assets, list(MEMBERS.values()))
            health = etcd_members.wait_healthy(etcdctl, assets, list(MEMBERS.values()), processes.values(), tmp_path)
            assert health.returncode == 0, health.stdout + health.stderr + etcd_members.logs(tmp_path)
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
