"""Real etcd members from rendered configs, on loopback addresses: each runs the exact ExecStart of the etcd.service
that the real Ignition wrote into its scratch root, chrooted into that root with the host's /usr bind-mounted in (as
an OS image provides /usr/bin/etcd), so the flags, paths, certificates and key modes are all the rendered ones."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.ignition_engine import apply


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
        if not ((root / link).is_symlink() or (root / link).exists()):
            (root / link).symlink_to(target)
    script = f"mount --rbind /usr {shlex.quote(str(root / 'usr'))} && exec chroot {shlex.quote(str(root))} " + shlex.join(argv)
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def client(etcdctl: str, assets: Path, addresses: list[str]) -> list[str]:
    pki = assets / "pki"
    return [etcdctl, f"--endpoints={','.join(f'https://{a}:2379' for a in addresses)}",
            f"--cacert={pki / 'etcd/ca.crt'}", f"--cert={pki / 'etcd/healthcheck-client.crt'}",
            f"--key={pki / 'etcd/healthcheck-client.key'}", "--dial-timeout=3s", "--command-timeout=5s"]


def logs(directory: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(directory.glob("*.log")))


@contextmanager
def members(assets: Path, names: list[str], work: Path) -> Iterator[dict[str, subprocess.Popen]]:
    """Start one member per node name from ASSETS/nodes/<name>/ignition.json; stopped when the block ends."""
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name in names:
            root = work / "roots" / name
            apply((assets / f"nodes/{name}/ignition.json").read_bytes(), root)
            processes[name] = start_member(root, work / f"{name}.log")
        yield processes
    finally:
        stop(processes.values())


def stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_healthy(etcdctl: str, assets: Path, addresses: list[str], processes, work: Path,
                 timeout: float = 60) -> subprocess.CompletedProcess:
    """`endpoint health --cluster` until it passes or `timeout`; the last answer (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        health = subprocess.run([*client(etcdctl, assets, addresses), "endpoint", "health", "--cluster"],
                                capture_output=True, text=True)
        if health.returncode == 0 or time.monotonic() > deadline:
            return health
        for process in processes:
            assert process.poll() is None, logs(work)
        time.sleep(1)
