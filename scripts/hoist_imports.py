"""Move function-local imports to the top of their module where edgeopt/lazy.py's rule allows.

    python scripts/hoist_imports.py [--check] [--root edgeopt]

Without --check it rewrites the modules, then runs ``ruff check --fix --select I`` and
``ruff format`` on the files it changed, and prints every move and every import it left inside
a function, with the reason. With --check it changes nothing and exits 1 when anything would
move or when an import breaks the rule in a way only a person can fix (a name clash, a circle).
Running it again after a rewrite moves nothing (idempotent).

What stays inside its function (edgeopt/lazy.py says why each is allowed): a ``HEAVY`` library;
an edgeopt import inside ``cli/``; an edgeopt module whose import loads a HEAVY library (the
closure of module-level imports, package ``__init__`` files included); in the device kit,
anything but the stdlib, numpy and the kit; an import that would make ``import edgeopt.cli``
load a new third-party package; one inside a ``try`` that catches ImportError. Not moved, and
reported as breaking the rule: one whose name means something else at the top of the module or
elsewhere in its function, and one that would close a circle of module-level imports.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT_FILES_OF = ("measure", "ssh_runner.py", "CHILD_FILES")  # where the device kit is named
KIT_EXTRA = frozenset({"numpy"})  # the kit's modules may import this at their top too
CLI = "cli"
FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}

# reasons an import stays inside its function; ALLOWED ones are the rule's exceptions
HEAVY_LIB, CLI_BODY, HEAVY_MOD, KIT, CLI_WEIGHT, OPTIONAL = (
    "heavy library",
    "edgeopt import in a cli/ function",
    "loads a heavy library",
    "device kit",
    "import edgeopt.cli would load more",
    "optional (try/except ImportError)",
)
ALLOWED = frozenset({HEAVY_LIB, CLI_BODY, HEAVY_MOD, KIT, CLI_WEIGHT, OPTIONAL})
CLASH, CIRCLE, SHARED_LINE = "name clash", "circle", "shares its line"


def read_heavy(root: Path) -> frozenset[str]:
    """``HEAVY`` from ``<root>/lazy.py``, read with ast (nothing is imported)."""
    for node in ast.parse((root / "lazy.py").read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            names = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(n, ast.Name) and n.id == "HEAVY" for n in names):
                assert node.value is not None
                return frozenset(ast.literal_eval(node.value.args[0]))  # type: ignore[attr-defined]
    raise SystemExit(f"{root / 'lazy.py'} defines no HEAVY")


def read_kit(root: Path) -> frozenset[str]:
    """The device kit's module names, from ``CHILD_FILES`` in measure/ssh_runner.py."""
    pkg, file, var = KIT_FILES_OF
    path = root / pkg / file
    if not path.exists():
        return frozenset()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == var:
            names = ast.literal_eval(node.value)
            return frozenset(f"{root.name}.{pkg}.{n.removesuffix('.py')}" for n in names)
    return frozenset()


@dataclass
class Stmt:
    """One import statement: where it is and what it loads."""

    module: str
    node: ast.Import | ast.ImportFrom
    local: bool  # inside a function
    type_checking: bool
    func: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    body: list[ast.stmt] = field(default_factory=list)  # the statement list holding it
    optional: bool = False  # inside a try that catches ImportError

    @property
    def where(self) -> str:
        return f"{self.module}:{self.node.lineno}"


class Tree:
    """The package's modules, their imports, and what importing each one loads."""

    def __init__(self, root: Path, heavy: frozenset[str]) -> None:
        self.root, self.pkg, self.heavy = root, root.name, heavy
        self.files: dict[str, Path] = {}
        for p in sorted(root.rglob("*.py")):
            parts = p.relative_to(root.parent).with_suffix("").parts
            self.files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
        self.kit = read_kit(root)
        self.trees = {m: ast.parse(p.read_text()) for m, p in self.files.items()}
        self.stmts = {m: list(self._stmts(m)) for m in self.files}
        self.extra_edges: dict[str, set[str]] = {m: set() for m in self.files}
        self.extra_libs: dict[str, set[str]] = {m: set() for m in self.files}
        self._closure: dict[str, tuple[frozenset[str], frozenset[str]]] = {}

    # --- reading -------------------------------------------------------------------------
    def _stmts(self, mod: str) -> Iterator[Stmt]:
        def visit(
            body: list[ast.stmt],
            func: ast.FunctionDef | ast.AsyncFunctionDef | None,
            tc: bool,
            opt: bool,
        ) -> Iterator[Stmt]:
            for s in body:
                if isinstance(s, ast.Import | ast.ImportFrom):
                    yield Stmt(mod, s, func is not None, tc, func, body, opt)
                elif isinstance(s, FUNCS):
                    yield from visit(s.body, s, False, False)
                elif isinstance(s, ast.ClassDef):
                    yield from visit(s.body, func, tc, opt)
                elif isinstance(s, ast.If):
                    is_tc = "TYPE_CHECKING" in ast.unparse(s.test)
                    yield from visit(s.body, func, tc or is_tc, opt)
                    yield from visit(s.orelse, func, tc, opt)
                elif isinstance(s, ast.Try | ast.TryStar):
                    catches = any(_catches_import_error(h) for h in s.handlers)
                    yield from visit(s.body, func, tc, opt or catches)
                    for h in s.handlers:
                        yield from visit(h.body, func, tc, opt)
                    yield from visit(s.orelse, func, tc, opt)
                    yield from visit(s.finalbody, func, tc, opt)
                elif isinstance(s, ast.For | ast.AsyncFor | ast.While | ast.With | ast.AsyncWith):
                    yield from visit(s.body, func, tc, opt)
                    yield from visit(getattr(s, "orelse", []), func, tc, opt)
                elif isinstance(s, ast.Match):
                    for case in s.cases:
                        yield from visit(case.body, func, tc, opt)

        yield from visit(self.trees[mod].body, None, False, False)

    @staticmethod
    def targets_pkg(node: ast.Import | ast.ImportFrom, pkg: str) -> bool:
        """True when the statement imports from the package itself."""
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        return (
            node.level > 0
            if isinstance(node, ast.ImportFrom) and node.level
            else any((n or "").split(".")[0] == pkg for n in names)
        )

    def resolve(self, name: str) -> str | None:
        while name and name not in self.files:
            name = name.rpartition(".")[0]
        return name or None

    def ancestors(self, mod: str) -> list[str]:
        parts = mod.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i])]

    def targets(self, s: Stmt) -> tuple[set[str], set[str]]:
        """(edgeopt modules the statement names directly, third-party top-level packages)."""
        mods: set[str] = set()
        libs: set[str] = set()
        node = s.node
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if node.level == 0
            else []
        )
        for name in names:
            top = name.split(".")[0]
            if top == self.pkg:
                hit = self.resolve(name)
                if hit:
                    mods.add(hit)
                if isinstance(node, ast.ImportFrom):
                    mods |= {f"{name}.{a.name}" for a in node.names} & self.files.keys()
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                libs.add(top)
        return mods, libs

    def loads(self, s: Stmt) -> set[str]:
        """Every edgeopt module the statement imports: its targets and their packages."""
        mods, _ = self.targets(s)
        return mods | {a for m in mods for a in self.ancestors(m)}

    # --- the module-level graph -----------------------------------------------------------
    def edges(self, mod: str) -> set[str]:
        """Modules that must be imported while ``mod`` runs (its own packages excluded unless
        named directly: they are already importing)."""
        own = set(self.ancestors(mod))
        out = set(self.extra_edges[mod])
        for s in self.stmts[mod]:
            if s.local or s.type_checking:
                continue
            direct, _ = self.targets(s)
            out |= direct | (self.loads(s) - own)
        out.discard(mod)
        return out

    def libs(self, mod: str) -> set[str]:
        out = set(self.extra_libs[mod])
        for s in self.stmts[mod]:
            if not s.local and not s.type_checking:
                out |= self.targets(s)[1]
        return out

    def closure(self, mod: str) -> tuple[frozenset[str], frozenset[str]]:
        """(edgeopt modules, third-party packages) that ``import mod`` loads."""
        if mod not in self._closure:
            seen: set[str] = set()
            todo = [mod, *self.ancestors(mod)]
            while todo:
                m = todo.pop()
                if m in seen or m not in self.files:
                    continue
                seen.add(m)
                todo += [*self.edges(m), *self.ancestors(m)]
            libs = frozenset(lib for m in seen for lib in self.libs(m))
            self._closure[mod] = (frozenset(seen), libs)
        return self._closure[mod]

    def path(self, start: set[str], goal: str) -> list[str] | None:
        """A chain of module-level imports from one of ``start`` to ``goal``, if any."""
        came: dict[str, str | None] = {m: None for m in sorted(start)}
        todo = sorted(start)
        while todo:
            m = todo.pop(0)
            if m == goal:
                chain = [m]
                while (prev := came[chain[-1]]) is not None:
                    chain.append(prev)
                return chain[::-1]
            for n in sorted(self.edges(m)):
                if n not in came:
                    came[n] = m
                    todo.append(n)
        return None

    def stmt_libs(self, s: Stmt) -> frozenset[str]:
        """Third-party packages that running the statement loads."""
        _, libs = self.targets(s)
        out = set(libs)
        for m in self.targets(s)[0]:
            out |= self.closure(m)[1]
        return frozenset(out)

    def hoist(self, s: Stmt) -> None:
        """Record that ``s`` now runs at module level (for the next decisions)."""
        direct, libs = self.targets(s)
        self.extra_edges[s.module] |= direct | (self.loads(s) - set(self.ancestors(s.module)))
        self.extra_libs[s.module] |= libs
        self._closure.clear()

    # --- the rule ---------------------------------------------------------------------------
    def verdict(self, s: Stmt) -> str | None:
        """Why ``s`` stays inside its function, or None when it moves to the top."""
        mods, libs = self.targets(s)
        if libs & self.heavy:
            return HEAVY_LIB
        if s.optional:
            return OPTIONAL
        if s.module in self.kit:
            outside = self.loads(s) - self.kit - {self.pkg, *self.ancestors(s.module)}
            if outside or libs - KIT_EXTRA:
                return KIT
        if mods and s.module.split(".")[:2] == [self.pkg, CLI]:
            return CLI_BODY
        if self.stmt_libs(s) & self.heavy:
            return HEAVY_MOD
        cli = f"{self.pkg}.{CLI}"
        if cli in self.files:
            cli_mods, cli_libs = self.closure(cli)
            if s.module in cli_mods and not self.stmt_libs(s) <= cli_libs:
                return CLI_WEIGHT
        if _shares_line(self.files[s.module], s.node):
            return SHARED_LINE
        if self._clash(s):
            return CLASH
        start = self.loads(s) - {s.module, *self.ancestors(s.module)}
        chain = self.path(start, s.module) if mods else None
        if chain:
            short = [m.removeprefix(f"{self.pkg}.") for m in [s.module, *chain]]
            return f"{CIRCLE}: {' -> '.join(short)}"
        return None

    def _clash(self, s: Stmt) -> bool:
        """True when a name the import binds means something else at module level, or is
        bound by something else in its function."""
        tree = self.trees[s.module]
        mine = dict(_bindings(s.node))
        top = _module_bindings(tree)
        for name, src in mine.items():
            if any(other != src for other in top.get(name, [])):
                return True
            assert s.func is not None
            if any(other != src for other in _function_bindings(s.func).get(name, [])):
                return True
            # another function's local import that moves would bind it differently
            for o in self.stmts[s.module]:
                if o.local and o.node is not s.node:
                    b = dict(_bindings(o.node))
                    if name in b and b[name] != src:
                        return True
        return False


def _catches_import_error(h: ast.ExceptHandler) -> bool:
    if h.type is None:
        return True
    names = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
    return any(ast.unparse(n).split(".")[-1] in IMPORT_ERRORS for n in names)


def _bindings(node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(bound name, what it is) per alias; the same pair at the top means the same thing."""
    for a in node.names:
        if isinstance(node, ast.Import):
            if a.asname:
                yield a.asname, ("module", a.name)
            else:
                yield a.name.split(".")[0], ("module", a.name.split(".")[0])
        else:
            yield a.asname or a.name, ("from", "." * node.level + (node.module or ""), a.name)


def _names_bound(nodes: list[ast.stmt], into: dict[str, list[tuple[str, ...]]]) -> None:
    for s in nodes:
        if isinstance(s, ast.Import | ast.ImportFrom):
            for name, src in _bindings(s):
                into.setdefault(name, []).append(src)
        elif isinstance(s, (*FUNCS, ast.ClassDef)):
            into.setdefault(s.name, []).append(("def", str(s.lineno)))
        else:
            for n in ast.walk(s):
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
                    into.setdefault(n.id, []).append(("assign", str(n.lineno)))
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    into.setdefault(n.name, []).append(("assign", str(n.lineno)))
                elif isinstance(n, ast.Global | ast.Nonlocal):
                    for g in n.names:
                        into.setdefault(g, []).append(("global", str(n.lineno)))


def _module_bindings(tree: ast.Module) -> dict[str, list[tuple[str, ...]]]:
    """Names bound at module level (not inside functions or classes; TYPE_CHECKING too)."""
    out: dict[str, list[tuple[str, ...]]] = {}
    flat: list[ast.stmt] = []

    def flatten(body: list[ast.stmt]) -> None:
        for s in body:
            if isinstance(s, ast.If | ast.Try | ast.TryStar | ast.With | ast.For | ast.While):
                head = [s.test] if isinstance(s, ast.If | ast.While) else []
                if isinstance(s, ast.For):
                    head = [s.target]
                if isinstance(s, ast.With):
                    head = [i.optional_vars for i in s.items if i.optional_vars]
                flat.extend(ast.Expr(h) for h in head)
                for part in ("body", "orelse", "finalbody"):
                    flatten(getattr(s, part, []))
                for h in getattr(s, "handlers", []):
                    if h.name:
                        out.setdefault(h.name, []).append(("assign", str(h.lineno)))
                    flatten(h.body)
            else:
                flat.append(s)

    flatten(tree.body)
    _names_bound(flat, out)  # a header (an if's test, a for's target) binds only its stores
    return out


def _function_bindings(
    func: ast.FunctionDef | ast.AsyncFunctionDef,
) -> dict[str, list[tuple[str, ...]]]:
    """Names the function binds in its own scope (parameters, assignments, imports, defs),
    nested functions and classes excluded."""
    out: dict[str, list[tuple[str, ...]]] = {}
    a = func.args
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
        if arg is not None:
            out.setdefault(arg.arg, []).append(("param",))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name, src in _bindings(child):
                    out.setdefault(name, []).append(src)
            elif isinstance(child, (*FUNCS, ast.ClassDef)):
                out.setdefault(child.name, []).append(("def", str(child.lineno)))
            elif isinstance(child, ast.Lambda):
                continue
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
                out.setdefault(child.id, []).append(("assign", str(child.lineno)))
            elif isinstance(child, ast.ExceptHandler) and child.name:
                out.setdefault(child.name, []).append(("assign", str(child.lineno)))
                visit(child)
            elif isinstance(child, ast.Global | ast.Nonlocal):
                for g in child.names:
                    out.setdefault(g, []).append(("global",))
            else:
                visit(child)

    for stmt in func.body:
        visit(ast.Module(body=[stmt], type_ignores=[]))
    return out


def _shares_line(path: Path, node: ast.stmt) -> bool:
    lines = path.read_text().splitlines()
    first, last = lines[node.lineno - 1], lines[(node.end_lineno or node.lineno) - 1]
    after = last[node.end_col_offset or 0 :].strip()
    return bool(first[: node.col_offset].strip()) or bool(after and not after.startswith("#"))


@dataclass
class Plan:
    files: dict[str, Path]
    stmts: dict[str, list[Stmt]]
    moves: list[Stmt] = field(default_factory=list)
    kept: list[tuple[Stmt, str]] = field(default_factory=list)

    @property
    def broken(self) -> list[tuple[Stmt, str]]:
        """Imports left inside a function that the rule does not allow."""
        return [(s, why) for s, why in self.kept if why not in ALLOWED]


def plan(root: Path, heavy: frozenset[str] | None = None) -> Plan:
    """Decide, module by module, which function-local imports move to the top."""
    tree = Tree(root, read_heavy(root) if heavy is None else heavy)
    out = Plan(tree.files, tree.stmts)
    for mod in sorted(tree.files):
        for s in tree.stmts[mod]:
            if not s.local:
                continue
            why = tree.verdict(s)
            if why is None:
                tree.hoist(s)
                out.moves.append(s)
            else:
                out.kept.append((s, why))
    return out


def rewrite(path: Path, moves: list[Stmt], type_checking: list[Stmt]) -> None:
    """Delete the moved statements from their functions, add them after the module's leading
    import block (ruff sorts and merges them afterwards), and drop the names they now bind
    from the module's ``if TYPE_CHECKING:`` imports."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    top_seen = {ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)}
    new: list[str] = []
    for s in moves:
        line = ast.unparse(s.node)
        end = lines[(s.node.end_lineno or s.node.lineno) - 1]
        comment = end[(s.node.end_col_offset or 0) :].strip()
        if comment.startswith("#") and "noqa" not in comment:
            line += "  " + comment
        if ast.unparse(s.node) not in top_seen and line not in new:
            new.append(line)
    # edits as (first line index, end index, replacement, drop a blank line after), bottom-up
    edits: list[tuple[int, int, list[str], bool]] = []
    moved = {id(s.node) for s in moves}
    for s in moves:
        first, last = s.node.lineno - 1, s.node.end_lineno or s.node.lineno
        lonely = s.body[0] is s.node and all(id(o) in moved for o in s.body)
        indent = " " * s.node.col_offset
        edits.append((first, last, [f"{indent}pass\n"] if lonely else [], not lonely))
    bound = {pair for s in moves for pair in _bindings(s.node)}
    emptied: dict[int, list[ast.stmt]] = {}
    for s in type_checking:
        keep = [
            a for a, pair in zip(s.node.names, _bindings(s.node), strict=True) if pair not in bound
        ]
        if len(keep) == len(s.node.names):
            continue
        first, last = s.node.lineno - 1, s.node.end_lineno or s.node.lineno
        if keep:
            node = type(s.node)(**{**s.node.__dict__, "names": keep})
            edits.append((first, last, [" " * s.node.col_offset + ast.unparse(node) + "\n"], False))
        else:
            emptied.setdefault(id(s.body), s.body).append(s.node)
    for body in emptied.values():
        if len(emptied[id(body)]) < len(body):
            for node in emptied[id(body)]:
                edits.append((node.lineno - 1, node.end_lineno or node.lineno, [], False))
            continue
        block = next(  # the ``if TYPE_CHECKING:`` that holds them (tree is a fresh parse)
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.If) and n.body and n.body[0].lineno == body[0].lineno
        )
        if block.orelse:
            edits.append(
                (
                    body[0].lineno - 1,
                    body[-1].end_lineno or 0,
                    [" " * body[0].col_offset + "pass\n"],
                    False,
                )
            )
        else:
            edits.append((block.lineno - 1, block.end_lineno or block.lineno, [], False))
    # insertion point: after the leading run of imports (after the docstring / __future__)
    anchor, last_import = 0, 0
    for n in tree.body:
        if isinstance(n, ast.Import | ast.ImportFrom):
            anchor = last_import = n.end_lineno or n.lineno
        elif isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and anchor == 0:
            anchor = n.end_lineno or n.lineno
        else:
            break
    if new:
        block_lines = [ln + "\n" for ln in new]
        if last_import != anchor or anchor == 0:
            block_lines = ["\n", *block_lines]
        edits.append((anchor, anchor, block_lines, False))
    for first, last, repl, eat_blank in sorted(edits, key=lambda e: (-e[0], -e[1])):
        before = lines[first - 1] if first > 0 else ""
        lines[first:last] = repl
        # a blank line left right after the def line, its docstring or a blank line goes too
        if (
            eat_blank
            and first < len(lines)
            and not lines[first].strip()
            and (not before.strip() or before.rstrip().endswith((":", '"""', "'''")))
        ):
            del lines[first]
    path.write_text("".join(lines))


def ruff(paths: list[Path]) -> None:
    exe = Path(sys.executable).with_name("ruff")
    cmd = str(exe) if exe.exists() else "ruff"
    args = [str(p) for p in paths]
    # F401: a ``TYPE_CHECKING`` import this script emptied; other files are F401-clean already
    subprocess.run([cmd, "check", "--fix", "--select", "I,F401", "--quiet", *args], check=False)
    subprocess.run([cmd, "format", "--quiet", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO / "edgeopt", help="the package folder")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    p = plan(root)
    for s in p.moves:
        print(f"move  {s.where}  {ast.unparse(s.node)}")
    for s, why in p.kept:
        if why not in (HEAVY_LIB,):
            flag = "" if why in ALLOWED else "  <- breaks the rule: fix by hand"
            print(f"keep  {s.where}  {ast.unparse(s.node)}  ({why}){flag}")
    heavy_n = sum(why == HEAVY_LIB for _, why in p.kept)
    print(
        f"{len(p.moves)} to move, {len(p.kept)} stay ({heavy_n} heavy libraries), "
        f"{len(p.broken)} break the rule"
    )

    def ours(s: Stmt) -> bool:
        return bool(s.module and Tree.targets_pkg(s.node, root.name))

    local = [s for ss in p.stmts.values() for s in ss if s.local]
    n_ours, n_moved = sum(map(ours, local)), sum(map(ours, p.moves))
    print(f"function-local edgeopt imports: {n_ours} now, {n_ours - n_moved} after the moves")
    if args.check:
        return 1 if p.moves or p.broken else 0
    by_module: dict[str, list[Stmt]] = {}
    for s in p.moves:
        by_module.setdefault(s.module, []).append(s)
    changed = [p.files[m] for m in sorted(by_module)]
    for m in sorted(by_module):
        tc = [s for s in p.stmts[m] if s.type_checking and not s.local]
        rewrite(p.files[m], by_module[m], tc)
    if changed:
        ruff(changed)
    return 1 if p.broken else 0


if __name__ == "__main__":
    sys.exit(main())
