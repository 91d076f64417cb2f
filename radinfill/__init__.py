"""radinfill: infill radar-failure holes in DWD RADOLAN composites.

``radinfill.open_radolan`` is resolved lazily, so that ``import radinfill`` stays cheap and
does not import xarray (the daemon's hot path and the CLI start-up do not need it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["code_version", "open_radolan"]


def code_version() -> str:
    """The installed radinfill version (``unknown`` for a source tree that is not installed)."""
    try:
        return version("radinfill")
    except PackageNotFoundError:
        return "unknown"


def __getattr__(name: str) -> Any:
    if name == "open_radolan":
        from radinfill.dataset import open_radolan

        return open_radolan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
