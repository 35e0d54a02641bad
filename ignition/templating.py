"""Text templates for the files that are text by nature: systemd units and networkd files."""

from __future__ import annotations

from functools import cache

import jinja2


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("stellwerk.ignition", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_template(template: str, /, **values: object) -> str:
    return _environment().get_template(template).render(**values)
