"""The engine's import graph: no module-level cycle, and nothing but the command lines imports
``engine.cli`` (the house rule: command lines sit on top). Read from the source with ``ast``, so
every import counts, including the ones a test run happens not to execute."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "poseanything"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((PACKAGE, *parts))


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path, known: set[str], module_level: bool) -> set[str]:
    """The modules of ``known`` that ``path`` imports (at module level only, if asked; imports
    under ``if TYPE_CHECKING`` never run and are left out)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if not module_level:
                    visit(node.body)
                elif isinstance(node, ast.ClassDef):
                    visit(node.body)
            elif hasattr(node, "body"):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    # Importing a.b.c runs a and a.b first; the module's own packages are already running.
    with_packages = set()
    for target in found & known:
        parts = target.split(".")
        with_packages.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return (with_packages & known) - ancestors - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def test_the_engine_has_no_module_level_import_cycle():
    files = python_files("engine")
    known = {module_name(path) for path in files}
    graph = {module_name(path): imports(path, known, module_level=True) for path in files}
    assert sum(map(len, graph.values())) > 50  # the graph was read, not empty
    assert cycles(graph) == []


def test_nothing_below_the_command_lines_imports_them():
    files = python_files("engine", "poseanything_blender", "operators", "ui")
    files.append(ROOT / "__init__.py")
    known = {module_name(path) for path in files}
    cli = f"{PACKAGE}.engine.cli"
    offenders = {
        module_name(path): sorted(
            t
            for t in imports(path, known, module_level=False)
            if t == cli or t.startswith(f"{cli}.")
        )
        for path in files
        if not module_name(path).startswith(cli)
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
