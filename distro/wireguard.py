"""WireGuard key pairs for the wg0 mesh: one X25519 pair per node, in wg's own format."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .base.errors import SecretsError
from .base.fsutil import recover_interrupted, write_new_files

_RAW = serialization.Encoding.Raw


@dataclass(frozen=True)
class WireGuardKey:
    private_key: str  # base64, as `wg genkey` prints it
    public_key: str  # base64, as `wg pubkey` prints it

    def __repr__(self) -> str:  # keep private keys out of logs and tracebacks
        return f"WireGuardKey(public_key={self.public_key!r})"


def generate_key() -> WireGuardKey:
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return WireGuardKey(base64.b64encode(raw).decode(), _public_of(private))


def _public_of(private: X25519PrivateKey) -> str:
    return base64.b64encode(private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)).decode()


def recover(directory: Path) -> list[str]:
    """Remove the keys of an interrupted first write (see fsutil.recover_interrupted)."""
    return recover_interrupted(directory)


def read_key(directory: Path, node: str) -> WireGuardKey | None:
    """Load a node's pair if present; raise SecretsError if it is half there or broken."""
    key_path, pub_path = directory / f"{node}.key", directory / f"{node}.pub"
    label = f"wireguard/{node}"
    if not key_path.exists() and not pub_path.exists():
        return None
    if not key_path.exists():
        raise SecretsError(f"{label}.key", f"missing while {node}.pub exists; restore it, or delete {node}.pub to generate a new pair")
    # A missing .pub is derived from the key (see write_missing_public_keys); a missing key is not derivable.
    private_text = key_path.read_text(encoding="ascii", errors="replace").strip()
    try:
        raw = base64.b64decode(private_text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise SecretsError(f"{label}.key", "is not a WireGuard private key (base64 of 32 bytes); restore it from backup")
    public = _public_of(X25519PrivateKey.from_private_bytes(raw))
    if not pub_path.exists():
        return WireGuardKey(private_text, public)
    if pub_path.read_text(encoding="ascii", errors="replace").strip() != public:
        raise SecretsError(f"{label}.pub", f"does not belong to {node}.key; restore the matching pair, or delete both to generate a new one")
    return WireGuardKey(private_text, public)


def write_missing_public_keys(directory: Path, keys: dict[str, WireGuardKey]) -> list[str]:
    """Write <node>.pub where only <node>.key is on disk; return the file names written."""
    missing = {node: key for node, key in keys.items() if not (directory / f"{node}.pub").exists()}
    write_new_files(((directory / f"{node}.pub", (key.public_key + "\n").encode(), 0o644) for node, key in missing.items()),
                    journal_dir=directory)
    return [f"{node}.pub" for node in missing]


def write_keys(directory: Path, keys: dict[str, WireGuardKey]) -> None:
    write_new_files((
        entry
        for node, key in keys.items()
        for entry in (
            (directory / f"{node}.key", (key.private_key + "\n").encode(), 0o600),
            (directory / f"{node}.pub", (key.public_key + "\n").encode(), 0o644),
        )
    ), journal_dir=directory)
