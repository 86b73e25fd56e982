"""The package layout: folders are layers, imports go one way, and there are no cycles.

Layers, lowest first: ``config``/``errors`` -> ``io`` -> ``models`` -> ``tracking`` ->
``results`` -> ``pipeline`` -> ``cli`` and ``studio``. A module imports only from its own
layer or lower ones (lazy imports inside functions included), and the package never imports
``eval`` or ``pretrain``, which plug into the CLI through entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dinotrack

PACKAGE = Path(dinotrack.__file__).parent

LAYERS = ["base", "io", "models", "tracking", "results", "pipeline", "front"]
# Modules at the package's top level, and the layer each belongs to.
TOP_LEVEL = {
    "config": "base",
    "errors": "base",
    "masks": "io",  # the README's `dinotrack.io.masks` name, re-exporting dinotrack.io.masks
    "__main__": "front",
}
FOLDERS = {
    "io": "io",
    "models": "models",
    "tracking": "tracking",
    "results": "results",
    "pipeline": "pipeline",
    "cli": "front",
    "studio": "front",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("dinotrack", *parts))


def layer_of(module: str) -> str | None:
    """The layer of a module name ``dinotrack.x[.y]``; None for the package itself."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if parts[0] in FOLDERS:
        return FOLDERS[parts[0]]
    return TOP_LEVEL[parts[0]]


def imported_modules(path: Path) -> set[str]:
    """The dinotrack modules (and eval/pretrain) a file imports, at any level."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "dinotrack":
                # `from dinotrack import x`: a submodule, or a lazily exported name.
                found |= {
                    f"dinotrack.{a.name}"
                    for a in node.names
                    if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                }
            elif node.module.split(".")[0] in ("dinotrack", "eval", "pretrain"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {
                a.name
                for a in node.names
                if a.name.split(".")[0] in ("dinotrack", "eval", "pretrain")
            }
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path of module names, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(graph.get(name, ())):
            if cycle := visit(target, path + [name]):
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name, []):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_layer():
    for name in import_graph():
        if name != "dinotrack":
            assert layer_of(name) in LAYERS, name


def test_imports_go_down_the_layers_only():
    wrong = []
    for name, targets in import_graph().items():
        if name == "dinotrack":  # the lazy public exports
            continue
        rank = LAYERS.index(layer_of(name))
        for target in targets:
            if target.split(".")[0] != "dinotrack":
                wrong.append(f"{name} imports {target}")
            elif target != "dinotrack" and LAYERS.index(layer_of(target)) > rank:
                wrong.append(f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_a_layer_check_catches_an_upward_import():
    assert LAYERS.index(layer_of("dinotrack.io.video")) < LAYERS.index(
        layer_of("dinotrack.cli.common")
    )
    assert layer_of("dinotrack.tracking.session") == "tracking"


def test_no_import_cycles():
    graph = import_graph()
    assert {"dinotrack.io.video", "dinotrack.tracking.session", "dinotrack.cli"} <= set(graph)
    cycle = find_cycle({k: {t for t in v if t.startswith("dinotrack.")} for k, v in graph.items()})
    assert cycle is None, " -> ".join(cycle)


def test_no_module_is_long_without_saying_why():
    """A module over 450 lines states in its docstring why it is one idea."""
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        if len(lines) > 450:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "one idea" in doc.lower(), f"{path.relative_to(PACKAGE)}: {len(lines)} lines"


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from dinotrack.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
