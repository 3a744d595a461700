"""repro's import structure (issue 19): no import circle among repro's modules, no module below
the CLI importing it, and no module changing another module's attributes at run time.

The graph is read from the source with ast, imports inside functions included (an import
deferred into a function to keep the CLI fast is still a dependency: deferring one to hide a
circle hides it from Python only until that function runs).

How an import becomes an edge (module -> module):
  import repro.a.b             -> repro.a.b (the deepest repro module the dotted name names)
  from repro.a import b        -> repro.a.b when b is a submodule, else repro.a (a package's
                                  __init__.py, which is a module like any other)
  from . import x / from .m import y   resolved against the importing module's package
  `if TYPE_CHECKING:` imports count too (they are what a reader sees as a dependency).
A package's __init__.py importing its own submodules is an ordinary edge; the parent packages
that Python runs before a submodule (repro.a runs before repro.a.b) are NOT edges: otherwise
every package whose __init__ hands on a submodule's names would count as a circle with each
submodule that imports a sibling by its full name.
Imports by name (importlib.import_module) that load a repro module are edges too, read from the
names the code loads (by_name below): repro.gates.gate(stage) loads repro.gates.<stage>,
repro.tasks.load_task_class a built-in task's module from the catalog, and the warm worker
preloads HEAVY_MODULES. The others load the paper's own modules (papers.<paper>.*), not repro's.

Run this file as a script for the figures: `python tests/test_imports.py` prints the modules,
edges, circles, imports inside functions and the circles between top-level parts (a folder of
repro/ counted as one part).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPRO = ROOT / "repro"
# The command line and its entry point: the only modules that may import repro.cli.
CLI = {"repro.cli", "repro.__main__"}


@dataclass
class Graph:
    modules: dict[str, Path]
    # (importer, imported) -> [(line, inside a function)]
    edges: dict[tuple[str, str], list[tuple[int, bool]]] = field(default_factory=dict)

    def adjacency(self) -> dict[str, set[str]]:
        adj: dict[str, set[str]] = {m: set() for m in self.modules}
        for a, b in self.edges:
            adj[a].add(b)
        return adj


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def repro_modules() -> dict[str, Path]:
    """Every module of the repro package; repro/templates/ holds the files `repro new` copies
    into a user's project (they import repro as any paper does, and are not part of it)."""
    return {module_name(p): p for p in sorted(REPRO.rglob("*.py")) if "templates" not in p.parts}


def _deepest(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, here: str, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "repro"]
        return [t for t in (_deepest(n, modules) for n in names) if t]
    if node.level:  # relative: against the package `here` is in (or is)
        package = here if modules[here].name == "__init__.py" else here.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base.split(".")[0] != "repro":
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        target = sub if sub in modules else _deepest(base, modules)
        if target:
            out.append(target)
    return out


def _imports(tree: ast.AST):
    """(import node, whether it sits inside a function) for every import in the tree."""
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, id(node) in in_function


def by_name() -> dict[str, list[str]]:
    """The repro modules each module imports by name at run time (importlib.import_module), from
    the names the code itself holds, so that this list cannot drift from it."""
    from repro.dev.warm import HEAVY_MODULES
    from repro.gates import STAGES
    from repro.tasks import BUILTIN

    return {
        "repro.gates": [f"repro.gates.{stage}" for stage in STAGES],
        "repro.tasks": [spec.path.partition(":")[0] for spec in BUILTIN.values()],
        "repro.dev.warm": [m for m in HEAVY_MODULES if m.split(".")[0] == "repro"],
    }


def import_graph(dynamic: dict[str, list[str]] | None = None) -> Graph:
    """Every module's imports; `dynamic`: imports by name to add, {importer: [module, ...]}
    (line 0 in the listing)."""
    graph = Graph(repro_modules())
    for here, path in graph.modules.items():
        for node, inside in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, here, graph.modules):
                if target != here:
                    graph.edges.setdefault((here, target), []).append((node.lineno, inside))
    for here, names in (dynamic or {}).items():
        for target in filter(None, (_deepest(n, graph.modules) for n in names)):
            graph.edges.setdefault((here, target), []).append((0, True))
    return graph


def circles(adj: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(adj):
        if start in index:
            continue
        work = [(start, iter(sorted(adj[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(adj.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def describe(graph: Graph, circle: list[str]) -> str:
    members = set(circle)
    lines = [" <-> ".join(circle)]
    for (a, b), where in sorted(graph.edges.items()):
        if a in members and b in members:
            at = ", ".join(
                f"line {n}{' (in a function)' if f else ''}" for n, f in sorted(set(where))
            )
            lines.append(f"  {a} -> {b}: {at}")
    return "\n".join(lines)


def part_of(module: str) -> str:
    """The top-level part a module belongs to: repro.gates.shapes.judge -> repro.gates."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (REPRO / parts[-1]).is_dir() else module


def part_adjacency(graph: Graph) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {part_of(m): set() for m in graph.modules}
    for a, b in graph.edges:
        if part_of(a) != part_of(b):
            adj[part_of(a)].add(part_of(b))
    return adj


# ---- the tests ------------------------------------------------------------------------------
def test_the_graph_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The reader itself: a deferred import, a relative one and a submodule import are edges."""
    modules = {
        "repro.a": tmp_path / "a.py",
        "repro.pkg": tmp_path / "pkg" / "__init__.py",
        "repro.pkg.b": tmp_path / "pkg" / "b.py",
    }
    tree = ast.parse("from . import b\ndef f():\n    from repro import a\n    import repro.pkg.c\n")
    found = {
        (t, inside) for node, inside in _imports(tree) for t in _targets(node, "repro.pkg", modules)
    }
    assert found == {("repro.pkg.b", False), ("repro.a", True), ("repro.pkg", True)}
    assert circles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]


def test_no_import_circle_among_repro_modules():
    graph = import_graph(by_name())
    found = circles(graph.adjacency())
    assert not found, "import circles:\n" + "\n".join(describe(graph, c) for c in found)


def test_no_module_below_the_cli_imports_it():
    """The CLI is a shell over library functions: nothing in repro/ reaches back up into it."""
    graph = import_graph()
    up = [
        f"{a} -> {b} (line {where[0][0]})"
        for (a, b), where in sorted(graph.edges.items())
        if b in CLI and a not in CLI
    ]
    assert not up, "\n".join(up)


def _assigned_module_attributes(tree: ast.AST) -> list[tuple[int, str]]:
    """`mod.attr = ...` (also +=, and `setattr(mod, ...)`) where `mod` is a name this file binds
    by `import` (`import repro.x as mod`, `from repro import x`, `import sys`)."""
    imported = set()
    for node, _ in _imports(tree):
        for alias in node.names:
            imported.add((alias.asname or alias.name).split(".")[0])
    hits = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and node.args
        ):
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        while targets:
            t = targets.pop(0)
            if isinstance(t, ast.Tuple | ast.List | ast.Starred):
                targets += t.elts if not isinstance(t, ast.Starred) else [t.value]
                continue
            if not isinstance(t, ast.Attribute):
                continue  # `os.environ[k] = v` changes an object, not the module's name
            root = t.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in imported:
                hits.append((node.lineno, ast.unparse(t)))
    return hits


# Assignments to an imported module's attribute that are the documented interface of that module.
ALLOWED = {
    # Adopting the client's terminal: argv, as `repro stage` run cold would see it.
    ("repro.dev.child", "sys.argv"),
}


def test_no_module_assigns_another_modules_attributes():
    """No monkeypatching in the library: what differs between callers is a parameter."""
    hits = []
    for module, path in repro_modules().items():
        for line, target in _assigned_module_attributes(ast.parse(path.read_text())):
            if (module, target) not in ALLOWED:
                hits.append(f"{path.relative_to(ROOT)}:{line}: {target} = ...")
    assert not hits, "\n".join(hits)


def test_the_attribute_check_finds_a_patch():
    tree = ast.parse(
        "import repro.context\nfrom repro import records as r\n"
        "def f():\n    repro.context.StageContext = object\n    r.create_run, x = None, 1\n"
        "    setattr(r, 'x', 1)\n    local = object()\n    local.attr = 2\n"
    )
    assert [t for _, t in _assigned_module_attributes(tree)] == [
        "repro.context.StageContext",
        "r.create_run",
        "r.?",
    ]


def test_imports_by_name_name_modules_that_exist():
    modules = repro_modules()
    missing = [n for names in by_name().values() for n in names if n not in modules]
    assert not missing, missing


def main() -> None:
    graph = import_graph(by_name())
    found = circles(graph.adjacency())
    inside = sum(1 for where in graph.edges.values() for n, f in where if f and n)
    named = sum(1 for where in graph.edges.values() for n, _ in where if not n)
    parts = circles(part_adjacency(graph))
    print(f"{len(graph.modules)} modules, {len(graph.edges)} edges")
    print(
        f"import statements of repro modules inside functions: {inside}; imports by name: {named}"
    )
    print(f"module circles: {len(found)}")
    for c in found:
        print(describe(graph, c))
    print(f"circles between top-level parts (a folder is one part): {len(parts)}")
    for c in parts:
        print("  " + " <-> ".join(c))


if __name__ == "__main__":
    main()
