"""The lab's collector: serves the Ignition overlay and keeps the latest report of every node.

It runs as its own process beside `netboot serve` for as long as the lab is up (`python -m stellwerk.lab.collector
DIR --listen ADDR --port N`), listening only on the lab network's bridge address. Reports are written to
DIR/reports/<node>.json (the latest, with when and from where it came) and the first one of each boot to
DIR/reports/<node>.first.json, which `lab check` and the lab benchmark read.
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import signal
import sys
import time
from pathlib import Path

from stellwerk.base.fsutil import make_dirs, replace_file

MAX_REPORT = 4 << 20  # bytes; an nft ruleset and a mesh of pings fit many times over
_NODE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
OVERLAY = "overlay.ign"


def report_path(directory: Path, node: str, first: bool = False) -> Path:
    return directory / "reports" / (f"{node}.first.json" if first else f"{node}.json")


def read_report(directory: Path, node: str, first: bool = False) -> dict | None:
    try:
        return json.loads(report_path(directory, node, first).read_bytes())
    except FileNotFoundError:
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "stellwerk-lab-collector"
    directory: Path

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == f"/{OVERLAY}":
            self._answer(200, (self.directory / OVERLAY).read_bytes(), "application/vnd.coreos.ignition+json")
        elif self.path == "/healthz":
            self._answer(200, b"ok\n")
        else:
            self._answer(404, b"the collector serves /overlay.ign and takes POST /report/<node>\n")

    def do_POST(self) -> None:  # noqa: N802
        node = self.path.removeprefix("/report/")
        if not self.path.startswith("/report/") or not _NODE.fullmatch(node):
            self._answer(404, b"POST /report/<node name>\n")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, b"Content-Length required\n")
            return
        if not 0 < length <= MAX_REPORT:
            self._answer(413, f"a report is 1 to {MAX_REPORT} bytes\n".encode())
            return
        try:
            report = json.loads(self.rfile.read(length))
        except ValueError as exc:
            self._answer(400, f"not JSON: {exc}\n".encode())
            return
        if not isinstance(report, dict):
            self._answer(400, b"a report is a JSON object\n")
            return
        report["received"] = time.time()
        report["from"] = self.client_address[0]
        data = json.dumps(report, sort_keys=True).encode()
        replace_file(report_path(self.directory, node), data, 0o644)
        first = read_report(self.directory, node, first=True)
        if first is None or first.get("bootId") != report.get("bootId"):
            replace_file(report_path(self.directory, node, first=True), data, 0o644)
        self._answer(200, b"recorded\n")


def serve(directory: Path, listen: str, port: int, router_advertise: str | None = None) -> None:
    make_dirs(directory / "reports")
    handler = type("Handler", (_Handler,), {"directory": directory})
    server = http.server.ThreadingHTTPServer((listen, port), handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    advertiser = None
    if router_advertise:
        from .routeradv import RouterAdvertiser  # iPXE stops waiting for an IPv6 router (see routeradv.py)

        advertiser = RouterAdvertiser(router_advertise).start()
    print(f"collecting on http://{listen}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if advertiser is not None:
            advertiser.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stellwerk.lab.collector", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--router-advertise", metavar="IF", help="answer IPv6 router solicitations on IF")
    args = parser.parse_args(argv)
    serve(args.directory, args.listen, args.port, args.router_advertise)


if __name__ == "__main__":
    main()
