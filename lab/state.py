"""What a running lab consists of, recorded so that `lab check`, `lab fault` and `lab down` find exactly it.

Everything a lab creates is listed in LAB_DIR/lab.json as it is created: the libvirt network and domains, the
disk images, and the processes (netboot, collector). `lab down` removes what the record lists and nothing else,
and a record that lists something already gone is no error, so `down` can run twice or after a failed `up`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stellwerk.base.errors import Problem, UserError
from stellwerk.base.fsutil import make_dirs, replace_file

LAB_ROOT = Path(os.environ.get("STELLWERK_LAB_ROOT", "/var/lib/stellwerk/lab"))
STATE_FILE = "lab.json"
FORMAT = 1


def lab_dir(cluster: str, root: Path | None = None) -> Path:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cluster):
        raise UserError(Problem("metadata.name", None, "", f"{cluster!r} cannot name a lab directory"))
    return (root or LAB_ROOT) / cluster


@dataclass
class LabState:
    cluster: str
    cluster_file: str
    assets: str
    accel: str = ""
    network: str | None = None
    bridge: str | None = None
    host_address: str | None = None
    domains: dict[str, str] = field(default_factory=dict)  # node -> libvirt domain name
    files: list[str] = field(default_factory=list)  # disk images, NVRAM copies: removed by `down`
    processes: dict[str, int] = field(default_factory=dict)  # "netboot" / "collector" -> pid
    powered_off: list[str] = field(default_factory=list)  # nodes `lab fault power-off` took down
    powered_on: dict[str, float] = field(default_factory=dict)  # node -> when its domain last started
    started: float = 0.0
    format: int = FORMAT


def load(directory: Path) -> LabState | None:
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(Problem(str(path), None, "", f"cannot be read ({exc}); remove the lab's libvirt domains "
                                "and network by hand (virsh list --all, virsh net-list --all), then this file")
                        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(Problem(str(path), None, "", f"is not a format-{FORMAT} lab record"))
    known = {name for name in LabState.__dataclass_fields__}
    return LabState(**{key: value for key, value in data.items() if key in known})


def save(directory: Path, state: LabState) -> None:
    make_dirs(directory)
    replace_file(directory / STATE_FILE, (json.dumps(asdict(state), indent=2, sort_keys=True) + "\n").encode(),
                 0o644)
