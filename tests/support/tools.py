"""The real engines the tests run (ignition, openssl, etcd, wg, qemu, ...)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, *fallbacks: str) -> str:
    """Path of a real engine; missing in CI is a failure, elsewhere a skip."""
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else None)
        if found:
            return found
    message = f"{name} is not installed (./dev.sh test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
