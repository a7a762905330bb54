"""The import graph of the three packages: no cycle (imports inside functions count too), no
private name imported from another module, one import path per public name."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tracing", "unlearn", "pipelines")
KNOWN_CYCLES: list[list[str]] = []  # none: built-in benchmarks are found by module name (pipelines.benchmarks), as entry points are


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``module → modules it imports`` (anywhere in the file) and every ``(module, source, _private name)``."""
    graph, private = {m: set() for m in mods}, []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    if f"{source}.{alias.name}" in mods:
                        graph[name].add(f"{source}.{alias.name}")
                    elif source in mods:
                        graph[name].add(source)
                        if alias.name.startswith("_") and source != name:
                            private.append((name, source, alias.name))
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
        graph[name].discard(name)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycle_and_no_private_import_across_modules():
    graph, private = imports(modules())
    assert cycles(graph) == KNOWN_CYCLES
    assert private == []


def test_the_walk_sees_a_cycle_and_a_private_import(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from b import _g\n")
    b.write_text("from a import f\n")
    graph, private = imports({"a": a, "b": b})
    assert cycles(graph) == [["a", "b"]] and private == [("a", "b", "_g")]
