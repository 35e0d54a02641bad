"""iPXE scripts: the chain script every machine runs first, and the boot script of one machine.

iPXE splits a script line into words at ASCII whitespace, has no quoting, reads a word starting with '#' as the start
of a comment and `||`, `&&`, `;` as command separators, and expands `${setting}` in every word (src/core/exec.c,
src/core/settings.c). Every word written here is checked against those rules, so nothing a profile or a machine
supplies can add a command to a script.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from stellwerk.base.templating import environment

from .store import Selection, is_ipxe_word

# The MAC as iPXE spells it for the interface it booted from; the config endpoints accept that spelling.
MAC_SETTING = "${mac:hexhyp}"


def boot_script(base_url: str) -> str:
    """/boot.ipxe: chain to /ipxe with the machine's MAC, UUID, hostname, serial number and architecture."""
    return _render("boot.ipxe.j2", base_url=_word(base_url))


def machine_script(selection: Selection, base_url: str, config_labels: Mapping[str, str]) -> str:
    """/ipxe: boot the selected profile's kernel and initrds; when the group names a node, the last kernel argument
    tells the OS where to fetch that node's config (see `config_argument`)."""
    profile = selection.profile
    args = list(profile.args)
    if selection.config_path is not None:
        args.append(config_argument(profile.config, base_url, config_labels))
    initrds = [{"name": _word(path.rsplit("/", 1)[-1]), "url": _word(base_url + path)} for path in profile.initrd]
    return _render(
        "machine.ipxe.j2",
        group=_word(selection.group.name),
        profile=_word(profile.id),
        kernel_url=_word(base_url + profile.kernel),
        initrds=initrds,
        args=[_word(arg) for arg in args],
    )


def local_boot_script(group: str, reason: str) -> str:
    """/ipxe for a machine that must boot its installed OS: leave iPXE, so the firmware tries the next boot
    device (the disk). `reason` goes into a comment and an `echo`, so it is reduced to safe words."""
    words = [word for word in reason.split() if is_ipxe_word(word) and "$" not in word]
    return _render("local.ipxe.j2", group=_word(group), reason=" ".join(words))


def config_query(labels: Mapping[str, str]) -> str:
    """The query that selects the same group again: the MAC as iPXE expands it, then the other labels of the
    group's selector, percent-encoded (so no value can contain '${', whitespace or a separator)."""
    parts = [f"mac={MAC_SETTING}"]
    parts += [f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in sorted(labels.items()) if key != "mac"]
    return "&".join(parts)


def config_argument(kind: str, base_url: str, labels: Mapping[str, str]) -> str:
    """The kernel argument that points the OS at its config.

    - Ignition: `ignition.config.url=BASE/ignition?mac=${mac:hexhyp}`.
    - cloud-init: the NoCloud datasource seeded over HTTP, `ds=nocloud-net;s=BASE/nocloud/mac=${mac:hexhyp}/`.
      cloud-init appends `meta-data`, `user-data`, `vendor-data` (and since 24.1 `network-config`) to the seed URL,
      so the labels travel in a path segment rather than a query. `nocloud-net` is the name cloud-init 22.4 (Debian
      12) needs for an http seed; cloud-init 24.1 and later still accept it (and also plain `nocloud`).
    """
    query = config_query(labels)
    if kind in ("ignition", "installer"):
        return f"ignition.config.url={base_url}/ignition?{query}"
    if kind == "cloud-config":
        return f"ds=nocloud-net;s={base_url}/nocloud/{query}/"
    raise ValueError(f"unknown config kind {kind!r}")


def _render(template: str, **values: object) -> str:
    return environment("stellwerk.netboot", trim_blocks=True).get_template(template).render(**values)


def _word(value: str) -> str:
    if not is_ipxe_word(value):
        raise ValueError(f"{value!r} cannot be one word of an iPXE script")
    return value
