"""The online quality estimate: infill a known outage cut into a complete recent field.

Real holes have no truth, so the live infill cannot be scored. Periodically the service takes
the latest field of a product that had no failure hole, removes the disc of the radar that is
wettest before and during an outage of :data:`OUTAGE_STEPS` steps ending at that field (the
rule of ``radinfill evaluate``, :mod:`radinfill.cuts`), runs
the live model as it would run on a real outage, and scores the result against the removed
values. RMSE and CSI at 1 mm/h are exported as gauges: a model that degrades on today's weather
shows up before anybody looks at a verification report.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from radinfill import cuts, scores
from radinfill.model import cases
from radinfill.radolan import Grid

__all__ = ["OUTAGE_STEPS", "check", "cut_outage"]

#: Steps the synthetic outage has been running at the scored field (a short, typical outage).
OUTAGE_STEPS = 3
#: Rain threshold of the exported CSI (mm/h).
CSI_THRESHOLD = 1.0


def cut_outage(frames: np.ndarray, grid: Grid, steps: int = OUTAGE_STEPS) -> np.ndarray:
    """The outage (bool ``(T, rows, cols)``) over the last ``steps`` frames (fewer when the
    window is shorter): the disc of the operational radar that is wettest before and during it
    (:func:`radinfill.cuts.wettest_disc_outage`, the rule of ``radinfill evaluate``).

    Raises
    ------
    ValueError
        If fewer than two frames are given, or no radar disc with data reaches into the grid.
    """
    steps = min(steps, len(frames) - 1)
    if steps < 1:
        raise ValueError(f"a shadow check needs two frames or more, got {len(frames)}")
    return cuts.wettest_disc_outage(frames, grid, start=len(frames) - steps, duration=steps)


def check(
    frames: np.ndarray,
    grid: Grid,
    interval_minutes: int,
    method: Callable[..., np.ndarray],
) -> dict[str, float]:
    """Score ``method`` on an outage cut into the complete last frames of ``frames``, infilled
    at each of its steps as live (:func:`radinfill.model.cases.infill_sequence`, the way
    ``radinfill evaluate`` scores).

    Parameters
    ----------
    frames
        float32 ``(T, rows, cols)`` mm per interval, oldest first; the last frame has no
        failure hole.
    grid
        The frames' grid.
    interval_minutes
        Product interval (for mm/h).
    method
        The live infill method.

    Returns
    -------
    dict
        ``rmse`` (mm/h) and ``csi_1`` over the outage's steps, ``hole_pixels`` of its disc.
    """
    outage = cut_outage(frames, grid)
    case = cases.Case("shadow", frames, outage, grid, interval_minutes)
    filled = cases.infill_sequence(method, case, window=len(frames))
    steps = case.steps
    to_rate = 60.0 / interval_minutes
    truth, output = frames[steps] * to_rate, filled[steps] * to_rate
    result = scores.evaluate(truth, output, outage[steps], (CSI_THRESHOLD,))
    key = f"csi_{scores.threshold_key(CSI_THRESHOLD)}"
    return {"rmse": result["rmse"], key: result[key], "hole_pixels": float(outage[-1].sum())}
