"""Import a script of tools/ (not a package) as a module, for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """The module of ``tools/<name>.py``, imported as ``python tools/<name>.py`` runs it: with
    tools/ on the module path, so that its imports of the tools' helper modules resolve."""
    if str(TOOLS) not in sys.path:
        sys.path.append(str(TOOLS))  # after the repository's packages: they take precedence
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
