"""Every registered component keeps the contract of components/__init__.py, under one name everywhere."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from stellwerk.components import BY_KEY, COMPONENTS
from stellwerk.components.base import Component, ComponentOptions
from stellwerk.spec import Components

REPO = Path(__file__).resolve().parent.parent
REQUIRED = {"upstream": ["options"], "check": ["cluster", "options"], "manifests": ["plan", "options"],
            "node_fragments": ["plan", "options", "node"]}
OPTIONAL = {"claims": ["cluster", "options"]}


@pytest.fixture(params=[component.key for component in COMPONENTS])
def component(request) -> Component:
    return BY_KEY[request.param]


def test_one_name_for_file_key_spec_field_docs_and_tests(component):
    assert component.manifests.__module__ == f"stellwerk.components.{component.field}"
    assert Components.model_fields[component.field].alias == component.key
    assert (REPO / "docs" / "components" / f"{component.key}.md").is_file()
    assert (REPO / "tests" / f"test_component_{component.field}.py").is_file()


def test_the_hooks_are_there_with_the_contracts_parameters(component):
    assert issubclass(component.options, ComponentOptions)
    for name, parameters in REQUIRED.items():
        assert list(inspect.signature(getattr(component, name)).parameters) == parameters, name
    for name, parameters in OPTIONAL.items():
        if getattr(component, name) is not None:
            assert list(inspect.signature(getattr(component, name)).parameters) == parameters, name


def test_a_module_that_breaks_the_contract_is_refused_with_what_it_lacks():
    import types

    lacking = types.ModuleType("stellwerk.components.kube_vip")
    lacking.KEY = "kubeVip"
    lacking.check = lambda cluster, options: ()
    with pytest.raises(TypeError, match=r"kube_vip lacks upstream, manifests, node_fragments, Options"):
        Component.of(lacking)
    misnamed = types.ModuleType("stellwerk.components.vip")
    misnamed.__dict__.update(lacking.__dict__, __name__="stellwerk.components.vip", Options=ComponentOptions,
                             upstream=lambda options: (), manifests=lambda plan, options: [],
                             node_fragments=lambda plan, options, node: None)
    with pytest.raises(TypeError, match=r"name the module kube_vip.py"):
        Component.of(misnamed)


def test_the_contract_names_every_hook_a_component_has():
    documented = (REPO / "components" / "__init__.py").read_text()
    for name in (*REQUIRED, *OPTIONAL):
        assert f"    {name}(" in documented
    assert [component.key for component in COMPONENTS] == ["nvme", "hostProtection", "metallb", "rookCeph", "openebs"]
