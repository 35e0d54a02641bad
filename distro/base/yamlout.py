"""Deterministic YAML output for everything Stellwerk writes (kubeconfigs, manifests, lock file)."""

from __future__ import annotations

from typing import Any, Iterable

import yaml


# libyaml's emitter when PyYAML was built with it: the lock file of a large
# cluster is tens of thousands of nodes, and the pure-Python emitter is slow.
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[misc, valid-type]
    """Block style, insertion order kept, multi-line strings as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=4096)


def dump_yaml_all(documents: Iterable[Any]) -> str:
    return yaml.dump_all(
        list(documents), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
        explicit_start=True, width=4096,
    )
