"""Run the real Ignition (Debian's `ignition` package) against a scratch root.

Two stages do everything Stellwerk's configs need without disks or network:
fetch-offline reads (and merges) the config into a cache file, files writes
users, files, directories, links and units under ``-root``.

Debian builds Ignition with SELinux relabelling always on, so the files stage
runs `setfiles`; the scratch root gets an SELinux policy named "stellwerk"
whose only file context relabels nothing. Ignition creates users with the host's
useradd/usermod and ``--root``, so the root starts with copies of the host's
account databases.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

_DRACUT_IGNITION = "/usr/lib/dracut/modules.d/30ignition/ignition"
# login.defs too: useradd --root reads it from the root, and without it useradd
# creates no per-user group (no group "core" next to user "core").
_ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow", "login.defs")
# Added to the scratch root when the host lacks it (id chosen free at run time).
_EXTRA_ACCOUNT = "systemd-network"
_EXTRA_LINES = {
    "passwd": "{name}:x:{id}:{id}:systemd Network Management:/:/usr/sbin/nologin\n",
    "group": "{name}:x:{id}:\n",
    "shadow": "{name}:!*:19000::::::\n",
    "gshadow": "{name}:!*::\n",
}
_TIMEOUT = 120


def _path() -> str:
    # setfiles and useradd live in sbin, which a non-login PATH may lack
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def ignition_binary() -> str | None:
    found = shutil.which("ignition")
    if found:
        return found
    return _DRACUT_IGNITION if os.access(_DRACUT_IGNITION, os.X_OK) else None


def missing_tools() -> list[str]:
    """What the real engine needs and this machine lacks (empty when everything is there)."""
    missing = [] if ignition_binary() else ["ignition"]
    missing += [tool for tool in ("ignition-validate", "setfiles", "useradd") if not shutil.which(tool, path=_path())]
    if os.geteuid() != 0:
        missing.append("root (Ignition chowns files and runs useradd)")
    return missing


def engine_available() -> bool:
    return not missing_tools()


def require(available: bool, what: str) -> None:
    """Skip a test that needs `what` when it is absent, except in CI, where absence is a failure."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required in CI but not available")
    pytest.skip(f"{what} not available")


def require_engine() -> None:
    require(engine_available(), "the Ignition engine (" + ", ".join(missing_tools()) + ")")


def validate(config_bytes: bytes, *, allow_warnings: bool = False) -> None:
    """Run ignition-validate; any error fails, and so does any warning unless allowed.

    Warnings are failures by default because a warning in a generated config
    (an enabled unit without [Install], a setuid mode) is a bug in the generator.
    """
    with tempfile.NamedTemporaryFile(suffix=".ign") as f:
        f.write(config_bytes)
        f.flush()
        result = subprocess.run(
            ["ignition-validate", f.name], capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or (output and not allow_warnings):
        raise AssertionError(f"ignition-validate (exit {result.returncode}):\n{output}")


def _prepare_root(root: Path) -> None:
    etc = root / "etc"
    contexts = etc / "selinux" / "stellwerk" / "contexts" / "files"
    contexts.mkdir(parents=True, exist_ok=True)
    (etc / "selinux" / "config").write_text("SELINUX=disabled\nSELINUXTYPE=stellwerk\n")
    (contexts / "file_contexts").write_text("/.*\t<<none>>\n")
    for name in _ACCOUNT_FILES:
        target = etc / name
        if not target.exists() and (Path("/etc") / name).exists():
            shutil.copy2(Path("/etc") / name, target)
    if _EXTRA_ACCOUNT not in _ids(etc / "passwd"):
        taken = set(_ids(etc / "passwd").values()) | set(_ids(etc / "group").values())
        free = next(i for i in range(999, 100, -1) if i not in taken)
        for name, line in _EXTRA_LINES.items():
            with (etc / name).open("a") as f:
                f.write(line.format(name=_EXTRA_ACCOUNT, id=free))


def _ids(path: Path) -> dict[str, int]:
    """name -> id from a passwd or group file."""
    entries = (line.split(":") for line in path.read_text().splitlines() if line.count(":") >= 3)
    return {fields[0]: int(fields[2]) for fields in entries}


def _make_searchable(root: Path) -> None:
    """Let every user traverse the directories above `root`.

    Ignition writes a user's ssh keys with that user's file-system uid, so a
    0700 parent (pytest's temporary base directory is one) makes it fail with
    "permission denied". Only directories this process owns are touched.
    """
    for directory in (root, *root.parents):
        info = directory.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=_TIMEOUT, check=False, stdin=subprocess.DEVNULL
    )


def apply(config_bytes: bytes, root: Path, *, online: bool = False, sysext_from: Path | None = None) -> str:
    """Apply a config with the real Ignition into `root`; returns the log of both stages.

    `online` runs the fetch stage instead of fetch-offline, so that remote merge sources (https with a pinned CA)
    are fetched and verified by Ignition itself. `sysext_from` (an assets directory) serves its sysext images on
    loopback, as netboot serves them at the node's sysextBaseURL, and points the config's image sources there:
    Ignition still fetches each one and checks it by the sha512 that render gave it."""
    if sysext_from is not None:
        from .webserver import static_http

        with static_http(sysext_from / "boot" / "sysext") as base:
            return apply(_images_from(config_bytes, base), root, online=online)
    binary = ignition_binary()
    if binary is None:
        raise AssertionError("the ignition binary is not installed")
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    _make_searchable(root)
    _prepare_root(root)
    # Ignition's own state lives next to the root, not inside it, so tests see
    # only what the config put there.
    with tempfile.TemporaryDirectory(prefix="ignition-state-") as state_dir:
        state = Path(state_dir)
        config = state / "config.ign"
        config.write_bytes(config_bytes)
        common = ["-platform", "file", "-root", str(root), "-config-cache", str(state / "cache.json"),
                  "-state-file", str(state / "state"), "-log-to-stdout"]  # fmt: skip
        env = {**os.environ, "IGNITION_CONFIG_FILE": str(config), "PATH": _path()}
        log = ""
        stages = (
            ["-stage", "fetch"] if online else ["-stage", "fetch-offline", "-neednet", str(state / "neednet")],
            ["-stage", "files"],
        )
        for stage in stages:
            result = _run([binary, *stage, *common], env)
            log += result.stdout + result.stderr
            if result.returncode != 0:
                raise AssertionError(f"ignition {stage[1]} failed (exit {result.returncode}):\n{log}")
    return log


def merged_by_ignition(config_bytes: bytes, *, online: bool = False) -> bytes:
    """The config after Ignition's own fetch-offline merge (its config cache), as JSON bytes.

    Lets tests compare Stellwerk's merge with Ignition's on configs that pull
    children in through ignition.config.merge data: URLs.
    """
    binary = ignition_binary()
    if binary is None:
        raise AssertionError("the ignition binary is not installed")
    with tempfile.TemporaryDirectory(prefix="ignition-merge-") as work:
        state = Path(work)
        (state / "config.ign").write_bytes(config_bytes)
        env = {**os.environ, "IGNITION_CONFIG_FILE": str(state / "config.ign")}
        stage = ["-stage", "fetch"] if online else ["-stage", "fetch-offline", "-neednet", str(state / "neednet")]
        args = [binary, "-platform", "file", *stage, "-root", str(state / "root"),
                "-config-cache", str(state / "cache.json"), "-state-file", str(state / "state"),
                "-log-to-stdout"]  # fmt: skip
        result = _run(args, env)
        if result.returncode != 0:
            log = result.stdout + result.stderr
            raise AssertionError(f"ignition {stage[1]} failed (exit {result.returncode}):\n{log}")
        return (state / "cache.json").read_bytes()


def _images_from(config_bytes: bytes, base: str) -> bytes:
    config = json.loads(config_bytes)
    for entry in config.get("storage", {}).get("files", []):
        contents = entry.get("contents") or {}
        source = contents.get("source") or ""
        if "/assets/sysext/" in source and entry["path"].startswith("/opt/extensions/"):
            contents["source"] = f"{base}/{source.rsplit('/', 1)[1]}"
    return json.dumps(config).encode()
