"""Templates of the components (components/templates/<KEY>-*.j2)."""

from __future__ import annotations

from stellwerk.ignition.templating import environment


def render_template(template: str, /, *, trim_blocks: bool = False, **values: object) -> str:
    return environment("stellwerk.components", trim_blocks).get_template(template).render(**values)
