"""The newc cpio writer, checked by GNU cpio reading what it wrote (and by what the kernel needs: parents first)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from support.tools import require_tool
from stellwerk.images import cpio

EPOCH = 1_700_000_000


def listing(archive: bytes) -> list[str]:
    """`cpio -itv` of the archive: one line per member, as GNU cpio understands it."""
    result = subprocess.run([require_tool("cpio"), "-itv", "--quiet"], input=archive, capture_output=True, check=True)
    return result.stdout.decode().splitlines()


def names(archive: bytes) -> list[str]:
    result = subprocess.run([require_tool("cpio"), "-it", "--quiet"], input=archive, capture_output=True, check=True)
    return result.stdout.decode().splitlines()


def sample(tmp_path: Path) -> list[cpio.Entry]:
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 41 + b"tail")  # not a multiple of 4: padding matters
    source.chmod(0o640)
    return [
        cpio.file_data("z/last.txt", b"last\n", 0o600),
        cpio.file_from("a/b/payload.bin", source),
        cpio.symlink("bin/sh", "busybox"),
        cpio.char_device("dev/console", 5, 1),
        cpio.directory("a-b", 0o700),
        cpio.file_data("init", b"#!/bin/sh\n", 0o755),
    ]


def test_gnu_cpio_reads_every_member_with_parents_first(tmp_path):
    out = io.BytesIO()
    size = cpio.write(out, sample(tmp_path), EPOCH)
    archive = out.getvalue()
    assert size == len(archive) and size % 4 == 0
    # Missing parents are added and every directory comes before what is in it,
    # because the kernel's unpacker does not create parents.
    assert names(archive) == ["a", "a/b", "a/b/payload.bin", "a-b", "bin", "bin/sh", "dev", "dev/console", "init",
                              "z", "z/last.txt"]
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing(archive)}
    assert lines["a/b/payload.bin"].startswith("-rw-r-----")
    assert lines["a-b"].startswith("drwx------")
    assert lines["init"].startswith("-rwxr-xr-x")
    assert lines["dev/console"].startswith("crw-------") and "5,   1" in lines["dev/console"]
    assert lines["bin/sh"].startswith("lrwxrwxrwx") and lines["bin/sh"].endswith("bin/sh -> busybox")
    assert all(" root " in line for line in lines.values())


def test_extracted_files_match_their_sources_and_times(tmp_path):
    entries = [e for e in sample(tmp_path) if e.kind != stat.S_IFCHR]  # device nodes need root to extract
    out = io.BytesIO()
    cpio.write(out, entries, EPOCH)
    target = tmp_path / "extract"
    target.mkdir()
    subprocess.run([require_tool("cpio"), "-idm", "--quiet", "--no-absolute-filenames"], input=out.getvalue(),
                   cwd=target, check=True)
    assert (target / "a/b/payload.bin").read_bytes() == (tmp_path / "payload.bin").read_bytes()
    assert (target / "z/last.txt").read_bytes() == b"last\n"
    assert os.readlink(target / "bin/sh") == "busybox"
    assert (target / "init").stat().st_mtime == EPOCH


def test_same_inputs_same_bytes_in_any_order(tmp_path):
    entries = sample(tmp_path)
    first, second = io.BytesIO(), io.BytesIO()
    cpio.write(first, entries, EPOCH)
    cpio.write(second, list(reversed(entries)), EPOCH)
    assert first.getvalue() == second.getvalue()
    third = io.BytesIO()
    cpio.write(third, entries, EPOCH + 1)
    assert third.getvalue() != first.getvalue()


def test_tree_keeps_modes_and_links(tmp_path):
    source = tmp_path / "tree"
    (source / "lib/modules/6.1").mkdir(parents=True)
    (source / "lib/modules/6.1/loop.ko").write_bytes(b"\x7fELF")
    (source / "lib/firmware").symlink_to("modules")
    entries = {e.path: e for e in cpio.tree(source, "root")}
    assert set(entries) == {"root/lib", "root/lib/modules", "root/lib/modules/6.1", "root/lib/modules/6.1/loop.ko",
                            "root/lib/firmware"}
    assert entries["root/lib/firmware"].target == "modules"
    assert stat.S_ISDIR(entries["root/lib/modules"].mode)


@pytest.mark.parametrize("entries, message", [
    ([cpio.file_data("/abs", b"")], "relative"),
    ([cpio.file_data("a/../../etc", b"")], "relative"),
    ([cpio.file_data("x", b"1"), cpio.file_data("x", b"2")], "twice"),
    ([cpio.file_data("x", b"1"), cpio.file_data("x/y", b"2")], "not a directory"),
])
def test_refuses_what_the_kernel_would_mangle(entries, message):
    with pytest.raises(ValueError, match=message):
        cpio.write(io.BytesIO(), entries, EPOCH)


def test_the_same_directory_twice_is_one_entry():
    out = io.BytesIO()
    cpio.write(out, [cpio.directory("etc"), cpio.directory("etc"), cpio.file_data("etc/x", b"")], EPOCH)
    assert names(out.getvalue()) == ["etc", "etc/x"]
