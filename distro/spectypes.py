"""Field types shared by the cluster file and the component options.

Each type carries its own validation and a message that says how to fix a bad
value, so every model that uses it reports problems the same way.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from . import release
from .base.durations import format_duration, parse_duration

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAC = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_SEMVER3 = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?"
)
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?)")


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label: use at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _endpoint(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{value!r} is neither an IP address nor a DNS name (lower-case, dot-separated labels)")
    return value


def dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a DNS domain (lower-case, dot-separated labels) such as cluster.local")
    return value


def _mac(value: str) -> str:
    text = value.strip().lower()
    if not _MAC.fullmatch(text):
        raise ValueError(f"{value!r} is not a MAC address; write six hex octets such as 52:54:00:00:00:11")
    octets = re.findall(r"[0-9a-f]{2}", text)
    if int(octets[0], 16) & 1:
        raise ValueError(f"{value!r} is a multicast address; a network card's MAC has an even first octet")
    return ":".join(octets)


def _ipv4_address(value: Any) -> ipaddress.IPv4Address:
    if isinstance(value, ipaddress.IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IPv4 address; quote it as a string such as '10.0.0.1'")
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address such as 10.213.0.11") from None


def _ipv4_network(value: Any) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{value!r} is not a CIDR; write a network and prefix length such as 10.2.0.0/16")
    try:
        return ipaddress.IPv4Network(value)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.IPv4Network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; did you mean {fixed}?") from None
        raise ValueError(f"{value!r} is not an IPv4 CIDR such as 10.2.0.0/16") from None


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def base_url(value: str) -> str:
    # Plain http is allowed: netboot serves over it, and every file fetched from here is checked by its sha512.
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"{value!r} is not an http(s) URL of a folder, such as "
                         f"'http://10.0.0.2:8080{release.SYSEXT_SERVED_PATH}'")
    return value.rstrip("/")


def _kubernetes_version(value: str) -> str:
    match = _SEMVER3.fullmatch(value)
    if not match or match.group(1) != "1":
        raise ValueError(f"{value!r} is not a Kubernetes version; write MAJOR.MINOR.PATCH such as {release.KUBERNETES_VERSION!r}, without a 'v'")
    minor = int(match.group(2))
    if minor not in release.KUBERNETES_MINORS:
        supported = ", ".join(f"1.{m}" for m in release.KUBERNETES_MINORS)
        raise ValueError(f"Kubernetes 1.{minor} is not supported by this release; supported minors: {supported}")
    return value


def _os_version(value: str) -> str:
    if value != "current" and not _SEMVER3.fullmatch(value):
        raise ValueError(f"{value!r} is not an OS version; write BUILD.BRANCH.PATCH such as {release.FLATCAR_VERSION!r}")
    return value


def _ssh_key(value: str) -> str:
    if not _SSH_KEY.fullmatch(value.strip()):
        raise ValueError("not an OpenSSH public key; paste one line of an id_*.pub file (type, base64 key, comment)")
    return value.strip()


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"label key {value!r}: prefix {prefix!r} is not a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key {value!r}: name must be 1-63 letters, digits, '-', '_' or '.'")
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"label value {value!r} must be at most 63 letters, digits, '-', '_' or '.'")
    return value


def _stringify_scalar(value: Any) -> Any:
    # YAML reads versions like 1.31 or 4081 as numbers; versions are strings here.
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


DNSLabel = Annotated[str, AfterValidator(_dns_label)]
Endpoint = Annotated[str, AfterValidator(_endpoint)]
MAC = Annotated[str, AfterValidator(_mac)]
IPv4 = Annotated[
    ipaddress.IPv4Address,
    BeforeValidator(_ipv4_address),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "format": "ipv4"}),
]
CIDR = Annotated[
    ipaddress.IPv4Network,
    BeforeValidator(_ipv4_network),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$"}),
]
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[hms])+$"}),
]
KubernetesVersion = Annotated[str, BeforeValidator(_stringify_scalar), AfterValidator(_kubernetes_version)]
OSVersion = Annotated[str, BeforeValidator(_stringify_scalar), AfterValidator(_os_version)]
SSHKey = Annotated[str, AfterValidator(_ssh_key)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, BeforeValidator(_stringify_scalar), AfterValidator(_label_value)]


class StrictModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        # Only the documented camelCase keys: snake_case spellings would pass here but fail the JSON Schema.
        populate_by_name=False,
        strict=False,
        str_strip_whitespace=True,
    )


DNSSubdomain = Annotated[str, AfterValidator(dns_subdomain)]
BaseURL = Annotated[str, AfterValidator(base_url)]
