"""The package's shape, read from its code: layers that import only the layers before them, no import
cycles, torch-free media and stores, and a library that never prints (docs: README "Python API")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aqa_cli"
LAYERS = (
    "util",
    "media",
    "stores",
    "models",
    "data",
    "checkpoints",
    "evaluation",
    "training",
    "pipelines",
    "cli",
)
TORCH_FREE = ("media", "stores")
TORCH = ("torch", "torchvision")
PRINTING = ("rich", "typer")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions (deferred imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {
    name: {target for target in imports_of(path) if target in MODULES and target != name}
    for name, path in MODULES.items()
}


def layer_of(module: str) -> int | None:
    """The layer a module belongs to (None: the package root, `aqa_cli` and `aqa_cli.__main__`)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer():
    outside = [
        name for name in MODULES if layer_of(name) is None and name not in ("aqa_cli", "aqa_cli.__main__")
    ]
    assert not outside, f"modules outside the layers {LAYERS}: {outside}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_only_to_earlier_layers(module):
    own = layer_of(module)
    if own is None:
        return
    against = sorted(target for target in GRAPH[module] if (layer_of(target) or 0) > own)
    assert not against, f"{module} (layer {LAYERS[own]}) imports later layers: {against}"


def test_there_are_no_import_cycles():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(MODULES):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :])


def reachable(module: str) -> set[str]:
    seen, pending = set(), [module]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(GRAPH[current])
    return seen


@pytest.mark.parametrize(
    "module",
    sorted(name for name in MODULES if layer_of(name) is not None and LAYERS[layer_of(name)] in TORCH_FREE),
)
def test_media_and_stores_never_import_torch(module):
    heavy = {
        (inner, target)
        for inner in reachable(module)
        for target in imports_of(MODULES[inner])
        if target.split(".")[0] in TORCH
    }
    assert not heavy, f"{module} imports torch through {sorted(heavy)}"


@pytest.mark.parametrize("module", sorted(name for name in MODULES if not name.startswith("aqa_cli.cli")))
def test_only_the_command_line_prints(module):
    tree = ast.parse(MODULES[module].read_text())
    printing = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    terminal = sorted(target for target in imports_of(MODULES[module]) if target.split(".")[0] in PRINTING)
    assert not printing and not terminal, f"{module}: print() at lines {printing}, imports {terminal}"
