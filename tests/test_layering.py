"""The import graph of the project's own modules: no cycle, no function-local import.

Every .py under infodiff_lightning/ and callbacks/ is parsed with ``ast`` (nothing is
imported); relative imports are resolved against the module's package. A module-level
import (including one under ``if TYPE_CHECKING:`` or ``try:``) is an arrow of the graph;
an import inside a function or class body of a project module is what hides an arrow,
and is reported on its own.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("infodiff_lightning", "callbacks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (before its imported names)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             modules: dict[str, Path]) -> list[str]:
    """The project modules an import statement loads (a submodule when ``from pkg import
    sub`` names one, else the module itself)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve(node, module, is_package)
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            names.append(sub if sub in modules else base)
    out = []
    for name in names:
        if not _is_project(name):
            continue
        while name and name not in modules:  # `import a.b.c` of a name not a file: its package
            name = name.rpartition(".")[0]
        if name and name != module:
            out.append(name)
    return out


def _walk(tree: ast.Module):
    """(import node, inside a function or class) for every import in the module."""
    stack = [(child, False) for child in tree.body]
    while stack:
        node, nested = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, nested
        inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """(module-level arrows, function-local imports as "module:line -> target")."""
    modules = _project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    local: dict[str, list[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, nested in _walk(tree):
            targets = _targets(node, name, is_package, modules)
            if nested:
                local.setdefault(name, []).extend(f"{name}:{node.lineno} -> {t}" for t in targets)
            else:
                graph[name].update(targets)
        # a package imports its parents' __init__ when it is imported
    for name in modules:
        parent = name.rpartition(".")[0]
        if parent in modules:
            graph[name].add(parent)
    return graph, {k: v for k, v in local.items() if v}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted,
    with a package and its own submodules not counted as a cycle (a package's __init__
    importing its submodules is how packages are built)."""
    def is_parent_arrow(a: str, b: str) -> bool:
        return a.startswith(b + ".")  # a submodule to its package: the import system's arrow

    edges = {a: {b for b in bs if not is_parent_arrow(a, b)} for a, bs in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


def _all_arrows(graph: dict[str, set[str]], local: dict[str, list[str]]) -> dict[str, set[str]]:
    """The graph with the function-local imports added: a hidden arrow is still an arrow."""
    arrows = {a: set(bs) for a, bs in graph.items()}
    for module, lines in local.items():
        arrows[module].update(line.split(" -> ")[1] for line in lines)
    return arrows


def _layer(module: str) -> str:
    """The layer a module belongs to: its sub-package of a top package (``infodiff_lightning.
    denoisers``), a top-level module of the package itself, or the top package (callbacks)."""
    parts = module.split(".")
    if len(parts) >= 3 or (len(parts) == 2 and (ROOT / parts[0] / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return module if parts[0] == "infodiff_lightning" else parts[0]


def package_graph(arrows: dict[str, set[str]]) -> dict[str, set[str]]:
    """Arrows between layers (sub-packages), a submodule-to-its-package arrow left out."""
    out: dict[str, set[str]] = {}
    for a, bs in arrows.items():
        for b in bs:
            if a.startswith(b + "."):
                continue
            la, lb = _layer(a), _layer(b)
            if la != lb:
                out.setdefault(la, set()).add(lb)
    return out


def test_no_import_cycle():
    """No cycle between modules, nor between sub-packages (denoisers <-> models)."""
    graph, local = import_graph()
    arrows = _all_arrows(graph, local)
    cycles = find_cycles(arrows)
    assert not cycles, "import cycles between project modules: " + "; ".join(
        " <-> ".join(c) for c in cycles)
    cycles = find_cycles(package_graph(arrows))
    assert not cycles, "import cycles between project packages: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_no_function_local_import_of_a_project_module():
    _, local = import_graph()
    assert not local, "function-local imports of project modules (hidden arrows of the import graph):\n" + "\n".join(
        line for lines in local.values() for line in lines)


def test_the_monitor_does_not_import_the_jobs():
    """The callback depends on the protocols in the core, not on every job."""
    graph, _ = import_graph()
    seen, todo = set(), ["infodiff_lightning.callbacks.information_monitor"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph.get(m, ()))
    assert "infodiff_lightning.modules" not in seen, sorted(m for m in seen if "modules" in m)


def test_the_graph_sees_cycles_and_local_imports(tmp_path):
    """The checker itself: a two-module cycle and a lazy import are found."""
    pkg = tmp_path / "infodiff_lightning"
    pkg.mkdir()
    (tmp_path / "callbacks").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("from . import a\ndef f():\n    from .c import g\n")
    (pkg / "c.py").write_text("g = 1\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        graph, local = import_graph()
    finally:
        ROOT = saved
    assert find_cycles(graph) == [["infodiff_lightning.a", "infodiff_lightning.b"]]
    assert local == {"infodiff_lightning.b": ["infodiff_lightning.b:3 -> infodiff_lightning.c"]}


def test_the_denoiser_is_a_read_only_property_everywhere():
    """Every module of the package, and the protocol the monitor checks, reach their
    denoiser the same way: ``module.denoiser``, a property without a setter."""
    import inspect

    import infodiff_lightning.modules as modules
    from infodiff_lightning.modules.pair_information import PairInformationJob
    from infodiff_lightning.protocols import MeasurableModule

    classes = [getattr(modules, name) for name in modules.__all__] + [PairInformationJob, MeasurableModule]
    wrong = [cls.__name__ for cls in classes
             if not (isinstance(p := inspect.getattr_static(cls, "denoiser", None), property) and p.fset is None)]
    assert not wrong, f"denoiser is not a read-only property of {wrong}"
