"""Work in proportion to the hole: each hole component's neighbourhood, and the pasting back.

An infill reads the hole and a bounded neighbourhood of it (how far rain is advected into it,
how wide the blurs and the network's receptive field are); outside the hole the field is
returned unchanged anyway. So the classical methods (:mod:`radinfill.model.baselines`) and the
inference engine (:mod:`radinfill.model.engine`) compute on crops instead of the whole grid:
:func:`regions` gives a box around each 8-connected hole component grown by a margin, with
overlapping boxes merged, and :func:`infill_regions` runs a per-region filler and pastes each
region's hole pixels into one full-size field. A 150 km outage on a 1100 x 900 grid is 7 % of
it; its box with a 96 px margin is about a quarter.

After merging, every hole component lies inside exactly one region together with its whole
margin, so a region's computation sees each of its components complete, and regions never share
a hole pixel. The margin is the caller's: the reach of what it computes, in pixels (see
:func:`radinfill.model.baselines.crop_margin` and :data:`radinfill.model.engine.NETWORK_MARGIN`).
Motion is not cropped: it is a property of the whole field (see :mod:`radinfill.model.motion`),
estimated once on the grid and cut to each region.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy import ndimage

__all__ = ["Region", "grown", "infill_regions", "inside", "paste", "regions", "small_components"]

#: A crop of the grid: row and column slices (``array[..., rows, cols]``).
Region = tuple[slice, slice]
#: Box as ``(row0, row1, col0, col1)``, stops exclusive.
_Box = tuple[int, int, int, int]
#: 8-connectivity: diagonal neighbours belong to one component (their boxes overlap anyway).
_CONNECTIVITY = np.ones((3, 3), dtype=bool)


def regions(hole: np.ndarray, margin: int, align: int = 1) -> list[Region]:
    """Boxes around the components of ``hole`` grown by ``margin`` px, merged where they overlap.

    Parameters
    ----------
    hole : numpy.ndarray
        bool ``(rows, cols)``.
    margin : int
        Pixels (>= 0) of context on every side of a component's bounding box, clipped at the
        grid's edge.
    align : int
        Box starts are rounded down, and stops up (within the grid), to multiples of ``align``,
        so that a network that down-samples by ``align`` sees the same pooling grid in a crop as
        on the whole field.

    Returns
    -------
    list of Region
        Disjoint boxes, sorted by their origin; empty for a hole without pixels.

    Raises
    ------
    ValueError
        For a negative margin or an alignment below 1.
    """
    if margin < 0 or align < 1:
        raise ValueError(f"need margin >= 0 and align >= 1, got {margin}, {align}")
    labels, _ = ndimage.label(hole, structure=_CONNECTIVITY)
    boxes = [_grown(box, margin, align, hole.shape) for box in ndimage.find_objects(labels)]
    return [(slice(r0, r1), slice(c0, c1)) for r0, r1, c0, c1 in _merged(boxes)]


def small_components(hole: np.ndarray, pixels: int) -> np.ndarray:
    """bool ``(rows, cols)``: the pixels of the 8-connected components of ``hole`` that have at
    most ``pixels`` pixels (the components :func:`regions` would box; none for ``pixels`` < 1)."""
    labels, count = ndimage.label(hole, structure=_CONNECTIVITY)
    small = np.bincount(labels.ravel(), minlength=count + 1) <= pixels
    small[0] = False
    return small[labels]


def grown(region: Region, margin: int, shape: tuple[int, int]) -> Region:
    """``region`` grown by ``margin`` px on every side, clipped to the grid of ``shape``: the
    crop a computation reaching ``margin`` px further than ``region``'s own margin needs."""
    r0, r1, c0, c1 = _grown(region, margin, 1, shape)
    return slice(r0, r1), slice(c0, c1)


def inside(region: Region, outer: Region) -> Region:
    """``region`` in the coordinates of ``outer``, a crop that holds it: what to cut from an
    array computed on ``outer`` to get ``region``."""
    rows, cols = region
    return (
        slice(rows.start - outer[0].start, rows.stop - outer[0].start),
        slice(cols.start - outer[1].start, cols.stop - outer[1].start),
    )


def paste(hole: np.ndarray, parts: Iterable[tuple[Region, np.ndarray]]) -> np.ndarray:
    """One full-size field from per-region fields: each part's hole pixels, NaN elsewhere.

    Parameters
    ----------
    hole : numpy.ndarray
        bool ``(rows, cols)``.
    parts : iterable of (Region, numpy.ndarray)
        A region and a field of that region's shape.

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, cols)``.
    """
    filled = np.full(hole.shape, np.nan, dtype=np.float32)
    for region, part in parts:
        inside = hole[region]
        filled[region][inside] = part[inside]
    return filled


def infill_regions(
    hole: np.ndarray,
    margin: int,
    fill: Callable[[Region], np.ndarray],
    *,
    align: int = 1,
) -> np.ndarray:
    """Run ``fill`` on each region of ``hole`` (:func:`regions`) and paste the results.

    Parameters
    ----------
    hole, margin, align
        As for :func:`regions`.
    fill : callable
        ``fill(region) -> (region rows, region cols)``: the infill computed on that crop alone.

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, cols)``: the fill at the hole pixels, NaN elsewhere.
    """
    return paste(hole, ((region, fill(region)) for region in regions(hole, margin, align)))


def _grown(box: Region, margin: int, align: int, shape: tuple[int, int]) -> _Box:
    """``box`` grown by ``margin``, aligned outwards to ``align``, clipped to the grid."""
    (rows, cols), (row_span, col_span) = shape, box
    return (
        max(row_span.start - margin, 0) // align * align,
        min(-(-(row_span.stop + margin) // align) * align, rows),
        max(col_span.start - margin, 0) // align * align,
        min(-(-(col_span.stop + margin) // align) * align, cols),
    )


def _merged(boxes: list[_Box]) -> list[_Box]:
    """The union boxes of overlapping boxes, repeated until no two overlap; sorted."""
    while True:
        merged: list[_Box] = []
        for box in boxes:
            overlapping = next((i for i, other in enumerate(merged) if _overlap(box, other)), None)
            if overlapping is None:
                merged.append(box)
            else:
                merged[overlapping] = _union(box, merged[overlapping])
        if len(merged) == len(boxes):
            return sorted(merged)
        boxes = merged


def _overlap(a: _Box, b: _Box) -> bool:
    """Whether two boxes share at least one pixel."""
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _union(a: _Box, b: _Box) -> _Box:
    """The smallest box holding both."""
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
