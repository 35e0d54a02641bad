"""The log of `stellwerk netboot serve`: one JSON object per line on stderr, whatever the service.

Each line carries `time` (Unix seconds), `logger`, `level` and `message`; TFTP transfers add their structured
record as `tftp`. The HTTP service's message is itself a JSON object (see http.py), kept as a string so that every
line has the same shape for log shippers.
"""

from __future__ import annotations

import json
import logging
import re
import sys

EXTRA_FIELDS = ("tftp",)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {"time": round(record.created, 3), "logger": record.name,
                                   "level": record.levelname, "message": record.getMessage()}
        for key in EXTRA_FIELDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record, not the one there when it was made: a caller
    that swaps stderr (a test harness capturing output) must not leave the handler writing into a closed stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send Stellwerk's records at `level` and above to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("stellwerk")
    if any(isinstance(handler.formatter, JsonLines) for handler in logger.handlers):
        return
    handler = _Stderr()
    handler.setFormatter(JsonLines())
    logger.addHandler(handler)
    logger.setLevel(level)


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"':#]*")  # up to what ends a token in a URL or a log line


def redact_tokens(text: str | None) -> str | None:
    """`text` fit for a log or a record: a one-time token in a URL is a credential and is never written down."""
    return _TOKEN_IN_QUERY.sub(r"\1<redacted>", text) if text else text
