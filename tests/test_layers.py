"""The layer rule, checked: clearset's imports only ever point down, and none goes round.

The package is drawn as a graph of its own imports (with `ast`, not by importing it:
module-level imports, and imports inside functions, which are edges too). Three things
fail the test: an import cycle, an import that points up the layer order below, and an
import inside a function that is not in `FUNCTION_IMPORTS` with the reason it is kept
(start-up time: a heavy or optional dependency a plain `import clearset...` must not load).

Run this file as a script (`python tests/test_layers.py`) to print the graph's summary:
module count, edges, cycles, upward imports and function-level imports.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clearset"

#: The layer order, top to bottom: a module may import its own layer's modules or any
#: layer below it, never one above. Each entry is a layer: the module prefixes it holds.
#: This list is the one place the order is written down (docs/architecture quotes it).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("clearset.cli",)),
    ("runs", ("clearset.runs", "clearset.demo", "clearset.exchange.run")),
    ("stages", ("clearset.stages", "clearset.exchange.stage")),
    ("engines", ("clearset.engines",)),
    ("documents", ("clearset.documents",)),
    ("exchange", ("clearset.exchange",)),  # the exchange format; its run-facing code above
    ("receipts", ("clearset.receipts",)),
    ("formats", ("clearset.formats",)),
    ("matching", ("clearset.matching",)),
    ("hashing", ("clearset.hashing",)),
    ("lists", ("clearset.lists",)),
    # The run folder's layout and what every layer shares. The manifest's schema sits
    # here because the run folder reads its own manifests.
    (
        "runfolder",
        (
            "clearset.runfolder",
            "clearset.manifest",
            "clearset.runlock",
            "clearset.settings",
            "clearset.errors",
            "clearset.atomic",
            "clearset.storage",  # outputs on object stores: below atomic, which uploads
            "clearset.progress",
            "clearset.records",
            # the hash-type registry the manifest schema, lists and matcher derive from
            "clearset.hashing.types",
            "clearset.hashing.urls",
        ),
    ),
]

#: Imports kept inside functions, each with why: (importing module, imported module).
#: Start-up time is the reason to keep one: numba compiles its kernels when their module
#: is imported (0.5-0.7 s each on a laptop), which `clearset --help`, a plain
#: `import clearset.matching` and every worker that never matches PDQ or builds a tree
#: would pay. Optional extras (ray, embedding models) are imported inside functions by
#: module name (`importlib`, `import ray`), not as clearset modules, so they do not show
#: here.
_NUMBA = "numba kernels compile on import (~0.5-0.7 s): loaded only when first used"
FUNCTION_IMPORTS: dict[tuple[str, str], str] = {
    ("clearset.matching.pdq_index", "clearset.matching.pdq_kernels"): _NUMBA,
    ("clearset.receipts.batch_sha", "clearset.receipts.sha_kernel"): _NUMBA,
    ("clearset.hashing.item", "clearset.hashing.fused"): _NUMBA,
    ("clearset.hashing.video", "clearset.hashing.fused"): _NUMBA,
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, known) -> list[str]:
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".")[: None if is_package else -1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        # `from clearset.x import y` names module clearset.x.y when there is one
        wanted = [
            f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names
        ]
    found = []
    for name in wanted:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module and name not in found:
            found.append(name)
    return found


def import_graph() -> list[Edge]:
    known = module_names()
    edges: list[Edge] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))

        def walk(node: ast.AST, in_function: bool, module: str = module, path: Path = path) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue  # for the type checker only: never imported when running
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(module, child, path.name == "__init__.py", known):
                        edges.append(Edge(module, target, child.lineno, in_function))
                walk(
                    child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                )

        walk(tree, False)
    return edges


def layer_of(module: str) -> int:
    if module == "clearset":
        return len(LAYERS) - 1  # the package's own __init__: version and tool name only
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank < 0:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS")
    return rank


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {e.target for e in edges}):
        if node not in index:
            visit(node)
    return found


def upward(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if layer_of(e.target) < layer_of(e.source)]


def function_imports(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if e.in_function]


def _show(edge: Edge) -> str:
    return f"{edge.source}:{edge.line} -> {edge.target}"


def test_every_module_has_a_layer() -> None:
    for module in module_names():
        layer_of(module)


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_import_points_up() -> None:
    assert [_show(e) for e in upward(import_graph())] == []


def test_function_level_imports_are_kept_for_start_up_time() -> None:
    unlisted = sorted(
        {
            _show(e)
            for e in function_imports(import_graph())
            if (e.source, e.target) not in FUNCTION_IMPORTS
        }
    )
    assert unlisted == []


def test_allow_list_names_only_imports_that_exist() -> None:
    present = {(e.source, e.target) for e in function_imports(import_graph())}
    assert sorted(set(FUNCTION_IMPORTS) - present) == []
    assert all(reason.strip() for reason in FUNCTION_IMPORTS.values())


if __name__ == "__main__":
    graph = import_graph()
    print(
        f"{len(module_names())} modules, {len({(e.source, e.target) for e in graph})} import edges"
    )
    for component in cycles(graph):
        print("cycle:", " <-> ".join(component))
    for edge in upward(graph):
        print(
            "up:",
            _show(edge),
            f"({LAYERS[layer_of(edge.source)][0]} -> {LAYERS[layer_of(edge.target)][0]})",
        )
    inside = function_imports(graph)
    print(f"{len({(e.source, e.line) for e in inside})} import statements inside functions")
    for edge in inside:
        print(
            "in function:",
            _show(edge),
            "" if (edge.source, edge.target) in FUNCTION_IMPORTS else "(not allowed)",
        )
    sys.exit(1 if cycles(graph) or upward(graph) else 0)
