"""The cluster file contract: every mistake is reported with file, line, field and fix; exit code 2."""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml

from support.clusters import write_cluster
from support.paths import EXAMPLE

BASE = textwrap.dedent(
    """\
    apiVersion: stellwerk.dev/v1alpha1
    kind: Cluster
    metadata:
      name: t
    spec:
      kubernetes:
        apiEndpoint: api.t.example
      network:
        nodeCIDR: 10.213.0.0/24
        gateway: 10.213.0.1
      controllers:
        - {name: c1, mac: "52:54:00:00:00:11", address: 10.213.0.11}
      workerPools:
        - name: general
          nodes:
            - {name: w1, mac: "52:54:00:00:00:21", address: 10.213.0.21}
      os: {sysextBaseURL: "http://10.213.0.2:8080/assets/sysext"}
    """
)


def problems(run_cli, tmp_path, text: str) -> list[str]:
    path = write_cluster(tmp_path, text)
    result = run_cli("validate", path)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    for line in lines:
        assert line.startswith(f"{path}:"), line
    return [line[len(str(path)) + 1:] for line in lines]


def test_example_and_base_are_valid(run_cli, tmp_path):
    assert run_cli("validate", EXAMPLE).code == 0
    result = run_cli("validate", write_cluster(tmp_path, BASE))
    assert result.code == 0, result.err
    assert "1 controllers, 1 workers" in result.out


def test_snake_case_spellings_are_unknown_keys(run_cli, tmp_path):
    found = problems(run_cli, tmp_path, BASE.replace("    apiEndpoint:", "    api_endpoint:"))
    assert "7: spec.kubernetes.api_endpoint: unknown key 'api_endpoint'; did you mean 'apiEndpoint'?" in found


def test_unknown_key_and_missing_field_both_reported(run_cli, tmp_path):
    text = BASE.replace("    apiEndpoint:", "    apiEndpiont:")
    found = problems(run_cli, tmp_path, text)
    assert "7: spec.kubernetes.apiEndpiont: unknown key 'apiEndpiont'; did you mean 'apiEndpoint'?" in found
    assert "6: spec.kubernetes.apiEndpoint: required field is missing" in found


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('mac: "52:54:00:00:00:21"', 'mac: "52:54:00:00:21"', "16: spec.workerPools[0].nodes[0].mac: '52:54:00:00:21' is not a MAC address"),
        ('mac: "52:54:00:00:00:21"', 'mac: "53:54:00:00:00:21"', "is a multicast address"),
        ("address: 10.213.0.21", "address: 10.213.0.321", "16: spec.workerPools[0].nodes[0].address: '10.213.0.321' is not an IPv4 address"),
        ("nodeCIDR: 10.213.0.0/24", "nodeCIDR: 10.213.0.5/24", "9: spec.network.nodeCIDR: '10.213.0.5/24' has host bits set; did you mean 10.213.0.0/24?"),
        ("nodeCIDR: 10.213.0.0/24", "nodeCIDR: 10.213.0.0", "is not a CIDR"),
        ("name: t\n", "name: T_cluster\n", "4: metadata.name: 'T_cluster' is not a DNS-1123 label"),
        ("{name: w1,", "{name: Worker.1,", "spec.workerPools[0].nodes[0].name: 'Worker.1' is not a DNS-1123 label"),
        ("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n    version: v1.31.4\n",
         "spec.kubernetes.version: 'v1.31.4' is not a Kubernetes version"),
        ("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n    version: 1.12.0\n",
         "Kubernetes 1.12 is not supported by this release"),
        ('  os: {sysextBaseURL: "http', '  os: {version: latest, sysextBaseURL: "http',
         "spec.os.version: 'latest' is not an OS version"),
        ('  os: {sysextBaseURL: "http', '  os: {family: coreos, sysextBaseURL: "http',
         "spec.os.family: 'coreos' is not allowed"),
        ("    gateway: 10.213.0.1\n", "    gateway: 10.213.0.1\n    mtu: many\n", "spec.network.mtu: Input should be a valid integer"),
        ("  controllers:\n", "  controllers: {c1: x}\n  xcontrollers:\n", "spec.controllers: must be a list"),
        ("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n    serviceCIDR: 100.64.0.0/10\n",
         "spec.kubernetes.serviceCIDR: /10 is larger than kube-apiserver accepts"),
        ("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n    podCIDR: 10.2.0.0/25\n",
         "spec.kubernetes.podCIDR: /25 is smaller than one node's pod range"),
        ("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n    podCIDR: 10.2.0.0/24\n",
         "holds 1 per-node /24 pod ranges but the cluster has 2 nodes"),
        ("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n  pki: {caValidity: 99999999999999h}\n",
         "spec.pki.caValidity: '99999999999999h' is longer than 100 years"),
    ],
)
def test_field_errors_are_located(run_cli, tmp_path, old, new, expected):
    assert old in BASE
    found = problems(run_cli, tmp_path, BASE.replace(old, new, 1))
    assert any(expected in line for line in found), found


def test_duplicates_name_the_first_owner(run_cli, tmp_path):
    text = BASE.replace(
        '    - {name: w1, mac: "52:54:00:00:00:21", address: 10.213.0.21}\n',
        '    - {name: w1, mac: "52:54:00:00:00:21", address: 10.213.0.21}\n'
        '        - {name: c1, mac: "52-54-00-00-00-11", address: 10.213.0.11}\n',
    )
    found = problems(run_cli, tmp_path, text)
    assert "17: spec.workerPools[0].nodes[1].name: name c1 is already used by controllers[0]; every node needs its own" in found
    # MACs compare normalized: dashes and case do not make a new MAC.
    assert any("nodes[1].mac: mac 52:54:00:00:00:11 is already used by controllers[0]" in line for line in found)
    assert any("nodes[1].address: address 10.213.0.11 is already used" in line for line in found)


def test_address_outside_node_cidr(run_cli, tmp_path):
    found = problems(run_cli, tmp_path, BASE.replace("address: 10.213.0.21", "address: 10.99.0.21"))
    assert found == ["16: spec.workerPools[0].nodes[0].address: 10.99.0.21 is outside network.nodeCIDR 10.213.0.0/24; use an address in it or widen nodeCIDR"]


def test_overlapping_networks(run_cli, tmp_path):
    text = BASE.replace("    apiEndpoint: api.t.example\n", "    apiEndpoint: api.t.example\n    podCIDR: 10.213.0.0/16\n")
    found = problems(run_cli, tmp_path, text)
    assert any("spec.network.nodeCIDR: network.nodeCIDR 10.213.0.0/24 overlaps kubernetes.podCIDR 10.213.0.0/16" in f for f in found), found
    text = BASE.replace("    gateway: 10.213.0.1\n", "    gateway: 10.213.0.1\n  wireguard: {network: 10.3.0.0/24}\n")
    found = problems(run_cli, tmp_path, text)
    assert any("wireguard.network 10.3.0.0/24 overlaps kubernetes.serviceCIDR 10.3.0.0/16" in f for f in found), found


def test_even_controller_count_explains_quorum(run_cli, tmp_path):
    text = BASE.replace(
        '    - {name: c1, mac: "52:54:00:00:00:11", address: 10.213.0.11}\n',
        '    - {name: c1, mac: "52:54:00:00:00:11", address: 10.213.0.11}\n'
        '    - {name: c2, mac: "52:54:00:00:00:12", address: 10.213.0.12}\n',
    )
    (line,) = problems(run_cli, tmp_path, text)
    assert line.startswith("11: spec.controllers: 2 controllers: etcd needs a majority")
    assert "use 1 or 3 controllers" in line


def test_reserved_labels_and_unknown_snippet_targets(run_cli, tmp_path):
    text = BASE.replace("    - name: general\n", "    - name: general\n      labels: {node-role.kubernetes.io/worker: ''}\n")
    text += "  snippets:\n    nodes: {w9: []}\n    pools: {gpu: []}\n"
    found = problems(run_cli, tmp_path, text)
    assert any("a kubelet may not set 'node-role.kubernetes.io/worker'" in f for f in found), found
    assert any("spec.snippets.nodes.w9: no node is named 'w9'" in f for f in found), found
    assert any("spec.snippets.pools.gpu: no worker pool is named 'gpu'" in f for f in found), found


def test_snippet_with_unsupported_key_is_located_in_the_cluster_file(run_cli, tmp_path):
    text = BASE + (
        "  snippets:\n"
        "    all:\n"
        "      - storage:\n"
        "          files:\n"
        "            - path: /etc/x\n"
        "              contents: {local: x.txt}\n"
    )
    found = problems(run_cli, tmp_path, text)
    assert any(f.startswith("23: spec.snippets.all[0].storage.files[0].contents.local: snippet:") for f in found), found


def test_snippet_file_errors_name_the_snippet_file(run_cli, tmp_path):
    snippet = tmp_path / "bad.bu"
    snippet.write_text("variant: flatcar\nversion: 1.0.0\nsystemd:\n  units:\n    - name: x.service\n      enable: true\n")
    result = run_cli("validate", write_cluster(tmp_path, BASE + "  snippets:\n    all: [bad.bu]\n"))
    assert result.code == 2
    # The problem is in the snippet file, so that file and its line are named.
    assert result.err.startswith(f"{snippet}:6: systemd.units[0].enable: snippet:"), result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a\n- b\n", "the document is a list"),
        ("just a string\n", "the document is a single str value"),
        ("apiVersion: [unclosed\n", "YAML syntax error"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("---\na: 1\n---\nb: 2\n", "YAML syntax error"),
    ],
)
def test_unparseable_documents_get_the_same_clean_treatment(run_cli, tmp_path, text, expected):
    path = write_cluster(tmp_path, text)
    result = run_cli("validate", path)
    assert result.code == 2
    assert "Traceback" not in result.err
    assert result.err.startswith(str(path))
    assert expected in result.err


def test_missing_file_and_bad_arguments_exit_2(run_cli, tmp_path):
    result = run_cli("validate", tmp_path / "nope.yaml")
    assert result.code == 2 and "no such file" in result.err
    result = run_cli("render", EXAMPLE, "--bogus")
    assert result.code == 2 and "No such option" in result.err
    result = run_cli("frobnicate")
    assert result.code == 2 and "No such command" in result.err


def test_all_problems_are_reported_at_once(run_cli, tmp_path):
    text = BASE.replace("name: t\n", "name: T\n").replace('"52:54:00:00:00:21"', '"zz"').replace("10.213.0.11}", "10.213.0.999}")
    found = problems(run_cli, tmp_path, text)
    assert len(found) == 3, found
    assert [int(line.split(":")[0]) for line in found] == sorted(int(line.split(":")[0]) for line in found)


def test_schema_is_json_schema_that_accepts_the_example(run_cli):
    import jsonschema

    result = run_cli("schema")
    assert result.code == 0
    schema = json.loads(result.out)
    jsonschema.Draft202012Validator.check_schema(schema)
    document = yaml.safe_load(EXAMPLE.read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    bad = dict(document, spec=dict(document["spec"], bogus=1))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(bad))


def test_init_writes_a_valid_starter_and_never_overwrites(run_cli, tmp_path):
    for platform in ("lab", "baremetal", "packet"):
        directory = tmp_path / platform
        result = run_cli("init", directory, "--platform", platform)
        assert result.code == 0, result.err
        assert run_cli("validate", directory / "cluster.yaml").code == 0
        before = (directory / "cluster.yaml").read_bytes()
        again = run_cli("init", directory, "--platform", platform)
        assert again.code == 2 and "never overwrites" in again.err
        assert (directory / "cluster.yaml").read_bytes() == before
