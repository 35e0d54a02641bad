"""Where the repository and its bundled examples are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO / "examples" / "lab-cluster.yaml"
# Beside the repository: the pinned upstream manifests (a mirror for `components fetch --mirror`) and CRD schemas.
SHARED = REPO.parent / "shared"


def _without_components(text: str) -> str:
    """The example without its `components:` block, for tests that add components of their own."""
    start = text.index("  components:\n")
    end = text.index("  snippets:\n", start)
    return text[:start] + text[end:]


# The lab example as it was before it enabled nvme and hostProtection: the base that component tests extend.
BASE_EXAMPLE_TEXT = _without_components(EXAMPLE.read_text())
