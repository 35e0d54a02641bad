"""The plan stage on its own: Cluster in, Plan out, a pure function."""

from __future__ import annotations

import ipaddress

from stellwerk.load import parse_cluster
from stellwerk.plan import POOL_LABEL, make_plan
from stellwerk.spec import CONTROL_PLANE_TAINT
from support.paths import BASE_EXAMPLE_TEXT, EXAMPLE, REPO


def plan_of(text: str):
    cluster, _ = parse_cluster(text, "cluster.yaml")
    return make_plan(cluster, REPO / "examples")


def test_controllers_come_first_then_each_pools_nodes_in_file_order():
    plan = plan_of(EXAMPLE.read_text())
    assert [(n.name, n.role, n.pool) for n in plan.nodes] == [
        ("c1", "controller", None), ("c2", "controller", None), ("c3", "controller", None),
        ("w1", "worker", "general")]
    assert [n.name for n in plan.controllers] == ["c1", "c2", "c3"] and [n.name for n in plan.workers] == ["w1"]
    assert plan.node("w1").address == ipaddress.IPv4Address("10.213.0.21") and plan.node("w1").prefix_length == 24


def test_roles_give_taints_and_pools_give_labels():
    plan = plan_of(EXAMPLE.read_text())
    assert all(node.taints == (CONTROL_PLANE_TAINT,) for node in plan.controllers)
    w1 = dict(plan.node("w1").labels)
    assert w1[POOL_LABEL] == "general" and w1["node.example.com/tier"] == "general"
    assert plan.node("w1").taints == ()


def test_service_addresses_and_the_api_url_follow_the_spec():
    plan = plan_of(EXAMPLE.read_text())
    assert str(plan.api_service_ip) == "10.3.0.1" and str(plan.dns_service_ip) == "10.3.0.10"
    assert plan.api_server_url == "https://api.lab.example:6443"
    ipv6 = plan_of(EXAMPLE.read_text().replace("apiEndpoint: api.lab.example", "apiEndpoint: \"fd00::10\""))
    assert ipv6.api_server_url == "https://[fd00::10]:6443"


def test_mesh_addresses_are_distinct_and_inside_the_wireguard_network():
    plan = plan_of(EXAMPLE.read_text())
    network = ipaddress.IPv4Network("10.250.0.0/24")
    addresses = [node.mesh_address for node in plan.nodes]
    assert all(address in network for address in addresses) and len(set(addresses)) == len(addresses)
    off = plan_of(EXAMPLE.read_text().replace("    enabled: true\n    port: 51871", "    enabled: false\n    port: 51871"))
    assert all(node.mesh_address is None for node in off.nodes)


def test_the_plan_asks_no_component_and_the_components_say_what_each_node_needs():
    from stellwerk.components import enabled, node_fragments

    plan = plan_of(EXAMPLE.read_text())
    assert [component.key for component, _ in enabled(plan.cluster)] == ["nvme", "hostProtection"]
    for node in plan.nodes:
        assert [fragment.component for fragment in node_fragments(plan, node)][:1] == ["nvme"]
    bare = plan_of(BASE_EXAMPLE_TEXT)
    assert enabled(bare.cluster) == [] and all(node_fragments(bare, node) == () for node in bare.nodes)


def test_snippets_reach_the_nodes_they_name_in_merge_order():
    text = EXAMPLE.read_text().replace("    nodes: {}\n", "    nodes:\n      w1:\n        - storage: {files: [{path: /etc/w1-only}]}\n")
    assert "/etc/w1-only" in text
    plan = plan_of(text)
    w1 = [location for location, _ in plan.node("w1").snippets]
    c1 = [location for location, _ in plan.node("c1").snippets]
    assert w1[-1] == ("spec", "snippets", "nodes", "w1", 0) and w1[:-1] == c1  # all first, the node's own last
    assert not any(location[:3] == ("spec", "snippets", "nodes") for location in c1)


def test_the_plan_is_a_function_of_the_cluster():
    assert plan_of(EXAMPLE.read_text()) == plan_of(EXAMPLE.read_text())
