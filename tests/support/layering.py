"""The layers of the stellwerk package, and a checker that reads every import (top-level or inside a function).

Layers, lowest first. A module may import its own layer and the ones below, never one above:

    base            errors, problems, file writes, YAML output, templating, shared types, the lab OS's names
    spec            the cluster file: parsing, typed model, release pins, snippets (Ignition's model), validation
    plan            Cluster -> Plan, and what it is made for: the node OSes and the shape of a node fragment
    secrets         PKI, WireGuard keys, tokens, kubeconfigs
    manifests       components (their objects and node fragments) and the cluster's Kubernetes objects
    node configs    Ignition and cloud-init per node, with the fragments the components ask for
    assets          render: the assets directory, the netboot store, upstream manifests
    consumers       netboot, images, lab
    cli             every command group (stellwerk.cli and each folder's cli.py)

Besides the order, no two units of one layer may import each other in a cycle, where a unit is a folder's share of
a layer (netboot, images and lab are three units of the consumers layer). The CLI is exempt from both rules.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Folder -> the package it holds (pyproject.toml's package-dir).
FOLDERS = {"distro": "stellwerk", "ignition": "stellwerk.ignition", "components": "stellwerk.components",
           "netboot": "stellwerk.netboot", "images": "stellwerk.images", "lab": "stellwerk.lab"}

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # `stellwerk` itself is the package's __init__ (its version); images.contract holds only the names the lab OS
    # image promises its readers (file names, labels, kernel arguments), and netboot.documents the machine store's
    # document types: the renderer writes what netboot reads.
    ("base", ("stellwerk.base", "stellwerk", "stellwerk.images.contract", "stellwerk.netboot.documents")),
    # Ignition's config model, its merge rules and the Butane subset are the form snippets take in the cluster file;
    # components.base holds the base of every component's options (and patches) and the Component record.
    ("spec", ("stellwerk.release", "stellwerk.binaries", "stellwerk.spectypes", "stellwerk.yamlsource", "stellwerk.ignition.model",
              "stellwerk.ignition.merge", "stellwerk.ignition.butane", "stellwerk.components.base", "stellwerk.spec",
              "stellwerk.snippets", "stellwerk.validation", "stellwerk.load")),
    ("plan", ("stellwerk.plan", "stellwerk.ignition.nodeos", "stellwerk.ignition.fragments")),
    ("secrets", ("stellwerk.extensions", "stellwerk.x509", "stellwerk.pki", "stellwerk.wireguard", "stellwerk.tokens", "stellwerk.secrets",
                 "stellwerk.kubeconfig")),
    ("manifests", ("stellwerk.components", "stellwerk.podnetwork", "stellwerk.addons", "stellwerk.bootstrap", "stellwerk.manifests")),
    ("node configs", ("stellwerk.ignition",)),
    ("assets", ("stellwerk.imagelist", "stellwerk.sysext", "stellwerk.assets", "stellwerk.upstream", "stellwerk.netbootstore", "stellwerk.lockfile",
                "stellwerk.render", "stellwerk.summary", "stellwerk.starter")),
    ("consumers", ("stellwerk.netboot", "stellwerk.images", "stellwerk.lab")),
    ("cli", ("stellwerk.cli", "stellwerk.__main__", "stellwerk.netboot.cli", "stellwerk.images.cli",
             "stellwerk.lab.cli")),
)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    file: str
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package under `root`: dotted name -> file."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def layer_of(module: str) -> int:
    """The index of the module's layer: the longest prefix that names it wins (stellwerk.lab.cli is cli)."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix != "stellwerk"
            if (module == prefix or below) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in tests/support/layering.py")
    return best


def unit_of(module: str, modules: Mapping[str, Path], root: Path) -> tuple[str, int]:
    return modules[module].relative_to(root).parts[0], layer_of(module)


def imports(root: Path, modules: Mapping[str, Path]) -> list[Import]:
    """Every import of a stellwerk module by a stellwerk module, resolved to the module imported."""
    found = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from pkg import name` imports pkg.name when that is a module, else pkg itself
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    found.append(Import(module, name, str(path.relative_to(root)), node.lineno))
    return found


def upward(found: Iterable[Import]) -> list[Import]:
    """Imports from a lower layer of a higher one (the CLI imports whatever it needs)."""
    cli = len(LAYERS) - 1
    return sorted({i for i in found if layer_of(i.importer) != cli and layer_of(i.imported) > layer_of(i.importer)},
                  key=lambda i: (i.file, i.line, i.imported))


def unit_cycles(found: Iterable[Import], modules: Mapping[str, Path], root: Path) -> list[list[tuple[str, int]]]:
    """Cycles between units (a folder's share of one layer), each as the units on it; the CLI left out."""
    cli = len(LAYERS) - 1
    graph: dict[tuple[str, int], set[tuple[str, int]]] = defaultdict(set)
    for i in found:
        a, b = unit_of(i.importer, modules, root), unit_of(i.imported, modules, root)
        if a != b and cli not in (a[1], b[1]):
            graph[a].add(b)
    return [component for component in _strongly_connected(graph) if len(component) > 1]


def _strongly_connected(graph: Mapping[tuple[str, int], set[tuple[str, int]]]) -> list[list[tuple[str, int]]]:
    """Tarjan's algorithm; small graphs, so recursion is fine."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    components: list = []

    def visit(node) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(set(graph) | {s for successors in graph.values() for s in successors}):
        if node not in index:
            visit(node)
    return components


def describe(i: Import) -> str:
    return (f"{i.file}:{i.line}: {i.importer} ({LAYERS[layer_of(i.importer)][0]}) imports {i.imported} "
            f"({LAYERS[layer_of(i.imported)][0]})")
