"""The layers of docs/ARCHITECTURE.md, checked on the source: imports go one way, down.

Every ``import`` and ``from ... import`` of every module (at module level or inside a
function: a lazy import that dodges a cycle is still a cycle) is read from its AST, without
importing anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("data_prep", "deadnet_caffe")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of this project that ``name`` imports (a ``from pkg import mod`` names mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] in PACKAGES and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle_and_a_relative_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "data_prep.core.errors" in graph["data_prep.core.stack"]
    assert "deadnet_caffe.commands" in graph["deadnet_caffe.cli"]


def test_data_prep_imports_nothing_from_deadnet_caffe():
    bad = {
        m: sorted(t for t in targets if t.startswith("deadnet_caffe"))
        for m, targets in import_graph().items()
        if m.startswith("data_prep")
    }
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_bottom_floor_imports_only_itself():
    bad = {
        m: sorted(t for t in targets if not t.startswith("data_prep.core"))
        for m, targets in import_graph().items()
        if m.startswith("data_prep.core")
    }
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_no_module_uses_pyplot_or_switches_the_backend():
    """Figures are drawn on bare matplotlib Figures (data_prep.core.figures): importing or
    calling the toolkit from a notebook leaves its backend and pyplot's figures alone."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "matplotlib.use":
                mods = ["matplotlib.use"]
            else:
                continue
            found += [(name, m) for m in mods if m in ("matplotlib.pyplot", "matplotlib.use")]
    assert found == []


def test_public_api_is_lazy_and_complete():
    import deadnet_caffe

    code = "import sys, deadnet_caffe; print(sorted({'caffe', 'cv2'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
    for name in deadnet_caffe.__all__:
        assert getattr(deadnet_caffe, name) is not None
    assert deadnet_caffe.read_stack.__module__ == "data_prep.core.stack"
