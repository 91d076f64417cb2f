"""Partial-convolution U-Net, ConvLSTM and attention infill models, baselines, inference.

The network names below load lazily (PEP 562), so that ``radinfill.model.baselines`` and
``radinfill.model.motion`` stay importable without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radinfill.model.checkpoint import load_checkpoint, save_checkpoint
    from radinfill.model.engine import InfillEngine
    from radinfill.model.metadata import CheckpointError
    from radinfill.model.registry import RegistryError
    from radinfill.model.unet import InfillNet, build, list_variants

__all__ = [
    "CheckpointError",
    "InfillEngine",
    "InfillNet",
    "RegistryError",
    "build",
    "list_variants",
    "load_checkpoint",
    "save_checkpoint",
]

#: Public name -> submodule that defines it, imported on first access.
_LAZY = {
    "InfillNet": "unet",
    "build": "unet",
    "list_variants": "unet",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "CheckpointError": "metadata",
    "InfillEngine": "engine",
    "RegistryError": "registry",
}


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first access."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def __dir__() -> list[str]:
    """Module attributes, the lazy names included."""
    return sorted({*globals(), *__all__})
