"""The package's shape: no import cycle anywhere, no function body over 60 lines, the core on torch only.

Both read the source with ``ast``, so they see every import, at module level or inside a function.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "superloss"
MAX_BODY_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from a import b``: ``a.b`` if b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _imports(name, path, modules) for name, path in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "superloss.bench.runner" in graph and "superloss.loss" in graph
    assert "superloss.bench.engine" in graph["superloss.bench.runner"]
    # Relative and function-level imports count too.
    assert "superloss.bench.report" in graph["superloss.bench.cli"]


def test_no_import_cycle_under_src_superloss() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_core_imports_only_torch_and_the_standard_library() -> None:
    for path in PACKAGE.glob("*.py"):  # the core: the package's own modules, not its subpackages
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = top in {"torch", "superloss"} or top in sys.stdlib_module_names
                assert allowed, (path.name, name)
                assert not name.startswith(("superloss.bench", "superloss.integrations")), name


def long_functions(text: str) -> list[tuple[str, int, int]]:
    """(name, line, body length) of every function whose body, docstring aside, is too long."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            len(body) > 1
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            body = body[1:]  # the docstring is not code
        assert node.end_lineno is not None
        length = node.end_lineno - body[0].lineno + 1
        if length > MAX_BODY_LINES:
            found.append((node.name, node.lineno, length))
    return found


def test_long_function_finder_counts_body_lines() -> None:
    short = 'def f():\n    """doc"""\n' + "    x = 1\n" * MAX_BODY_LINES
    long = 'def g():\n    """doc"""\n' + "    x = 1\n" * (MAX_BODY_LINES + 1)
    assert long_functions(short) == []
    assert long_functions(long) == [("g", 1, MAX_BODY_LINES + 1)]


def test_no_function_body_over_60_lines() -> None:
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {name} ({length} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line, length in long_functions(path.read_text())
    ]
    assert not long, "\n".join(long)
