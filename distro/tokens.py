"""The TLS-bootstrap token that lets new kubelets ask for their client certificate."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from .base.errors import SecretsError
from .base.fsutil import write_new_file

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_FORMAT = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})")


@dataclass(frozen=True)
class BootstrapToken:
    token_id: str
    secret: str

    @property
    def value(self) -> str:
        return f"{self.token_id}.{self.secret}"

    def __repr__(self) -> str:
        return f"BootstrapToken(token_id={self.token_id!r})"


def generate_token() -> BootstrapToken:
    return BootstrapToken(
        "".join(secrets.choice(_ALPHABET) for _ in range(6)),
        "".join(secrets.choice(_ALPHABET) for _ in range(16)),
    )


def read_token(path: Path) -> BootstrapToken | None:
    if not path.exists():
        return None
    match = _FORMAT.fullmatch(path.read_text(encoding="ascii", errors="replace").strip())
    if not match:
        raise SecretsError("auth/bootstrap-token", "is not a bootstrap token of the form [a-z0-9]{6}.[a-z0-9]{16}; restore it, or delete it to generate a new one (nodes not yet joined would need new configs)")
    return BootstrapToken(match.group(1), match.group(2))


def write_token(path: Path, token: BootstrapToken) -> None:
    write_new_file(path, (token.value + "\n").encode(), 0o600)
