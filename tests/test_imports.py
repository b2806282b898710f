"""Function-local imports follow edgeopt/lazy.py's rule, and importing the CLI loads no heavy
library. The rule is checked by scripts/hoist_imports.py's own analysis (ast only), which the
last test runs on a small package built here to show it moves, keeps and flags what it should."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from edgeopt.lazy import HEAVY

REPO = Path(__file__).resolve().parents[1]


def _hoist() -> ModuleType:
    name = "hoist_imports"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the class is built
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_function_local_imports_follow_the_rule() -> None:
    hoist = _hoist()
    plan = hoist.plan(REPO / "edgeopt")
    movable = [f"{s.where}: {hoist.ast.unparse(s.node)}" for s in plan.moves]
    broken = [f"{s.where}: {hoist.ast.unparse(s.node)} ({why})" for s, why in plan.broken]
    # run `python scripts/hoist_imports.py` to move the first kind; the second needs a person
    assert (movable, broken) == ([], [])


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = (
        "import sys, edgeopt.cli; "
        "tops = {m.split('.')[0] for m in sys.modules}; "
        f"print(','.join(sorted(tops & set({sorted(HEAVY)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


FILES = {
    "__init__.py": "",
    "lazy.py": "HEAVY = frozenset({'torch'})\n",
    "other.py": "X = 1\nY = 2\n",
    "heavy_mod.py": "import torch\n",
    "light.py": (
        '"""A light module."""\n\nfrom edgeopt.other import Y\n\n\n'
        "def f() -> int:\n"
        "    import json\n\n"
        "    from edgeopt.other import X, Y\n\n"
        "    return X + Y + len(json.dumps(1))\n\n\n"
        "def g() -> object:\n"
        "    from edgeopt.heavy_mod import torch\n\n"
        "    return torch\n"
    ),
    "clash.py": "X = 3\n\n\ndef f() -> int:\n    from edgeopt.other import X\n\n    return X\n",
    "a.py": "from edgeopt import b\n\nA = 1\n",
    "b.py": "def f() -> int:\n    from edgeopt.a import A\n\n    return A\n",
    "cli/__init__.py": "def main() -> int:\n    from edgeopt.other import X\n\n    return X\n",
}


def test_the_rule_moves_keeps_and_flags_on_a_small_package(tmp_path: Path) -> None:
    root = tmp_path / "edgeopt"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    hoist = _hoist()
    plan = hoist.plan(root)
    assert sorted((s.module, s.node.lineno) for s in plan.moves) == [
        ("edgeopt.light", 7),  # json: stdlib
        ("edgeopt.light", 9),  # a light edgeopt module
    ]
    kept = {(s.module, why.split(":")[0]) for s, why in plan.kept}
    assert kept == {
        ("edgeopt.light", hoist.HEAVY_MOD),  # heavy_mod imports torch at its top
        ("edgeopt.cli", hoist.CLI_BODY),
        ("edgeopt.clash", hoist.CLASH),  # X at the top is another X
        ("edgeopt.b", hoist.CIRCLE),  # a imports b at its top
    }
    assert {s.module for s, _ in plan.broken} == {"edgeopt.clash", "edgeopt.b"}

    assert hoist.main(["--root", str(root)]) == 1  # rewrites; the two broken ones remain
    text = (root / "light.py").read_text()
    head, _, body = text.partition("def f")
    assert "import json" in head and "from edgeopt.other import X, Y" in head
    assert "import" not in body.partition("def g")[0]
    assert [s.node.lineno for s in hoist.plan(root).moves] == []  # idempotent
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", "import edgeopt.light as m; print(m.f())"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.stdout.strip() == "4", run.stderr
