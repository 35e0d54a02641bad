"""Netboot HTTP against nginx, side by side in one run, with wrk on loopback.

    .venv/bin/python benchmarks/netboot_http.py [--seconds 10]

Configs: Stellwerk's /ignition?mac=... with 1000 machines in the store, against
nginx serving the same ignition.json statically. Assets: a 200 MB file with 50
concurrent clients from both. Prints requests/s and bandwidth for both and the
ratios. Targets: configs at 0.5x or better of nginx's requests/s; assets at 0.9x
or better of nginx's bandwidth. Needs root (apt-get installs wrk and nginx-light
when missing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import cluster_file  # noqa: E402  (the same generated cluster as the render benchmark)

ASSET_MB = 200


def ensure_tools() -> None:
    missing = [package for tool, package in (("wrk", "wrk"), ("nginx", "nginx-light")) if not shutil.which(tool)
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"installing {', '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def wrk(url: str, connections: int, seconds: int) -> tuple[float, float]:
    """(requests per second, bytes per second)."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]
    return rps, float(value) * scale


def nginx_config(root: Path, port: int, scratch: Path) -> Path:
    config = scratch / "nginx.conf"
    config.write_text(f"""
# root: the files are the assets' own (node configs are 0600) in a private temporary directory.
user root;
worker_processes 2;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path {scratch}/body;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
""")
    return config


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="stellwerk-netboot-bench-") as scratch_name:
        scratch = Path(scratch_name)
        cluster = scratch / "cluster.yaml"
        cluster.write_text(cluster_file(1000).replace("os: {family: flatcar}", "os: {family: lab}"))
        assets = scratch / "assets"
        subprocess.run([sys.executable, "-m", "stellwerk", "render", str(cluster), "-o", str(assets)], check=True,
                       stdout=subprocess.DEVNULL)
        (assets / "boot/lab").mkdir(parents=True)
        with open(assets / "boot/lab/big.img", "wb") as handle:
            handle.write(os.urandom(1 << 20) * ASSET_MB)
        # nginx serves the very same files, statically.
        static = scratch / "static"
        static.mkdir()
        os.symlink(assets / "nodes/w0/ignition.json", static / "ignition.json")
        os.symlink(assets / "boot/lab/big.img", static / "big.img")

        http_port, nginx_port = free_port(), free_port()
        stellwerk = subprocess.Popen(
            [sys.executable, "-m", "stellwerk", "netboot", "serve", str(assets), "--listen", "127.0.0.1",
             "--http-port", str(http_port), "--https-port", str(free_port()), "--tftp-port", str(free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nginx = subprocess.Popen(["nginx", "-c", str(nginx_config(static, nginx_port, scratch)), "-g", "daemon off;"],
                                 stderr=subprocess.DEVNULL)
        try:
            wait_for(http_port)
            wait_for(nginx_port)
            mac = "52-54-00-01-00-02"  # w0 in the generated cluster
            cases = [
                ("configs", f"http://127.0.0.1:{http_port}/ignition?mac={mac}",
                 f"http://127.0.0.1:{nginx_port}/ignition.json", 50, 0),
                ("assets", f"http://127.0.0.1:{http_port}/assets/lab/big.img",
                 f"http://127.0.0.1:{nginx_port}/big.img", 50, 1),
            ]
            for url in (cases[0][2], cases[1][2]):
                status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-r", "0-0", url],
                                        capture_output=True, text=True).stdout
                if status not in ("200", "206"):
                    raise SystemExit(f"nginx answers {status} for {url}; see {scratch}/nginx-error.log")
            print(f"{'case':<8} {'server':<10} {'req/s':>10} {'MB/s':>9}")
            for name, ours, theirs, connections, key in cases:
                mine = wrk(ours, connections, args.seconds)
                reference = wrk(theirs, connections, args.seconds)
                print(f"{name:<8} {'stellwerk':<10} {mine[0]:>10.0f} {mine[1] / 1e6:>9.1f}")
                print(f"{name:<8} {'nginx':<10} {reference[0]:>10.0f} {reference[1] / 1e6:>9.1f}")
                target = 0.5 if key == 0 else 0.9
                measure = "requests/s" if key == 0 else "bandwidth"
                print(f"{name:<8} ratio {mine[key] / reference[key]:.2f} of nginx's {measure} (target {target})", flush=True)
        finally:
            for process in (stellwerk, nginx):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
