"""The netboot machine store: loading, label normalization, selection, and every load-time rejection."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from stellwerk.base.errors import UserError
from stellwerk.netboot.store import LabelError, Store, StoreError, normalize_label, normalize_mac

MAC1 = "52:54:00:00:00:11"
MAC2 = "52:54:00:00:00:12"


def profile(pid: str = "lab", config: str = "ignition", **extra: object) -> dict:
    return {"id": pid, "kernel": "/assets/lab/vmlinuz", "initrd": ["/assets/lab/initrd.img"],
            "args": ["console=ttyS0"], "config": config, **extra}


def group(name: str, selector: dict | None = None, node: str | None = None, prof: str = "lab", **extra: object) -> dict:
    data: dict = {"name": name, "profile": prof, "selector": selector or {}, "metadata": {}}
    if node:
        data["metadata"]["node"] = node
    data.update(extra)
    return data


def write_store(root: Path, groups: list[dict], profiles: list[dict] | None = None,
                nodes: dict[str, str] | None = None) -> Path:
    """An assets directory with the given store; `nodes` maps node name to config file name."""
    for sub in ("groups", "profiles"):
        (root / "netboot" / sub).mkdir(parents=True, exist_ok=True)
    for data in profiles if profiles is not None else [profile()]:
        (root / "netboot" / "profiles" / f"{data['id']}.json").write_text(json.dumps(data))
    for data in groups:
        (root / "netboot" / "groups" / f"{data['name']}.json").write_text(json.dumps(data))
    for node, filename in (nodes or {}).items():
        (root / "nodes" / node).mkdir(parents=True, exist_ok=True)
        (root / "nodes" / node / filename).write_text(f'{{"node": "{node}"}}')
    return root


def load_error(root: Path) -> str:
    with pytest.raises(StoreError) as info:
        Store.load(root)
    return str(info.value)


# -- labels ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["52:54:00:AB:cd:11", "52-54-00-ab-CD-11", "5254.00ab.cd11", "525400ABCD11"])
def test_mac_spellings_normalize_to_one_form(spelling):
    assert normalize_mac(spelling) == "52:54:00:ab:cd:11"


@pytest.mark.parametrize("bad", ["", "52:54:00:00:00", "52:54:00:00:00:11:22", "52:54-00:00:00:11", "zz:54:00:00:00:11",
                                 "5254.0000.001", "52:54:00:00:00:1", " 52:54:00:00:00:11", "５２:54:00:00:00:11",
                                 "52:54:00:00:00:11\n"])
def test_malformed_macs_are_refused(bad):
    with pytest.raises(LabelError, match="not a MAC address"):
        normalize_mac(bad)


def test_other_labels_normalize():
    assert normalize_label("uuid", "{6F6C2E2A-0000-4000-8000-00000000ABCD}") == "6f6c2e2a-0000-4000-8000-00000000abcd"
    assert normalize_label("hostname", "C1.Lab.Example") == "c1.lab.example"
    assert normalize_label("serial", "ABC 123") == "ABC 123"  # compared as written
    for key, value in [("uuid", "not-a-uuid"), ("Bad Key", "x"), ("os", "a\nb"), ("os", "x" * 300)]:
        with pytest.raises(LabelError):
            normalize_label(key, value)


# -- selection -------------------------------------------------------------------------------------------------

def test_selection_by_mac_in_any_spelling(tmp_path):
    store = Store.load(write_store(tmp_path, [group("c1", {"mac": MAC1}, "c1"), group("c2", {"mac": "52-54-00-00-00-12"}, "c2")],
                                   nodes={"c1": "ignition.json", "c2": "ignition.json"}))
    for spelling in ("52:54:00:00:00:11", "52-54-00-00-00-11", "5254.0000.0011", "525400000011"):
        selection = store.select({"mac": spelling})
        assert selection.group.name == "c1"
        assert selection.profile.id == "lab"
        assert selection.config_path == tmp_path / "nodes" / "c1" / "ignition.json"
    assert store.select({"mac": "525400000012"}).group.name == "c2"
    assert store.select({"mac": "52:54:00:00:00:99"}) is None  # no default group: nothing
    assert store.select({}) is None


def test_most_specific_group_wins_and_default_catches_the_rest(tmp_path):
    groups = [
        group("default", {}, prof="install"),
        group("c1", {"mac": MAC1}, "c1"),
        group("c1-installed", {"mac": MAC1, "os": "installed"}, "c1"),
        # Not {"rack": "r1"} alone: with one key it could meet c1 on a machine in rack r1 (a tie, refused).
        group("rack-r1", {"rack": "r1", "os": "pxe"}, prof="install"),
        group("r1-uuid", {"rack": "r1", "os": "pxe", "uuid": "6f6c2e2a-0000-4000-8000-00000000abcd"}, prof="install"),
    ]
    store = Store.load(write_store(tmp_path, groups, [profile(), profile("install")], {"c1": "ignition.json"}))
    assert store.select({"mac": MAC1}).group.name == "c1"
    assert store.select({"mac": MAC1, "os": "installed"}).group.name == "c1-installed"
    assert store.select({"mac": MAC1, "os": "other"}).group.name == "c1"
    assert store.select({"mac": MAC2}).group.name == "default"
    assert store.select({"mac": MAC2, "rack": "r1"}).group.name == "default"
    assert store.select({"mac": MAC2, "rack": "r1", "os": "pxe"}).group.name == "rack-r1"
    assert store.select({"mac": MAC1, "rack": "r1", "os": "pxe"}).group.name == "rack-r1"  # 2 keys beat c1's 1
    uuid = "6F6C2E2A-0000-4000-8000-00000000ABCD"
    assert store.select({"mac": MAC2, "rack": "r1", "os": "pxe", "uuid": uuid}).group.name == "r1-uuid"
    # iPXE expands unset settings to '': empty labels are absent, not values.
    assert store.select({"mac": MAC1, "os": "", "uuid": "", "hostname": ""}).group.name == "c1"
    default = store.select({"mac": MAC2})
    assert default.config_path is None and default.group.is_default


def test_labels_beyond_the_mac_never_pick_another_machines_group(tmp_path):
    store = Store.load(write_store(tmp_path, [group("c1", {"mac": MAC1}, "c1"), group("c2", {"mac": MAC2}, "c2")],
                                   nodes={"c1": "ignition.json", "c2": "ignition.json"}))
    assert store.select({"mac": MAC1, "hostname": "c2", "serial": "c2"}).group.name == "c1"
    assert store.select({"hostname": "c2"}) is None


def test_selection_among_a_thousand_machines(tmp_path):
    macs = [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(1200)]
    groups = [group(f"n{i}", {"mac": mac}) for i, mac in enumerate(macs)] + [group("default")]
    store = Store.load(write_store(tmp_path, groups))
    for i in (0, 1, 599, 1199):
        assert store.select({"mac": macs[i].replace(":", "-").upper()}).group.name == f"n{i}"
    assert store.select({"mac": "52:54:00:ff:ff:ff"}).group.name == "default"
    assert len(store.groups) == 1201


def test_config_labels_carry_the_selector_keys_of_the_winner(tmp_path):
    uuid = "6f6c2e2a-0000-4000-8000-00000000abcd"
    store = Store.load(write_store(tmp_path, [group("by-uuid", {"uuid": uuid}), group("default")]))
    labels = {"mac": MAC2, "uuid": uuid.upper(), "hostname": "x"}
    selection = store.select(labels)
    assert selection.group.name == "by-uuid"
    assert store.config_labels(selection, labels) == {"mac": MAC2, "uuid": uuid}
    # ... and those labels select the same group again.
    assert store.select(store.config_labels(selection, labels)) is selection


def test_store_is_immutable(tmp_path):
    store = Store.load(write_store(tmp_path, [group("c1", {"mac": MAC1}, "c1", metadata={"node": "c1", "tags": ["a"]})],
                                   nodes={"c1": "ignition.json"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.groups = ()
    g = store.groups[0]
    with pytest.raises(TypeError):
        g.selector["mac"] = MAC2
    with pytest.raises(TypeError):
        g.metadata["node"] = "c2"
    assert g.metadata["tags"] == ("a",)
    assert json.loads(g.metadata_json) == {"node": "c1", "tags": ["a"]}


def test_cloud_config_profile_points_at_cloud_config_yaml(tmp_path):
    store = Store.load(write_store(tmp_path, [group("d1", {"mac": MAC1}, "d1", prof="deb")],
                                   [profile("deb", "cloud-config")], {"d1": "cloud-config.yaml"}))
    assert store.select({"mac": MAC1}).config_path.name == "cloud-config.yaml"


# -- load-time rejections --------------------------------------------------------------------------------------

def test_identical_selectors_are_a_tie(tmp_path):
    message = load_error(write_store(tmp_path, [group("a", {"mac": MAC1}), group("b", {"mac": "52-54-00-00-00-11"})]))
    assert "groups 'a' (netboot/groups/a.json) and 'b' (netboot/groups/b.json)" in message
    assert "neither is more specific" in message


def test_equally_specific_selectors_that_can_meet_are_a_tie(tmp_path):
    # A machine with mac=MAC1 and hostname=c1 would match both with one key each.
    message = load_error(write_store(tmp_path, [group("by-mac", {"mac": MAC1}), group("by-name", {"hostname": "c1"})]))
    assert "'by-mac' (netboot/groups/by-mac.json) and 'by-name' (netboot/groups/by-name.json)" in message
    assert f"hostname=c1,mac={MAC1}" in message


def test_selectors_that_differ_on_a_shared_key_or_in_size_are_not_a_tie(tmp_path):
    Store.load(write_store(tmp_path, [
        group("a", {"mac": MAC1}), group("b", {"mac": MAC2}),
        group("a-installed", {"mac": MAC1, "os": "installed"}),
        group("r1", {"rack": "r1", "os": "pxe"}), group("r2", {"rack": "r2", "os": "pxe"}),
        group("default"),
    ]))


def test_two_default_groups_are_refused(tmp_path):
    message = load_error(write_store(tmp_path, [group("any"), group("fallback")]))
    assert "'any' (netboot/groups/any.json) and 'fallback' (netboot/groups/fallback.json) are both default groups" in message


def test_missing_profile_names_the_group_file(tmp_path):
    message = load_error(write_store(tmp_path, [group("c1", {"mac": MAC1}, prof="nope")]))
    assert message.startswith("netboot/groups/c1.json: profile: names profile 'nope'")
    assert "netboot/profiles/nope.json does not exist" in message


def test_missing_node_config_names_the_file_and_the_fix(tmp_path):
    message = load_error(write_store(tmp_path, [group("c1", {"mac": MAC1}, "c1")]))
    assert "netboot/groups/c1.json: metadata.node: names node 'c1', but nodes/c1/ignition.json" in message
    assert "run `stellwerk render` again" in message
    # A cloud-config profile needs cloud-config.yaml, not ignition.json.
    root = write_store(tmp_path / "deb", [group("d1", {"mac": MAC1}, "d1", prof="deb")],
                       [profile("deb", "cloud-config")], {"d1": "ignition.json"})
    assert "nodes/d1/cloud-config.yaml" in load_error(root)


def test_malformed_json_names_file_and_line(tmp_path):
    root = write_store(tmp_path, [group("c1", {"mac": MAC1})])
    (root / "netboot" / "groups" / "c2.json").write_text('{\n  "name": "c2",\n  "profile": lab\n}\n')
    message = load_error(root)
    assert message.startswith("netboot/groups/c2.json:3: not valid JSON")
    assert "run `stellwerk render` again" in message


@pytest.mark.parametrize("content, expected", [
    ('{"name": "c1", "name": "c1", "profile": "lab"}', "duplicate key 'name'"),
    ('["c1"]', "must hold a JSON object, not a list"),
    (b'\xff\xfe', "is not UTF-8"),
    ('{"name": "c1", "profile": "lab", "selectors": {"mac": "52:54:00:00:00:11"}}', "selectors: unknown key"),
    ('{"name": "other", "profile": "lab"}', "name the file other.json"),
    ('{"name": "c1", "profile": "lab", "selector": {"mac": "52:54:00:00:00"}}', "selector.mac: '52:54:00:00:00' is not a MAC"),
    ('{"name": "c1", "profile": "lab", "selector": {"os": ""}}', "selector.os: label os: an empty value matches nothing"),
    ('{"name": "c1", "profile": "lab", "selector": {"uuid": "nope"}}', "selector.uuid: label uuid: 'nope' is not a UUID"),
    ('{"name": "c1", "profile": "lab", "metadata": {"node": "../pki"}}', "metadata.node: '../pki' is not a node name"),
    ('{"name": "c1"}', "profile: is required"),
])
def test_malformed_groups_are_refused(tmp_path, content, expected):
    root = write_store(tmp_path, [])
    path = root / "netboot" / "groups" / "c1.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    message = load_error(root)
    assert message.startswith("netboot/groups/c1.json")
    assert expected in message


@pytest.mark.parametrize("change, expected", [
    ({"kernel": "/assets/../pki/ca.key"}, "kernel: '/assets/../pki/ca.key' must be a path below /assets/"),
    ({"kernel": "/boot/vmlinuz"}, "kernel: '/boot/vmlinuz' must be a path below /assets/"),
    ({"initrd": ["/assets/lab/a.img", "/assets/other/a.img"]}, "initrd[1]: has the same file name 'a.img'"),
    ({"args": ["console=ttyS0 quiet"]}, "args[0]: 'console=ttyS0 quiet' must be one word"),
    ({"args": ["quiet\nshell"]}, "must be one word"),
    ({"args": ["#comment"]}, "as a comment or a command separator"),
    ({"args": ["||"]}, "as a comment or a command separator"),
    ({"args": ["ignition.config.url=http://evil/"]}, "netboot appends ignition.config.url= itself"),
    ({"config": "kickstart"}, "config: 'kickstart' is not a config kind"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_malformed_profiles_are_refused(tmp_path, change, expected):
    message = load_error(write_store(tmp_path, [], [{**profile(), **change}]))
    assert message.startswith("netboot/profiles/lab.json")
    assert expected in message


def test_profile_id_must_match_its_file(tmp_path):
    root = write_store(tmp_path, [], [])
    (root / "netboot" / "profiles" / "lab.json").write_text(json.dumps(profile("other")))
    assert "netboot/profiles/lab.json: id: 'other' differs from the file name; name the file other.json" in load_error(root)


def test_every_problem_is_reported_at_once(tmp_path):
    root = write_store(tmp_path, [group("a", {"mac": MAC1}, prof="nope"), group("b"), group("c")])
    (root / "netboot" / "groups" / "d.json").write_text("{")
    lines = load_error(root).splitlines()
    assert any(line.startswith("netboot/groups/a.json: profile:") for line in lines)
    assert any(line.startswith("netboot/groups/d.json:1: not valid JSON") for line in lines)
    assert any("'b' (netboot/groups/b.json) and 'c' (netboot/groups/c.json) are both default groups" in line
               for line in lines)


def test_missing_store_directories(tmp_path):
    assert "netboot does not exist" in load_error(tmp_path)
    (tmp_path / "netboot" / "groups").mkdir(parents=True)
    assert load_error(tmp_path) == ("netboot/profiles: does not exist or is not a directory; run `stellwerk render` "
                                    "to write the machine store")


def test_store_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError):  # the CLI turns them into exit code 2, one line per problem
        Store.load(tmp_path)


def test_backups_and_hidden_files_are_not_part_of_the_store(tmp_path):
    root = write_store(tmp_path, [group("c1", {"mac": MAC1})])
    (root / "netboot" / "groups" / "c1.json~").write_text("{broken")
    (root / "netboot" / "groups" / ".c2.json").write_text("{broken")
    assert [g.name for g in Store.load(root).groups] == ["c1"]
