"""The cross-field rules on their own: check_cluster on a parsed cluster, each problem at its line and path.

tests/test_validation.py runs the same rules through `stellwerk validate`, as a user does."""

from __future__ import annotations

from stellwerk.load import parse_cluster
from stellwerk.validation import check_cluster
from support.clusters import line_of
from support.paths import BASE_EXAMPLE_TEXT, EXAMPLE, REPO


def problems_of(text: str) -> list[str]:
    cluster, source = parse_cluster(text, "cluster.yaml")
    return [str(problem) for problem in check_cluster(cluster, source, REPO / "examples")]


def test_the_examples_break_no_rule():
    assert problems_of(EXAMPLE.read_text()) == [] and problems_of(BASE_EXAMPLE_TEXT) == []


def test_a_mac_used_twice_is_reported_at_the_second_use():
    text = EXAMPLE.read_text().replace('mac: "52:54:00:00:00:21"', 'mac: "52:54:00:00:00:12"')
    assert problems_of(text) == [
        f"cluster.yaml:{line_of(text, 'name: w1')}: spec.workerPools[0].nodes[0].mac: mac 52:54:00:00:00:12 is "
        "already used by controllers[1]; every node needs its own"]


def test_an_even_number_of_controllers_is_refused_with_the_counts_that_work():
    text = EXAMPLE.read_text().replace(
        '    - {name: c3, mac: "52:54:00:00:00:13", address: 10.213.0.13, installDisk: /dev/nvme0n1}\n', "")
    found = problems_of(text)
    assert len(found) == 1 and found[0].startswith(f"cluster.yaml:{line_of(text, 'controllers:')}: spec.controllers: ")
    assert found[0].endswith("use 1 or 3 controllers")


def test_an_address_outside_the_node_network_names_the_network():
    text = EXAMPLE.read_text().replace("address: 10.213.0.21", "address: 10.99.0.21")
    assert problems_of(text) == [
        f"cluster.yaml:{line_of(text, 'name: w1')}: spec.workerPools[0].nodes[0].address: 10.99.0.21 is outside "
        "network.nodeCIDR 10.213.0.0/24; use an address in it or widen nodeCIDR"]


def test_every_problem_is_reported_at_once():
    text = (EXAMPLE.read_text().replace('mac: "52:54:00:00:00:21"', 'mac: "52:54:00:00:00:12"')
            .replace("address: 10.213.0.13", "address: 10.99.0.13"))
    found = problems_of(text)
    assert len(found) == 2 and any(".mac: " in p for p in found) and any(".address: " in p for p in found)
