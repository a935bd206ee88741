"""The package's layout: imports flow one way, private names stay home, citations resolve.

Read from the source with `ast` (function-level imports count), not by
importing it.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxmoe"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """``(module imported, names imported)`` for every jaxmoe import in the module, at any depth."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.split(".")[0] == "jaxmoe":
                target = node.module
            else:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule, None) if submodule in MODULES else (target, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, None


def _graph() -> dict[str, set[str]]:
    # The top package re-exports its modules (and `cli` reads its version):
    # edges into it are not part of the data's flow.
    return {
        name: {target for target, _ in _imports(name, path) if target not in (name, "jaxmoe")}
        for name, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


# The data's order (README "Architecture"): a module imports only from its
# own layer or those before it. Every top-level module or subpackage is
# placed; a new one must be.
LAYERS = [
    ("tools", {"buckets", "files", "stats", "survival"}),
    ("models", {"base", "hermite", "model", "families"}),
    ("configuration", {"config"}),
    ("initialisation", {"init"}),
    ("loss", {"population", "pairkernel", "quadrature", "voronoi"}),
    ("observables", {"observables", "routing"}),
    ("dynamics", {"devices", "progress", "solvers", "pool", "flow", "discrete"}),
    # `simulate` returns a `Result`, so the container comes before the
    # function that fills it.
    ("results", {"results"}),
    ("simulation", {"simulation"}),
    ("runs and plots", {"chunks", "sweep", "hosts", "plot"}),
    ("experiments", {"agreement", "compare", "scaling", "censored_scaling", "phase", "stuck", "prune", "slim", "rates"}),
    ("command line", {"cli", "__main__"}),
]


def _unit(module: str) -> str:
    return module.split(".")[1]


def test_imports_follow_the_data():
    layer = {unit: k for k, (_, units) in enumerate(LAYERS) for unit in units}
    units = {_unit(name) for name in MODULES if name != "jaxmoe"}
    assert units == set(layer), f"modules not placed in LAYERS: {sorted(units - set(layer))}; gone: {sorted(set(layer) - units)}"
    upward = [
        f"{name} ({LAYERS[layer[_unit(name)]][0]}) imports {target} ({LAYERS[layer[_unit(target)]][0]})"
        for name, targets in _graph().items() if name != "jaxmoe"
        for target in targets if layer[_unit(target)] > layer[_unit(name)]
    ]
    assert not upward, "imports against the data's order:\n" + "\n".join(upward)


def test_no_private_name_crosses_a_module():
    crossing = [
        f"{name} imports {imported} from {target}"
        for name, path in MODULES.items()
        for target, imported in _imports(name, path)
        if imported is not None and imported.startswith("_") and not imported.startswith("__") and target != name
    ]
    assert crossing == []


def test_every_model_citation_points_at_a_section():
    sections = set(re.findall(r"^## (§\d+)", (ROOT / "docs" / "model.md").read_text(), flags=re.MULTILINE))
    assert sections == {"§1", "§2", "§3", "§4"}
    cited = set()
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        text = path.read_text()
        assert "DESIGN" + " §" not in text, path  # a document outside the repository
        for first, last in re.findall(r"docs/model\.md (§\d+)(?:–(\d+))?", text):
            cited.add(first)
            if last:
                cited.add(f"§{last}")
    assert cited and cited <= sections, sorted(cited - sections)


def test_no_module_over_500_lines():
    """One concept per module: long derivations go to docs/, several concepts to a package."""
    long = {str(path.relative_to(ROOT)): n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > 500}
    assert long == {}
