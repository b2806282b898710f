"""Every tensor the torch stages and the training loop create is created on the model's device
(``device=``) or moved there at once (``.to(...)``): on a GPU a CPU tensor meeting a CUDA
model is a crash, and no CI machine has a GPU to show it. ast only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "edgeopt"
SCOPE = ("training", "stages")
FACTORIES = frozenset(
    {"zeros", "ones", "empty", "full", "randn", "rand", "randint", "arange", "tensor", "from_numpy"}
)
# (file relative to edgeopt/, enclosing function) -> why a bare factory call is right there
ALLOWED: dict[tuple[str, str], str] = {}


def _calls(path: Path) -> list[tuple[str, int, str]]:
    """(enclosing function, line, call text) of every torch factory call without ``device=``
    that is not directly ``.to(...)``'d."""
    tree = ast.parse(path.read_text())
    moved: set[int] = set()  # ids of calls that are the receiver of a ``.to(...)`` call
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "to"
            and node.args + node.keywords
        ):
            moved.add(id(node.func.value))
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and isinstance(child.func.value, ast.Name)
                and child.func.value.id == "torch"
                and child.func.attr in FACTORIES
                and not any(k.arg == "device" for k in child.keywords)
                and id(child) not in moved
            ):
                found.append((function, child.lineno, ast.unparse(child)))
            visit(child, name)

    visit(tree, "<module>")
    return found


def _offenders() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for package in SCOPE:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for function, line, text in _calls(path):
                out.setdefault((rel, function), []).append(f"{rel}:{line} {text}")
    return out


def test_every_tensor_is_made_on_the_models_device() -> None:
    offenders = _offenders()
    bad = [line for key, lines in offenders.items() if key not in ALLOWED for line in lines]
    assert not bad, "tensors made without device= or .to(...):\n" + "\n".join(bad)
    stale = sorted(set(ALLOWED) - set(offenders))
    assert not stale, f"allowlisted but clean now (remove the entry): {stale}"


def test_the_check_sees_a_bare_factory_and_accepts_both_fixes(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import torch\n"
        "def f(x, d):\n"
        "    a = torch.zeros(3)\n"
        "    b = torch.zeros(3, device=d)\n"
        "    c = torch.randn(3, generator=g).to(d)\n"
        "    e = torch.from_numpy(x)\n"
        "    return e.to(d)\n"
    )
    assert [(f, line) for f, line, _ in _calls(src)] == [("f", 3), ("f", 6)]
