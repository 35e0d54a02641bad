"""Text templates for the files that are text by nature: systemd units, networkd files, udev rules, scripts.

One Jinja setup for every package that ships templates, so undefined values
fail loudly and shell values are quoted the same way everywhere.
"""

from __future__ import annotations

import shlex
from functools import cache

import jinja2


@cache
def environment(package: str, trim_blocks: bool = False) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=trim_blocks,
        lstrip_blocks=trim_blocks,
        autoescape=False,
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


def render_template(package: str, template: str, /, *, trim_blocks: bool = False, **values: object) -> str:
    """`template` from `package`'s templates/ folder, rendered with `values`."""
    return environment(package, trim_blocks).get_template(template).render(**values)
