"""The package's layers: a lower layer never imports a higher one, not even inside a function,
and no module imports itself back through others (no import circles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "adah"

# bottom to top; a package may import its own layer and any lower one
LAYERS: list[set[str]] = [
    {"errors", "utils"},
    {"config"},
    {"data", "models"},
    {"features", "training", "evaluation"},
    {"index", "experiments", "baselines", "methods", "recipes"},
    {"serve", "cli"},
    {"__init__", "__main__"},
]
LEVEL = {name: k for k, layer in enumerate(LAYERS) for name in layer}


def top_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "adah":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, imported module) for every ``import adah...`` / ``from adah... import`` in a file,
    at any depth (functions included); ``from adah import x`` counts as ``adah.x``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # imports for type checkers alone (``if TYPE_CHECKING:``) never run: not an import at run time
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test).split(".")[-1] == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    pkg = ".".join(path.relative_to(src.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("adah")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("adah"):
                continue
            if base == "adah":
                out += [(node.lineno, f"adah.{a.name}") for a in node.names]
            else:
                out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_violations(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        own = top_package(module_name(path, src)) if path.parent != src else path.stem
        if own not in LEVEL:
            bad.append(f"{path.relative_to(src.parent)}: package {own!r} has no layer in tests/test_layers.py")
            continue
        for line, target in imports_of(path, src):
            other = top_package(target)
            if other in LEVEL and LEVEL[other] > LEVEL[own]:
                bad.append(f"{path.relative_to(src.parent)}:{line}: {own} (layer {LEVEL[own]}) imports {target} "
                           f"(layer {LEVEL[other]})")
    return bad


def module_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = {module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for _, target in imports_of(path, src):
            # ``from adah.pkg import name``: the module if it is one, else the package
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != m:
                graph[m].add(target)
            # importing adah.a.b runs adah/a/__init__ too
            parent = target.rpartition(".")[0]
            while parent and parent != "adah":
                if parent in modules and parent != m and not m.startswith(parent + "."):
                    graph[m].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_lower_layer_imports_a_higher_one():
    assert layer_violations() == []


def test_no_import_circles():
    assert cycles(module_graph()) == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    pkg = tmp_path / "adah"
    (pkg / "utils").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "utils" / "x.py").write_text("def f():\n    from adah.cli.main import app\n")
    (pkg / "cli" / "main.py").write_text("from adah.utils.x import f\n")
    (pkg / "utils" / "y.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from adah.cli.main import app\n")
    assert layer_violations(pkg) == ["adah/utils/x.py:2: utils (layer 0) imports adah.cli.main.app (layer 5)"]
    assert cycles(module_graph(pkg)) == [["adah.cli.main", "adah.utils.x"]]
