"""The metallb component through the real CLI: upstream CRD schemas, the real Ignition, real bash, jq and curl."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from support.clusters import line_of, write_cluster
from support.paths import BASE_EXAMPLE_TEXT
from support.tools import require_tool
from support.webserver import static_http
from support.ignition_engine import apply, require_engine, validate
from support.k8s_schemas import validate_object

KUBERNETES_VERSION = "1.31.4"
SCRIPT = "opt/stellwerk/bin/metallb-peer-discovery"
UNIT = "etc/systemd/system/stellwerk-metallb-peers.service"
TIMER = "etc/systemd/system/stellwerk-metallb-peers.timer"

LAYER2 = """\
addressPools:
  - name: lan
    addresses: ["10.213.0.200-10.213.0.220"]
  - name: routed
    addresses: [192.0.2.0/28]
    autoAssign: false
"""

BGP = """\
mode: bgp
addressPools:
  - name: public
    addresses: [192.0.2.0/28, "198.51.100.10 - 198.51.100.20"]
bgp:
  myASN: 65000
  peers:
    - {address: 10.213.0.1, asn: 64512, password: "md5-s3cret", holdTime: 1m30s}
    - {address: 10.213.0.2, asn: 64513, passwordSecret: router-b, nodeSelector: {node.example.com/tier: general}}
"""

DISCOVERY = """\
mode: bgp
addressPools:
  - name: elastic
    addresses: [147.75.80.0/30]
bgp:
  myASN: 65000
  packetPeerDiscovery: {metadataURL: "%s"}
  bfdProfile: {receiveInterval: 250, transmitInterval: 250}
"""

# Equinix Metal's metadata document, trimmed to what the discovery script reads (and a little it must ignore).
METADATA = {
    "id": "5a1f3c7e-0000-4000-8000-000000000001",
    "hostname": "w1",
    "network": {
        "addresses": [
            {"address_family": 4, "public": True, "address": "147.75.1.10", "gateway": "147.75.1.9", "cidr": 31},
            {"address_family": 6, "public": True, "address": "2604:1380:1::3", "gateway": "2604:1380:1::2", "cidr": 127},
            {"address_family": 4, "public": False, "address": "10.67.50.3", "gateway": "10.67.50.2", "cidr": 31},
        ],
    },
    "bgp_neighbors": [
        {"address_family": 4, "customer_as": 65000, "customer_ip": "10.67.50.3", "md5_enabled": False,
         "md5_password": None, "multihop": True, "peer_as": 65530, "peer_ips": ["169.254.255.1", "169.254.255.2"],
         "routes_in": [{"route": "147.75.80.0/30", "exact": False}], "routes_out": []},
        {"address_family": 6, "customer_as": 65000, "customer_ip": "2604:1380:1::3", "md5_enabled": False,
         "md5_password": None, "multihop": True, "peer_as": 65530, "peer_ips": ["fc00::e", "fc00::f"],
         "routes_in": [], "routes_out": []},
    ],
}


def cluster_text(options: str, example: str | None = None) -> str:
    text = example if example is not None else BASE_EXAMPLE_TEXT
    return text + "  components:\n    metallb:\n" + textwrap.indent(options, "      ")



@pytest.fixture(autouse=True)
def empty_upstream_cache(tmp_path, monkeypatch):
    # Render leaves the pinned upstream manifest out (with a note) when it is not cached: keep that predictable.
    monkeypatch.setenv("STELLWERK_CACHE_DIR", str(tmp_path / "cache"))


def render(run_cli, tmp_path: Path, options: str) -> tuple[Path, str]:
    path = write_cluster(tmp_path, cluster_text(options))
    result = run_cli("render", path, "-o", tmp_path / "assets")
    assert result.code == 0, result.err
    return tmp_path / "assets", result.out


def objects(assets: Path) -> list[dict]:
    files = sorted((assets / "manifests" / "metallb").glob("*.yaml"))
    found = []
    for file in files:
        documents = list(yaml.safe_load_all(file.read_text()))
        assert len(documents) == 1, file
        validate_object(documents[0], KUBERNETES_VERSION)
        found.append(documents[0])
    return found


def by_kind(found: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in found if obj["kind"] == kind}


# --------------------------------------------------------------------------- manifests


def test_layer2_objects_pass_the_upstream_schemas(run_cli, tmp_path):
    assets, out = render(run_cli, tmp_path, LAYER2)
    found = objects(assets)
    assert [(obj["kind"], obj["metadata"]["name"]) for obj in found] == [
        ("IPAddressPool", "lan"), ("IPAddressPool", "routed"), ("L2Advertisement", "lan"), ("L2Advertisement", "routed")]
    assert {obj["metadata"]["namespace"] for obj in found} == {"metallb-system"}
    pools = by_kind(found, "IPAddressPool")
    assert pools["lan"]["spec"] == {"addresses": ["10.213.0.200-10.213.0.220"], "autoAssign": True}
    assert pools["routed"]["spec"] == {"addresses": ["192.0.2.0/28"], "autoAssign": False}
    assert by_kind(found, "L2Advertisement")["routed"]["spec"] == {"ipAddressPools": ["routed"]}
    assert "metallb-native" in out and "metallb-frr" not in out
    assert not [name for name in os.listdir(assets / "manifests" / "metallb") if "configmap" in name]
    config = json.loads((assets / "nodes" / "w1" / "ignition.json").read_text())
    assert not [unit for unit in config["systemd"]["units"] if "metallb" in unit["name"]]


def test_bgp_objects_keep_passwords_in_basic_auth_secrets(run_cli, tmp_path):
    assets, out = render(run_cli, tmp_path, BGP)
    found = objects(assets)
    kinds = [obj["kind"] for obj in found]
    assert kinds == ["IPAddressPool", "Secret", "BGPPeer", "BGPPeer", "BGPAdvertisement"]
    assert by_kind(found, "IPAddressPool")["public"]["spec"]["addresses"] == [
        "192.0.2.0/28", "198.51.100.10-198.51.100.20"]
    peers = by_kind(found, "BGPPeer")
    first, second = peers["peer-10-213-0-1"]["spec"], peers["peer-10-213-0-2"]["spec"]
    assert first == {"myASN": 65000, "peerASN": 64512, "peerAddress": "10.213.0.1", "holdTime": "90s",
                     "passwordSecret": {"name": "peer-10-213-0-1-password", "namespace": "metallb-system"}}
    assert second["passwordSecret"] == {"name": "router-b", "namespace": "metallb-system"}
    assert second["nodeSelectors"] == [{"matchLabels": {"node.example.com/tier": "general"}}]
    assert "md5-s3cret" not in (assets / "manifests/metallb/03-bgppeer-peer-10-213-0-1.yaml").read_text()
    secret = by_kind(found, "Secret")["peer-10-213-0-1-password"]
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert base64.b64decode(secret["data"]["password"]) == b"md5-s3cret"
    assert (assets / "manifests/metallb/02-secret-peer-10-213-0-1-password.yaml").stat().st_mode & 0o777 == 0o600
    assert by_kind(found, "BGPAdvertisement")["public"]["spec"] == {"ipAddressPools": ["public"]}
    assert "metallb-native" in out


def test_bfd_profile_is_referenced_by_every_peer_and_needs_frr(run_cli, tmp_path):
    assets, out = render(run_cli, tmp_path, DISCOVERY % "https://metadata.platformequinix.com/metadata")
    found = objects(assets)
    profile = by_kind(found, "BFDProfile")["stellwerk"]
    assert profile["spec"] == {"receiveInterval": 250, "transmitInterval": 250, "detectMultiplier": 3,
                               "echoMode": False, "passiveMode": False}
    peers = by_kind(found, "BGPPeer")
    # No peers listed: Equinix Metal's two routers, each selected per node by the labels the unit sets.
    assert sorted(peers) == ["peer-169-254-255-1", "peer-169-254-255-2"]
    for address, peer in (("169.254.255.1", peers["peer-169-254-255-1"]), ("169.254.255.2", peers["peer-169-254-255-2"])):
        assert peer["spec"]["bfdProfile"] == "stellwerk"
        assert peer["spec"]["peerASN"] == 65530 and peer["spec"]["ebgpMultiHop"] is True
        assert peer["spec"]["nodeSelectors"] == [{"matchLabels": {
            "metallb.stellwerk.dev/bgp-asn": "65000", f"peer.metallb.stellwerk.dev/{address}": "65530"}}]
    assert "metallb-frr" in out and "metallb-native" not in out


def test_upstream_follows_bfd():
    from stellwerk.components import metallb

    layer2 = metallb.Options.model_validate({"addressPools": [{"name": "a", "addresses": ["10.9.0.0/28"]}]})
    bgp = {"mode": "bgp", "addressPools": [{"name": "a", "addresses": ["10.9.0.0/28"]}],
           "bgp": {"myASN": 65000, "peers": [{"address": "10.0.0.1", "asn": 65001}]}}
    assert metallb.upstream(layer2) == ("metallb-native",)
    assert metallb.upstream(metallb.Options.model_validate(bgp)) == ("metallb-native",)
    bgp["bgp"]["bfdProfile"] = {}
    assert metallb.upstream(metallb.Options.model_validate(bgp)) == ("metallb-frr",)


# --------------------------------------------------------------------------- node fragments


@pytest.fixture
def metadata_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "metadata").write_text(json.dumps(METADATA))

    with static_http(root) as base:
        yield f"{base}/metadata"


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"})


@pytest.mark.engine
def test_discovery_unit_lands_on_every_node_and_labels_match_the_peers(run_cli, tmp_path, metadata_server):
    require_engine()
    for tool in ("jq", "curl"):
        require_tool(tool)
    assets, _ = render(run_cli, tmp_path, DISCOVERY % metadata_server)
    selectors = [peer["spec"]["nodeSelectors"][0]["matchLabels"] for peer in by_kind(objects(assets), "BGPPeer").values()]
    for name in ("c1", "w1"):
        config = (assets / "nodes" / name / "ignition.json").read_bytes()
        validate(config)
        root = tmp_path / f"root-{name}"
        apply(config, root, sysext_from=assets)
        script = root / SCRIPT
        assert script.stat().st_mode & 0o777 == 0o755
        text = script.read_text()
        assert text.startswith("#!/bin/bash\n") and f"\nNODE={name}\n" in text
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert syntax.returncode == 0, syntax.stderr
        unit = (root / UNIT).read_text()
        assert "Type=oneshot" in unit and "ExecStart=/opt/stellwerk/bin/metallb-peer-discovery" in unit
        assert "After=network-online.target kubelet.service" in unit
        assert "OnUnitInactiveSec=10min" in (root / TIMER).read_text()
        preset = (root / "etc/systemd/system-preset/20-ignition.preset").read_text().split("\n")
        assert "enable stellwerk-metallb-peers.service" in preset and "enable stellwerk-metallb-peers.timer" in preset

    # The real script, with the real curl and jq, against a metadata service.
    result = run_script(root / SCRIPT, "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "route 169.254.255.1/32 via 10.67.50.2",
        "route 169.254.255.2/32 via 10.67.50.2",
        "label metallb.stellwerk.dev/bgp-asn=65000",
        "label peer.metallb.stellwerk.dev/169.254.255.1=65530",
        "label peer.metallb.stellwerk.dev/169.254.255.2=65530",
        "annotate metallb.stellwerk.dev/bgp-customer-ip=10.67.50.3",
        "annotate metallb.stellwerk.dev/bgp-multihop=true",
        "annotate metallb.stellwerk.dev/bgp-md5-enabled=false",
    ]
    assert "warning" not in result.stderr
    # Every rendered BGPPeer selects a node labelled as the metadata says.
    labels = dict(line.removeprefix("label ").split("=", 1) for line in lines if line.startswith("label "))
    for selector in selectors:
        assert selector.items() <= labels.items(), selector


@pytest.mark.engine
def test_discovery_script_reports_what_does_not_fit(run_cli, tmp_path):
    require_engine()
    require_tool("jq")
    assets, _ = render(run_cli, tmp_path, DISCOVERY % "https://metadata.platformequinix.com/metadata")
    root = tmp_path / "root"
    apply((assets / "nodes" / "w1" / "ignition.json").read_bytes(), root, sysext_from=assets)
    script = root / SCRIPT

    other = json.loads(json.dumps(METADATA))
    neighbour = other["bgp_neighbors"][0]
    neighbour.update(customer_as=65100, md5_enabled=True, peer_ips=["169.254.255.1", "10.99.0.1", "not-an-ip"])
    (tmp_path / "other.json").write_text(json.dumps(other))
    result = run_script(script, "--dry-run", "--metadata-file", str(tmp_path / "other.json"))
    assert result.returncode == 0, result.stderr
    assert "label metallb.stellwerk.dev/bgp-asn=65100" in result.stdout
    assert "label peer.metallb.stellwerk.dev/10.99.0.1=65530" in result.stdout
    assert "not-an-ip" not in result.stdout
    assert "gives this host AS 65100, but bgp.myASN in the cluster file is 65000" in result.stderr
    assert "names peer 10.99.0.1 (AS 65530), which the cluster has no BGPPeer for" in result.stderr
    assert "skipping peer address 'not-an-ip'" in result.stderr
    assert "expects a TCP-MD5 password, but no peer in the cluster file has one" in result.stderr

    (tmp_path / "none.json").write_text(json.dumps({"hostname": "w1", "bgp_neighbors": []}))
    result = run_script(script, "--dry-run", "--metadata-file", str(tmp_path / "none.json"))
    assert result.returncode == 0 and result.stdout == ""
    assert "lists no IPv4 BGP neighbours" in result.stderr

    (tmp_path / "broken.json").write_text("<html>not json</html>")
    result = run_script(script, "--dry-run", "--metadata-file", str(tmp_path / "broken.json"))
    assert result.returncode == 1 and "is not a JSON object" in result.stderr


def test_no_fragment_without_discovery(run_cli, tmp_path):
    assets, _ = render(run_cli, tmp_path, BGP)
    for name in ("c1", "w1"):
        config = json.loads((assets / "nodes" / name / "ignition.json").read_text())
        assert not [f for f in config["storage"].get("files", []) if "metallb" in f["path"]]
        assert not [u for u in config["systemd"]["units"] if "metallb" in u["name"]]


# --------------------------------------------------------------------------- bad input


BAD_FIELDS = [
    ('addresses: ["10.99.0.5/24"]', "addresses[0]", "'10.99.0.5/24' has host bits set; did you mean '10.99.0.0/24'?"),
    ('addresses: ["10.99.0.20-10.99.0.10"]', "addresses[0]",
     "'10.99.0.20-10.99.0.10' is backwards (it starts after it ends); write '10.99.0.10-10.99.0.20'"),
    ('addresses: ["10.99.0.1-fd00::9"]', "addresses[0]",
     "'10.99.0.1-fd00::9' mixes an IPv4 and an IPv6 address; both ends of a range must be IPv4"),
    ('addresses: ["fd00:10::/120"]', "addresses[0]", "'fd00:10::/120' is IPv6; Stellwerk clusters are IPv4-only"),
    ('addresses: ["10.99.0.7"]', "addresses[0]", "'10.99.0.7' is neither a CIDR such as '192.168.10.0/24' nor a "
     "range such as '192.168.10.240-192.168.10.250'; a single address is '192.168.10.240/32'"),
    ('addresses: ["pool-a"]', "addresses[0]", "'pool-a' is neither a CIDR such as '192.168.10.0/24' nor a range of two"),
]


@pytest.mark.parametrize("line, path, message", BAD_FIELDS)
def test_bad_pool_addresses(run_cli, tmp_path, line, path, message):
    options = f"addressPools:\n  - name: lan\n    {line}\n"
    text = cluster_text(options)
    found = problems(run_cli, tmp_path, text)
    assert any(p.startswith(f"{line_of(text, line)}: spec.components.metallb.addressPools[0].{path}: {message}")
               for p in found), found


BAD_OPTIONS = [
    # (options, needle on the reported line, path, message)
    ("addressPools:\n  - name: Public_Pool\n    addresses: [10.99.0.0/28]\n", "Public_Pool",
     "addressPools[0].name", "'Public_Pool' is not a DNS-1123 label"),
    ("addressPools:\n  - name: a\n    addresses: [10.99.0.0/28]\n    autoAsign: false\n", "autoAsign",
     "addressPools[0].autoAsign", "unknown key 'autoAsign'; did you mean 'autoAssign'?"),
    ("mode: l2\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\n", "mode: l2",
     "mode", "'l2' is not allowed; input should be 'layer2' or 'bgp'"),
    ("addressPools: []\n", "addressPools: []", "addressPools", "List should have at least 1 item"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 0\n  peers: [{address: 10.213.0.1, asn: 64512}]\n",
     "myASN: 0", "bgp.myASN", "AS number 0 is outside 1..4294967295; a private ASN such as 64512-65534"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: yes\n  peers: [{address: 10.213.0.1, asn: 64512}]\n",
     "myASN: yes", "bgp.myASN", "true is not an AS number; write a number such as 64512"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n  peers:\n    - {address: 10.213.0.1, asn: 4294967296}\n",
     "4294967296", "bgp.peers[0].asn", "AS number 4294967296 is outside 1..4294967295"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n  peers:\n    - {address: 10.213.0.1, asn: 64512, holdTime: 2s}\n",
     "holdTime: 2s", "bgp.peers[0].holdTime", "a BGP hold time is 3s to 65535s (RFC 4271)"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n  peers:\n    - {address: 10.213.0.1, asn: 64512, password: " + "x" * 81 + "}\n",
     "password:", "bgp.peers[0].password", "the password is 81 bytes; the kernel takes TCP-MD5 keys of at most 80 bytes"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n  packetPeerDiscovery: {metadataURL: 'ftp://meta/data'}\n",
     "ftp://", "bgp.packetPeerDiscovery.metadataURL", "'ftp://meta/data' is not an http(s) URL such as"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n  packetPeerDiscovery: true\n  bfdProfile: {receiveInterval: 5}\n",
     "receiveInterval", "bgp.bfdProfile.receiveInterval", "Input should be greater than or equal to 10"),
]


@pytest.mark.parametrize("options, needle, path, message", BAD_OPTIONS)
def test_bad_options(run_cli, tmp_path, options, needle, path, message):
    text = cluster_text(options)
    found = problems(run_cli, tmp_path, text)
    expected = f"{line_of(text, needle)}: spec.components.metallb.{path}: {message}"
    assert any(p.startswith(expected) for p in found), found


PEERS = "mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n  peers:\n"
BAD_RULES = [
    # Pools
    ("addressPools:\n  - {name: a, addresses: [10.99.0.0/28]}\n  - {name: a, addresses: [10.99.1.0/28]}\n",
     "10.99.1.0/28", "addressPools[1].name",
     "pool name 'a' is already used by addressPools[0]; give each pool its own"),
    ("addressPools:\n  - {name: a, addresses: [10.99.0.0/24]}\n  - {name: b, addresses: [10.99.0.100-10.99.0.110]}\n",
     "10.99.0.100", "addressPools[1].addresses[0]",
     "10.99.0.100-10.99.0.110 overlaps 10.99.0.0/24 (addressPools[0].addresses[0]); an address can be in one pool only"),
    ("addressPools:\n  - {name: a, addresses: [10.2.7.0/28]}\n", "10.2.7.0/28", "addressPools[0].addresses[0]",
     "10.2.7.0/28 overlaps kubernetes.podCIDR 10.2.0.0/16; pick addresses outside it"),
    ("addressPools:\n  - {name: a, addresses: [10.3.0.240-10.3.1.10]}\n", "10.3.0.240", "addressPools[0].addresses[0]",
     "10.3.0.240-10.3.1.10 overlaps kubernetes.serviceCIDR 10.3.0.0/16; pick addresses outside it"),
    ("addressPools:\n  - {name: a, addresses: [10.250.0.0/28]}\n", "10.250.0.0/28", "addressPools[0].addresses[0]",
     "10.250.0.0/28 overlaps wireguard.network 10.250.0.0/24; pick addresses outside it"),
    ("addressPools:\n  - {name: a, addresses: [10.213.0.1-10.213.0.9]}\n", "10.213.0.1-", "addressPools[0].addresses[0]",
     "10.213.0.1-10.213.0.9 contains 10.213.0.1, which is network.gateway and network.dns[0]; MetalLB would answer ARP"),
    ("addressPools:\n  - {name: a, addresses: [10.213.0.16/28]}\n", "10.213.0.16/28", "addressPools[0].addresses[0]",
     "10.213.0.16/28 contains 10.213.0.21, which is node w1's address"),
    ("addressPools:\n  - {name: a, addresses: [10.213.0.250-10.213.1.5]}\n", "10.213.0.250", "addressPools[0].addresses[0]",
     "10.213.0.250-10.213.1.5 lies partly inside network.nodeCIDR 10.213.0.0/24; in layer2 mode keep a pool wholly"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.213.0.200/29]}]\nbgp:\n  myASN: 65000\n  peers: [{address: 10.213.0.1, asn: 64512}]\n",
     "10.213.0.200/29", "addressPools[0].addresses[0]",
     "10.213.0.200/29 overlaps network.nodeCIDR 10.213.0.0/24; announce addresses from outside the node network"),
    # Mode and BGP
    ("addressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n", "bgp:", "bgp",
     "bgp settings are only used in mode bgp; set 'mode: bgp' to announce by BGP, or remove the bgp section"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\n", "mode: bgp", "mode",
     "mode bgp needs a bgp section with myASN and the peers (or packetPeerDiscovery)"),
    ("mode: bgp\naddressPools: [{name: a, addresses: [10.99.0.0/28]}]\nbgp:\n  myASN: 65000\n", "bgp:", "bgp",
     "BGP mode needs at least one peer; list your routers under peers (address and asn), or set packetPeerDiscovery"),
    (PEERS + "    - {address: 10.213.0.1, asn: 64512}\n    - {address: 10.213.0.1, asn: 64513}\n", "64513",
     "bgp.peers[1].address", "BGPPeer name 'peer-10-213-0-1' is already used by peers[0]; give one of them a distinct name"),
    (PEERS + "    - {address: 10.213.0.1, asn: 64512, password: a, passwordSecret: b}\n", "passwordSecret",
     "bgp.peers[0].passwordSecret", "set password or passwordSecret, not both"),
    (PEERS + "    - {address: 10.213.0.1, asn: 65000, ebgpMultiHop: true}\n", "ebgpMultiHop",
     "bgp.peers[0].ebgpMultiHop", "asn 65000 equals myASN, so this is an iBGP session"),
    (PEERS.replace("  peers:", "  packetPeerDiscovery: true\n  peers:")
     + "    - {address: 169.254.255.1, asn: 65530, nodeSelector: {metallb.stellwerk.dev/bgp-asn: '1'}}\n",
     "nodeSelector", "bgp.peers[0].nodeSelector.metallb.stellwerk.dev/bgp-asn",
     "'metallb.stellwerk.dev/bgp-asn' is set by packetPeerDiscovery on each node; select nodes by other labels"),
    (PEERS + "    - {address: 10.99.0.3, asn: 64512}\n", "10.99.0.3", "bgp.peers[0].address",
     "10.99.0.3 is inside pool address 10.99.0.0/28 (addressPools[0].addresses[0]); MetalLB would announce"),
]


@pytest.mark.parametrize("options, needle, path, message", BAD_RULES)
def test_cross_field_rules(run_cli, tmp_path, options, needle, path, message):
    text = cluster_text(options)
    found = problems(run_cli, tmp_path, text)
    expected = f"{line_of(text, needle)}: spec.components.metallb.{path}: {message}"
    assert any(p.startswith(expected) for p in found), found


def problems(run_cli, tmp_path, text: str) -> list[str]:
    path = write_cluster(tmp_path, text)
    result = run_cli("validate", path)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    return [line[len(str(path)) + 1:] for line in result.err.strip().splitlines()]


def test_good_options_validate(run_cli, tmp_path):
    for options in (LAYER2, BGP, DISCOVERY % "https://metadata.platformequinix.com/metadata"):
        result = run_cli("validate", write_cluster(tmp_path, cluster_text(options)))
        assert result.code == 0, result.err


def test_the_documented_examples_validate(run_cli, tmp_path):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "components" / "metallb.md").read_text()
    blocks = [block.split("```", 1)[0] for block in docs.split("```yaml\n")[1:]]
    examples = [block[block.index("  components:\n"):] for block in blocks if "  components:\n" in block]
    assert len(examples) == 3
    for example in examples:
        result = run_cli("validate", write_cluster(tmp_path, BASE_EXAMPLE_TEXT + example))
        assert result.code == 0, (example, result.err)


# --------------------------------------------------------------------------- patches


def test_patches_change_the_rendered_pool(run_cli, tmp_path):
    options = LAYER2 + textwrap.dedent("""\
        patches:
          - target: {kind: IPAddressPool, name: lan}
            jsonPatch:
              - {op: add, path: /spec/avoidBuggyIPs, value: true}
          - target: {kind: L2Advertisement, name: lan, namespace: metallb-system}
            merge:
              spec: {interfaces: [eth1]}
        """)
    assets, _ = render(run_cli, tmp_path, options)
    found = objects(assets)
    assert by_kind(found, "IPAddressPool")["lan"]["spec"]["avoidBuggyIPs"] is True
    assert by_kind(found, "L2Advertisement")["lan"]["spec"] == {"ipAddressPools": ["lan"], "interfaces": ["eth1"]}
    assert "avoidBuggyIPs" not in by_kind(found, "IPAddressPool")["routed"]["spec"]


def test_a_patch_for_a_missing_object_is_a_user_error(run_cli, tmp_path):
    options = LAYER2 + "patches:\n  - target: {kind: BGPPeer, name: nowhere}\n    merge: {spec: {holdTime: 9s}}\n"
    text = cluster_text(options)
    path = write_cluster(tmp_path, text)
    result = run_cli("render", path, "-o", tmp_path / "assets")
    assert result.code == 2, result
    assert f"{path}:{line_of(text, 'nowhere')}: spec.components.metallb.patches[0]: no rendered object is BGPPeer 'nowhere'" in result.err
