"""A wheel holds every subpackage: pyproject.toml lists them by hand, and a missing one only breaks a non-editable
install (the editable one finds it anyway), so nothing else would notice."""

from __future__ import annotations

import tomllib

from support.layering import FOLDERS
from support.paths import REPO


def test_every_package_folder_is_listed_in_pyproject():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
    found = set()
    for folder, package in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *parts)))
    assert set(setuptools["packages"]) == found
