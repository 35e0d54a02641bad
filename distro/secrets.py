"""The persisted state of a cluster: PKI, WireGuard keys and the bootstrap token.

Load what exists, create what is missing, never replace a key. Everything on
disk is read and checked before the first new file is written, so a broken
assets directory is reported and left exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .base.errors import SecretsError
from .pki import PKI, ControllerIdentity, PKIRequest, load_or_create_pki
from .plan import Plan
from .tokens import BootstrapToken, generate_token, read_token, write_token
from .wireguard import WireGuardKey, generate_key, read_key, write_keys, write_missing_public_keys
from .wireguard import recover as recover_wireguard


@dataclass(frozen=True)
class Secrets:
    pki: PKI
    wireguard: dict[str, WireGuardKey]
    bootstrap_token: BootstrapToken
    created: tuple[str, ...]
    reissued: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Secrets(created={len(self.created)}, reissued={len(self.reissued)})"


def pki_request(plan: Plan) -> PKIRequest:
    spec = plan.spec
    return PKIRequest(
        cluster_name=plan.name,
        key_algorithm=spec.pki.key_algorithm,
        ca_validity=spec.pki.ca_validity,
        cert_validity=spec.pki.cert_validity,
        api_endpoint=spec.kubernetes.api_endpoint,
        api_service_ip=plan.api_service_ip,
        cluster_domain=spec.kubernetes.cluster_domain,
        controllers=tuple(ControllerIdentity(node.name, node.address) for node in plan.controllers),
    )


def load_or_create_secrets(assets_dir: Path, plan: Plan, now: datetime | None = None) -> Secrets:
    wireguard_dir = assets_dir / "wireguard"
    token_path = assets_dir / "auth" / "bootstrap-token"
    # A first write that was interrupted left a journal: its half-written pairs go, and are made again.
    if wireguard_dir.is_dir():
        recover_wireguard(wireguard_dir)
    # Read and check first: any SecretsError here leaves the directory untouched.
    wireguard = {node.name: read_key(wireguard_dir, node.name) for node in plan.nodes} if plan.spec.wireguard.enabled else {}
    token = read_token(token_path)

    pki = load_or_create_pki(assets_dir / "pki", pki_request(plan), now=now)

    created = list(pki.created)
    new_keys = {name: generate_key() for name, key in wireguard.items() if key is None}
    try:
        existing = {name: key for name, key in wireguard.items() if key is not None}
        created += [f"wireguard/{name}" for name in write_missing_public_keys(wireguard_dir, existing)]
        write_keys(wireguard_dir, new_keys)
        wireguard.update(new_keys)
        created += [f"wireguard/{name}.{suffix}" for name in new_keys for suffix in ("key", "pub")]
        if token is None:
            token = generate_token()
            write_token(token_path, token)
            created.append("auth/bootstrap-token")
    except FileExistsError as exc:
        raise SecretsError(str(exc.filename), "appeared while stellwerk was writing it (is another stellwerk running "
                           "on this directory?); it was left as it is") from None
    except OSError as exc:
        raise SecretsError(str(exc.filename or assets_dir), f"cannot be written ({exc.strerror})") from None
    return Secrets(
        pki=pki,
        wireguard={name: key for name, key in wireguard.items() if key is not None},
        bootstrap_token=token,
        created=tuple(created),
        reissued=tuple(pki.reissued),
    )
