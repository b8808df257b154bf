"""The layout of docs/architecture.md holds: data flows one way, the Hub files stand alone, no private reach-ins."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "marlin_transformers"
# Each stage may import its own and earlier stages only (video -> data -> pretraining / extraction -> evaluation);
# the model's kernels come before them all.
STAGES = {"kernels": 0, "video": 1, "data": 2, "pretraining": 3, "extraction": 3, "evaluation": 4}
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
    return found


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.get(parts[1]) if len(parts) > 1 else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_flow_and_skip_private_names(path):
    own = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for target, names in package_imports(path):
        if stage(own) is not None and stage(target) is not None:
            assert stage(target) <= stage(own), f"{own} (a stage-{stage(own)} module) imports the later {target}"
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
