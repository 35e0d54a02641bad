"""Split a rendered Ignition config into what may travel in the clear and what may not.

The rule is the one the renderer already follows when it sets modes: a file that only its owner may read (no
group or other permission bits) holds secret material: private keys, kubeconfigs with credentials, the WireGuard
key, and any 0600 file an operator's snippet adds. A user's password hash is secret too. Everything else is public.

Merging the secret part back into the public one with Ignition's own rules (`ignition.config.merge`) gives the
original config: a secret file leaves the public part entirely, so nothing needs overriding, and a user keeps its
entry in the public part with only the password hash moved.
"""

from __future__ import annotations

import copy
from typing import Any

OWNER_ONLY = 0o077  # permission bits that must all be clear for a file to count as secret


def is_secret_file(entry: dict[str, Any]) -> bool:
    mode = entry.get("mode")
    return isinstance(mode, int) and mode & OWNER_ONLY == 0


def split(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(public, secret) parts of an Ignition 3.x config given as parsed JSON; secret is None when there is none.

    The input is not modified. The secret part carries the same `ignition.version` and nothing else in its
    `ignition` section, so it cannot point anywhere on its own.
    """
    public = copy.deepcopy(config)
    secret_files: list[dict[str, Any]] = []
    storage = public.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("files"), list):
        kept = []
        for entry in storage["files"]:
            (secret_files if isinstance(entry, dict) and is_secret_file(entry) else kept).append(entry)
        storage["files"] = kept
    secret_users: list[dict[str, Any]] = []
    passwd = public.get("passwd")
    if isinstance(passwd, dict) and isinstance(passwd.get("users"), list):
        for user in passwd["users"]:
            if isinstance(user, dict) and user.get("passwordHash") is not None:
                secret_users.append({"name": user["name"], "passwordHash": user.pop("passwordHash")})
    if not secret_files and not secret_users:
        return public, None
    secret: dict[str, Any] = {"ignition": {"version": config.get("ignition", {}).get("version", "3.3.0")}}
    if secret_users:
        secret["passwd"] = {"users": secret_users}
    if secret_files:
        secret["storage"] = {"files": secret_files}
    return public, secret
