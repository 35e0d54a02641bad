"""Go-style durations ("87600h", "1h30m"), the form Kubernetes tooling uses for validity periods."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(h|m|s)")
_WHOLE = re.compile(r"(?:\d+[hms])+")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
MAX_SECONDS = 100 * 365 * 24 * 3600


def parse_duration(text: str) -> timedelta:
    """Parse hours/minutes/seconds; days are deliberately not accepted, as in Go."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration; write hours, minutes and seconds such as '8760h' or '90h30m'")
    seconds = sum(int(value) * _UNIT_SECONDS[unit] for value, unit in _PART.findall(text))
    if seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than 100 years ({MAX_SECONDS // 3600}h); X.509 dates end in 9999")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{seconds}s" if seconds else "")
    return text or "0s"
