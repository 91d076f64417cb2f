"""DESIGN §3: dependencies point one way. The core imports no part, ``model`` imports neither
``daemon`` nor ``train``, and those two do not import each other; only the CLI sees all.

Read from the source with :mod:`ast` (not by importing), so a lazy import inside a function
counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: Folder of each part, and the parts it must not import.
_FORBIDDEN = {
    "radinfill": ("daemon", "model", "train"),
    "model": ("daemon", "train"),
    "daemon": ("train",),
    "train": ("daemon",),
}


def _imports(path: Path) -> set[str]:
    """Every ``radinfill.X`` part a module imports (absolute imports only: the project uses no
    relative ones)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # ``from radinfill import daemon`` names the part in the alias
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        parts |= {n.split(".")[1] for n in names if n.startswith("radinfill.")}
    return parts


@pytest.mark.parametrize("folder", sorted(_FORBIDDEN))
def test_parts_import_one_way(folder: str) -> None:
    modules = [p for p in (REPO / folder).rglob("*.py") if p != REPO / "radinfill" / "cli.py"]
    assert modules, f"no modules under {folder}/"
    wrong = {
        str(p.relative_to(REPO)): sorted(_imports(p) & set(_FORBIDDEN[folder])) for p in modules
    }
    assert {k: v for k, v in wrong.items() if v} == {}
