"""Every registered component keeps the contract of components/__init__.py, under one name everywhere."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from stellwerk.components import BY_KEY, MODULES
from stellwerk.components.base import ComponentOptions
from stellwerk.spec import Components, component_field

REPO = Path(__file__).resolve().parent.parent
REQUIRED = {"upstream": ["options"], "check": ["cluster", "options"], "manifests": ["plan", "options"],
            "node_fragments": ["plan", "options", "node"]}
OPTIONAL = {"claims": ["cluster", "options"], "adjust_upstream": ["name", "documents", "plan", "options"]}


@pytest.fixture(params=[module.KEY for module in MODULES])
def component(request):
    return BY_KEY[request.param]


def test_one_name_for_file_key_spec_field_docs_and_tests(component):
    snake = component_field(component)
    assert component.__name__ == f"stellwerk.components.{snake}"
    assert Components.model_fields[snake].alias == component.KEY
    assert (REPO / "docs" / "components" / f"{component.KEY}.md").is_file()
    assert (REPO / "tests" / f"test_component_{snake}.py").is_file()


def test_the_hooks_are_there_with_the_contracts_parameters(component):
    assert issubclass(component.Options, ComponentOptions)
    for name, parameters in REQUIRED.items():
        assert list(inspect.signature(getattr(component, name)).parameters) == parameters, name
    for name, parameters in OPTIONAL.items():
        if hasattr(component, name):
            assert list(inspect.signature(getattr(component, name)).parameters) == parameters, name


def test_the_contract_names_every_hook_a_component_has():
    documented = (REPO / "components" / "__init__.py").read_text()
    for name in (*REQUIRED, *OPTIONAL):
        assert f"    {name}(" in documented
