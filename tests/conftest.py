"""Shared fixtures: the real DWD sample files (read only) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real RADOLAN samples (Quelle: Deutscher Wetterdienst), next to the repository; never modified.
SAMPLES = Path(os.environ.get("RADINFILL_SAMPLES", REPO.parent / "shared" / "data" / "radolan"))


@pytest.fixture(scope="session")
def samples() -> Path:
    """Directory of the real DWD sample files; tests needing them skip if it is absent."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real RADOLAN samples not found at {SAMPLES}")
    return SAMPLES
