"""The lab, again and again: is it green every time, also on a busy host?

    .venv/bin/python benchmarks/lab_soak.py [CLUSTER_FILE] [--runs N] [--load] [--lab-dir DIR]   (needs root)

Each run is what CI does with the example cluster: `lab up`, `lab check`, `lab fault power-off` of one controller
and the degraded check, `lab fault power-on` and the check once more, `lab fault power-cycle` of a worker and
the check after it, then `lab down`. With `--load`, the benchmark
keeps every CPU of the host busy with spinning processes of its own for the whole run, at the normal priority:
the lab's VMs then get about half the CPU time, as they do when other work shares the machine.

Prints one line per run: pass or fail (and the step that failed), seconds from `lab up` to the first green check,
the slowest check of that check and when it passed; then the count of green runs. Target: 5 of 5 green with --load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def stellwerk(lab_dir: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stellwerk", *args, "--lab-dir", str(lab_dir)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def _spin() -> None:
    while True:
        pass


def start_load() -> list[multiprocessing.Process]:
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)]
    for hog in hogs:
        hog.start()
    return hogs


def slowest(check_output: str) -> str:
    found = re.search(r"slowest check: (.+)", check_output)
    return found.group(1).strip() if found else "-"


def one_run(cluster: Path, lab_dir: Path, controller: str, worker: str) -> tuple[bool, str, float | None, str]:
    """(green, the step that failed or 'ok', seconds from up to the first green check, the slowest check)."""
    started = time.monotonic()
    green_after, slow = None, "-"
    steps = [("up", ("lab", "up", str(cluster))), ("check", ("lab", "check", str(cluster))),
             ("power-off", ("lab", "fault", str(cluster), "power-off", controller)),
             ("degraded check", ("lab", "check", str(cluster))),
             ("power-on", ("lab", "fault", str(cluster), "power-on", controller)),
             ("check after power-on", ("lab", "check", str(cluster))),
             ("power-cycle", ("lab", "fault", str(cluster), "power-cycle", worker)),
             ("check after power-cycle", ("lab", "check", str(cluster)))]
    try:
        for name, args in steps:
            result = stellwerk(lab_dir, *args)
            if name == "check":
                green_after, slow = time.monotonic() - started, slowest(result.stdout)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
                # the whole output of the failed step, beside the lab directory, for the post-mortem
                saved = lab_dir.with_name(f"{lab_dir.name}-failed-{time.strftime('%Y%m%dT%H%M%S')}.log")
                saved.write_text(f"$ stellwerk {' '.join(args)}\n{result.stdout}\n{result.stderr}")
                return False, f"{name} (exit {result.returncode}: {' | '.join(tail)}; all of it in {saved})", \
                    green_after, slow
        return True, "ok", green_after, slow
    finally:
        stellwerk(lab_dir, "lab", "down", str(cluster))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cluster", nargs="?", type=Path, default=REPO / "examples/lab-cluster.yaml")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", action="store_true", help="keep every CPU busy with spinning processes")
    parser.add_argument("--lab-dir", type=Path, default=Path("/var/lib/stellwerk/lab-soak"))
    parser.add_argument("--controller", default="c3", help="the controller the fault cycle powers off and on")
    parser.add_argument("--worker", default="w1", help="the node the power-cycle fault restarts")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the soak benchmark needs root (libvirt, bridges)")
    hogs = start_load() if args.load else []
    print(f"{args.runs} runs of {args.cluster.name}" + (f", with {len(hogs)} spinning processes" if hogs else ""))
    print(f"{'run':>3} {'result':<6} {'green after':>11}  slowest check / failed step")
    green = 0
    try:
        for run in range(1, args.runs + 1):
            ok, step, green_after, slow = one_run(args.cluster, args.lab_dir, args.controller, args.worker)
            green += ok
            after = f"{green_after:.0f} s" if green_after is not None and ok else "-"
            print(f"{run:>3} {'pass' if ok else 'FAIL':<6} {after:>11}  {slow if ok else step}", flush=True)
    finally:
        for hog in hogs:
            hog.terminate()
    print(f"{green}/{args.runs} runs green" + (" with --load" if hogs else "") + " (target: 5/5 with --load)")
    if green < args.runs:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
