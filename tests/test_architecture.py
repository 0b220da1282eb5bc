"""The shape the code keeps: data flows one way (no import cycle in lab/, imports inside
functions counted), no module reaches into another's private names, and only the command line
and the report renderers speak typer or rich. Read from the source with `ast`, so a change
that breaks the shape fails here before it slows the next change."""

from __future__ import annotations

import ast
from pathlib import Path

LAB = Path(__file__).resolve().parent.parent / "lab"
# the renderers print reports with rich tables; everything else reaches a console through lab.cli
RICH_ALLOWED = {"lab.report", "lab.scenarios.report", "lab.matrix.html"}


def _module(path: Path) -> str:
    parts = path.relative_to(LAB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in sorted(LAB.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, anywhere."""
    out = []
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from lab import check` imports the module lab.check
                sub = f"{base}.{alias.name}"
                if sub in known:
                    out.append((sub, [], node.lineno))
                else:
                    out.append((base, [alias.name], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(path, known):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("lab"):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _is_package_face(name: str, target: str) -> bool:
    """A package's __init__ hands its own modules' names on: that is not a cycle."""
    return target == name.rpartition(".")[0]


def test_no_import_cycle_in_lab():
    graph = _graph()
    # a module importing its own package's face (lab.spec.rules -> lab.spec) would only be
    # reported with the face, which imports it back: drop those edges explicitly named here
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not _is_package_face(name, t)}
    assert _cycles(graph) == []


def test_no_module_imports_another_modules_private_names():
    known = set(_modules())
    private = []
    for path in _modules().values():
        for target, names, line in _imports(path, known):
            for taken in names:
                if taken.startswith("_") and not taken.startswith("__"):
                    private.append(f"{path.relative_to(LAB.parent)}:{line}: {taken} from {target}")
    assert private == []


def test_only_the_command_line_and_renderers_import_typer_or_rich():
    known = set(_modules())
    found = []
    for name, path in _modules().items():
        if name == "lab.cli" or name.startswith("lab.cli."):
            continue
        for target, _, line in _imports(path, known):
            root = target.split(".")[0]
            if root == "typer" or (root == "rich" and name not in RICH_ALLOWED):
                found.append(f"{path.relative_to(LAB.parent)}:{line}: {target}")
    assert found == []


def test_the_checker_sees_a_cycle_when_there_is_one():
    """The cycle finder itself: a loop of three and a self-contained pair are both found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": set()}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
