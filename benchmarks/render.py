"""Render speed and memory: 3 controllers and N workers, first render and unchanged re-render.

    .venv/bin/python benchmarks/render.py            # N = 100, 1000, 5000
    .venv/bin/python benchmarks/render.py 100 1000   # chosen sizes

Each measurement runs in a fresh process so peak RSS is that render's own.
Targets (2-core machine): 1000 nodes in at most 5 s and 400 MB peak RSS; an
unchanged re-render writes nothing and takes at most half the first render's time.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = (100, 1000, 5000)


def cluster_file(workers: int) -> str:
    lines = [
        "apiVersion: stellwerk.dev/v1alpha1",
        "kind: Cluster",
        "metadata: {name: bench}",
        "spec:",
        # Each node takes a /24 of the pod network: a /10 holds 16384 nodes.
        "  kubernetes: {apiEndpoint: api.bench.example, podCIDR: 10.128.0.0/10}",
        "  os: {family: flatcar, sysextBaseURL: 'http://10.200.0.2:8080/assets/sysext'}",
        "  ssh: {authorizedKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJlbmNobWFya2tleWZvcnN0ZWxsd2Vya3JlbmRlcjAwMDA bench']}",
        "  wireguard: {network: 10.250.0.0/16}",
        "  network: {nodeCIDR: 10.200.0.0/16, gateway: 10.200.0.1}",
        "  controllers:",
    ]
    for index in range(3):
        lines.append(f"    - {{name: c{index}, mac: '52:54:00:00:ff:{index:02x}', address: 10.200.255.{10 + index}}}")
    lines += ["  workerPools:", "    - name: general", "      labels: {node.example.com/tier: general}", "      nodes:"]
    for index in range(workers):
        high, low = divmod(index + 2, 256)
        lines.append(f"        - {{name: w{index}, mac: '52:54:00:01:{high:02x}:{low:02x}', address: 10.200.{high}.{low}}}")
    return "\n".join(lines) + "\n"


def child(cluster: Path, assets: Path) -> None:
    from stellwerk.images.sysext_command import build_cluster_images
    from stellwerk.render import render

    # The sysext images are built once, before the clock starts: render only hashes them. What they hold does
    # not matter here, so small stand-ins take the binaries' places.
    stand_ins = assets.parent / "binaries"
    stand_ins.mkdir(exist_ok=True)
    for name in ("kubelet", "kubectl", "etcd", "etcdctl"):
        (stand_ins / name).write_bytes(b"#!/bin/sh\nexit 0\n")
    list(build_cluster_images(cluster, assets, mirror=None, cache_dir=None,
                              binaries=tuple(f"{n}={stand_ins / n}" for n in ("kubelet", "kubectl", "etcd", "etcdctl"))))
    start = time.perf_counter()
    result = render(cluster, assets)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = result.report
    written = sum((assets / p).stat().st_size for p in report.created + report.updated)
    print(json.dumps({
        "seconds": seconds,
        "nodes": len(result.plan.nodes),
        "peak_rss_mb": peak_kib / 1024,
        "files_written": len(report.created) + len(report.updated) + len(result.secrets.created),
        "bytes_written": written,
    }))


def measure(cluster: Path, assets: Path) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", str(cluster), str(assets)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"render failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(sizes: list[int]) -> None:
    print(f"{'workers':>8} {'run':<9} {'seconds':>8} {'nodes/s':>9} {'peak MB':>8} {'files':>7} {'MB out':>8}")
    for workers in sizes:
        with tempfile.TemporaryDirectory(prefix="stellwerk-bench-") as scratch:
            cluster = Path(scratch) / "cluster.yaml"
            cluster.write_text(cluster_file(workers))
            assets = Path(scratch) / "assets"
            for run in ("first", "unchanged"):
                figures = measure(cluster, assets)
                print(f"{workers:>8} {run:<9} {figures['seconds']:>8.2f} {figures['nodes'] / figures['seconds']:>9.0f} "
                      f"{figures['peak_rss_mb']:>8.0f} {figures['files_written']:>7} {figures['bytes_written'] / 1e6:>8.1f}",
                      flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main([int(arg) for arg in sys.argv[1:]] or list(DEFAULT_SIZES))
