"""The layer contract (DESIGN.md): which package may import which. Fails on a back-arrow, an
import circle (function-local imports count) or another module's _private name. ast only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "edgeopt"
# Low to high; a module may import its own layer and lower ones. An entry names a module or a
# package with its submodules; "=name" names that module alone. Old names go as steps land.
# Why this order: report renders records and holds the pick rule the search's progress line uses,
# so it sits below search; estimate imports only profiles and stages ask it for MACs; the measure
# device kit (child, session, timing, power) is stdlib-only and copied to devices, so any layer
# may use it.
LAYERS: list[list[str]] = [
    [
        "=edgeopt",
        "errors",
        "fileio",
        "inputs",
        "seq_lens",
        "zoo_transformers",
        "zoo",
        "lifeline",
        "heap",
        "runtime_child",
        "stopping",
        "=measure",
        "measure.child",
        "measure.session",
        "measure.timing",
        "measure.power",
    ],
    [
        "metrics",
        "budgets",
        "profiles",
        "records",
        "record_codec",
        "record_seq",
        "record_targets",
        "data_facts",
    ],
    ["report"],
    ["loading"],
    ["data", "config"],
    ["estimate"],
    ["export"],
    ["training"],
    ["stages"],
    ["candidate", "pipeline", "onnx_export"],
    ["measure"],
    ["rundir", "bench", "bench_files", "bench_seq", "check"],
    ["=search", "search.strategy"],
    ["search.study"],
    ["search.trial"],
    ["search.integrations"],
    ["search.run"],
    ["cli"],
]
KNOWN_CYCLES: set[frozenset[str]] = set()  # each step of Part A emptied its entry
KNOWN_PRIVATE: set[str] = set()
MODULES: dict[str, Path] = {}  # dotted module name -> file
for p in ROOT.rglob("*.py"):
    parts = p.relative_to(ROOT.parent).with_suffix("").parts
    MODULES[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p


def _short(m: str) -> str:
    return m.removeprefix("edgeopt.")


def _resolve(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(mod: str) -> Iterator[tuple[int, str, list[str], bool]]:
    """(line, edgeopt module, names taken from it, under TYPE_CHECKING) per import."""
    tree = ast.parse(MODULES[mod].read_text())
    tc = {
        n.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for s in node.body
        for n in ast.walk(s)
        if hasattr(n, "lineno")
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("edgeopt"):
                    yield node.lineno, _resolve(a.name), [], node.lineno in tc
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgeopt"):
            for a in node.names:  # (edgeopt uses no relative imports)
                full = f"{node.module}.{a.name}"
                sub = full in MODULES
                yield (
                    node.lineno,
                    full if sub else _resolve(node.module),
                    [] if sub else [a.name],
                    node.lineno in tc,
                )


def _layer(mod: str) -> int:
    rel, best, size = _short(mod), None, -1
    for i, names in enumerate(LAYERS):
        for n in names:
            hit = rel == n[1:] if n[0] == "=" else rel == n or rel.startswith(n + ".")
            if hit and (999 if n[0] == "=" else len(n)) > size:
                best, size = i, 999 if n[0] == "=" else len(n)
    assert best is not None, f"{mod} is in no layer: add it to LAYERS"
    return best


def test_no_back_arrows() -> None:
    assert [
        f"{_short(m)}:{ln} imports {_short(t)} (layer {_layer(m)} -> {_layer(t)})"
        for m in MODULES
        for ln, t, _, _ in _imports(m)
        if _layer(t) > _layer(m)
    ] == []


def _cycles() -> set[frozenset[str]]:
    graph = {m: {t for _, t, _, tc in _imports(m) if not tc and t != m} for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: set[frozenset[str]] = set()

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: set[str] = set()
            while (w := stack.pop()) != v:
                comp.add(_short(w))
            comp.add(_short(v))
            if len(comp) > 1:
                out.add(frozenset(comp))

    for m in MODULES:
        if m not in index:
            visit(m)
    return out


def test_no_import_circles() -> None:
    assert _cycles() == KNOWN_CYCLES


def test_no_private_names_across_modules() -> None:
    found: set[str] = set()
    for m in MODULES:
        found |= {
            f"{_short(m)} -> {_short(t)}.{n}"
            for _, t, names, _ in _imports(m)
            for n in names
            if n.startswith("_") and not n.startswith("__")
        }
        tree = ast.parse(MODULES[m].read_text())
        mods = {
            a.asname or a.name: f"{n.module}.{a.name}"
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("edgeopt")
            for a in n.names
            if f"{n.module}.{a.name}" in MODULES
        }
        found |= {
            f"{_short(m)} -> {_short(mods[n.value.id])}.{n.attr}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and n.value.id in mods
            and n.attr.startswith("_")
            and not n.attr.startswith("__")
        }
    assert found == KNOWN_PRIVATE
