"""The package's shape, checked on the source (AST, nothing imported): iqalib's modules import each
other without a cycle and without reaching into each other's private names; only the entry modules
load params files; the notebooks read flat params outside their parameters cell and stay short.

Every import counts, top-level or inside a function: ``import iqalib.x``, ``import iqalib.x as y``,
``from iqalib import x``, ``from iqalib.x import y`` and relative imports (``from . import x``,
``from .x import y``)."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "iqalib"
MODULE_FILES = sorted((REPO / PACKAGE).glob("*.py"))
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))

#: The modules that may load a params file (``iqalib.params.load``).
LOADERS = {"iqalib.experiment", "iqalib.params", "iqalib.runner", "iqalib.preflight", "iqalib.__main__"}
MAX_NOTEBOOK_LOGIC_LINES = 250


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


MODULES = {module_name(p) for p in MODULE_FILES}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# --------------------------------------------------------------------------------------------------
# reading one module's imports


@dataclass
class Imports:
    """What one module's source imports from the package."""

    module: str
    edges: list[tuple[str, int]] = field(default_factory=list)  # (imported iqalib module, line)
    names: list[tuple[str, str, int]] = field(default_factory=list)  # (from module, name, line)
    attributes: list[tuple[str, str, int]] = field(default_factory=list)  # (module, attribute, line) as m.attr


def _package_of(module: str, modules: set[str]) -> str:
    """The package a module's relative imports start from (iqalib for iqalib.x and for iqalib)."""
    return module if module == PACKAGE or module not in modules else module.rpartition(".")[0]


def _resolve_from(node: ast.ImportFrom, module: str, modules: set[str]) -> str | None:
    """The absolute module ``from <...> import`` names, or None when it is not in the package."""
    if node.level:
        base = _package_of(module, modules).split(".")
        if node.level > len(base):
            return None
        base = base[:len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return target if target == PACKAGE or target.startswith(PACKAGE + ".") else None


def _own_module(target: str, modules: set[str]) -> str:
    """``iqalib.x.y`` -> the package's module that holds it (``iqalib.x``), as far as it exists."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return PACKAGE


def _bindings(stmt: ast.Import | ast.ImportFrom, module: str, modules: set[str]) -> dict[str, str]:
    """Local names an import statement binds to package modules (``iqalib`` itself included)."""
    out: dict[str, str] = {}
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            if a.name == PACKAGE or a.name.startswith(PACKAGE + "."):
                if a.asname:
                    out[a.asname] = a.name
                else:  # `import iqalib.x` binds `iqalib`; iqalib.x._y is resolved through it
                    out[a.name.split(".")[0]] = PACKAGE
        return out
    source = _resolve_from(stmt, module, modules)
    if source is None:
        return out
    for a in stmt.names:
        sub = f"{source}.{a.name}"
        if sub in modules:
            out[a.asname or a.name] = sub
    return out


def _scope_imports(node: ast.AST):
    """Import statements of one scope: not inside nested functions, lambdas or classes."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield from _scope_imports(child)


def _arg_names(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return set(names)


def _dotted(node: ast.Attribute) -> list[str] | None:
    """``a.b.c`` -> ['a', 'b', 'c'], or None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def read_imports(source: str, module: str, modules: set[str] = MODULES) -> Imports:
    """Parse one module's source and collect its package imports, imported names and ``m.attr``
    reads on package-module aliases (scoped: a function's own imports count inside it, and its
    arguments hide the module-level names they shadow)."""
    tree = ast.parse(source)
    found = Imports(module)
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.name == PACKAGE or a.name.startswith(PACKAGE + "."):
                    found.edges.append((_own_module(a.name, modules), stmt.lineno))
        elif isinstance(stmt, ast.ImportFrom):
            source_module = _resolve_from(stmt, module, modules)
            if source_module is None:
                continue
            for a in stmt.names:
                sub = f"{source_module}.{a.name}"
                if sub in modules:  # from iqalib import x: the module x
                    found.edges.append((sub, stmt.lineno))
                else:
                    found.edges.append((_own_module(source_module, modules), stmt.lineno))
                    found.names.append((_own_module(source_module, modules), a.name, stmt.lineno))

    def visit(node: ast.AST, bound: dict[str, str]) -> None:
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            parts = _dotted(node)
            if parts and parts[0] in bound:
                target = bound[parts[0]]
                for attr in parts[1:]:
                    if f"{target}.{attr}" in modules:
                        target = f"{target}.{attr}"
                        continue
                    found.attributes.append((target, attr, node.lineno))
                    break
                return  # the chain is read whole; its inner Attribute nodes are the same read
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner = {k: v for k, v in bound.items() if k not in _arg_names(node)}
            for stmt in _scope_imports(node):
                inner.update(_bindings(stmt, module, modules))
            for child in ast.iter_child_nodes(node):
                visit(child, inner)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, bound)

    top: dict[str, str] = {}
    for stmt in _scope_imports(tree):
        top.update(_bindings(stmt, module, modules))
    visit(tree, top)
    found.edges = [(m, line) for m, line in found.edges if m != module]
    return found


@pytest.fixture(scope="module")
def package() -> dict[str, Imports]:
    assert MODULE_FILES, f"no modules found under {REPO / PACKAGE}"
    return {module_name(p): read_imports(p.read_text(encoding="utf-8"), module_name(p)) for p in MODULE_FILES}


def _where(module: str, line: int) -> str:
    path = "__init__" if module == PACKAGE else module.split(".", 1)[1]
    return f"{PACKAGE}/{path}.py:{line}"


# --------------------------------------------------------------------------------------------------
# import cycles


def import_cycles(graph: dict[str, set[str]], limit: int = 20) -> list[list[str]]:
    """Elementary cycles of a directed graph (each listed once, from its smallest node), at most
    ``limit`` of them, shortest first."""
    cycles: list[list[str]] = []
    nodes = sorted(graph)
    for start in nodes:
        stack = [(start, [start])]
        while stack and len(cycles) < 10 * limit:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    cycles.append(path + [start])
                elif nxt > start and nxt not in path:
                    stack.append((nxt, path + [nxt]))
    cycles.sort(key=lambda c: (len(c), c))
    return cycles[:limit]


def test_the_cycle_finder_finds_what_it_should():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert import_cycles(graph) == [["e", "e"], ["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_iqalib_import_graph_has_no_cycle(package):
    graph = {m: {t for t, _ in imp.edges} for m, imp in package.items()}
    lines = {(m, t): line for m, imp in package.items() for t, line in reversed(imp.edges)}  # first import's line
    cycles = import_cycles(graph)

    def show(cycle: list[str]) -> str:
        return "  " + " -> ".join(cycle) + "\n" + "".join(
            f"      {a} imports {b} at {_where(a, lines[a, b])}\n" for a, b in zip(cycle, cycle[1:]))

    assert not cycles, (f"{len(cycles)} import cycle(s) among iqalib modules (function-level imports count):\n"
                        + "".join(show(c) for c in cycles))


# --------------------------------------------------------------------------------------------------
# private names


def test_the_import_reader_sees_every_form():
    src = '''
import iqalib.cache
import iqalib.quality as q
from iqalib import attacks
from iqalib import __version__
from iqalib.detector import _eval_rows, table
from . import features as f
from .tables import _ratio

def g(attacks):
    return attacks._shadowed  # an argument, not the module

def h():
    from iqalib import robust as r
    from .params import load
    return r._scale, q._stack, f.__doc__, iqalib.cache._tmp, attacks._logits_uint8(1), load
'''
    found = read_imports(src, "iqalib.peers")
    assert {m for m, _ in found.edges} == {"iqalib", "iqalib.cache", "iqalib.quality", "iqalib.attacks",
                                          "iqalib.detector", "iqalib.features", "iqalib.tables", "iqalib.robust",
                                          "iqalib.params"}
    assert {(m, n) for m, n, _ in found.names} == {("iqalib", "__version__"), ("iqalib.detector", "_eval_rows"),
                                                   ("iqalib.detector", "table"), ("iqalib.tables", "_ratio"),
                                                   ("iqalib.params", "load")}
    attrs = {(m, a) for m, a, _ in found.attributes}
    assert attrs == {("iqalib.robust", "_scale"), ("iqalib.quality", "_stack"), ("iqalib.features", "__doc__"),
                     ("iqalib.cache", "_tmp"), ("iqalib.attacks", "_logits_uint8")}
    assert [line for m, a, line in found.attributes if a == "_logits_uint8"] == [16]


def test_no_module_imports_a_private_name_from_another(package):
    bad = [f"{_where(m, line)}: `from {src} import {name}` (private name of {src})"
           for m, imp in package.items() for src, name, line in imp.names if is_private(name) and src != m]
    assert not bad, "iqalib modules import each other's private names:\n  " + "\n  ".join(bad)


def test_no_module_reads_a_private_attribute_of_another(package):
    bad = [f"{_where(m, line)}: `{target.rsplit('.', 1)[-1]}.{attr}` (private name of {target})"
           for m, imp in package.items() for target, attr, line in imp.attributes if is_private(attr) and target != m]
    assert not bad, "iqalib modules read each other's private attributes:\n  " + "\n  ".join(bad)


# --------------------------------------------------------------------------------------------------
# who loads params files


def test_only_the_entry_modules_load_params(package):
    bad = [f"{_where(m, line)}: `from iqalib.params import {name}`"
           for m, imp in package.items() if m not in LOADERS
           for src, name, line in imp.names if src == "iqalib.params" and name in ("load", "*")]
    bad += [f"{_where(m, line)}: `params.{attr}`" for m, imp in package.items() if m not in LOADERS
            for target, attr, line in imp.attributes if target == "iqalib.params" and attr == "load"]
    assert not bad, (f"only {', '.join(sorted(LOADERS))} may load a params file; these modules do:\n  "
                     + "\n  ".join(bad))


# --------------------------------------------------------------------------------------------------
# notebooks (jupytext py:percent)


@dataclass
class Cell:
    kind: str  # "code", "markdown", "raw", "header" (what precedes the first cell marker)
    tags: bool  # the parameters cell
    start: int  # 1-based line of the marker (1 for the header)
    lines: list[str]


def cells(text: str) -> list[Cell]:
    out = [Cell("header", False, 1, [])]
    for i, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# %%"):
            kind = re.match(r"# %%\s*\[(\w+)\]", line)
            out.append(Cell(kind.group(1) if kind else "code", bool(re.search(r"tags\s*=\s*\[[^\]]*[\"']parameters[\"']",
                                                                          line)), i, []))
        else:
            out[-1].lines.append(line)
    return out


#: A line that only continues a string (a caption's second line): prose, not logic.
_PROSE = re.compile(r'^\s*(?:[rf]{0,2})"[^"]*"[\s,)+]*$')


def logic_lines(text: str) -> int:
    """Non-blank, non-comment lines of the code cells, not counting lines that only continue a
    string literal (captions are prose the reader is meant to get, not logic hidden in a notebook)."""
    return sum(1 for c in cells(text) if c.kind == "code" for line in c.lines
               if line.strip() and not line.lstrip().startswith("#") and not _PROSE.match(line))


def deep_params_reads(text: str) -> list[tuple[int, str]]:
    """(line, expression) of every ``P.<name>.…`` and ``….params.…`` read outside the parameters cell."""
    params_lines: set[int] = set()
    for c in cells(text):
        if c.tags:
            params_lines.update(range(c.start, c.start + len(c.lines) + 1))
    hits = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value
            if (isinstance(inner.value, ast.Name) and inner.value.id == "P") or inner.attr == "params":
                if node.lineno not in params_lines:
                    hits.append((node.lineno, ast.unparse(node)))
    return sorted(set(hits))


def test_the_notebook_readers():
    text = ('# ---\n# jupyter: header\n# ---\n\n# %% [markdown]\n# P.x.y in prose\n\n'
            '# %% tags=["parameters"]\nparams_path = "a.yaml"\nP = run.params.quality  # allowed here\n\n'
            '# %%\nimport x\n\n# a comment\nP = run.params\nprint(P.run_name, P.quality.epochs)\n'
            'D = run.params.detector\n')
    assert logic_lines(text) == 6
    assert deep_params_reads(text) == [(17, "P.quality.epochs"), (18, "run.params.detector")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_read_flat_params_outside_the_parameters_cell(path):
    text = path.read_text(encoding="utf-8")
    assert any(c.tags for c in cells(text)), f"notebooks/{path.name}: no cell tagged parameters"
    hits = deep_params_reads(text)
    assert not hits, (f"notebooks/{path.name} reads nested params outside the parameters cell "
                      "(no `P.<name>.` nor `.params.`):\n  "
                      + "\n  ".join(f"notebooks/{path.name}:{line}: {expr}" for line, expr in hits))


def test_the_notebooks_hold_little_logic():
    assert NOTEBOOKS, "no notebooks/*.py found"
    counts = {p.name: logic_lines(p.read_text(encoding="utf-8")) for p in NOTEBOOKS}
    total = sum(counts.values())
    assert total < MAX_NOTEBOOK_LOGIC_LINES, (
        f"the notebooks hold {total} logic lines (non-blank, non-comment lines of code cells), "
        f"the limit is < {MAX_NOTEBOOK_LOGIC_LINES}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
