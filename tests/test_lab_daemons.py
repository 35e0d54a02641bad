"""lab/daemons.py: libvirtd and virtlogd answer after `ensure_running`, which starts them only when needed."""

from __future__ import annotations

import os
import socket

import pytest

from stellwerk.lab import daemons
from stellwerk.lab.errors import LabError


def test_answers_tells_a_listening_socket_from_a_stale_or_missing_one(tmp_path):
    path = tmp_path / "sock"
    assert not daemons.answers(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        assert daemons.answers(path)
    assert path.exists() and not daemons.answers(path)  # the file of a daemon that died


def test_a_daemon_that_is_not_installed_is_named_with_its_package(tmp_path):
    missing = daemons.Daemon("stellwerk-no-such-daemon", tmp_path / "sock", "some-package")
    with pytest.raises(LabError, match="stellwerk-no-such-daemon: not installed; install it with 'apt-get install "
                                       "some-package'"):
        daemons.ensure(missing)


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("starting libvirtd needs root")


def test_ensure_running_leaves_both_daemons_answering_and_is_idempotent(root):
    daemons.ensure_running()
    assert daemons.answers(daemons.VIRTLOGD.socket) and daemons.answers(daemons.LIBVIRTD.socket)
    assert daemons.ensure_running() == []  # both answer: nothing is started twice


def test_connect_gives_a_working_system_connection(root):
    conn = daemons.connect()
    try:
        assert conn.getURI() == daemons.SYSTEM_URI
        assert conn.isAlive()
        assert conn.getLibVersion() > 0
    finally:
        conn.close()


def test_a_bad_uri_is_a_lab_error(root):
    with pytest.raises(LabError, match="cannot connect"):
        daemons.connect("test+no-such-transport:///default")
