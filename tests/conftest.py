"""Shared fixtures: the real DWD sample files (read only) and small helpers."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real RADOLAN samples (Quelle: Deutscher Wetterdienst), next to the repository; never modified.
SAMPLES = Path(os.environ.get("RADINFILL_SAMPLES", REPO.parent / "shared" / "data" / "radolan"))


#: Under CI (``CI=true``) missing sample data or a missing test reader is an error, never a
#: skip: a suite that silently shrinks proves less while it still passes.
STRICT = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere (a developer machine without the samples)."""
    if STRICT:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def require(module: str) -> ModuleType:
    """Import a third-party reader the tests check our outputs with (wradlib, pysteps, ...):
    a skip without it on a developer machine, an error under CI."""
    if STRICT:
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def samples() -> Path:
    """Directory of the real DWD sample files (see :func:`missing` when it is absent)."""
    if not SAMPLES.is_dir():
        missing(f"real RADOLAN samples not found at {SAMPLES}")
    return SAMPLES
