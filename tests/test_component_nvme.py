"""The nvme component: tuning and data RAID, checked with the real Ignition, udev, systemd and bash."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.clusters import component_filesystems, line_of, write_cluster
from support.paths import BASE_EXAMPLE_TEXT
from support.ignition_engine import apply, require, require_engine, validate

KEY = "nvme"
EXAMPLE_TEXT = BASE_EXAMPLE_TEXT

# Every fragment at once: a scheduler with a module, nr_requests, spread interrupts,
# and a mirror mounted at a path whose unit name needs systemd's escaping.
FULL = """\
scheduler: mq-deadline
nrRequests: 256
readAheadKB: 64
dirtyRatio: 12
dirtyBackgroundRatio: 4
irqAffinity: spread
raid:
  level: 1
  devices:
    - /dev/nvme1n1
    - /dev/nvme2n1
  mountPath: /var/mnt/fast-data
  label: fastdata
"""
MOUNT_UNIT = "var-mnt-fast\\x2ddata.mount"


def cluster_text(options: str, base: str = EXAMPLE_TEXT) -> str:
    """The example cluster with `options` (YAML, unindented) under spec.components.nvme."""
    block = "".join(f"      {line}\n" if line else "\n" for line in options.splitlines())
    return base + f"  components:\n    {KEY}:\n" + block



def node_config(assets: Path, node: str) -> dict:
    return json.loads((assets / "nodes" / node / "ignition.json").read_bytes())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, Path]:
    from stellwerk.render import render

    work = tmp_path_factory.mktemp("nvme")
    cluster = write_cluster(work, cluster_text(FULL))
    assets = work / "assets"
    render(cluster, assets)
    return cluster, assets


@pytest.fixture(scope="module")
def applied(rendered, tmp_path_factory) -> Path:
    """w1's config applied by the real Ignition (fetch-offline and files stages)."""
    require_engine()
    _, assets = rendered
    root = tmp_path_factory.mktemp("root-w1")
    apply((assets / "nodes" / "w1" / "ignition.json").read_bytes(), root)
    return root


# --------------------------------------------------------------------------- render, Ignition


def test_render_via_cli_has_no_cluster_objects(run_cli, tmp_path):
    cluster = write_cluster(tmp_path, cluster_text(FULL))
    result = run_cli("render", cluster, "-o", tmp_path / "assets")
    assert result.code == 0, result.err
    # Host-only: no manifests/nvme directory, and no upstream manifest to fetch.
    assert not (tmp_path / "assets" / "manifests" / KEY).exists()
    from stellwerk.components import nvme
    assert nvme.upstream(nvme.Options()) == ()


@pytest.mark.engine
def test_every_node_config_passes_ignition_validate(rendered):
    require_engine()
    _, assets = rendered
    for config in sorted(assets.glob("nodes/*/ignition.json")):
        validate(config.read_bytes())


def test_storage_sections_on_the_raid_nodes_only(rendered):
    _, assets = rendered
    storage = node_config(assets, "w1")["storage"]
    assert storage["raid"] == [{"name": "data", "level": "raid1", "devices": ["/dev/nvme1n1", "/dev/nvme2n1"]}]
    assert component_filesystems(storage) == [
        {"device": "/dev/md/data", "format": "xfs", "wipeFilesystem": False, "label": "fastdata"}]
    assert "disks" not in storage  # wipeDevices is off by default
    # The array defaults to the workers; controllers get the tuning only.
    controller = node_config(assets, "c1")
    assert "raid" not in controller["storage"] and component_filesystems(controller["storage"]) == []
    assert MOUNT_UNIT not in {unit["name"] for unit in controller["systemd"]["units"]}
    paths = {f["path"] for f in controller["storage"]["files"]}
    assert "/etc/udev/rules.d/70-stellwerk-nvme.rules" in paths
    assert "/etc/sysctl.d/70-stellwerk-nvme.conf" in paths


@pytest.mark.engine
def test_ignition_writes_every_fragment(applied):
    root = applied
    rules = (root / "etc/udev/rules.d/70-stellwerk-nvme.rules").read_text()
    assert ('KERNEL=="nvme[0-9]*n[0-9]*", KERNEL!="nvme*c*", ENV{DEVTYPE}=="disk", ATTR{queue/scheduler}="mq-deadline", '
            'ATTR{queue/nr_requests}="256", ATTR{queue/read_ahead_kb}="64"') in rules
    assert 'ENV{SYSTEMD_WANTS}+="stellwerk-nvme-irq-affinity@%k.service"' in rules
    assert (root / "etc/sysctl.d/70-stellwerk-nvme.conf").read_text() == (
        "vm.dirty_ratio = 12\nvm.dirty_background_ratio = 4\n")
    assert (root / "etc/modules-load.d/stellwerk-nvme.conf").read_text() == "mq-deadline\nraid1\n"

    mount = (root / "etc/systemd/system" / MOUNT_UNIT).read_text()
    assert "What=/dev/disk/by-label/fastdata\nWhere=/var/mnt/fast-data\nType=xfs\n" in mount
    assert "WantedBy=local-fs.target" in mount
    preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert f"enable {MOUNT_UNIT}" in preset

    script = root / "opt/stellwerk/bin/nvme-irq-affinity"
    assert script.stat().st_mode & 0o777 == 0o755
    unit = (root / "etc/systemd/system/stellwerk-nvme-irq-affinity@.service").read_text()
    assert "ExecStart=/opt/stellwerk/bin/nvme-irq-affinity %i" in unit
    # A template started by udev, never enabled by itself.
    assert not any("irq-affinity" in line for line in preset)


def test_wipe_options_reach_the_storage_section(tmp_path):
    from stellwerk.render import render

    options = FULL.replace("  label: fastdata\n", "  label: fastdata\n  wipeDevices: true\n  wipeFilesystem: true\n")
    cluster = write_cluster(tmp_path, cluster_text(options))
    render(cluster, tmp_path / "assets")
    storage = node_config(tmp_path / "assets", "w1")["storage"]
    assert storage["disks"] == [{"device": "/dev/nvme1n1", "wipeTable": True},
                                {"device": "/dev/nvme2n1", "wipeTable": True}]
    assert component_filesystems(storage)[0]["wipeFilesystem"] is True
    if shutil.which("ignition-validate"):
        validate((tmp_path / "assets/nodes/w1/ignition.json").read_bytes())


def test_tuning_and_raid_follow_their_node_lists(tmp_path):
    from stellwerk.render import render

    options = "nodes: [w1]\nraid:\n  level: 0\n  devices: [/dev/nvme1n1, /dev/nvme2n1]\n  nodes: [c2]\n"
    cluster = write_cluster(tmp_path, cluster_text(options))
    render(cluster, tmp_path / "assets")
    files = {node: {f["path"] for f in node_config(tmp_path / "assets", node)["storage"]["files"]}
             for node in ("c1", "c2", "w1")}
    rules = "/etc/udev/rules.d/70-stellwerk-nvme.rules"
    assert rules in files["w1"] and rules not in files["c1"] and rules not in files["c2"]
    assert node_config(tmp_path / "assets", "c2")["storage"]["raid"][0]["level"] == "raid0"
    assert "raid" not in node_config(tmp_path / "assets", "w1")["storage"]
    assert "/etc/modules-load.d/stellwerk-nvme.conf" in files["c2"]  # raid0 module, no scheduler module
    # Defaults: scheduler none needs no module, and nothing spreads interrupts.
    assert "/etc/modules-load.d/stellwerk-nvme.conf" not in files["w1"]
    assert "/opt/stellwerk/bin/nvme-irq-affinity" not in files["w1"]


# --------------------------------------------------------------------------- systemd and udev, for real


def test_mount_unit_name_matches_systemd_escape():
    from stellwerk.components.unitnames import mount_unit_name

    escape = shutil.which("systemd-escape")
    require(escape is not None, "systemd-escape (Debian package systemd)")
    for path in ("/var/mnt/data", "/var/mnt/fast-data", "/var/lib/my.data", "/srv/ceph_meta/x:1", "/data/.hidden"):
        expected = subprocess.run([escape, "--path", "--suffix=mount", path], capture_output=True, text=True,
                                  check=True).stdout.strip()
        assert mount_unit_name(path) == expected, path


def _namespace_tools_available() -> bool:
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("unshare", "mount"))


def _in_private_mounts(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace, so bind mounts and tmpfs stay there."""
    return subprocess.run(["unshare", "--mount", "sh", "-ec", "mount --make-rprivate /\n" + script],
                          capture_output=True, text=True, timeout=60, check=False)


_UDEV_TEST_DEVICE = "/sys/devices/virtual/mem/null"


def _udev_parse(rules_dir: Path) -> str:
    """udevadm test's log after reading /etc/udev/rules.d from `rules_dir`.

    systemd 252 (Debian 12) has no `udevadm verify`; `udevadm test` parses every
    rules file and logs each bad line as FILE:LINE. /dev and /run are fresh tmpfs
    in the namespace, so its simulated event changes nothing on this machine; the
    event is for /dev/null, which no rule here matches, so nothing is written to
    sysfs either (an NVMe disk would get this rule's settings for real).
    """
    result = _in_private_mounts(
        f"mount --bind {rules_dir} /etc/udev/rules.d\n"
        "mount -t tmpfs tmpfs /dev\nmount -t tmpfs tmpfs /run\n"
        f"udevadm test --action=add {_UDEV_TEST_DEVICE} 2>&1\n")
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


@pytest.mark.engine
def test_udev_parses_the_rules(applied, tmp_path):
    require(_namespace_tools_available() and shutil.which("udevadm") is not None and Path(_UDEV_TEST_DEVICE).is_dir(),
            "udevadm (Debian package udev), root and unshare")
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rules = rules_dir / "70-stellwerk-nvme.rules"
    shutil.copy(applied / "etc/udev/rules.d/70-stellwerk-nvme.rules", rules)
    log = _udev_parse(rules_dir)
    assert "Reading rules file: /etc/udev/rules.d/70-stellwerk-nvme.rules" in log
    complaints = [line for line in log.splitlines() if line.startswith("/etc/udev/rules.d/70-stellwerk-nvme.rules:")]
    assert complaints == []
    # systemd 252 accepts a missing comma between two keys without a word; the
    # rules here are one comma-separated list of KEY{attr}OP"value" per line.
    token = r'[A-Z_]+(\{[^}"]*\})?(==|!=|\+=|-=|:=|=)"[^"]*"'
    for line in rules.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(f"{token}(, {token})*", line), line
    # The same run reports a broken line, so an empty list above means something.
    rules.write_text(rules.read_text() + 'KERNEL=="nvme*", ATTRS{queue/scheduler="none"\n')
    assert "/etc/udev/rules.d/70-stellwerk-nvme.rules:" in _udev_parse(rules_dir)


@pytest.mark.engine
def test_systemd_accepts_the_units(applied, tmp_path):
    analyze = shutil.which("systemd-analyze")
    require(_namespace_tools_available() and analyze is not None, "systemd-analyze (Debian package systemd), root and unshare")
    units = tmp_path / "units"
    units.mkdir()
    for name in (MOUNT_UNIT, "stellwerk-nvme-irq-affinity@.service"):
        shutil.copy(applied / "etc/systemd/system" / name, units / name)
    # verify checks that ExecStart= is executable: put Ignition's copy of the script where
    # the unit expects it, on a tmpfs over /opt that only this namespace sees.
    script = applied / "opt/stellwerk/bin/nvme-irq-affinity"
    verify = f"{analyze} verify --man=no '{units / MOUNT_UNIT}' '{units}/stellwerk-nvme-irq-affinity@.service'"
    result = _in_private_mounts(
        f"mount -t tmpfs tmpfs /opt\nmkdir -p /opt/stellwerk/bin\ncp -p {script} /opt/stellwerk/bin/\n{verify}\n")
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    # A mount unit whose name does not match Where= is refused: the check has teeth.
    wrong = units / "var-mnt-data.mount"
    shutil.copy(units / MOUNT_UNIT, wrong)
    result = _in_private_mounts(f"{analyze} verify --man=no '{wrong}'\n")
    assert result.returncode != 0 and "Where= setting doesn't match unit name" in result.stdout + result.stderr


@pytest.mark.engine
def test_irq_script_pins_movable_interrupts_round_robin(applied, tmp_path):
    """The script Ignition wrote, run by bash over a made-up sysfs and procfs.

    Interrupt 31 stands for a kernel-managed one: its smp_affinity_list cannot be
    written (the kernel answers EIO; here it is a directory, which fails the same way).
    """
    bash = shutil.which("bash")
    assert bash is not None
    script = applied / "opt/stellwerk/bin/nvme-irq-affinity"
    subprocess.run([bash, "-n", str(script)], check=True)
    sys_root, proc_root = tmp_path / "sys", tmp_path / "proc"
    device = sys_root / "class/nvme/nvme0/device"
    (device / "msi_irqs").mkdir(parents=True)
    (device / "numa_node").write_text("1\n")
    (sys_root / "devices/system/node/node1").mkdir(parents=True)
    (sys_root / "devices/system/node/node1/cpulist").write_text("4-5,8\n")
    (sys_root / "devices/system/cpu").mkdir(parents=True)
    (sys_root / "devices/system/cpu/online").write_text("0-11\n")
    for irq in (30, 31, 32, 33):
        (device / "msi_irqs" / str(irq)).write_text("msix\n")
        (proc_root / "irq" / str(irq)).mkdir(parents=True)
        (proc_root / "irq" / str(irq) / "smp_affinity_list").write_text("0-11\n")
    (proc_root / "irq/31/smp_affinity_list").unlink()
    (proc_root / "irq/31/smp_affinity_list").mkdir()
    env = {**os.environ, "STELLWERK_SYSFS": str(sys_root), "STELLWERK_PROCFS": str(proc_root)}

    result = subprocess.run([bash, str(script), "nvme0"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    pinned = {irq: (proc_root / "irq" / str(irq) / "smp_affinity_list").read_text().strip() for irq in (30, 32, 33)}
    assert pinned == {30: "4", 32: "5", 33: "8"}
    assert "pinned 3 interrupt(s) over CPUs 4-5,8; 1 kernel-managed" in result.stdout

    # No NUMA node: all online CPUs.
    (device / "numa_node").write_text("-1\n")
    result = subprocess.run([bash, str(script), "nvme0"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0 and "over CPUs 0-11" in result.stdout
    # A controller without MSI interrupts (NVMe over fabrics) is left alone.
    result = subprocess.run([bash, str(script), "nvme7"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0 and "nothing to do" in result.stdout


# --------------------------------------------------------------------------- bad input

RAID = "raid:\n  level: {level}\n  devices:\n{devices}"


def raid(level: int, *devices: str, extra: str = "") -> str:
    return RAID.format(level=level, devices="".join(f"    - {d}\n" for d in devices)) + extra


CHECKS = [
    # (options, needle on the reported line, occurrence, path, message)
    (raid(0, "/dev/nvme1n1"), "devices:", 1, "spec.components.nvme.raid.devices",
     "raid0 needs at least 2 devices, 1 given; add devices or choose another level"),
    (raid(1, "/dev/nvme1n1"), "devices:", 1, "spec.components.nvme.raid.devices",
     "raid1 needs at least 2 devices, 1 given"),
    (raid(10, "/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1"), "devices:", 1, "spec.components.nvme.raid.devices",
     "raid10 needs at least 4 devices, 3 given"),
    (raid(10, *(f"/dev/nvme{i}n1" for i in range(1, 6))), "devices:", 1, "spec.components.nvme.raid.devices",
     "raid10 needs an even number of devices (mirrored pairs), 5 given"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme1n1"), "- /dev/nvme1n1", 2,
     "spec.components.nvme.raid.devices[2]", "/dev/nvme1n1 is already devices[0]; list each disk once"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  mountPath: /var\n"), "mountPath", 1,
     "spec.components.nvme.raid.mountPath", "/var is a system path: mounting the array there would hide or break the OS"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  mountPath: /usr/local/data\n"), "mountPath", 1,
     "spec.components.nvme.raid.mountPath", "/usr/local/data is a system path"),
    (raid(1, "/dev/nvme0n1", "/dev/nvme2n1"), "- /dev/nvme0n1", 1, "spec.components.nvme.raid.devices[0]",
     "/dev/nvme0n1 is node w1's installDisk /dev/nvme0n1: installing the OS would destroy the array"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme0n1p9"), "- /dev/nvme0n1p9", 1, "spec.components.nvme.raid.devices[1]",
     "/dev/nvme0n1p9 is a partition of node w1's installDisk /dev/nvme0n1"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  label: fast-nvme-data\n"), "label", 1,
     "spec.components.nvme.raid.label", "'fast-nvme-data' has 14 characters; xfs labels hold at most 12"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  nodes: [w11]\n"), "nodes: [w11]", 1,
     "spec.components.nvme.raid.nodes[0]", "no node is named 'w11'; did you mean 'w1'?"),
    ("nodes:\n  - c1\n  - gpu7\n", "- gpu7", 1, "spec.components.nvme.nodes[1]",
     "no node is named 'gpu7'; nodes: c1, c2, c3, w1"),
    ("dirtyRatio: 10\ndirtyBackgroundRatio: 10\n", "dirtyBackgroundRatio", 1, "spec.components.nvme.dirtyBackgroundRatio",
     "10 is not below dirtyRatio 10: the kernel would start background write-back only when writers already block; "
     "use at most 9 or raise dirtyRatio"),
    # Options constraints
    ("scheduler: cfq\n", "scheduler", 1, "spec.components.nvme.scheduler", "'cfq' is not allowed"),
    ("nrRequests: 2\n", "nrRequests", 1, "spec.components.nvme.nrRequests", "greater than or equal to 4"),
    ("irqAffinity: balance\n", "irqAffinity", 1, "spec.components.nvme.irqAffinity", "'balance' is not allowed"),
    (raid(5, "/dev/nvme1n1", "/dev/nvme2n1", "/dev/nvme3n1"), "level", 1, "spec.components.nvme.raid.level",
     "5 is not allowed; input should be 0, 1 or 10"),
    (raid(1, "nvme1n1", "/dev/nvme2n1"), "- nvme1n1", 1, "spec.components.nvme.raid.devices[0]",
     "'nvme1n1' is not a device path; write the whole path under /dev"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  mountPath: var/mnt/data\n"), "mountPath", 1,
     "spec.components.nvme.raid.mountPath", "'var/mnt/data' is not an absolute path"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  mountPath: /var/mnt/../data\n"), "mountPath", 1,
     "spec.components.nvme.raid.mountPath", "'/var/mnt/../data' is not in normal form; write '/var/data'"),
    ("readAheadKb: 256\n", "readAheadKb", 1, "spec.components.nvme.readAheadKb",
     "unknown key 'readAheadKb'; did you mean 'readAheadKB'?"),
    (raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  mountpath: /var/mnt/x\n"), "mountpath", 1,
     "spec.components.nvme.raid.mountpath", "unknown key 'mountpath'; did you mean 'mountPath'?"),
    ("patches:\n  - target: {kind: ConfigMap, name: nvme-tuning}\n    merge: {data: {a: b}}\n", "- target", 1,
     "spec.components.nvme.patches[0]", "no rendered object is"),
]


@pytest.mark.parametrize("options, needle, occurrence, path, message", CHECKS,
                         ids=[f"{i}-{c[3].rsplit('.', 1)[-1]}" for i, c in enumerate(CHECKS)])
def test_bad_input_is_reported_at_its_line(run_cli, tmp_path, options, needle, occurrence, path, message):
    text = cluster_text(options)
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2, result.out + result.err
    line = line_of(text, needle, after="  components:", occurrence=occurrence)
    expected = f"{cluster}:{line}: {path}: "
    problems = [p for p in result.err.splitlines() if p.startswith(expected)]
    assert problems, f"no problem starts with {expected!r}:\n{result.err}"
    assert any(message in p for p in problems), result.err


def test_raid_is_refused_for_cloud_init_hosts(run_cli, tmp_path):
    text = cluster_text(raid(1, "/dev/nvme1n1", "/dev/nvme2n1"), EXAMPLE_TEXT.replace("family: lab", "family: debian"))
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2
    assert (f"{cluster}:{line_of(text, 'raid:', after='  components:', occurrence=1)}: spec.components.nvme.raid: os.family debian gets cloud-init "
            "configs, which cannot create RAID arrays or filesystems") in result.err
    # The tuning alone is files only, which cloud-init writes.
    tuned = write_cluster(tmp_path, cluster_text("scheduler: none\n", EXAMPLE_TEXT.replace("family: lab", "family: debian")),
                          "tuned.yaml")
    assert run_cli("validate", tuned).code == 0


def test_raid_needs_nodes_when_there_are_no_workers(run_cli, tmp_path):
    start = EXAMPLE_TEXT.index("  workerPools:")
    base = EXAMPLE_TEXT[:start] + EXAMPLE_TEXT[EXAMPLE_TEXT.index("  snippets:"):]
    text = cluster_text(raid(1, "/dev/nvme1n1", "/dev/nvme2n1"), base)
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2
    assert (f"{cluster}:{line_of(text, 'raid:', after='  components:', occurrence=1)}: spec.components.nvme.raid: the array goes on every worker by "
            "default, but the cluster has none; list the nodes in raid.nodes") in result.err
    text = cluster_text(raid(1, "/dev/nvme1n1", "/dev/nvme2n1", extra="  nodes: [c1]\n"), base)
    assert run_cli("validate", write_cluster(tmp_path, text, "named.yaml")).code == 0


def test_good_options_validate(run_cli, tmp_path):
    assert run_cli("validate", write_cluster(tmp_path, cluster_text(FULL))).code == 0
    assert run_cli("validate", write_cluster(tmp_path, cluster_text("{}"), "defaults.yaml")).code == 0


# --------------------------------------------------------------------------- Rook-Ceph cross-check

# The example has one worker: one mon and one copy, so Rook's own checks pass.
ROOK_ONE_NODE = "monCount: 1\nreplicas: 1\n"


@pytest.mark.parametrize("rook, device, message", [
    ("deviceFilter: '^nvme[2-3]n1$'\n", "/dev/nvme2n1",
     "/dev/nvme2n1 on node w1 is also claimed by rookCeph.deviceFilter '^nvme[2-3]n1$' (it matches 'nvme2n1')"),
    ("nodes:\n  - name: w1\n    devices: [nvme2n1]\n", "/dev/nvme2n1",
     "/dev/nvme2n1 on node w1 is also claimed by rookCeph.nodes[w1].devices"),
])
def test_disks_claimed_by_rook_are_refused(run_cli, tmp_path, rook, device, message):
    text = cluster_text(raid(1, "/dev/nvme1n1", "/dev/nvme2n1"))
    text += "    rookCeph:\n" + "".join(f"      {line}\n" for line in (ROOK_ONE_NODE + rook).splitlines())
    cluster = write_cluster(tmp_path, text)
    result = run_cli("validate", cluster)
    assert result.code == 2
    expected = f"{cluster}:{line_of(text, '- ' + device)}: spec.components.nvme.raid.devices[1]: {message}"
    assert any(p.startswith(expected) for p in result.err.splitlines()), result.err


def test_rook_on_other_disks_is_fine(run_cli, tmp_path):
    text = cluster_text(raid(1, "/dev/nvme1n1", "/dev/nvme2n1"))
    text += "    rookCeph:\n" + "".join(f"      {line}\n" for line in (ROOK_ONE_NODE + "deviceFilter: '^nvme[3-9]n1$'").splitlines())
    result = run_cli("validate", write_cluster(tmp_path, text))
    assert result.code == 0, result.err


# --------------------------------------------------------------------------- docs


def test_docs_tables_match_the_options():
    """Every option has a row in docs/components/nvme.md that states its default."""
    from pydantic_core import PydanticUndefined

    from stellwerk.components.nvme import Options, RaidOptions

    doc = (Path(__file__).resolve().parent.parent / "docs/components/nvme.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in doc.splitlines() if line.startswith("| `")}
    for model in (Options, RaidOptions):
        for name, field in model.model_fields.items():
            alias = field.alias or name
            assert alias in rows, f"docs/components/nvme.md has no row for {alias}"
            default = field.get_default(call_default_factory=True)
            if field.default is PydanticUndefined and field.default_factory is None:
                shown = "required"
            elif default is None:
                shown = "unset"
            elif isinstance(default, bool):
                shown = f"`{str(default).lower()}`"
            else:
                shown = f"`{default}`"
            assert shown in rows[alias].split("|")[3], f"{alias}: default {shown} not in {rows[alias]!r}"
