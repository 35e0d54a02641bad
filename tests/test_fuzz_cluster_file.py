"""Property-based tests of the `stellwerk validate` contract.

For ANY input bytes, `validate` exits 0 (valid) or 2 (user error), never 1 and
never with a traceback; on exit 2 every stderr line is `FILE:LINE: path: message`
or `FILE: message`, where FILE is the cluster file (or, for problems inside a
referenced snippet file, that file) and LINE is a real line of that file.

Most tests run the real entry point in-process (`run_cli`) so hypothesis can try
many inputs; the resource-exhaustion test runs the installed console script in a
subprocess with a timeout and a memory cap.
"""

from __future__ import annotations

import copy
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, example, given, note, settings
from hypothesis import strategies as st

from support.paths import EXAMPLE

# The console script of the interpreter running the tests (/work/main/.venv/bin/stellwerk in this checkout).
STELLWERK = Path(sys.executable).parent / "stellwerk"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")
EXAMPLE_DOC = yaml.safe_load(EXAMPLE_TEXT)

Loc = tuple[Any, ...]


def fuzz_settings(max_examples: int, shrink: bool = True) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,  # no example database in the repository
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
        # Shrinking a whole mutated cluster file takes longer than the suite's time budget; the mutation
        # log in the failure report says what was changed.
        phases=list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate],
    )


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    # With STELLWERK_DEBUG=1 the CLI re-raises internal errors; the contract is about normal use.
    monkeypatch.delenv("STELLWERK_DEBUG", raising=False)


# --------------------------------------------------------------------------- checking the report


def _line_count(path: Path) -> int:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return max(1, len(data.splitlines()))
    # str.splitlines() knows every break YAML knows (\n, \r, \r\n, \x85, \u2028, \u2029) and a few more,
    # so this is the most generous reading of "the file's line count".
    return max(1, len(text.splitlines()))


_LOCATED = re.compile(r"(\d+): (.+)", re.S)


def check_report(result, cluster: Path) -> list[tuple[str, int | None, str]]:
    """Assert the exit-code / traceback / line-format contract; return (file, line, rest) per stderr line."""
    everything = result.out + result.err
    assert "Traceback" not in everything, f"traceback in output:\n{everything}"
    assert result.code in (0, 2), f"exit {result.code} (expected 0 or 2); stderr:\n{result.err}"
    if result.code == 0:
        return []
    # Split where a terminal or a log reader breaks lines; a raw break inside a message splits it in two.
    lines = [line for line in re.split(r"\r\n|\r|\n", result.err) if line]
    assert lines, "exit 2 with nothing on stderr"
    entries = []
    for raw in lines:
        if raw.startswith(f"{cluster}:"):
            file = str(cluster)
        else:
            # A problem inside a referenced snippet file names that file (the tests only put them next to the cluster file).
            match = re.match(r"([^:]+):", raw)
            file = match.group(1) if match else ""
            snippet_file = bool(file) and Path(file).is_file() and Path(file).resolve().parent == cluster.parent.resolve()
            assert snippet_file, f"stderr line names neither {cluster} nor a snippet file: {raw!r}\nstderr:\n{result.err}"
        tail = raw[len(file) + 1:]
        located = _LOCATED.fullmatch(tail)
        if located:
            line, rest = int(located.group(1)), located.group(2)
            count = _line_count(Path(file))
            assert 1 <= line <= count, f"line {line} is outside {file} ({count} lines): {raw!r}"
        else:
            assert tail.startswith(" ") and tail.strip(), f"stderr line is not 'FILE:LINE: path: message' or 'FILE: message': {raw!r}\nstderr:\n{result.err}"
            line, rest = None, tail[1:]
        entries.append((file, line, rest))
    return entries


def validate_bytes(run_cli, directory: Path, data: bytes, name: str = "cluster.yaml"):
    path = directory / name
    path.write_bytes(data)
    return path, run_cli("validate", path)


# --------------------------------------------------------------------------- documents and locations


def fmt(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def walk(doc: Any, loc: Loc = ()):
    yield loc, doc
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from walk(value, (*loc, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from walk(value, (*loc, index))


def get(doc: Any, loc: Loc) -> Any:
    for part in loc:
        doc = doc[part]
    return doc


def put(doc: Any, loc: Loc, value: Any) -> Any:
    """Set the value at `loc`; returns the (possibly new) root."""
    if not loc:
        return value
    get(doc, loc[:-1])[loc[-1]] = value
    return doc


def node_locs(doc: dict) -> list[Loc]:
    spec = doc["spec"]
    locs: list[Loc] = [("spec", "controllers", i) for i in range(len(spec["controllers"]))]
    for p, pool in enumerate(spec.get("workerPools", [])):
        locs += [("spec", "workerPools", p, "nodes", i) for i in range(len(pool.get("nodes", [])))]
    return locs


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*: ")
_INDEX = re.compile(r"\[\d+\]: ")
# Messages about the document as a whole, or a snippet as a whole, carry no path.
_PATHLESS = ("the document is ", "the file is empty", "YAML ", "snippet: ", "a Butane snippet must be")


def spellings(path: str) -> set[str]:
    """A path as printed: raw, or with line breaks (or everything unprintable) escaped to keep one line."""
    controls_escaped = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), path)
    return {path, controls_escaped, path.encode("unicode_escape").decode("ascii")}


def names_existing_path(rest: str, doc: Any) -> bool:
    """`rest` (after FILE:LINE: ) starts with a path in `doc`, or a direct child (a missing field) of one."""
    if rest.startswith(_PATHLESS):
        return True
    for loc, value in walk(doc):
        for path in spellings(fmt(loc)):
            if path and rest.startswith(path + ": "):
                return True
            if isinstance(value, dict):
                prefix = f"{path}." if path else ""
                if rest.startswith(prefix) and _IDENT.match(rest[len(prefix):]):
                    return True
            if isinstance(value, list) and path and rest.startswith(path) and _INDEX.match(rest[len(path):]):
                return True
    return False


# --------------------------------------------------------------------------- 1. arbitrary bytes

# Fragments that drive the YAML reader, scanner, composer and constructor into their corners.
TOKENS = [
    "[", "]", "{", "}", ": ", ":", ", ", "- ", "-", "? ", "\n", "\r\n", "\r", "  ", "    ",
    "&a ", "&b ", "*a", "*b", "<<: ", "<<", "<<: *a", "<<: [*a, *b]",
    "!!python/object:os.system ", "!!python/name:os.system ", "!!python/object/apply:os.system ",
    "!!binary ", "!!int ", "!!float ", "!!timestamp ", "!!set ", "!!omap ", "!!pairs ",
    "!!str ", "!!map ", "!!seq ", "!!null ", "!!bool ", "!foo ", "!<tag:x,2000:y> ",
    "%TAG ! tag:x,2000:\n", "%YAML 1.1\n", "%YAML 9.9\n", "---\n", "...\n",
    "'", '"', "|\n", ">-\n", "#", "\t", "\x00", "\x07", "\x1b", "\x85", "\u2028", "\ufeff",
    "\\", "\\u12", '"\\ud800"', "apiVersion", "kind", "spec", "metadata", "name", "x", "1",
    "0o17", "0x1G", "1e999", ".nan", "-.inf", "~", "null", "yes", "é", "\U0001f4a5",
    "2001-13-99", "aGVsbG8=", "!!!", "9" * 4400,
]

token_soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


@st.composite
def spliced_example(draw) -> str:
    """The valid example with a fragment inserted, a slice removed or a line repeated."""
    text = EXAMPLE_TEXT
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "repeat"]))
        at = draw(st.integers(0, len(text)))
        if kind == "insert":
            text = text[:at] + draw(token_soup) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        else:
            lines = text.splitlines(keepends=True)
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(index, lines[index])
            text = "".join(lines)
    return text


@st.composite
def deep_nesting(draw) -> str:
    # Coarse depths: shrinking towards the exact recursion limit would make failures flaky.
    depth = draw(st.sampled_from([1, 2, 10, 100, 300, 1000, 1500]))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
    if opener == "- ":
        return "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "x\n"
    return "k: " + opener * depth + "1" + closer * depth + "\n"


@st.composite
def alias_documents(draw) -> str:
    """Anchors, aliases (some recursive) and merge keys in otherwise plausible mappings."""
    anchor_value = draw(st.sampled_from(["{x: 1}", "[1, 2]", "1", "{<<: *a}", "[*a]", "{y: *a}", "&b {z: *b}"]))
    uses = draw(st.lists(st.sampled_from(["*a", "{<<: *a}", "{<<: [*a]}", "{<<: 1}", "[*a, *a]", "{*a : 1}"]), min_size=1, max_size=4))
    return "base: &a " + anchor_value + "\n" + "".join(f"k{i}: {use}\n" for i, use in enumerate(uses))


CORE_TAGS = ["!!int", "!!float", "!!bool", "!!null", "!!str", "!!binary", "!!timestamp", "!!merge", "!!value",
             "!!yaml", "!!set", "!!omap", "!!pairs", "!!map", "!!seq", "!!python/tuple", "!!python/object:os.system",
             "!<tag:yaml.org,2002:int>", "!local", "!"]
SCALAR_BODIES = ["", "x", "_", "-_", "+", "0b", "0x", "0o", "0b2", "0x_", "1_0", ":1", "1:2:3", "190:20:30", ".", "-.",
                 "maybe", "2001-01-01", "2001-13-99", "2001-01-01T25:00:00", "=", "~", "null", "1e999", "é", "'x'", '""',
                 "[]", "{}", "[1]", "{x: 1}", "9" * 4400]


@st.composite
def tagged_values(draw) -> str:
    """An explicit tag on a scalar, key or collection it may not fit."""
    tag = draw(st.sampled_from(CORE_TAGS))
    body = draw(st.one_of(st.sampled_from(SCALAR_BODIES), st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S"]), max_size=8)))
    where = draw(st.sampled_from(["a: {t} {b}\n", "{t} {b}: a\n", "- {t} {b}\n", "a: [{t} {b}]\n", "{t} {b}\n"]))
    return where.format(t=tag, b=body)


any_input = st.one_of(
    tagged_values().map(str.encode),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda s: s.encode("utf-8")),
    token_soup.map(lambda s: s.encode("utf-8")),
    spliced_example().map(lambda s: s.encode("utf-8")),
    deep_nesting().map(str.encode),
    alias_documents().map(str.encode),
    st.integers(1, 200_000).map(lambda n: b"a: " + b"x" * n + b"\n"),
    st.tuples(st.binary(max_size=20), st.integers(0, len(EXAMPLE_TEXT))).map(
        lambda t: EXAMPLE_TEXT.encode()[: t[1]] + t[0] + EXAMPLE_TEXT.encode()[t[1]:]
    ),
)


# Inputs that are known to probe distinct failure modes; each must still honour the contract.
HOSTILE = {
    "invalid-utf8": b"apiVersion: \xff\xfe\n",
    "nul-byte": b"apiVersion: a\x00b\n",
    "control-char": b"kind: \x07\n",
    "bom": b"\xef\xbb\xbfkind: Cluster\n",
    "nested-seq-1000": b"[" * 1000 + b"]" * 1000,
    "nested-map-1000": b"{a: " * 1000 + b"1" + b"}" * 1000,
    "recursive-alias-seq": b"a: &a [*a]\n",
    "recursive-alias-map": b"a: &a {b: *a}\n",
    "merge-of-scalar": b"a: {<<: 1}\n",
    "merge-of-list-of-scalar": b"a: {<<: [1]}\n",
    "merge-ok": b"b: &b {x: 1}\na: {<<: *b}\n",
    "unhashable-key-in-key": b"? {[a]: 1}\n: x\n",
    "python-tag-on-key": b"!!python/object:os.system x: 1\n",
    "python-tag-on-value": b"kind: !!python/object/apply:os.system [echo]\n",
    "binary-value": b"apiVersion: !!binary aGVsbG8=\n",
    "bad-explicit-int": b"a: !!int xyz\n",
    "bad-explicit-timestamp": b"a: !!timestamp 2001-13-99\n",
    "unparseable-explicit-timestamp": b"a: !!timestamp x\n",
    "empty-explicit-int": b"a: !!int\n",
    "empty-explicit-float": b"a: !!float\n",
    "explicit-bool-of-junk": b"a: !!bool maybe\n",
    "explicit-null-of-junk": b"a: !!null x\n",
    "explicit-str-on-mapping": b"a: !!str {x: 1}\n",
    "explicit-map-on-scalar": b"a: !!map x\n",
    "explicit-seq-on-scalar": b"a: !!seq x\n",
    "bad-omap": b"a: !!omap [1, 2]\n",
    "bad-set": b"a: !!set [1]\n",
    "int-over-4300-digits": b"a: " + b"9" * 5000 + b"\n",
    "newline-in-key": b'"a\\nb": 1\n',
    "unclosed-flow-at-eof": b"a: [1, 2\n",
    "unclosed-quote-at-eof": b"a: 'x\n\n",
    "two-documents": b"a: 1\n---\nb: 2\n",
    "very-long-line": b"a: " + b"x" * 1_000_000 + b"\n",
    "empty": b"",
    "only-comment": b"# nothing\n",
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_inputs_are_user_errors(run_cli, tmp_path, data):
    path, result = validate_bytes(run_cli, tmp_path, data)
    check_report(result, path)


@fuzz_settings(500)
@given(data=any_input)
def test_any_bytes_exit_0_or_2_with_located_messages(run_cli, tmp_path, data):
    path, result = validate_bytes(run_cli, tmp_path, data)
    note(f"stderr:\n{result.err}")
    check_report(result, path)


# --------------------------------------------------------------------------- 2. structural mutations

ODD_STRINGS = [
    "", " ", "\t", "\x00", "a\nb", "\r", "\x1b[31m", "\u2028", "\ufeff", "é", "İ", "\U0001f4a5",
    "52:54:00:00:00:11", "52-54-00-00-00-11", "53:54:00:00:00:11", "10.213.0.300", "10.213.0.0/33",
    "10.213.0.5/24", "/dev/", "/dev/ sda", "1.99.0", "v1.31.4", "0h", "-1h", "99999999999999999999h",
    "yes", "~", "null", "<<", "current", "NoExecute", "ssh-ed25519 AAAA", ".", "..", "extra.bu",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.sampled_from(ODD_STRINGS),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)
# One strategy per YAML type, to replace a value with one of a different type.
BY_TYPE = {
    type(None): st.none(),
    bool: st.booleans(),
    int: st.integers(),
    float: st.floats(),
    str: st.one_of(st.text(max_size=20), st.sampled_from(ODD_STRINGS)),
    list: st.lists(scalars, max_size=3),
    dict: st.dictionaries(st.text(max_size=8), scalars, max_size=3),
}
out_of_range = st.one_of(
    st.integers(),
    st.sampled_from([-1, 0, 1279, 9217, 65536, 2**31, 2**63, -(2**63) - 1, 10**100, 0o7777]),
    st.floats(allow_nan=True, allow_infinity=True),
)
odd_text = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Mn"]), min_size=1, max_size=10),
)

BUTANE = "storage:\n  files:\n    - path: /etc/x\n      mode: 0644\n      contents:\n        inline: hi\n"


def typo(draw, key: str) -> str:
    kind = draw(st.sampled_from(["drop", "insert", "swap", "case", "snake", "space"]))
    i = draw(st.integers(0, max(0, len(key) - 1)))
    if kind == "drop" and key:
        return key[:i] + key[i + 1:]
    if kind == "insert":
        return key[:i] + draw(st.sampled_from("aeiouxz_-.")) + key[i:]
    if kind == "swap" and len(key) > 1:
        j = min(i + 1, len(key) - 1)
        return key[:min(i, j)] + key[j] + key[i] + key[j + 1:] if i != j else key[::-1]
    if kind == "case":
        return key.swapcase()
    if kind == "snake":
        return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
    return key + " "


@st.composite
def mutated_documents(draw) -> tuple[Any, str | None, list[str]]:
    """(document, snippet file text or None, log of mutations) from the example."""
    doc: Any = copy.deepcopy(EXAMPLE_DOC)
    snippet_text: str | None = None
    log: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        everything = list(walk(doc))
        kind = draw(st.sampled_from(
            ["delete", "replace", "rename", "duplicate", "unknown-key", "number", "string", "snippet-file"]
        ))
        if kind == "delete":
            candidates = [loc for loc, _ in everything if loc]
            if not candidates:
                continue
            loc = draw(st.sampled_from(candidates))
            del get(doc, loc[:-1])[loc[-1]]
        elif kind == "replace":
            loc, old = draw(st.sampled_from(everything))
            new = draw(st.one_of([strategy for t, strategy in BY_TYPE.items() if not isinstance(old, t)]))
            doc = put(doc, loc, new)
        elif kind == "rename":
            candidates = [loc for loc, _ in everything if loc and isinstance(loc[-1], str)]
            if not candidates:
                continue
            loc = draw(st.sampled_from(candidates))
            parent, old_key = get(doc, loc[:-1]), loc[-1]
            new_key = typo(draw, old_key)
            if new_key == old_key or new_key in parent:
                continue
            put(doc, loc[:-1], {(new_key if k == old_key else k): v for k, v in parent.items()})
            log.append(f"rename {fmt(loc)} -> {new_key!r}")
            continue
        elif kind == "duplicate":
            candidates = [loc for loc, value in everything if isinstance(value, list) and value]
            if not candidates:
                continue
            loc = draw(st.sampled_from(candidates))
            items = get(doc, loc)
            items.insert(draw(st.integers(0, len(items))), copy.deepcopy(draw(st.sampled_from(items))))
        elif kind == "unknown-key":
            candidates = [loc for loc, value in everything if isinstance(value, dict)]
            if not candidates:
                continue
            loc = draw(st.sampled_from(candidates))
            key = draw(st.text(min_size=1, max_size=12))
            get(doc, loc).setdefault(key, draw(values))
            log.append(f"unknown key {key!r} at {fmt(loc)!r}")
            continue
        elif kind == "number":
            candidates = [loc for loc, value in everything if isinstance(value, int) and not isinstance(value, bool)]
            loc = draw(st.sampled_from(candidates or [loc for loc, _ in everything]))
            doc = put(doc, loc, draw(out_of_range))
        elif kind == "string":
            candidates = [loc for loc, value in everything if isinstance(value, str)]
            if not candidates:
                continue
            loc = draw(st.sampled_from(candidates))
            old = get(doc, loc)
            at = draw(st.integers(0, len(old)))
            doc = put(doc, loc, draw(st.sampled_from([
                old[:at] + draw(odd_text) + old[at:], draw(odd_text), old.upper(), f" {old} ",
            ])))
        else:  # point a snippet at a file next to the cluster file, with good or bad Butane in it
            snippet_text = draw(st.one_of(st.just(BUTANE), token_soup, st.text(max_size=60),
                                          st.just(BUTANE.replace("0644", '"0644"'))))
            try:
                doc["spec"]["snippets"].setdefault("all", []).append("extra.bu")
            except (KeyError, TypeError, AttributeError):
                continue
        log.append(f"{kind} {fmt(loc) if kind not in ('snippet-file',) else 'extra.bu'}")
    return doc, snippet_text, log


def test_unmutated_example_round_trips_as_valid(run_cli, tmp_path):
    # The baseline the mutation tests start from: safe_dump of the example is itself a valid file.
    path, result = validate_bytes(run_cli, tmp_path, yaml.safe_dump(EXAMPLE_DOC, sort_keys=False).encode("utf-8"))
    assert result.code == 0, result.err


@fuzz_settings(400, shrink=False)
@given(case=mutated_documents(), allow_unicode=st.booleans())
def test_mutated_example_exits_0_or_2_naming_real_paths(run_cli, tmp_path, case, allow_unicode):
    doc, snippet_text, log = case
    note("mutations: " + "; ".join(log))
    snippet = tmp_path / "extra.bu"
    if snippet_text is None:
        snippet.unlink(missing_ok=True)
    else:
        snippet.write_text(snippet_text, encoding="utf-8")
    text = yaml.safe_dump(doc, allow_unicode=allow_unicode, sort_keys=False)
    note(f"document:\n{text}")
    path, result = validate_bytes(run_cli, tmp_path, text.encode("utf-8"))
    note(f"stderr:\n{result.err}")
    # Paths are judged against the document as a YAML reader sees the written text (PyYAML's dumper
    # can write characters, e.g. U+0085 inside quotes, that its reader folds to a space).
    written = yaml.safe_load(text)
    for file, line, rest in check_report(result, path):
        if file != str(path):
            continue  # paths inside a snippet file are relative to that file
        assert line is None or names_existing_path(rest, written), (
            f"message names no path of the mutated document (nor a missing child of one): {file}:{line}: {rest}"
        )


# --------------------------------------------------------------------------- 3. specific properties


def _all_model_keys() -> set[str]:
    from pydantic import BaseModel

    from stellwerk import spec

    names: set[str] = set()
    for obj in vars(spec).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel:
            for name, field in obj.model_fields.items():
                names |= {name, field.alias or name}
    return names


BUTANE_KEYS = {
    "variant", "version", "storage", "systemd", "passwd", "files", "directories", "links", "path", "overwrite",
    "user", "group", "contents", "append", "mode", "inline", "source", "compression", "verification", "hash",
    "id", "name", "units", "enabled", "mask", "dropins", "users", "groups", "ssh_authorized_keys",
    "password_hash", "uid", "gecos", "home_dir", "no_create_home", "primary_group", "no_user_group", "shell",
    "system", "gid", "target", "hard",
}
NODE_AND_POOL_NAMES = {"c1", "c2", "c3", "w1", "general"}
KNOWN_KEYS = _all_model_keys() | BUTANE_KEYS | NODE_AND_POOL_NAMES
# Every mapping of the example whose keys are fixed (free-form label maps take any valid label).
STRICT_MAPPINGS = [loc for loc, value in walk(EXAMPLE_DOC) if isinstance(value, dict) and "labels" not in loc]


@fuzz_settings(150)
@example(where=(), key="a\nb", value=1)  # a raw line break in a path would split the message line
@example(where=("spec", "snippets", "all", 0), key="A.", value=None)  # Butane key paths are strings split on '.'
@example(where=("spec", "snippets", "all", 0, "storage", "files", 0), key="x[0]y", value=None)
@example(where=("spec", "snippets", "nodes"), key="\x1f\xa0", value=None)  # a control escaped, a printable kept
@given(
    where=st.sampled_from(STRICT_MAPPINGS),
    key=st.one_of(st.from_regex(r"[a-zA-Z][a-zA-Z0-9_.-]{0,15}", fullmatch=True), st.text(min_size=1, max_size=12)),
    value=values,
)
def test_one_unknown_key_anywhere_is_reported_by_name(run_cli, tmp_path, where, key, value):
    assume(key not in KNOWN_KEYS)
    doc = copy.deepcopy(EXAMPLE_DOC)
    get(doc, where)[key] = value
    path, result = validate_bytes(run_cli, tmp_path, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
    note(f"stderr:\n{result.err}")
    assert result.code == 2, f"unknown key {key!r} at {fmt(where)!r} accepted (exit {result.code})\n{result.err}"
    # Named as written, quoted, or with control characters escaped (a raw one would break the message line).
    assert repr(key) in result.err or any(spelling in result.err for spelling in spellings(key)), \
        f"unknown key {key!r} not named:\n{result.err}"
    check_report(result, path)


def spell(mac: str, style: str) -> str:
    octets = mac.split(":")
    return {
        "same": mac,
        "upper": ":".join(octets).upper(),
        "dashes": "-".join(octets),
        "dashes-upper": "-".join(octets).upper(),
        "bare": "".join(octets),
        "bare-upper": "".join(octets).upper(),
        "mixed-case": ":".join(o[0].upper() + o[1] for o in octets),
        "padded": f"  {mac}\t",
    }[style]


SPELLINGS = ["same", "upper", "dashes", "dashes-upper", "bare", "bare-upper", "mixed-case", "padded"]
EXAMPLE_NODES = node_locs(EXAMPLE_DOC)


@fuzz_settings(60)
@given(
    pair=st.lists(st.sampled_from(EXAMPLE_NODES), min_size=2, max_size=2, unique=True),
    styles=st.lists(st.sampled_from(SPELLINGS), min_size=2, max_size=2),
)
def test_swapping_two_macs_keeps_the_file_valid(run_cli, tmp_path, pair, styles):
    doc = copy.deepcopy(EXAMPLE_DOC)
    a, b = (get(doc, loc) for loc in pair)
    a["mac"], b["mac"] = spell(b["mac"], styles[0]), spell(a["mac"], styles[1])
    path, result = validate_bytes(run_cli, tmp_path, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
    assert result.code == 0, result.err
    assert "valid (3 controllers, 1 workers)" in result.out


@fuzz_settings(60)
@given(
    pair=st.lists(st.sampled_from(EXAMPLE_NODES), min_size=2, max_size=2, unique=True),
    style=st.sampled_from([s for s in SPELLINGS if s != "same"]),
)
def test_same_mac_spelled_differently_is_already_used(run_cli, tmp_path, pair, style):
    doc = copy.deepcopy(EXAMPLE_DOC)
    first, second = (get(doc, loc) for loc in pair)
    second["mac"] = spell(first["mac"], style)
    path, result = validate_bytes(run_cli, tmp_path, yaml.safe_dump(doc, sort_keys=False).encode("utf-8"))
    assert result.code == 2, f"{first['mac']!r} and {second['mac']!r} both accepted"
    entries = check_report(result, path)
    used = [rest for _, _, rest in entries if "already used" in rest]
    assert used, result.err
    later = max(pair, key=lambda loc: EXAMPLE_NODES.index(loc))
    assert any(rest.startswith(f"{fmt(later)}.mac: ") for rest in used), result.err


# --------------------------------------------------------------------------- 4. resource exhaustion

MEGABYTE = 1 << 20


def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def repeated_aliases() -> str:
    head = 'base: &b {x: [1, 2, 3], y: "lol"}\nmany: ['
    count = (MEGABYTE - len(head)) // 4
    return head + ", ".join(["*b"] * count) + "]\n"


def merge_key_bomb() -> str:
    # Each level merges the previous one twice: 2**40 merged keys from a 1 KB file.
    lines = ["a0: &a0 {x: 1}"] + [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 41)]
    return "\n".join(lines) + "\n"


HUGE = {
    "nested-flow-seq-1MB": lambda: "[" * (MEGABYTE // 2) + "]" * (MEGABYTE // 2),
    "nested-flow-map-1MB": lambda: "{a: " * (MEGABYTE // 5) + "1" + "}" * (MEGABYTE // 5),
    "repeated-aliases-1MB": repeated_aliases,
    "billion-laughs": billion_laughs,
    "merge-key-bomb": merge_key_bomb,
}


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


HANG_SECONDS = 180


@pytest.mark.parametrize("make", HUGE.values(), ids=HUGE.keys())
def test_loader_ends_within_its_memory_on_hostile_yaml(tmp_path, make):
    assert STELLWERK.is_file(), f"{STELLWERK} is missing; install the package into this interpreter's environment"
    path = tmp_path / "cluster.yaml"
    path.write_text(make(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "STELLWERK_DEBUG"}
    # The memory limit catches an expansion; the time bound only a hang, so it is generous: a loaded machine must
    # not fail this (how fast the loader is belongs in a benchmark, not a test).
    try:
        proc = subprocess.run(
            [str(STELLWERK), "validate", str(path)], capture_output=True, text=True, timeout=HANG_SECONDS,
            env=env, preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"stellwerk validate did not finish within {HANG_SECONDS} s on {path.stat().st_size} bytes")
    assert "Traceback" not in proc.stderr
    died = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
    assert proc.returncode in (0, 2), f"exit {proc.returncode}{died}; stderr:\n{proc.stderr[:2000]}"
    for line in proc.stderr.splitlines():
        assert line.startswith(f"{path}:"), line
