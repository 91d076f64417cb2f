"""Cases with known truth, infilled as they would run live.

A :class:`Case` is a sequence with an outage cut into its complete data
(:mod:`radinfill.cuts`); :func:`infill_sequence` runs a method at every outage step with the
frames the service would hand it (the window, reaching back before a long outage; for offline
methods the frames after it). ``radinfill evaluate`` scores every method this way, and the
service's shadow check scores the live model on today's weather the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from radinfill import cuts
from radinfill.model import features
from radinfill.radolan import Grid

__all__ = ["Case", "infill_sequence"]


@dataclass(frozen=True)
class Case:
    """A sequence with known truth and an outage to infill.

    Attributes
    ----------
    name
        Label used in tables (e.g. ``synthetic mixed seed 0``).
    truth
        float32 (T, rows, cols), mm per interval, NaN where there is no data.
    hole
        bool (T, rows, cols): the outage at each step (empty outside the outage).
    grid
        Grid of the fields.
    interval_minutes
        Product interval; scores convert to mm/h with it.
    """

    name: str
    truth: np.ndarray
    hole: np.ndarray
    grid: Grid
    interval_minutes: int

    @property
    def steps(self) -> np.ndarray:
        """Indices of the steps at which the outage is active."""
        return np.flatnonzero(self.hole.any(axis=(1, 2)))


def infill_sequence(
    method: Callable[..., np.ndarray],
    case: Case,
    *,
    window: int = features.DEFAULT_WINDOW,
    future_steps: int = features.FUTURE_FRAMES,
) -> np.ndarray:
    """Run ``method`` at every outage step as it would run live; returns the infilled sequence.

    Steps without an outage are returned as the truth. ``observed`` is the truth with every
    step's outage set to NaN. The input at step ``t`` is the last ``window`` observed frames,
    extended back to :data:`~radinfill.model.features.PRE_OUTAGE_FRAMES` frames before the
    running outage began: the service keeps those for an ongoing outage, since after
    ``window`` steps a fixed window would hold nothing to advect into the hole. ``future`` is
    ``observed[t + 1 : t + 1 + future_steps]`` (None at the end of the sequence).
    """
    observed = cuts.cut(case.truth, case.hole).astype(np.float32, copy=False)
    active = case.hole.any(axis=(1, 2))
    output = case.truth.copy()
    for t in case.steps:
        length = features.context_length(active[: t + 1], window)
        frames = observed[t + 1 - length : t + 1]
        future = observed[t + 1 : t + 1 + future_steps]
        output[t] = method(frames, case.hole[t], future=future if len(future) else None)
    return output
