"""`stellwerk lab up | down | fault`: the rendered cluster as libvirt VMs that netboot from Stellwerk alone.

`up` renders the cluster into the lab's directory, puts the lab OS beside it as boot files, creates an isolated
network on the cluster's nodeCIDR (host address: the cluster's gateway), starts `stellwerk netboot serve` on its
bridge in full DHCP mode and the collector (the Ignition overlay and the nodes' reports), then one domain per node
with the node's MAC and three NVMe disks (the install disk and two data disks), and waits until every node has
reported. Everything it creates is written to the lab record (state.py) as it is created, so `down` removes
exactly that, also after an `up` that failed half-way.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests

from stellwerk.base.errors import Problem, UserError
from stellwerk.base.fsutil import make_dirs
from stellwerk.plan import Plan

from . import accel as accel_module
from . import daemons, disks, domain, network
from .collector import OVERLAY, read_report
from .errors import LabError, NodeFailed
from .overlay import overlay_bytes
from .state import LabState, lab_dir, load, save

HTTP_PORT, HTTPS_PORT, TFTP_PORT, COLLECTOR_PORT = 8080, 8443, 69, 8099
MEMORY_MIB = 768
QEMU_USER = "libvirt-qemu"  # Debian's default `user` in /etc/libvirt/qemu.conf


@dataclass(frozen=True)
class LabOptions:
    cluster_file: Path
    root: Path | None = None  # default: state.LAB_ROOT
    memory_mib: int = MEMORY_MIB
    uefi: tuple[str, ...] = ()  # nodes that boot with OVMF instead of SeaBIOS
    timeout: float = 900.0  # seconds for every node to report
    image_cache: Path | None = None


@dataclass
class Lab:
    plan: Plan
    directory: Path
    state: LabState
    events: list[str] = field(default_factory=list)

    @property
    def assets(self) -> Path:
        return Path(self.state.assets)

    def domain_name(self, node: str) -> str:
        return domain_name(self.plan.name, node)


def load_plan(cluster_file: Path) -> Plan:
    from stellwerk.load import load_cluster
    from stellwerk.plan import make_plan

    return make_plan(load_cluster(cluster_file).cluster, cluster_file.parent)


def domain_name(cluster: str, node: str) -> str:
    return f"stellwerk-{cluster}-{node}"


def host_interface(plan: Plan) -> ipaddress.IPv4Interface:
    """The lab host's address on the node network: the cluster's gateway, else the network's first address."""
    net = plan.spec.network
    subnet = ipaddress.IPv4Network(str(net.node_cidr))
    gateway = ipaddress.IPv4Address(str(net.gateway)) if net.gateway else next(subnet.hosts())
    taken = {node.address for node in plan.nodes}
    if gateway in taken:
        raise UserError(Problem("spec.network.gateway", None, "", f"{gateway} is a node's address; the lab host "
                                "takes the gateway address, so give the nodes others"))
    return ipaddress.IPv4Interface(f"{gateway}/{subnet.prefixlen}")


def bridge_name(cluster: str) -> str:
    return f"swlab-{cluster}"[:15]


# -- up -----------------------------------------------------------------------------------------------------------

def up(options: LabOptions, progress: Callable[[Lab], None] | None = None, say: Callable[[str], None] = print
       ) -> Lab:
    from stellwerk.manifests import load_checked
    from stellwerk.release import SYSEXT_SERVED_PATH
    from stellwerk.render import needed_extensions

    # All of it checked, patches too, before an existing lab is touched.
    checked = load_checked(options.cluster_file)
    loaded, plan = checked.loaded, checked.plan
    unknown = sorted(set(options.uefi) - {node.name for node in plan.nodes})
    if unknown:
        raise UserError(Problem("--uefi", None, "", f"{', '.join(unknown)} is not a node of this cluster"))
    # Before anything is made: a disk the VMs lack would fail the node's Ignition only minutes later.
    missing = disks.problems(loaded, lambda node: domain_name(plan.name, node))
    if missing:
        raise UserError(missing)
    served = f"http://{host_interface(plan).ip}:{HTTP_PORT}{SYSEXT_SERVED_PATH}"
    if needed_extensions(plan) and plan.spec.os.sysext_base_url != served:
        raise UserError(loaded.source.problem(("spec", "os", "sysextBaseURL"), (
            f"the lab's netboot serves the sysext images at {served}; set sysextBaseURL to that, or the "
            "controllers' Ignition cannot fetch their etcd")))
    directory = lab_dir(plan.name, options.root)
    if load(directory) is not None:
        say(f"a lab for cluster {plan.name} exists; replacing it")
        down(plan.name, options.root, say=say)
    make_dirs(directory)
    os.chmod(directory, 0o755)  # QEMU (as libvirt-qemu) reaches the console logs and disks below it
    state = LabState(cluster=plan.name, cluster_file=str(options.cluster_file.resolve()),
                     assets=str(directory / "assets"), started=time.time())
    save(directory, state)
    lab = Lab(plan, directory, state)
    try:
        _render(lab, say)
        _boot_files(lab, options, say)
        _network(lab, say)
        _services(lab, say)
        _domains(lab, options, say)
        wait_for_reports(lab, set(lab.state.domains), time.time() - 1, options.timeout, progress, say)
    except BaseException:
        say("lab up failed; `stellwerk lab down` removes what it created")
        raise
    return lab


def _render(lab: Lab, say: Callable[[str], None]) -> None:
    from stellwerk.render import render

    say(f"rendering {lab.state.cluster_file} into {lab.assets}")
    render(Path(lab.state.cluster_file), lab.assets)


def _boot_files(lab: Lab, options: LabOptions, say: Callable[[str], None]) -> None:
    from stellwerk.images.labos import BuildOptions, build_lab_os
    from stellwerk.images.progress import for_terminal

    say("lab OS: building it, or taking it from the cache")
    build_options = BuildOptions(output=lab.assets / "boot" / "lab")
    if options.image_cache is not None:
        build_options = BuildOptions(output=lab.assets / "boot" / "lab", cache_dir=options.image_cache)
    with for_terminal() as reporter:
        build_lab_os(build_options, reporter)


def _network(lab: Lab, say: Callable[[str], None]) -> None:
    daemons.ensure_running()
    # KVM is proven with the kernel the VMs boot: nested KVM here runs trivial guests and hangs real ones.
    lab.state.accel = str(accel_module.detect(lab.assets / "boot" / "lab" / "vmlinuz"))
    say(f"accelerator: {lab.state.accel}")
    host = host_interface(lab.plan)
    spec = network.NetworkSpec(name=f"stellwerk-{lab.plan.name}", bridge=bridge_name(lab.plan.name), host=host,
                               mtu=lab.plan.spec.network.mtu)
    lab.state.network, lab.state.bridge, lab.state.host_address = spec.name, spec.bridge, str(host.ip)
    save(lab.directory, lab.state)  # recorded before it exists: down copes with a record of what is not there
    with daemons.connect() as conn:
        network.create(conn, spec)
    say(f"network {spec.name}: bridge {spec.bridge}, host {host}")


def _spawn(lab: Lab, name: str, command: list[str]) -> int:
    log = open(lab.directory / f"{name}.log", "ab")
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                               cwd=lab.directory)
    log.close()
    lab.state.processes[name] = process.pid
    save(lab.directory, lab.state)
    return process.pid


def _services(lab: Lab, say: Callable[[str], None]) -> None:
    host = lab.state.host_address
    from stellwerk.components import BY_KEY

    nvme = BY_KEY["nvme"].options_in(lab.plan.cluster)
    data_path = nvme.raid.mount_path if nvme is not None and nvme.raid is not None else None
    (lab.directory / OVERLAY).write_bytes(overlay_bytes(f"http://{host}:{COLLECTOR_PORT}/report", data_path))
    _spawn(lab, "collector", [sys.executable, "-m", "stellwerk.lab.collector", str(lab.directory), "--listen", host,
                              "--port", str(COLLECTOR_PORT), "--router-advertise", lab.state.bridge])
    _spawn(lab, "netboot", [sys.executable, "-m", "stellwerk", "netboot", "serve", str(lab.assets), "--listen", host,
                            "--interface", lab.state.bridge, "--dhcp", "full", "--http-port", str(HTTP_PORT),
                            "--https-port", str(HTTPS_PORT), "--tftp-port", str(TFTP_PORT),
                            "--merge-url", f"http://{host}:{COLLECTOR_PORT}/{OVERLAY}"])
    for name, url in (("collector", f"http://{host}:{COLLECTOR_PORT}/healthz"),
                      ("netboot", f"http://{host}:{HTTP_PORT}/healthz")):
        _wait_healthy(lab, name, url)
    say(f"netboot on http://{host}:{HTTP_PORT} (full DHCP on {lab.state.bridge}), collector on :{COLLECTOR_PORT}")


def _wait_healthy(lab: Lab, name: str, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(lab.state.processes[name]):
            break
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            time.sleep(0.2)
    log = (lab.directory / f"{name}.log").read_text(errors="replace")[-2000:]
    raise LabError(name, f"did not come up at {url}; its log ends:\n{log}")


def _disk(path: Path, gib: int, qemu: pwd.struct_passwd | None) -> None:
    with open(path, "xb") as handle:  # never over an existing disk
        handle.truncate(gib << 30)
    if qemu is not None:
        os.chown(path, qemu.pw_uid, qemu.pw_gid)  # libvirt does not hand files named on QEMU's command line over
    os.chmod(path, 0o600)


def _domains(lab: Lab, options: LabOptions, say: Callable[[str], None]) -> None:
    try:
        qemu = pwd.getpwnam(QEMU_USER)
    except KeyError:
        qemu = None
    for sub in ("disks", "console", "nvram"):
        make_dirs(lab.directory / sub)
        os.chmod(lab.directory / sub, 0o755)
    domain_type = "kvm" if lab.state.accel.startswith("kvm") else "qemu"
    with daemons.connect() as conn:
        for node in lab.plan.nodes:
            images = []
            for index in range(1 + disks.DATA_DISKS):
                path = lab.directory / "disks" / f"{node.name}-nvme{index}.img"
                lab.state.files.append(str(path))
                save(lab.directory, lab.state)
                _disk(path, disks.INSTALL_DISK_GIB if index == 0 else disks.DATA_DISK_GIB, qemu)
                images.append(path)
            firmware = "uefi" if node.name in options.uefi else "bios"
            nvram = lab.directory / "nvram" / f"{node.name}.fd" if firmware == "uefi" else None
            if nvram is not None:
                lab.state.files.append(str(nvram))
            spec = domain.DomainSpec(
                name=lab.domain_name(node.name), nics=(domain.Nic(node.mac, lab.state.network),),
                console_log=lab.directory / "console" / f"{node.name}.log", domain_type=domain_type,
                firmware=firmware, memory_mib=options.memory_mib, vcpus=1, nvram=nvram, nvme_disks=tuple(images))
            lab.state.domains[node.name] = spec.name
            save(lab.directory, lab.state)
            domain.create(conn, spec)
            lab.state.powered_on[node.name] = time.time()
            save(lab.directory, lab.state)
            say(f"domain {spec.name}: {firmware}, {options.memory_mib} MiB, {len(images)} NVMe disks")


def wait_for_reports(lab: Lab, nodes: set[str], since: float, timeout: float,
                     progress: Callable[[Lab], None] | None = None, say: Callable[[str], None] = print) -> None:
    """Until every node in `nodes` has reported from a boot that began after `since`.

    A node whose emulated NVMe controller wedged (its console shows the guest's I/O timeouts for a minute or more)
    is powered off and on once, and said so: QEMU's NVMe emulation (7.2) has been seen to stop completing a VM's
    I/O for good on a busy host, which no config causes and only a fresh QEMU process cures."""
    deadline = time.monotonic() + timeout
    restarted: set[str] = set()
    while True:
        missing = {node for node in nodes if not reported_since(lab, node, since)}
        if progress is not None:
            progress(lab)
        if not missing:
            return
        for node, failure in sorted(failures_since(lab, missing, since).items()):
            raise NodeFailed(node, failure)  # no need to wait out the timeout for a node that has given up
        for node in sorted(missing - restarted):
            console = lab.directory / "console" / f"{node}.log"
            stalled = nvme_stalled_for(console.read_text(errors="replace") if console.exists() else "")
            if stalled >= NVME_STALL_RESTART:
                say(f"{node}: its emulated NVMe disks have not answered for {stalled:.0f} s (I/O timeouts on its "
                    "console): a fault of the VM, not of the node's config; powering it off and on, once")
                restart_wedged(lab, node)
                restarted.add(node)
        if time.monotonic() > deadline:
            tails = []
            for node in sorted(missing):
                console = lab.directory / "console" / f"{node}.log"
                text = console.read_text(errors="replace") if console.exists() else ""
                stalls = nvme_stalls(text)
                if stalls:
                    tails.append(f"{node}: its console shows {stalls} NVMe I/O timeouts: the emulated disk "
                                 f"controller stopped completing I/O, a fault of the VM, not of the node's config")
                tails.append(f"--- {node} console (last lines) ---\n" + "\n".join(text.splitlines()[-15:]))
            raise LabError("lab", f"{', '.join(sorted(missing))} did not report within {timeout:.0f} s\n"
                           + "\n".join(tails))
        for name, pid in lab.state.processes.items():
            if not _alive(pid):
                raise LabError(name, f"exited; see {lab.directory / (name + '.log')}")
        time.sleep(2)


_NVME_STALL = re.compile(r"\[\s*(\d+\.\d+)\] nvme nvme\d+: I/O \d+ (?:\(.*\) )?QID \d+ timeout, "
                         r"(?:aborting|reset controller)")
NVME_STALL_RESTART = 60.0  # seconds between the first and the last I/O timeout the guest logged in this boot


def _last_boot(console: str) -> str:
    return console.rsplit("Linux version ", 1)[-1]


def nvme_stalls(console: str) -> int:
    """How many I/O timeouts the guest kernel logged for its NVMe drives in the boot the console shows last."""
    return len(_NVME_STALL.findall(_last_boot(console)))


def nvme_stalled_for(console: str) -> float:
    """Seconds from the first to the last NVMe I/O timeout of the last boot (each one is 30 s without an
    answer): 0 without any; a wedged controller keeps adding to it."""
    times = [float(stamp) for stamp in _NVME_STALL.findall(_last_boot(console))]
    return times[-1] - times[0] + 30.0 if times else 0.0


def restart_wedged(lab: Lab, node: str) -> None:
    """Power `node` off and on; if it had already taken its one-time secrets, allow it to take them again (its
    next boot provisions afresh: the state filesystem is only marked provisioned once Ignition succeeded)."""
    from stellwerk.netboot.machines import MachineRegistry

    registry = MachineRegistry(lab.assets)
    if not reported_since(lab, node, 0):
        registry.reprovision(node)
    with daemons.connect() as conn:
        machine = conn.lookupByName(lab.state.domains[node])
        if machine.isActive():
            machine.destroy()
        machine.create()
    lab.state.powered_on[node] = time.time()
    save(lab.directory, lab.state)


def failures_since(lab: Lab, nodes: set[str], since: float) -> dict[str, dict]:
    """node -> the failure it reported to netboot (stage, reason, log) in a boot after `since`."""
    from stellwerk.netboot.machines import MachineRegistry

    found = {}
    for status in MachineRegistry(lab.assets).statuses(sorted(nodes)):
        failure = status.failure
        if failure and _epoch(failure.get("time")) >= int(since):  # netboot's times have whole seconds
            found[status.node] = failure
    return found


def _epoch(stamp: object) -> float:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def reported_since(lab: Lab, node: str, since: float) -> bool:
    report = read_report(lab.directory, node, first=True)
    return report is not None and report.get("received", 0) >= since


# -- down ---------------------------------------------------------------------------------------------------------

def down(cluster: str, root: Path | None = None, say: Callable[[str], None] = print) -> list[str]:
    """Remove every domain, network, file and process the lab record lists; what is already gone is skipped."""
    directory = lab_dir(cluster, root)
    state = load(directory)
    if state is None:
        say(f"no lab for cluster {cluster}")
        return []
    removed = []
    if state.domains or state.network:
        daemons.ensure_running()
        with daemons.connect() as conn:
            for name in state.domains.values():
                if domain.remove(conn, name):
                    removed.append(f"domain {name}")
            if state.network and network.remove(conn, state.network):
                removed.append(f"network {state.network}")
    for name, pid in state.processes.items():
        if _stop(pid, directory):
            removed.append(f"process {name} ({pid})")
    for file in state.files:
        path = Path(file)
        if path.exists():
            path.unlink()
            removed.append(f"file {path}")
    shutil.rmtree(directory)
    removed.append(f"directory {directory}")
    for line in removed:
        say(f"removed {line}")
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of this process is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _stop(pid: int, directory: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the lab's process `pid`, only if it still is the lab's (its command line names the lab directory)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(str(directory).encode() in part for part in command):
        return False  # the pid was reused by another process: not ours to stop
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


# -- faults -------------------------------------------------------------------------------------------------------

FAULTS = ("power-off", "power-on", "power-cycle")


def open_lab(cluster_file: Path, root: Path | None = None) -> Lab:
    plan = load_plan(cluster_file)
    directory = lab_dir(plan.name, root)
    state = load(directory)
    if state is None:
        raise UserError(Problem(str(cluster_file), None, "", f"no lab is up for cluster {plan.name}; run "
                                f"`stellwerk lab up {cluster_file}` first"))
    return Lab(plan, directory, state)


def fault(cluster_file: Path, action: str, node: str, root: Path | None = None, timeout: float = 600.0,
          say: Callable[[str], None] = print) -> Lab:
    lab = open_lab(cluster_file, root)
    if node not in lab.state.domains:
        raise UserError(Problem("NODE", None, "", f"{node!r} is not a node of this lab; nodes: "
                                f"{', '.join(sorted(lab.state.domains))}"))
    if action not in FAULTS:
        raise UserError(Problem("ACTION", None, "", f"{action!r}: choose one of {', '.join(FAULTS)}"))
    with daemons.connect() as conn:
        machine = conn.lookupByName(lab.state.domains[node])
        if action == "power-off":
            if machine.isActive():
                machine.destroy()  # pulls the plug: no shutdown, as a real power failure
            if node not in lab.state.powered_off:
                lab.state.powered_off.append(node)
            save(lab.directory, lab.state)
            say(f"{node}: powered off")
            return lab
        if action == "power-cycle":
            if not machine.isActive():
                raise UserError(Problem("NODE", None, "", f"{node} is powered off; power it on instead"))
            # Off and on at once, in a fresh QEMU process, rather than QEMU's reset: an emulated NVMe controller
            # carried across a reset once stopped completing the new boot's I/O (a lab VM hung in its NVMe
            # timeouts for ten minutes), and what this fault proves (the node netboots again, Ignition does not
            # run twice, the disks keep their data) needs no reset button.
            machine.destroy()
        since = time.time()
        if not machine.isActive():
            machine.create()
        lab.state.powered_on[node] = since
        lab.state.powered_off = [name for name in lab.state.powered_off if name != node]
        save(lab.directory, lab.state)
    say(f"{node}: {action}; waiting for its report")
    wait_for_reports(lab, {node}, since, timeout, say=say)
    say(f"{node}: back and reporting")
    return lab
