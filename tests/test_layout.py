"""The package layout: every module imports, no import cycles, lower layers never import higher ones.

Edges are read from the source with ``ast`` (imports inside functions included), so a cycle hidden
behind a lazy import, or an import that only runs in one code path, still counts.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pvnas

ROOT = Path(pvnas.__file__).parent

# lowest first; a module may import its own layer and the ones below. ``pvnas`` is the package itself (the
# facade: build_*, Genotype, count_flops, __version__), matched exactly, on the top floor: only the command line beside it
# imports it; the others match as prefixes.
LAYERS: list[tuple[str, ...]] = [
    ("pvnas.errors", "pvnas.version", "pvnas.lr_schedules"),  # errors, the version runs record, lr schedules (pure)
    ("pvnas.space",),  # ops, genotype
    ("pvnas.config",),  # presets and their checks, which name the ops and cell kinds of the space
    ("pvnas.metrics", "pvnas.nn"),
    ("pvnas.data",),
    ("pvnas.runtime",),  # what search and retrain share: run lifecycle, run dirs, device, distributed
    ("pvnas.search", "pvnas.retrain"),  # the two stages, side by side: neither imports the other
    ("pvnas.estimate",),  # the cost of a search or a retrain, measured with their own steps
    ("pvnas.viz",),
    ("pvnas.demo", "pvnas.cli", "pvnas.__main__", "pvnas"),
]


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("pvnas",) + path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: up level - 1 packages from this module's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:  # `from package import module` imports the module, else the package
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {m for m in found if m in known and m != name}


def layer_of(name: str) -> int:
    """Index in LAYERS of a module's layer: the longest matching prefix (``pvnas`` itself only exactly)."""
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or (prefix != "pvnas" and name.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{name} is in no layer: add it to LAYERS in {__file__}"
    return rank


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_imports():
    for name in modules():
        if name != "pvnas.__main__":  # importing it runs the CLI
            importlib.import_module(name)


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_lower_layers_never_import_higher_ones():
    bad = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, dsts in sorted(graph().items())
        for dst in sorted(dsts)
        if layer_of(dst) > layer_of(src)
    ]
    assert not bad, "imports against the layering of LAYERS:\n" + "\n".join(bad)


def test_checker_sees_lazy_cycles_and_upward_imports(tmp_path):
    """The checks themselves: an import inside a function is an edge, and a cycle is named edge by edge."""
    (tmp_path / "a.py").write_text("def f():\n    from pvnas.b import g\n")
    (tmp_path / "b.py").write_text("from pvnas import a\n")
    known = {"pvnas", "pvnas.a", "pvnas.b"}
    edges = {m: imports(m, tmp_path / f"{m[6:]}.py", known) for m in ("pvnas.a", "pvnas.b")}
    assert edges == {"pvnas.a": {"pvnas.b"}, "pvnas.b": {"pvnas.a"}}
    assert find_cycle(edges) == ["pvnas.a", "pvnas.b", "pvnas.a"]
    assert layer_of("pvnas.estimate.search") > layer_of("pvnas.search.loop") == layer_of("pvnas.retrain.train") > layer_of("pvnas.runtime.run") > layer_of("pvnas.nn.fast")
    assert layer_of("pvnas") == len(LAYERS) - 1 and layer_of("pvnas.version") == 0  # the facade on top, the version below


def test_search_and_retrain_stand_side_by_side():
    """The two stages share only what lies below them (runtime, nn, data): neither imports the other."""
    edges = graph()
    crossing = [f"{src} imports {dst}" for src, dsts in sorted(edges.items()) for dst in sorted(dsts)
                for a, b in (("pvnas.search", "pvnas.retrain"), ("pvnas.retrain", "pvnas.search"))
                if src.startswith(a + ".") and dst.startswith(b + ".")]
    assert not crossing, "\n".join(crossing)
