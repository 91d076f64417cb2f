"""radinfill: infill radar-failure holes in DWD RADOLAN composites.

``radinfill.open_radolan`` is resolved lazily, so that ``import radinfill`` stays cheap and
does not import xarray (the daemon's hot path and the CLI start-up do not need it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_radolan"]


def __getattr__(name: str) -> Any:
    if name == "open_radolan":
        from radinfill.dataset import open_radolan

        return open_radolan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
