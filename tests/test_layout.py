"""The project's shape, checked: dependencies point one way and no module imports itself round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "push_service", "ws_edge", "task_service", "pushclient", "single_process")
SERVICES = ("push_service", "ws_edge", "task_service")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The project modules `path` imports (at any depth: also inside functions and TYPE_CHECKING)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        edges[name] = {m for m in imports(path) if m in modules and m != name}
    return edges


def test_common_imports_no_service_and_no_contract():
    edges = graph()
    offenders = {name: sorted(deps) for name, deps in edges.items()
                 if name.startswith("common") and any(d.split(".")[0] in (*SERVICES, "pushclient") for d in deps)}
    assert offenders == {}
    generated = {name for name, path in {module_name(p): p for p in (ROOT / "common").rglob("*.py")}.items()
                 if any(m.split(".")[0] in ("push", "task") for m in _all_imports(path))}
    assert generated == set()


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_services_import_no_other_service():
    """gRPC contracts are the only coupling between services (pushclient is the shared client library)."""
    edges = graph()
    crossing = {(name, dep) for name, deps in edges.items() for dep in deps
                if name.split(".")[0] in SERVICES and dep.split(".")[0] in SERVICES
                and dep.split(".")[0] != name.split(".")[0]}
    assert crossing == set()


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is not a circle of meaning.
    circles = [c for c in circles if not any(m == c[0].rpartition(".")[0] for m in c)]
    assert circles == []


def test_the_edge_stays_readable():
    """Issue 13's bounds: the edge's composition root under 250 lines, no function of the edge over 50."""
    assert len((ROOT / "ws_edge" / "edge.py").read_text().splitlines()) < 250
    long = []
    for path in sorted((ROOT / "ws_edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 50:  # type: ignore[operator]
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []
