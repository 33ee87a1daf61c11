"""The package's layers: imports flow one way and no module imports itself back.

Layers, bottom to top: ``core`` <- ``store`` <- kernels (``calculators``, ``dynamics``,
``oracles``) <- ``workflow`` (with ``workflow.mpi``) <- ``jobs`` <- ``cli``. Every import
counts, also one inside a function; only imports under ``if TYPE_CHECKING:`` (type hints)
and the compatibility aliases (``pal_atoms.mpi``, lazy ``__getattr__`` re-exports) don't.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "pal_atoms": ROOT / "pal_atoms",
    "pal_atoms.calculators": ROOT / "calculators",
    "pal_atoms.dynamics": ROOT / "dynamics",
    "pal_atoms.oracles": ROOT / "oracles",
}
LAYERS = [
    ("core",),
    ("store",),
    ("calculators", "dynamics", "generic", "oracles"),
    ("workflow",),
    ("jobs",),
    ("cli",),
]
#: Outside the stack: the version module, test helpers, the ``pal_atoms.mpi`` alias.
UNLAYERED = {"pal_atoms", "pal_atoms.testing", "pal_atoms.mpi"}
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    mods = {}
    for prefix, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if prefix == "pal_atoms" and parts[:1] in (["calculators"], ["dynamics"], ["oracles"]):
                continue
            mods[".".join([prefix, *parts])] = f
    return mods


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str) -> list[str]:
    """Modules imported by ``tree``; relative imports resolved against ``package``."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return  # a lazy compatibility re-export
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.extend(f"{module}\0{a.name}" for a in node.names)  # module or attribute
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        if name in UNLAYERED:
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for item in _imports(ast.parse(path.read_text()), package):
            module, _, attr = item.partition("\0")
            target = f"{module}.{attr}" if f"{module}.{attr}" in mods else module
            if target in mods and target != name and target not in UNLAYERED:
                graph[name].add(target)
    return graph


def _layer(module: str) -> int:
    rest = module.split(".")[1] if module.count(".") else ""
    for i, names in enumerate(LAYERS):
        if rest in names:
            return i
    raise AssertionError(f"{module} is in no layer; put it in one of {LAYERS}")


def test_imports_flow_down_the_layers():
    wrong = [
        f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _layer(b) > _layer(a)
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
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
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_modules_stay_small():
    big = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"
