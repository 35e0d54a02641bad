"""Operator patches: applied as written, and never able to break an object's identity."""

from __future__ import annotations

import pytest

from stellwerk.components.base import Patch
from stellwerk.components.patches import PatchError, apply_patches, merge_overlay

POOLS = [
    {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "a", "namespace": "m"},
     "spec": {"addresses": ["10.0.0.0/28"]}},
    {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "b", "namespace": "m"},
     "spec": {"addresses": ["10.0.1.0/28"]}},
]


def patch(**fields) -> Patch:
    return Patch.model_validate(fields)


def test_json_patch_and_merge_apply_without_changing_the_input():
    patched = apply_patches(POOLS, [
        patch(target={"kind": "IPAddressPool", "name": "a"}, jsonPatch=[{"op": "add", "path": "/spec/autoAssign", "value": False}]),
        patch(target={"kind": "IPAddressPool", "name": "b"}, merge={"spec": {"avoidBuggyIPs": True}, "metadata": {"labels": {"x": "y"}}}),
    ])
    assert patched[0]["spec"] == {"addresses": ["10.0.0.0/28"], "autoAssign": False}
    assert patched[1]["spec"]["avoidBuggyIPs"] is True and patched[1]["metadata"]["labels"] == {"x": "y"}
    assert "autoAssign" not in POOLS[0]["spec"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"merge": {"metadata": None}}, "no metadata.name"),
    ({"merge": {"metadata": {"name": 5}}}, "no metadata.name"),
    ({"merge": {"kind": 7}}, "no kind"),
    ({"merge": {"apiVersion": None}}, "no apiVersion"),
    ({"jsonPatch": [{"op": "replace", "path": "", "value": {"kind": "X"}}]}, "no apiVersion"),
    ({"merge": {"metadata": {"name": "b"}}}, "like another rendered object"),
    ({"jsonPatch": [{"op": "remove", "path": "/spec/nothere"}]}, "does not apply"),
])
def test_patches_that_would_break_an_object_are_errors(fields, message):
    with pytest.raises(PatchError) as caught:
        apply_patches(POOLS, [patch(target={"kind": "IPAddressPool", "name": "a"}, **fields)])
    assert caught.value.index == 0 and message in caught.value.message


def test_a_patch_must_match_exactly_one_object():
    with pytest.raises(PatchError, match="no rendered object is IPAddressPool 'c'"):
        apply_patches(POOLS, [patch(target={"kind": "IPAddressPool", "name": "c"}, merge={"spec": {}})])
    twins = POOLS + [dict(POOLS[0], metadata={"name": "a", "namespace": "other"})]
    with pytest.raises(PatchError, match="add target.namespace"):
        apply_patches(twins, [patch(target={"kind": "IPAddressPool", "name": "a"}, merge={"spec": {}})])
    assert apply_patches(twins, [patch(target={"kind": "IPAddressPool", "name": "a", "namespace": "other"},
                                       merge={"spec": {"autoAssign": False}})])[2]["spec"]["autoAssign"] is False


def test_merge_overlay_deletes_nulls_even_inside_new_mappings():
    assert merge_overlay({"spec": {"a": 1}}, {"spec": {"a": None, "x": {"b": None, "c": 1}}}) == {"spec": {"x": {"c": 1}}}
    assert merge_overlay({"list": [1, 2]}, {"list": [3]}) == {"list": [3]}


def test_exactly_one_of_json_patch_or_merge():
    with pytest.raises(ValueError, match="exactly one of jsonPatch or merge"):
        patch(target={"kind": "IPAddressPool", "name": "a"})
