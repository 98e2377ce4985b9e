"""The package's shape: imports run one way (io, face, model → weights → tasks → eval → train → cli), no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "facevid"
# the lower a layer, the fewer it may import; a module imports only from its own layer or below
LAYERS = {"errors": 0, "config": 0, "progress": 0, "io": 0, "synthetic": 0, "sampling": 0, "face": 1, "model": 2,
          "demo": 2, "weights": 3, "pipeline": 4, "tasks": 5, "eval": 6, "train": 7, "cli": 8, "__main__": 8,
          "__init__": 8}


def _module(path: Path) -> str:
    return ".".join(("facevid", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    """Every facevid module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facevid"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if (PACKAGE.parent / node.module.replace(
                ".", "/") / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("facevid")}
    return found - {"facevid"}


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_imports_run_one_way():
    wrong = [f"{m} imports {i}" for m, imports in _graph().items() for i in imports
             if not m.endswith("__init__") and m != "facevid" and _layer(i) > _layer(m)]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


MAX_FUNCTION_LINES = 60


def test_functions_are_short():
    """Every function fits in 60 lines, unless a `# long: why` comment on its def line says why."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and "# long:" not in lines[node.lineno - 1]:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "\n".join(sorted(long))
