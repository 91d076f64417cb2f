"""Outages cut into complete data, so that an infill can be scored against what was removed.

Real holes have no truth. Every case with known truth is made the same way: ``radinfill
evaluate`` (real and synthetic sequences, rain-rate events), the service's shadow check on
today's weather and the golden input of a model release all take, among candidate discs (radar
sites, or a lattice where a grid has no sites), the disc that is wettest before and during the
outage (:func:`wettest`), cut it over the outage's steps (:func:`outage_mask`) and blank it
(:func:`cut`). Pure numpy; the callers score with :func:`radinfill.scores.evaluate`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from radinfill import holes
from radinfill.radolan import Grid
from radinfill.radolan.sites import OPERATIONAL, RADIUS_KM

__all__ = ["cut", "lattice_discs", "outage_mask", "wettest", "wettest_disc_outage"]


def wettest(
    truth: np.ndarray, discs: Iterable[np.ndarray], *, start: int, duration: int
) -> tuple[np.ndarray | None, float]:
    """The candidate disc that is wettest before and during an outage, and its rain.

    A disc's wetness is the smaller of its rain in the frame before the outage and its mean
    rain during it: rain only arriving after the failure (pure inflow, which no causal method
    can see) or only leaving before it (a dry hole) does not make a representative case. Each
    disc is first cut to the pixels with data in every frame (a real sequence's no-data stays
    no-data).

    Parameters
    ----------
    truth
        float32 ``(T, rows, cols)``, NaN = no data.
    discs
        bool ``(rows, cols)`` candidates.
    start, duration
        First step of the outage (at least 1: one frame before it) and its length in steps.

    Returns
    -------
    disc, rain
        The chosen disc cut to complete pixels (None when no candidate has any) and its
        wetness (sum over the disc, product unit).
    """
    if start < 1:
        raise ValueError(f"an outage needs at least one frame before it, starts at {start}")
    complete = np.isfinite(truth).all(axis=0)
    before = np.nan_to_num(truth[start - 1])
    during = np.nan_to_num(truth[start : start + duration]).mean(axis=0)
    best, best_rain = None, -1.0
    for candidate in discs:
        disc = candidate & complete
        if not disc.any():
            continue
        rain = min(float(before[disc].sum()), float(during[disc].sum()))
        if rain > best_rain:
            best, best_rain = disc, rain
    return best, best_rain


def outage_mask(shape: tuple[int, ...], disc: np.ndarray, start: int, duration: int) -> np.ndarray:
    """bool ``shape`` = (T, rows, cols): ``disc`` over steps ``start`` to ``start + duration``."""
    mask = np.zeros(shape, dtype=bool)
    mask[start : start + duration] = disc
    return mask


def wettest_disc_outage(
    truth: np.ndarray,
    grid: Grid,
    *,
    start: int,
    duration: int,
    radius_km: float = RADIUS_KM,
) -> np.ndarray:
    """Outage mask (T, rows, cols): the disc of the operational radar that is wettest when it
    fails and after (:func:`wettest`), among the sites whose disc reaches into the grid.

    Raises
    ------
    ValueError
        If no radar disc with data in every frame reaches into the grid.
    """
    discs = (holes.coverage(grid, [site], radius_km) for site in OPERATIONAL)
    disc, _ = wettest(truth, discs, start=start, duration=duration)
    if disc is None:
        raise ValueError(f"no radar disc of {radius_km} km with data reaches into grid {grid.name}")
    return outage_mask(truth.shape, disc, start, duration)


def lattice_discs(shape: tuple[int, int], radius_px: int) -> list[np.ndarray]:
    """Candidate discs of ``radius_px`` on a lattice half a radius apart, inside the grid: the
    candidates of a grid without radar sites (rain-rate events, the golden input)."""
    rows, cols = shape
    row, col = np.ogrid[:rows, :cols]
    step = max(radius_px // 2, 1)
    centres = itertools.product(
        range(radius_px, rows - radius_px, step), range(radius_px, cols - radius_px, step)
    )
    return [(row - r) ** 2 + (col - c) ** 2 < radius_px**2 for r, c in centres]


def cut(truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``truth`` (T, rows, cols) with NaN (no data) where ``mask`` is set: what a
    method sees during the outage."""
    observed = truth.copy()
    observed[mask] = np.nan
    return observed
