"""The layout of docs/architecture.md holds: data flows one way, the Hub files stand alone, no private reach-ins,
no import cycle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "marlin_transformers"
# The stage of every top-level module and folder of the package (docs/architecture.md, "Stages"): each may import its
# own and earlier stages only (video -> data -> pretraining / extraction -> evaluation -> commands).
STAGES = {
    # 0: what every stage shares; the Hub remote-code model files (they import only torch and transformers)
    "constants": 0,
    "exceptions": 0,
    "records": 0,
    "jobs": 0,
    "configuration_marlin": 0,
    "modeling_marlin": 0,
    "kernels": 0,
    # 1: video in, and the pictures drawn from arrays
    "video": 1,
    "video_processing_marlin": 1,
    "visualization": 1,
    "registration": 1,
    # 2: data sets and label tables
    "data": 2,
    # 3: pretraining, extraction, and the checkpoint formats and model cards they load and write
    "pretraining": 3,
    "extraction": 3,
    "convert_marlin": 3,
    "loading": 3,
    "hub_folders": 3,
    "model_card": 3,
    # 4: downstream evaluation
    "evaluation": 4,
    # 5: the commands over all of it, and the package's face (public names from any stage)
    "__init__": 5,
    "cli": 5,
    "app": 5,
    "demo": 5,
}
REMOTE_CODE = ("configuration_marlin", "modeling_marlin", "video_processing_marlin")


def package_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module inside the package, imported names) of every import of the package in `path`."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = module[:-1]  # what a relative import is relative to (for __init__.py too: its own package)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("marlin_transformers"):
                target = node.module
            else:
                continue
            found.append((target, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "marlin_transformers"]
    return found


def top_level(module: str) -> str:
    """The top-level module or folder of the package a module belongs to (`__init__` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def stage(module: str) -> int:
    return STAGES[top_level(module)]


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p for p in SOURCES}


def test_every_top_level_module_has_a_stage():
    missing = sorted({top_level(module) for module in MODULES} - set(STAGES))
    assert not missing, (
        f"top-level modules without a stage: {missing}; add each to STAGES in tests/test_layout.py and to the "
        "stages of docs/architecture.md"
    )
    stale = sorted(set(STAGES) - {top_level(module) for module in MODULES})
    assert not stale, f"STAGES in tests/test_layout.py names modules that no longer exist: {stale}"


def imported_modules(target: str, names: list[str]) -> list[str]:
    """The package's modules an import of `names` from `target` runs: `target.name` where that is a module, else
    `target` (a name defined in it)."""
    found = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
    return found or ([target] if target in MODULES else [])


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, at module level or inside functions, relative or absolute.

    `from .pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`; importing a module does
    not count as importing its parent packages' `__init__` (Python runs them first, but they are not its code).
    """
    graph = {}
    for module, path in MODULES.items():
        targets = {module for target, names in package_imports(path) for module in imported_modules(target, names)}
        graph[module] = targets - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle (function-level imports included): " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_flow_and_skip_private_names(path):
    own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for target, names in package_imports(path):
        for module in imported_modules(target, names):
            if top_level(own) in STAGES and top_level(module) in STAGES:  # a missing one fails the test above
                assert stage(module) <= stage(own), f"{own} (a stage-{stage(own)} module) imports the later {module}"
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{own} imports private names {private} from {target}"


@pytest.mark.parametrize("name", REMOTE_CODE)
def test_hub_remote_code_imports_only_torch_transformers_and_siblings(name):
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.module in REMOTE_CODE, f"{name} imports .{node.module}: it would not load as Hub remote code"
        if isinstance(node, ast.ImportFrom) and not node.level and node.module.startswith("marlin_transformers"):
            # Only behind a function (decoding a file path needs the installed package), never at import time.
            assert node.col_offset > 0, f"{name} imports {node.module} at module level"
