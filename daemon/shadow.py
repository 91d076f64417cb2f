"""The online quality estimate: infill a known outage cut into a complete recent field.

Real holes have no truth, so the live infill cannot be scored. Periodically the service takes
the latest field of a product that had no failure hole, removes the disc of the radar whose
failure would hide the most rain (:data:`OUTAGE_STEPS` steps long, ending at that field), runs
the live model as it would run on a real outage, and scores the result against the removed
values. RMSE and CSI at 1 mm/h are exported as gauges: a model that degrades on today's weather
shows up before anybody looks at a verification report.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from radinfill import holes, scores
from radinfill.radolan import Grid
from radinfill.radolan.sites import OPERATIONAL, RADIUS_KM

__all__ = ["OUTAGE_STEPS", "check", "cut_outage"]

#: Steps the synthetic outage has been running at the scored field (a short, typical outage).
OUTAGE_STEPS = 3
#: Rain threshold of the exported CSI (mm/h).
CSI_THRESHOLD = 1.0


def cut_outage(frames: np.ndarray, grid: Grid, steps: int = OUTAGE_STEPS) -> np.ndarray:
    """The disc (bool ``(rows, cols)``) of the operational radar with the most rain in the last
    frame, limited to pixels with data in the last ``steps`` frames.

    Raises
    ------
    ValueError
        If no radar disc with data reaches into the grid.
    """
    complete = np.isfinite(frames[-steps:]).all(axis=0)
    rain = np.nan_to_num(frames[-1])
    best, most = None, -1.0
    for site in OPERATIONAL:
        disc = holes.coverage(grid, [site], RADIUS_KM) & complete
        amount = float(rain[disc].sum()) if disc.any() else -1.0
        if amount > most:
            best, most = disc, amount
    if best is None or not best.any():
        raise ValueError(f"no radar disc with data reaches into grid {grid.name}")
    return best


def check(
    frames: np.ndarray,
    grid: Grid,
    interval_minutes: int,
    method: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> dict[str, float]:
    """Score ``method`` on an outage cut into the complete last frame of ``frames``.

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
        ``rmse`` (mm/h), ``csi_1`` and ``hole_pixels`` of the synthetic outage.
    """
    hole = cut_outage(frames, grid)
    steps = min(OUTAGE_STEPS, len(frames))
    observed = frames.copy()
    observed[-steps:][:, hole] = np.nan
    filled = method(observed, hole)
    to_rate = 60.0 / interval_minutes
    result = scores.evaluate(frames[-1] * to_rate, filled * to_rate, hole, (CSI_THRESHOLD,))
    key = f"csi_{scores.threshold_key(CSI_THRESHOLD)}"
    return {"rmse": result["rmse"], key: result[key], "hole_pixels": float(hole.sum())}
