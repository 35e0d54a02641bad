"""The lab's fault verbs and what `lab up`/`lab fault` say about a VM whose emulated disks stopped answering."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stellwerk.cli import cli
from stellwerk.lab.lifecycle import FAULTS, NVME_STALL_RESTART, nvme_stalled_for, nvme_stalls

# As Linux 6.1's nvme-pci driver logs a command that did not complete (drivers/nvme/host/pci.c, nvme_timeout),
# and the newer form with the opcode.
EARLIER_BOOT = """\
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)
[   31.100000] nvme nvme0: I/O 7 QID 1 timeout, aborting
"""
STALLED_BOOT = """\
[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org)
[   27.031629] nvme nvme0: pci function 0000:00:10.0
[  554.640101] nvme nvme0: I/O 12 QID 1 timeout, aborting
[  554.650229] nvme nvme0: Abort status: 0x0
[  584.650832] nvme nvme0: I/O 12 QID 1 timeout, reset controller
[  584.700000] nvme nvme1: I/O 900 (I/O Cmd) QID 2 timeout, aborting
"""


def test_nvme_stalls_counts_the_timeouts_of_the_last_boot_only():
    assert nvme_stalls(STALLED_BOOT) == 3
    assert nvme_stalls(EARLIER_BOOT + STALLED_BOOT) == 3
    assert nvme_stalls(STALLED_BOOT + EARLIER_BOOT) == 1
    assert nvme_stalls(STALLED_BOOT.replace("timeout", "done")) == 0


def test_a_controller_is_wedged_once_its_timeouts_span_a_minute():
    # 554.6 to 584.7, plus the 30 s the first one waited: the disks have not answered for 60 s.
    assert nvme_stalled_for(STALLED_BOOT) == pytest.approx(60.06, abs=0.01) and NVME_STALL_RESTART == 60.0
    assert nvme_stalled_for(EARLIER_BOOT) == 30.0 < NVME_STALL_RESTART  # one timeout: maybe only a slow host
    assert nvme_stalled_for(STALLED_BOOT + EARLIER_BOOT) == 30.0  # only the boot that runs now counts
    assert nvme_stalled_for("") == 0.0


def test_the_cli_offers_exactly_the_faults_the_lab_implements():
    usage = CliRunner().invoke(cli, ["lab", "fault", "x.yaml", "reset", "w1"])
    assert usage.exit_code == 2
    for action in FAULTS:
        assert action in usage.output
    assert "reboot" not in usage.output
