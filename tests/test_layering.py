"""The package's layers hold: no import goes up a layer, and no two units of a layer import each other in a cycle.

The checker reads the source (every import, also those inside functions), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import layering
from support.layering import Import, LAYERS, describe, imports, layer_of, module_names, unit_cycles, upward

ROOT = Path(__file__).resolve().parent.parent

# Upward imports not yet removed, each (importer, imported). The list only shrinks: a new upward import fails the
# test, and so does one listed here that no longer exists. What removes them: each component's options models (and
# the cross-field checks on them) in a module of their own, which the spec and validation can import without the
# component's manifests and fragments.
KNOWN_UPWARD = {
    ("stellwerk.spec", "stellwerk.components"),
    ("stellwerk.validation", "stellwerk.components"),
    ("stellwerk.validation", "stellwerk.components.claims"),
}


@pytest.fixture(scope="module")
def found() -> list[Import]:
    return imports(ROOT, module_names(ROOT))


def test_every_module_is_in_a_layer():
    for module in module_names(ROOT):
        layer_of(module)  # raises, naming the module, when no layer claims it


def test_no_import_goes_up_a_layer(found):
    going_up = upward(found)
    new = [describe(i) for i in going_up if (i.importer, i.imported) not in KNOWN_UPWARD]
    assert not new, "imports from a lower layer of a higher one:\n" + "\n".join(new)
    gone = KNOWN_UPWARD - {(i.importer, i.imported) for i in going_up}
    assert not gone, f"no longer imported, remove from KNOWN_UPWARD: {sorted(gone)}"


def test_no_cycle_between_units_once_the_known_upward_imports_are_gone(found):
    modules = module_names(ROOT)
    rest = [i for i in found if (i.importer, i.imported) not in KNOWN_UPWARD]
    assert unit_cycles(rest, modules, ROOT) == []


def test_the_base_layer_imports_only_itself(found):
    base = [i for i in found if layer_of(i.importer) == 0 and layer_of(i.imported) != 0]
    assert base == []


# ----------------------------------------------------------------------------- the checker itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in layering.FOLDERS:
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "__init__.py").touch()
    return root


def test_the_checker_finds_an_upward_import_even_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "distro/base/__init__.py": "",
        "distro/base/errors.py": "def later():\n    from ..render import render\n",
        "distro/render.py": "from .base.errors import later\n",
    })
    found = imports(root, module_names(root))
    assert [(i.importer, i.imported, i.file, i.line) for i in upward(found)] == [
        ("stellwerk.base.errors", "stellwerk.render", "distro/base/errors.py", 2)]
    assert "(base) imports stellwerk.render (assets)" in describe(upward(found)[0])


def test_the_checker_finds_a_cycle_between_two_units_of_one_layer(tmp_path):
    root = _tree(tmp_path, {
        "netboot/machines.py": "from stellwerk.lab.state import load\n",
        "lab/state.py": "import stellwerk.netboot.machines\n",
        "images/cpio.py": "from stellwerk.netboot import machines\n",  # one way only: no cycle
    })
    modules = module_names(root)
    found = imports(root, modules)
    assert upward(found) == []  # both are consumers: the order alone does not catch it
    consumers = next(index for index, (name, _) in enumerate(LAYERS) if name == "consumers")
    assert unit_cycles(found, modules, root) == [[("lab", consumers), ("netboot", consumers)]]


def test_the_cli_may_import_anything_and_is_left_out_of_cycles(tmp_path):
    root = _tree(tmp_path, {
        "distro/cli.py": "from .lab import cli\n",
        "lab/cli.py": "from stellwerk import cli\nfrom stellwerk.lab import lifecycle\n",
        "lab/lifecycle.py": "",
    })
    modules = module_names(root)
    found = imports(root, modules)
    assert upward(found) == [] and unit_cycles(found, modules, root) == []


def test_a_module_in_no_layer_is_named(tmp_path):
    with pytest.raises(KeyError, match="stellwerk.newstage is in no layer"):
        layer_of("stellwerk.newstage")
    assert layer_of("stellwerk") == 0 and layer_of("stellwerk.lab.cli") == len(LAYERS) - 1
