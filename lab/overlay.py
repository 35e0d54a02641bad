"""The lab's Ignition overlay: a unit that reports each node's facts to the lab, merged in by netboot.

The overlay reaches nodes through `netboot serve --merge-url`, i.e. through Ignition's own `ignition.config.merge`,
so the rendered production configs stay exactly as they are; only lab machines ever carry it.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from stellwerk.base.templating import environment

REPORT_SCRIPT = "/opt/stellwerk-lab/report"
REPORT_INTERVAL = 10  # seconds between reports once a node is up


def _render(template: str, **values: object) -> str:
    return environment("stellwerk.lab").get_template(template).render(**values)


def _data_url(text: str) -> str:
    return "data:," + urllib.parse.quote(text, safe="")


def overlay(report_url: str, data_path: str | None = None) -> dict[str, Any]:
    """The overlay as an Ignition 3.3.0 config; nodes POST their report to `report_url`/<hostname>. With
    `data_path` (the data array's mount path), the report also carries a marker kept on that array."""
    return {
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [{"path": REPORT_SCRIPT, "mode": 0o755, "overwrite": True,
                               "contents": {"source": _data_url(_render("stellwerk-lab-report.sh.j2",
                                                                        report_url=report_url,
                                                                        data_path=data_path))}}]},
        "systemd": {"units": [
            # Not enabled: only its timer starts it (see the unit).
            {"name": "stellwerk-lab-report.service", "contents": _render("stellwerk-lab-report.service.j2")},
            {"name": "stellwerk-lab-report.timer", "enabled": True,
             "contents": _render("stellwerk-lab-report.timer.j2", interval=REPORT_INTERVAL)},
        ]},
    }


def overlay_bytes(report_url: str, data_path: str | None = None) -> bytes:
    return (json.dumps(overlay(report_url, data_path), separators=(",", ":")) + "\n").encode()
