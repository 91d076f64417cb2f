"""The model the service infills with: loading, validation before use, and the hot swap.

``[service] model`` names a model registry (its ``current`` release is used), a release or
checkpoint directory, or ``baseline:NAME``. A model directory or file that anyone but its owner
(the service user or root) could have changed is refused
(:func:`radinfill.model.registry.check_permissions`); weights are safetensors and metadata JSON,
nothing is unpickled. A release is checksum-verified and, when it stores a
golden input, run on it and compared with the stored output before it is used: a model that
loads but computes something else (wrong weights, broken device) never goes live. The same
procedure runs on SIGHUP; :class:`ModelSlot` then swaps the reference between two products, and
a release that fails any check leaves the running model in place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radinfill.model import baselines

__all__ = ["LoadedModel", "ModelSlot", "load"]


@dataclass(frozen=True)
class LoadedModel:
    """A ready infill method and what it is.

    Attributes
    ----------
    method
        ``method(frames, hole) -> float32 (rows, cols)`` under the baseline contract.
    release
        What was loaded: a release or checkpoint directory, or ``baseline:NAME``.
    variant
        Network variant or baseline name.
    sha256
        Checksum of the weights ("" for a baseline).
    device
        Where it runs.
    runtime
        What runs the network: ``onnxruntime`` (its exported graph, on the CPU) or ``torch``
        ("" for a baseline).
    interval_minutes
        Product interval the model was trained for (None: any, a baseline).
    engine
        The :class:`~radinfill.model.engine.InfillEngine` (None for a baseline).
    causal
        False for an offline baseline, which is handed the frames after the field too.
    """

    method: Callable[..., np.ndarray]
    release: str
    variant: str
    sha256: str = ""
    device: str = "cpu"
    runtime: str = ""
    interval_minutes: int | None = None
    engine: Any = None
    causal: bool = True

    def run(
        self,
        frames: np.ndarray,
        hole: np.ndarray,
        *,
        interval_minutes: int,
        future: np.ndarray | None = None,
    ) -> baselines.Ran:
        """Infill ``hole``: what was made and by which method. A network decides its own
        fallbacks (:meth:`~radinfill.model.engine.InfillEngine.run`: another interval, a failed
        device or model, the envelope); a baseline is run as it is."""
        if self.engine is not None:
            return self.engine.run(frames, hole, interval_minutes=interval_minutes)
        return baselines.Ran(self.method(frames, hole, future=future), self.variant)


def load(
    spec: str,
    *,
    device: str = "auto",
    fallback: str = "advection_boundary",
    offline: bool = False,
    engine: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load, verify, check on the golden input and warm up the model named by ``spec``.

    ``offline`` admits baselines that read the frames after the field (archive backfills);
    the live service refuses them. ``engine`` holds a network's engine options (precision,
    threads, tile: :meth:`~radinfill.daemon.service_config.ServiceConfig.engine_options`).

    Raises
    ------
    ValueError
        For an unknown baseline.
    radinfill.model.registry.RegistryError, radinfill.model.metadata.CheckpointError
        When the model directory or a file in it is writable by others, a release fails its
        checksums or golden check, or a checkpoint cannot be loaded.
    """
    if (name := baselines.spec_method(spec)) is not None:
        causal = baselines.is_causal(name)
        if not causal and not offline:
            raise ValueError(f"{spec}: the service needs a causal baseline")
        return LoadedModel(baselines.get_method(name), spec, name, causal=causal)
    from radinfill.model import registry
    from radinfill.model.engine import InfillEngine
    from radinfill.model.graph import GRAPH
    from radinfill.model.metadata import METADATA, WEIGHTS

    path = registry.resolve(Path(spec))
    if (path / registry.CHECKSUMS).exists():
        registry.verify(path)  # permissions of every file, then their checksums
    else:
        files = (WEIGHTS, METADATA, GRAPH) if (path / GRAPH).exists() else (WEIGHTS, METADATA)
        registry.check_permissions(path, files)
    engine = InfillEngine.from_checkpoint(path, device, fallback=fallback, **(engine or {}))
    if (path / registry.GOLDEN).exists():
        registry.golden_check(engine, path)
    _warm_up(engine)
    meta = engine.metadata
    return LoadedModel(
        method=engine.infill,
        release=str(path),
        variant=str(meta.get("variant", "unknown")),
        sha256=str(meta.get("sha256", "")),
        device=str(engine.device),
        runtime=engine.runtime,
        interval_minutes=int(meta["interval_minutes"]),
        engine=engine,
    )


def _warm_up(engine: Any) -> None:
    """One inference on the golden input (:func:`radinfill.model.registry.golden_input`), so
    one-off costs (allocator, kernels, CUDA context) are paid before the service reports ready,
    and a model that cannot run at all fails here."""
    from radinfill.model import registry

    frames, hole = registry.golden_input(engine.window, engine.interval_minutes)
    out = engine.infill(frames, hole)
    if out.shape != hole.shape or not np.isfinite(out[hole]).all():
        raise ValueError("warm-up inference returned a field of the wrong shape or non-finite")


class ModelSlot:
    """The live model, swapped atomically; readers take :attr:`current` once per product."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel:
        """The model to use for the next product."""
        return self._model

    def swap(self, model: LoadedModel) -> LoadedModel:
        """Make ``model`` live; returns the previous one (kept by the caller for rollback)."""
        with self._lock:
            previous, self._model = self._model, model
        return previous
