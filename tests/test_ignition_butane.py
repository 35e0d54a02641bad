"""The Butane (flatcar 1.0.0) snippet translator subset."""

from __future__ import annotations

import hashlib
import textwrap

import pytest
import yaml

from support.ignition_engine import require_engine, validate
from stellwerk.ignition.butane import SnippetError, translate
from stellwerk.ignition.model import Config, Directory, Dropin, File, Group, Link, Unit, User, dumps

SERVICE = "[Unit]\nDescription=ntp\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"


def bu(text: str) -> object:
    return yaml.safe_load(textwrap.dedent(text))


NTP_CONF = b"server time.example.com iburst\n"
NTP_HASH = "sha256-" + hashlib.sha256(NTP_CONF).hexdigest()
TOOL_HASH = "sha512-" + "a" * 128
INDENTED_SERVICE = textwrap.indent(SERVICE, " " * 8)

FULL = f"""\
variant: flatcar
version: 1.0.0
storage:
  files:
    - path: /etc/ntp.conf
      mode: 0640
      overwrite: true
      user: {{name: core}}
      group: {{id: 0}}
      contents:
        inline: |
          server time.example.com iburst
        verification:
          hash: {NTP_HASH}
      append:
        - inline: "# appended\\n"
        - source: "data:,more%0A"
    - path: /opt/bin/tool
      mode: 0755
      contents:
        source: https://example.com/tool.gz
        compression: gzip
        verification:
          hash: {TOOL_HASH}
    - path: /etc/touched
  directories:
    - path: /var/lib/ntp
      mode: 0750
      overwrite: false
      user: {{id: 500}}
      group: {{name: core}}
  links:
    - path: /etc/localtime
      target: /usr/share/zoneinfo/UTC
      overwrite: true
      user: {{name: core}}
      group: {{name: core}}
    - path: /etc/hard
      target: /etc/ntp.conf
      hard: true
systemd:
  units:
    - name: ntp.service
      enabled: true
      contents: |
{INDENTED_SERVICE}
      dropins:
        - name: 10-debug.conf
          contents: "[Service]\\nEnvironment=DEBUG=1\\n"
    - name: systemd-timesyncd.service
      mask: true
passwd:
  users:
    - name: core
      ssh_authorized_keys: [ssh-ed25519 AAAA one, ssh-ed25519 AAAA two]
      groups: [wheel]
      password_hash: "$6$x$y"
      uid: 500
      gecos: Core
      home_dir: /home/core
      no_create_home: false
      primary_group: core
      no_user_group: false
      shell: /bin/bash
      system: false
  groups:
    - name: ntp
      gid: 123
      password_hash: "*"
      system: true
"""


def test_every_supported_key_translates() -> None:
    config = translate(bu(FULL), "snippets/ntp.bu")
    assert config == Config(
        files=(
            File(
                "/etc/ntp.conf",
                contents=NTP_CONF,
                verification=NTP_HASH,
                mode=0o640,
                overwrite=True,
                user="core",
                group=0,
                append=(b"# appended\n", b"more\n"),
            ),
            File(
                "/opt/bin/tool",
                source="https://example.com/tool.gz",
                compression="gzip",
                verification=TOOL_HASH,
                mode=0o755,
                overwrite=None,
            ),
            File("/etc/touched", mode=None, overwrite=None),
        ),
        directories=(Directory("/var/lib/ntp", mode=0o750, overwrite=False, user=500, group="core"),),
        links=(
            Link("/etc/localtime", "/usr/share/zoneinfo/UTC", overwrite=True, user="core", group="core"),
            Link("/etc/hard", "/etc/ntp.conf", hard=True, overwrite=None),
        ),
        units=(
            Unit("ntp.service", SERVICE, enabled=True, dropins=(Dropin("10-debug.conf", "[Service]\nEnvironment=DEBUG=1\n"),)),
            Unit("systemd-timesyncd.service", mask=True),
        ),
        users=(
            User(
                "core",
                ssh_authorized_keys=("ssh-ed25519 AAAA one", "ssh-ed25519 AAAA two"),
                groups=("wheel",),
                password_hash="$6$x$y",
                uid=500,
                gecos="Core",
                home_dir="/home/core",
                no_create_home=False,
                primary_group="core",
                no_user_group=False,
                shell="/bin/bash",
                system=False,
            ),
        ),
        groups=(Group("ntp", gid=123, password_hash="*", system=True),),
    )


@pytest.mark.engine
def test_translated_snippet_passes_ignition_validate() -> None:
    require_engine()
    validate(dumps(translate(bu(FULL), "snippets/ntp.bu")))


def test_header_is_optional() -> None:
    assert translate({"systemd": {"units": [{"name": "a.service", "mask": True}]}}, "s") == Config(
        units=(Unit("a.service", mask=True),)
    )
    assert translate({}, "s") == Config()


def problems(doc: object) -> list[tuple[str, str]]:
    with pytest.raises(SnippetError) as err:
        translate(doc, "snippets.workers[1]")
    assert err.value.origin == "snippets.workers[1]"
    return err.value.problems


def test_all_problems_of_a_snippet_are_reported_together() -> None:
    found = problems(
        bu(
            """\
            variant: fcos
            version: 1.4.0
            ignition: {}
            storage:
              disks: []
              files:
                - path: /etc/a
                  contents: {local: a.txt}
                - mode: 0644
                - path: relative
                  overwrite: yes
            systemd:
              units:
                - name: a.service
                  enabled: "yes"
                  contents_local: a.service
            passwd:
              users:
                - name: core
                  uid: "500"
                  ssh_authorized_keys: ssh-ed25519 AAAA
            """
        )
    )
    paths = [path for path, _ in found]
    assert paths == [
        "ignition",
        "variant",
        "version",
        "storage.disks",
        "storage.files[0].contents.local",
        "storage.files[1].path",
        "storage.files[2].path",
        "storage.files[2].overwrite",
        "systemd.units[0].contents_local",
        "systemd.units[0].enabled",
        "passwd.users[0].uid",
        "passwd.users[0].ssh_authorized_keys",
    ]
    messages = dict(found)
    assert "inline, source" in messages["storage.files[0].contents.local"]
    assert "storage, systemd, passwd" in messages["ignition"]
    assert "'flatcar'" in messages["variant"] and "'1.0.0'" in messages["version"]
    assert "files, directories, links" in messages["storage.disks"]
    assert "is required" in messages["storage.files[1].path"]
    assert "absolute" in messages["storage.files[2].path"]
    assert "true needs contents" in messages["storage.files[2].overwrite"]
    assert "true or false" in messages["systemd.units[0].enabled"]
    assert "integer" in messages["passwd.users[0].uid"]
    assert "list of strings" in messages["passwd.users[0].ssh_authorized_keys"]


@pytest.mark.parametrize(
    ("mode", "hint"),
    [
        ("'0644'", "unquoted"),  # a quoted string
        ("'0o644'", "unquoted"),  # YAML 1.2 octal is a string to PyYAML
        ("644", "write 0644"),  # decimal digits that look octal
        ("400", "write 0400"),  # 400 decimal is 0620, an odd mode; 0400 is what was meant
        ("04755", "setuid"),  # special bits
        ("true", "integer"),
        ("6.44", "integer"),
    ],
)
def test_modes_must_be_octal_integers(mode: str, hint: str) -> None:
    found = problems(bu(f"storage:\n  files:\n    - path: /a\n      mode: {mode}\n"))
    assert [path for path, _ in found] == ["storage.files[0].mode"]
    assert hint in found[0][1]


def test_octal_yaml_modes_and_plain_decimal_values_are_accepted() -> None:
    config = translate(bu("storage:\n  files: [{path: /a, mode: 0600}, {path: /b, mode: 420}, {path: /c, mode: 0}]\n"), "s")
    assert [f.mode for f in config.files] == [0o600, 0o644, 0]


def test_resource_rules() -> None:
    found = problems(
        bu(
            """\
            storage:
              files:
                - path: /a
                  contents: {inline: x, source: "https://x"}
                - path: /b
                  contents: {inline: x, compression: gzip}
                - path: /c
                  contents: {inline: x, verification: {hash: "sha256-00"}}
                - path: /d
                  contents: {inline: x, verification: {hash: "sha256-%s"}}
                - path: /e
                  append: [{source: "https://example.com/frag"}, {}]
                - path: /f
                  user: {id: 1, name: core}
            """
            % ("0" * 64)
        )
    )
    assert [path for path, _ in found] == [
        "storage.files[0].contents",
        "storage.files[1].contents.compression",
        "storage.files[2].contents.verification.hash",
        "storage.files[3].contents.verification.hash",
        "storage.files[4].append[0].source",
        "storage.files[4].append[1]",
        "storage.files[5].user",
    ]
    assert "does not match" in dict(found)["storage.files[3].contents.verification.hash"]


def test_unit_and_dropin_names_are_checked() -> None:
    found = problems({"systemd": {"units": [{"name": "ntp"}, {"name": "a.timer", "dropins": [{"name": "x", "contents": 1}]}]}})
    assert [path for path, _ in found] == [
        "systemd.units[0].name",
        "systemd.units[1].dropins[0].contents",
        "systemd.units[1].dropins[0].name",
    ]


def test_wrong_shapes_are_located() -> None:
    assert problems(["not", "a", "mapping"])[0][0] == ""
    assert problems(None)[0][0] == ""
    assert [p for p, _ in problems({"storage": {"files": {"path": "/a"}}})] == ["storage.files"]
    assert [p for p, _ in problems({"storage": {"files": ["/a"]}})] == ["storage.files[0]"]
    assert [p for p, _ in problems({"passwd": {"users": [{"name": "a", "ssh_authorized_keys": ["k", "k"]}]}})] == [
        "passwd.users[0].ssh_authorized_keys"
    ]


def test_snippet_error_prints_one_line_per_problem() -> None:
    err = SnippetError("snippets/ntp.bu", [("storage.files[0].mode", "bad"), ("", "not a mapping")])
    assert err.lines() == ["snippets/ntp.bu: storage.files[0].mode: bad", "snippets/ntp.bu: not a mapping"]
    assert str(err) == "\n".join(err.lines())
    single = SnippetError("o", "systemd.units[0]", "broken")
    assert single.problems == [("systemd.units[0]", "broken")]
