"""The shape of the exporter's code, which review alone lets drift: the type checker passes,
imports flow one way with no private name crossing a module, and no function is longer than
a reader takes in at once. Each reads the source (ast) or runs mypy; none needs a peer."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import missing

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "exporter"
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (exporter.probers.ldap)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported_from(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The package module a ``from ... import`` names, or None for one outside the package."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == PACKAGE.name else None
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """Which package modules each module imports (anywhere in it, type-checking blocks
    included), and every private name one module takes from another."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    private = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        bound: dict[str, str] = {}  # a local name -> the package module it is
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                graph[module].update(alias.name for alias in node.names if alias.name in MODULES)
            elif isinstance(node, ast.ImportFrom) and (source := _imported_from(module, path, node)):
                for alias in node.names:
                    if f"{source}.{alias.name}" in MODULES:  # from . import statuspage
                        graph[module].add(f"{source}.{alias.name}")
                        bound[alias.asname or alias.name] = f"{source}.{alias.name}"
                    elif source in MODULES:
                        graph[module].add(source)
                        if source != module and _is_private(alias.name):
                            private.append(f"{path.relative_to(REPO)}:{node.lineno}: {alias.name} from {source}")
        for node in ast.walk(tree):  # statuspage._css, with statuspage a module imported above
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and _is_private(node.attr)):
                private.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.attr} of {bound[node.value.id]}")
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph[module]:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_the_imports_of_the_package_form_no_cycle():
    """No module imports, directly or through others, a module that imports it back: the
    package has layers (catalog and config below the probers, scrape and metrics above them,
    server and cli on top), and a worker process starts without the CLI."""
    graph, _ = _imports()
    assert "exporter.cli" not in graph["exporter.workers"]  # the circle there was
    assert "exporter.webconfig" not in graph["exporter.webaccess"]  # and the other one
    assert len(graph) > 40 and sum(len(imported) for imported in graph.values()) > 100  # the walk saw them
    assert _cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle():
    """The finder the test above relies on names a circle of three and a module that imports itself."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["e"]]


def test_no_private_name_crosses_a_module():
    """A name with a leading underscore is used only in its own module: what two modules
    share is a public name of the one that owns it."""
    _, private = _imports()
    assert private == []


def _long_functions() -> list[tuple[int, str]]:
    found = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
                assert node.end_lineno is not None
                lines = node.end_lineno - start + 1
                found.append((lines, f"{path.relative_to(REPO)}:{node.lineno}: {node.name}"))
    return found


def test_no_function_is_longer_than_60_lines():
    """Every function (and method) of the package, decorators, docstring and body together,
    fits in 60 lines: one a reader takes in at once."""
    functions = _long_functions()
    assert len(functions) > 500  # the walk found the package's functions
    assert [where for lines, where in functions if lines > MAX_FUNCTION_LINES] == []


@pytest.mark.process
def test_mypy_passes_over_the_package():
    """mypy, strict as pyproject.toml's [tool.mypy] says, finds nothing in exporter/: the
    annotations are what the code does (the two type: ignore left each say why)."""
    if importlib.util.find_spec("mypy") is None:
        missing("mypy is not installed (the [test] extra)")
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    ignores = [f"{path.relative_to(REPO)}:{number}" for path in MODULES.values()
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if "type: ignore" in line]
    assert len(ignores) <= 2, ignores
