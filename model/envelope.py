"""The safety envelope of learned infills: no checkpoint, trained or not, invents rain.

A network corrects its classical prior (``advection_boundary``, the residual base of every
variant). In a warning chain a correction that amplifies heavy rain is worse than none, so the
inference engine passes every prediction through :func:`bound` before it is used:

1. **Bounded correction**: each hole pixel stays within ``MAX_CORRECTION`` of the prior in
   ``log1p`` of mm/h (0.7: at most about twice, or half, the prior's rate for heavy rain).
2. **Evidence cap**: no hole pixel exceeds ``EVIDENCE_MARGIN`` (1.25) times the largest rate
   any frame of the window shows within ``EVIDENCE_RADIUS`` px (:func:`evidence_cap`); where
   the window shows only dry pixels around a hole pixel, the cap is 0.
3. **Departure check**: if, after 1 and 2, the prediction still departs from the prior on
   average over the hole by more than ``MAX_MEAN_DEPARTURE`` (mean absolute ``log1p``
   difference) or is biased by more than ``MAX_MEAN_BIAS`` (mean signed difference, about 5 %
   of the rate for heavy rain), the whole hole takes the prior instead and the caller counts
   an ``envelope`` fallback. A constant bias of a checkpoint is caught by the second test even
   when each pixel stays inside the per-pixel bound.

The numbers are chosen from the evidence of the held-out evaluation: trained networks that
improved on the prior moved the hole mean by well under 5 % and single pixels by well under
a factor of 2. Pure numpy; rates in mm/h throughout.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "EVIDENCE_MARGIN",
    "EVIDENCE_RADIUS",
    "MAX_CORRECTION",
    "MAX_MEAN_BIAS",
    "MAX_MEAN_DEPARTURE",
    "PRIOR_RMSE_FACTOR",
    "bound",
    "evidence_cap",
]

#: Largest per-pixel correction of the prior, in log1p of mm/h.
MAX_CORRECTION = 0.7
#: A hole pixel may exceed the local evidence by at most this factor.
EVIDENCE_MARGIN = 1.25
#: Half-width (px) of the square in which the evidence around a hole pixel is looked up: the
#: distance rain travels over an outage at the speeds seen in the sample data (~4 px per step
#: over 12 steps).
EVIDENCE_RADIUS = 48
#: Largest mean absolute log1p departure from the prior over the hole before the prior is used.
MAX_MEAN_DEPARTURE = 0.15
#: Largest mean signed log1p departure (a bias) over the hole before the prior is used.
MAX_MEAN_BIAS = 0.05
#: Where the truth is known (the golden input of a release, the gate's safety cases), a model's
#: hole RMSE may be at most this factor times that of its prior.
PRIOR_RMSE_FACTOR = 1.1


def evidence_cap(
    frames: np.ndarray,
    hole: np.ndarray,
    *,
    radius: int = EVIDENCE_RADIUS,
    margin: float = EVIDENCE_MARGIN,
) -> np.ndarray:
    """The largest rate each pixel may take: ``margin`` times the local maximum of the window.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(T, rows, cols)`` rates of the window (any unit; the cap is in the same unit), NaN =
        no-data (holes, outside coverage), the current frame last.
    hole : numpy.ndarray
        bool ``(rows, cols)``: the current frame's pixels being infilled, never read (the call
        contract of the methods: the truth may be there in evaluation and training).
    radius : int
        Half-width in pixels of the square neighbourhood.
    margin : float
        Factor on the local maximum (>= 1).

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, cols)``; 0 where the neighbourhood holds no valid rain in any frame.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3 or hole.shape != frames.shape[1:]:
        raise ValueError(
            f"need frames (T, rows, cols) and a hole (rows, cols), got {frames.shape}, {hole.shape}"
        )
    if radius < 0 or margin < 1:
        raise ValueError(f"need radius >= 0 and margin >= 1, got {radius}, {margin}")
    # Frame by frame: a long outage's window is 24 frames, and the engine's crops are large.
    peak = np.zeros(hole.shape, dtype=np.float32)
    for t, frame in enumerate(frames):
        seen = np.isfinite(frame) if t < len(frames) - 1 else np.isfinite(frame) & ~hole
        np.maximum(peak, frame, out=peak, where=seen)
    local = ndimage.maximum_filter(peak, size=2 * radius + 1, mode="constant", cval=0.0)
    return (np.float32(margin) * local).astype(np.float32)


def bound(prediction: np.ndarray, prior: np.ndarray, cap: np.ndarray) -> tuple[np.ndarray, bool]:
    """A prediction kept inside the envelope of its prior and the evidence.

    Parameters
    ----------
    prediction, prior : numpy.ndarray
        Rates in mm/h of the pixels being infilled, from the network and from its classical
        prior: every value given is judged, so pass the hole's pixels (the engine passes
        them as vectors, so the work grows with the hole, not with the grid).
    cap : numpy.ndarray
        Largest allowed rate in mm/h of the same pixels (:func:`evidence_cap`).

    Returns
    -------
    values, departed
        float32, the shape of ``prediction``: the bounded prediction (steps 1 and 2 of the
        module docstring), or the prior when the departure check fails, both capped by the
        evidence; ``departed`` tells which (True: the prior was used).
    """
    if not prediction.shape == prior.shape == cap.shape:
        raise ValueError(
            f"prediction, prior and cap differ in shape: {prediction.shape}, {prior.shape}, "
            f"{cap.shape}"
        )
    cap = np.maximum(np.nan_to_num(cap, nan=0.0), 0.0)
    prior = np.minimum(np.clip(np.nan_to_num(prior, nan=0.0), 0.0, None), cap)
    values = np.clip(np.nan_to_num(prediction, nan=0.0), 0.0, None)
    base = np.log1p(prior)
    limited = np.clip(np.log1p(values), base - MAX_CORRECTION, base + MAX_CORRECTION)
    values = np.minimum(np.expm1(limited), cap).astype(np.float32)
    if not values.size:
        return values, False
    departure = np.log1p(values) - base
    departed = bool(
        np.abs(departure).mean() > MAX_MEAN_DEPARTURE or abs(departure.mean()) > MAX_MEAN_BIAS
    )
    return (prior.astype(np.float32) if departed else values), departed
