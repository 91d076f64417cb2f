"""Hole-only verification scores of an infill against the truth (pure numpy).

Every score is computed over the hole pixels only: H_t = hole_t AND finite(truth_t), pooled
over time. Scoring valid pixels would hand free points to any method that copies them.
Outputs are clipped at 0 (negative precipitation is not a thing) and NaN outputs inside the
hole count as 0 (an unfilled hole scores like a zero fill). Units are those of the inputs;
the thresholds are meant in mm/h, so pass rates in mm/h.

Definitions (seed work and DESIGN.md §6):

``rmse``, ``mae``
    Over all pooled (t, i in H_t).
``ame``
    Time mean of |mean_H(truth_t) - mean_H(output_t)|: the absolute error of the hole-mean.
``temporal_corr``
    Pearson r over t of the two hole-mean series (not a per-pixel correlation).
``spatial_corr``
    Time mean of the per-step Pearson r over H_t; steps where either field is constant over
    the hole (e.g. dry) are skipped.
``csi_T``, ``pod_T``, ``far_T``
    Pooled contingency counts with the ">= T" convention at each threshold T.
``fss``
    Fractions skill score (Roberts & Lean 2008) at :data:`FSS_THRESHOLD` mm/h and a window of
    :data:`FSS_WINDOW` pixels; fractions from the whole composite (truth outside the hole), sums
    over H_t only.
``blur_ratio``
    Gradient energy sum_H |grad output|^2 / sum_H |grad truth|^2: ~1 for realistic fills,
    << 1 for smooth ones (RMSE rewards blur, this exposes it).

Undefined scores (empty hole, a single step for ``temporal_corr``, all-dry for CSI) are NaN;
no input shape that matches raises an exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
from scipy.ndimage import uniform_filter

#: Threshold (mm/h) and window (pixels, 1 km each) of the single ``fss`` score.
FSS_THRESHOLD = 1.0
FSS_WINDOW = 11
DEFAULT_THRESHOLDS = (0.1, 1.0, 5.0)
#: The perfect value of each score, by name or by the kind before ``_T`` (``csi_1`` -> ``csi``).
#: It fixes the direction in which a score ranks methods: errors and the false-alarm ratio are
#: better lower (ideal 0); correlations, CSI, POD and FSS higher (ideal 1, their maximum); the
#: blur ratio is best at 1 (below: a blurred fill, above: spurious texture), not "the higher
#: the better".
IDEAL: Mapping[str, float] = MappingProxyType(
    {
        "rmse": 0.0,
        "mae": 0.0,
        "ame": 0.0,
        "temporal_corr": 1.0,
        "spatial_corr": 1.0,
        "csi": 1.0,
        "pod": 1.0,
        "far": 0.0,
        "fss": 1.0,
        "blur_ratio": 1.0,
    }
)


def threshold_key(threshold: float) -> str:
    """Suffix used in score names: 0.1 -> ``0.1``, 1.0 -> ``1``, 5.0 -> ``5``."""
    return f"{threshold:g}"


def score_names(thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> list[str]:
    """Names of the scores :func:`evaluate` returns, in order."""
    names = ["rmse", "mae", "ame", "temporal_corr", "spatial_corr"]
    for kind in ("csi", "pod", "far"):
        names += [f"{kind}_{threshold_key(t)}" for t in thresholds]
    return [*names, "fss", "blur_ratio"]


def ideal(name: str) -> float:
    """The perfect value of score ``name`` (see :data:`IDEAL`).

    Raises
    ------
    ValueError
        For a name that is not a score of :func:`evaluate`.
    """
    kind = name if name in IDEAL else name.rpartition("_")[0]
    if kind not in IDEAL:
        raise ValueError(f"unknown score {name!r}; known kinds: {', '.join(IDEAL)}")
    return IDEAL[kind]


def distance_to_ideal(name: str, value: float) -> float:
    """``|value - ideal(name)|``: how far a score is from perfect, in its own units.

    Lower is better for every score, so comparisons of methods (promotion gates, the best
    value of a report column) need no per-score direction. NaN (undefined) stays NaN.
    """
    return math.nan if math.isnan(value) else abs(value - ideal(name))


def _as_cube(array: np.ndarray, dtype: type) -> np.ndarray:
    array = np.asarray(array, dtype=dtype)
    return array[None] if array.ndim == 2 else array


def evaluate(
    truth: np.ndarray,
    output: np.ndarray,
    hole: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Score ``output`` against ``truth`` over the hole.

    Parameters
    ----------
    truth, output
        (T, rows, cols) or (rows, cols) fields, NaN where there is no truth / no value.
    hole
        bool mask of the infilled pixels, same shape as ``truth`` or (rows, cols) for all steps.
    thresholds
        Rain thresholds for the categorical scores (mm/h, ">=" convention).

    Returns
    -------
    dict
        Exactly the keys of :func:`score_names`, as Python floats (NaN where undefined).
    """
    # Two float64 copies of the cubes, worked on in place: an evaluation holds dozens of
    # national fields, and every further temporary cube is another 6.5 MB per field.
    truth0 = _as_cube(np.array(truth, dtype=np.float64), np.float64)
    composite = _as_cube(np.array(output, dtype=np.float64), np.float64)
    hole = np.broadcast_to(_as_cube(hole, bool), truth0.shape)
    if composite.shape != truth0.shape:
        raise ValueError(f"output shape {composite.shape} differs from truth shape {truth0.shape}")
    used = hole & np.isfinite(truth0)
    np.nan_to_num(truth0, copy=False, nan=0.0)
    np.nan_to_num(composite, copy=False, nan=0.0)
    np.clip(composite, 0.0, None, out=composite)  # the output in the hole, the truth elsewhere:
    np.copyto(composite, truth0, where=~hole)
    y, yhat = truth0[used], composite[used]
    scores: dict[str, float] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        err = yhat - y
        scores["rmse"] = float(np.sqrt(np.mean(err**2))) if err.size else np.nan
        scores["mae"] = float(np.mean(np.abs(err))) if err.size else np.nan
        scores.update(_hole_mean_scores(truth0, composite, used))
        scores["spatial_corr"] = _spatial_corr(truth0, composite, used)
        scores.update(_categorical(y, yhat, thresholds))
        scores["fss"] = _fss(truth0, composite, used, FSS_THRESHOLD, FSS_WINDOW)
        scores["blur_ratio"] = _blur_ratio(truth0, composite, used)
    return {name: float(scores[name]) for name in score_names(thresholds)}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN when fewer than two samples or either series is constant.

    "Constant" allows for rounding: a spread below 1e-9 of the series' magnitude (a hole-mean
    series of identical fields computed in float32) has no correlation to report.
    """
    if a.size < 2 or any(np.ptp(x) <= 1e-9 * np.abs(x).max() for x in (a, b)):
        return np.nan
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denominator) if denominator > 0 else np.nan


def _hole_mean_scores(truth: np.ndarray, output: np.ndarray, used: np.ndarray) -> dict[str, float]:
    counts = used.sum(axis=(1, 2))
    steps = counts > 0
    if not steps.any():
        return {"ame": np.nan, "temporal_corr": np.nan}
    totals = np.array(  # step by step: no temporary cube
        [
            [np.where(used[t], cube[t], 0).sum() for t in range(len(used))]
            for cube in (truth, output)
        ]
    )
    mean_truth, mean_output = (totals / np.maximum(counts, 1))[:, steps]
    return {
        "ame": float(np.mean(np.abs(mean_truth - mean_output))),
        "temporal_corr": _pearson(mean_truth, mean_output),
    }


def _spatial_corr(truth: np.ndarray, output: np.ndarray, used: np.ndarray) -> float:
    per_step = [_pearson(truth[t][used[t]], output[t][used[t]]) for t in range(len(truth))]
    finite = [r for r in per_step if np.isfinite(r)]
    return float(np.mean(finite)) if finite else np.nan


def _categorical(y: np.ndarray, yhat: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for threshold in thresholds:
        observed, forecast = y >= threshold, yhat >= threshold
        hits = np.sum(observed & forecast)
        misses = np.sum(observed & ~forecast)
        false_alarms = np.sum(~observed & forecast)
        key = threshold_key(threshold)
        out[f"csi_{key}"] = _ratio(hits, hits + misses + false_alarms)
        out[f"pod_{key}"] = _ratio(hits, hits + misses)
        out[f"far_{key}"] = _ratio(false_alarms, hits + false_alarms)
    return out


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else np.nan


def _fss(
    truth: np.ndarray, output: np.ndarray, used: np.ndarray, threshold: float, window: int
) -> float:
    if not used.any():
        return np.nan
    numerator = denominator = 0.0
    for t in np.flatnonzero(used.any(axis=(1, 2))):
        observed = uniform_filter(
            (truth[t] >= threshold).astype(np.float64), window, mode="constant"
        )
        forecast = uniform_filter(
            (output[t] >= threshold).astype(np.float64), window, mode="constant"
        )
        numerator += np.sum((forecast - observed)[used[t]] ** 2)
        denominator += np.sum(forecast[used[t]] ** 2 + observed[used[t]] ** 2)
    return 1.0 - numerator / denominator if denominator > 0 else np.nan


def _gradient_energy(field: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(field)
    return gx * gx + gy * gy


def _blur_ratio(truth: np.ndarray, output: np.ndarray, used: np.ndarray) -> float:
    if min(truth.shape[1:]) < 2:
        return np.nan
    steps = np.flatnonzero(used.any(axis=(1, 2)))
    truth_energy = sum(float(np.sum(_gradient_energy(truth[t])[used[t]])) for t in steps)
    output_energy = sum(float(np.sum(_gradient_energy(output[t])[used[t]])) for t in steps)
    return output_energy / truth_energy if truth_energy > 0 else np.nan
