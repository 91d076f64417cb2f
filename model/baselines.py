"""Classical infills of radar-failure holes behind one method registry (pysteps style).

Every method is obtained with :func:`get_method` and has the same call contract as the learned
infill engine, so reports and the service can swap them freely:

``method(frames, hole, future=None) -> numpy.ndarray``

* ``frames``: ``(T, rows, cols)``, T >= 1, oldest first; the last one is the CURRENT field. Any
  frame may hold NaN: no-data outside coverage, and the same hole in earlier frames while an outage
  persists (so a pixel's last valid value may be several frames back). Values inside ``hole`` in
  the current frame are never read, so passing the truth there cannot leak into the infill.
* ``hole``: bool ``(rows, cols)``, the pixels to fill.
* ``future``: ``(T', rows, cols)`` frames after the current one (oldest first) or None. Only the
  offline methods read it; causal methods ignore it, so they can run in real time.
* returns float32 ``(rows, cols)``: the current frame, with pixels outside ``hole`` bit-identical
  (NaN included) and every hole pixel finite and >= 0. Where a method has nothing to go on it
  gives 0 (no rain), the climatological mode of 5-minute precipitation.

Methods are unit-agnostic: the output is in the unit of the frames (mm per interval for RADOLAN).
Motion comes from :mod:`radinfill.model.motion` (pixels per step, row 0 = south); the number of
steps between a hole pixel's last valid frame and the current one is its *lead*.

Every method computes in proportion to the hole: the motion is estimated once on the whole grid
(it is a property of the whole field, and each frame pair's optical flow is cached), and the
hole filler then runs on the neighbourhood of each hole component only
(:func:`radinfill.model.crops.infill_regions`), with the margin :func:`crop_margin`: everything
a hole pixel's value is computed from lies inside it, so the cropped result equals the whole-grid
one (``tests/test_crops.py`` checks every method against a whole-grid run). A call without hole
pixels does no work at all.

==========================  =======  ==============================================================
name                        causal   what fills the hole
==========================  =======  ==============================================================
``zero``                    yes      0 (the floor every method must beat)
``persistence``             yes      each pixel's most recent valid value from earlier frames
``laplace``                 yes      harmonic interpolation of the current frame (one sparse solve)
``advection``               yes      the pixel's last valid frame moved forward by its lead along
                                     optical-flow motion; persistence where the trajectory leaves
                                     the data
``advection_smooth``        yes      ``advection`` blurred with sigma = 1 px x lead (steps): the
                                     expected position error grows with the lead, and the blur
                                     lowers RMSE by 8-15 % on real cases
``advection_boundary``      yes      ``advection_smooth`` corrected to the current frame around the
                                     hole: its departure from the prior on the valid pixels around
                                     the hole, interpolated harmonically into the hole (log1p); the
                                     strongest classical causal method, the networks' residual base
``bidirectional``           no       ``advection`` from the past blended with the first valid future
                                     frame moved backwards, weights linear in time; exactly
                                     ``advection`` without a valid future frame
``bidirectional_boundary``  no       ``bidirectional`` corrected to the current frame around the
                                     hole as in ``advection_boundary``: the default of archive
                                     backfills
==========================  =======  ==============================================================

Options are keyword arguments of :func:`get_method` (e.g. ``get_method("advection_smooth",
sigma_per_step=2.0)``); unknown options raise TypeError there, not at the first call.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from scipy import ndimage

from radinfill import fingerprint
from radinfill.model import crops, memo, motion

#: Width in pixels of the ring of valid pixels around a hole from which ``advection_boundary``
#: takes the current frame's departure from the advection. 1 px: the valid pixels next to the
#: hole, since the harmonic interpolation already averages the whole boundary. Wider rings (3
#: and 8 px, averaged along the ring) changed hole RMSE by under 0.3 % on the held-out real
#: cases, slightly for the worse on two of three.
BOUNDARY_RING = 1
#: Blur of ``advection_smooth`` and ``advection_boundary`` in px per step of lead (see
#: :func:`_advection_smooth` for why 1 px).
SIGMA_PER_STEP = 1.0
#: Radius in sigmas of what a Gaussian blur of :func:`radinfill.model.motion.nan_blur` reads:
#: OpenCV cuts float kernels at 4 sigma; one more sigma covers the area averaging and the
#: bilinear interpolation back of the blurs it runs on a down-sampled grid (sigma >= 8 px).
BLUR_REACH_SIGMAS = 5.0
#: SuperLU settings for the Laplace matrix, which is symmetric positive definite: a minimum-degree
#: ordering of A^T + A and diagonal pivots factorise a 150 km disc (~76,000 unknowns) in about
#: half the time of the default (COLAMD ordering, partial pivoting); solutions agree to 1e-12.
_SUPERLU = MappingProxyType(
    {
        "permc_spec": "MMD_AT_PLUS_A",
        "diag_pivot_thresh": 0.0,
        "options": {"SymmetricMode": True},
    }
)
#: Factorised Laplace matrices kept (:func:`_laplace`), about 50 MB each for a 150 km disc: one
#: for the outage being served and one for a second product or the ``laplace`` method.
FACTOR_CACHE_SIZE = 2
#: ... and the bytes they may hold. The factors grow faster than the hole: one of 255,000 px
#: (several radars out at once on 900 x 900) holds 160 MB, and two such kept for good doubled
#: the demo's memory. Within 192 MB: two 150 km discs, or one such outage; a larger hole is
#: factorised again for each field (about 1.2 s at 255,000 px) rather than held.
FACTOR_CACHE_BYTES = 192 * 2**20
#: Pixels read beyond a computed point: the bilinear sample at a trajectory's end (1) and the
#: 4-neighbours of the Laplace solve around a hole (1).
STENCIL_REACH = 2


class InfillMethod(Protocol):
    """The call contract shared by all methods (see the module docstring)."""

    def __call__(
        self, frames: np.ndarray, hole: np.ndarray, future: np.ndarray | None = None
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Flow:
    """A motion field on the whole grid and the most steps anything is moved along it.

    Attributes
    ----------
    field : numpy.ndarray
        float32 ``(2, rows, cols)``, pixels per step (:func:`radinfill.model.motion.estimate`).
    steps : int
        The longest lead (steps) a method advects over along ``field``; with the field's
        largest speed it bounds how far from a hole pixel the method reads (:func:`crop_margin`).
    """

    field: np.ndarray
    steps: int


def lead_reach(frames: np.ndarray, hole: np.ndarray) -> int:
    """Steps back to the oldest frame any hole pixel is advected from: the largest lead of
    :func:`_latest_valid` over the hole, 0 where no earlier frame has data in it.

    The advection methods move each hole pixel's last valid value forward by its lead, and the
    boundary correction takes the lead of the nearest hole pixel, so nothing is moved over
    more steps than this. A hole that no frame ever saw (a permanent beam blockage) is moved
    over none, whatever the window: its crops stay small while the window grows over a long
    outage elsewhere.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(T, rows, cols)``, oldest first, NaN = no data; the current (last) one is not read.
    hole : numpy.ndarray
        bool ``(rows, cols)``.

    Returns
    -------
    int
        Steps in ``[0, T - 1]``.
    """
    seen = np.isfinite(frames[-2::-1, hole])  # (T - 1, hole pixels), the previous frame first
    ever = seen.any(axis=0)
    return int(np.argmax(seen[:, ever], axis=0).max()) + 1 if ever.any() else 0


def _no_motion(frames: np.ndarray, future: np.ndarray | None, hole: np.ndarray) -> tuple[Flow, ...]:
    """Methods that move nothing need no motion."""
    return ()


def _past_motion(
    frames: np.ndarray, future: np.ndarray | None, hole: np.ndarray, *, flow_sigma: float = 25.0
) -> tuple[Flow, ...]:
    """The motion of the past frames (``flow_sigma``: its smoothing scale in px), over the
    steps of lead the hole needs (:func:`lead_reach`, at most ``T - 1``); the current hole is
    cut from the frames it reads."""
    recent = _cut(frames[-motion.N_FRAMES :], hole)
    return (Flow(motion.estimate(recent, sigma=flow_sigma), lead_reach(frames, hole)),)


def _two_sided_motion(
    frames: np.ndarray, future: np.ndarray | None, hole: np.ndarray, *, flow_sigma: float = 25.0
) -> tuple[Flow, ...]:
    """Forward motion of the past and backward motion of the future frames.

    Backward motion comes from the future frames in reverse order when there are at least two,
    else it is the past motion reversed; without future frames it is not used (0 steps).
    """
    (past,) = _past_motion(frames, future, hole, flow_sigma=flow_sigma)
    ahead = 0 if future is None else len(future)
    if ahead >= 2:
        return past, Flow(motion.estimate(future[::-1], sigma=flow_sigma), ahead)
    return past, Flow(-past.field, ahead)


@dataclass(frozen=True)
class _Entry:
    """One registered method: its hole filler, whether it only looks at the past, and the
    motion (on the whole grid) its filler is given after ``frames, hole[, future]``."""

    fill: Callable[..., np.ndarray]
    causal: bool
    motion: Callable[..., tuple[Flow, ...]] = _no_motion


def crop_margin(flows: Sequence[Flow], *, sigma_per_step: float = 0.0, ring: int = 0) -> int:
    """Pixels around a hole component that a method reads: how far it crops the grid.

    A hole pixel (or a ring pixel up to ``ring`` px from the hole) is filled from the point its
    trajectory started ``steps`` steps back, at most ``steps`` times the largest speed of the
    flow away, then blurred with sigma ``sigma_per_step * steps``
    (:data:`BLUR_REACH_SIGMAS` sigmas wide); a ring wider than 1 px is averaged along itself
    with sigma ``ring / 2``. :data:`STENCIL_REACH` adds the bilinear sample and the Laplace
    stencil. E.g. 4 px per step over 5 steps with 1 px of blur per step: 20 + 25 + 1 + 2 = 48.

    Parameters
    ----------
    flows : sequence of Flow
        The motion a method advects along (empty: it moves nothing).
    sigma_per_step : float
        Blur of the advected field in px per step of lead.
    ring : int
        Width in px of the ring of ``advection_boundary``'s correction (0: none).

    Returns
    -------
    int
        The margin in pixels.
    """
    steps = max((flow.steps for flow in flows), default=0)
    travel = max((_largest_speed(flow.field) * flow.steps for flow in flows), default=0.0)
    ring_reach = ring + (BLUR_REACH_SIGMAS * ring / 2.0 if ring > 1 else 0.0)
    blur = BLUR_REACH_SIGMAS * sigma_per_step * steps
    return math.ceil(travel + blur + ring_reach) + STENCIL_REACH


def _largest_speed(flow: np.ndarray) -> float:
    """Largest displacement per step of a ``(2, rows, cols)`` flow, in px."""
    return float(np.sqrt((flow.astype(np.float64) ** 2).sum(axis=0).max(initial=0.0)))


def check_inputs(
    frames: np.ndarray, hole: np.ndarray, future: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check the call contract's inputs; return frames and future as float32 arrays.

    Shared by every method here and by the learned engine, so all validate alike.

    Raises
    ------
    ValueError
        Naming the argument and what is wrong with it (dimensions, shapes, dtype).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T >= 1, rows, cols), got shape {frames.shape}")
    if not (np.issubdtype(frames.dtype, np.floating) or np.issubdtype(frames.dtype, np.integer)):
        raise ValueError(f"frames must hold real numbers, got dtype {frames.dtype}")
    if not isinstance(hole, np.ndarray) or hole.dtype != np.bool_:
        raise ValueError(f"hole must be a numpy bool array, got {getattr(hole, 'dtype', hole)!r}")
    if hole.shape != frames.shape[1:]:
        raise ValueError(f"hole shape {hole.shape} does not match frames {frames.shape[1:]}")
    if future is not None:
        future = np.asarray(future)
        if future.ndim != 3 or future.shape[1:] != frames.shape[1:]:
            raise ValueError(
                f"future must be (T', {frames.shape[1]}, {frames.shape[2]}), got {future.shape}"
            )
        future = future.astype(np.float32, copy=False)
    return frames.astype(np.float32, copy=False), hole, future


def _contract(name: str, entry: _Entry, **options: object) -> InfillMethod:
    """Wrap a hole filler so that every method validates and finishes its output the same way.

    The motion is estimated on the whole grid; the filler then runs on each region of the hole
    (:func:`radinfill.model.crops.infill_regions`, margin :func:`crop_margin`) and sees the crop
    of the frames with the current frame's hole set to NaN (and of the future and the motion);
    it returns a field of the crop whose hole pixels are used. NaN there becomes 0 and
    negatives are clipped.
    """
    motion_options = {key: options[key] for key in _keywords(entry.motion) if key in options}
    fill_options = {key: value for key, value in options.items() if key not in motion_options}
    reach = {**_keywords(entry.fill), **fill_options}

    def method(
        frames: np.ndarray, hole: np.ndarray, future: np.ndarray | None = None
    ) -> np.ndarray:
        frames, hole, future = check_inputs(frames, hole, future)
        if not hole.any():
            return frames[-1].copy()
        # The current hole is cut from what each step reads (the motion's frames, each
        # crop), never from a copy of the whole window: a long outage's window is 24 fields.
        flows = entry.motion(frames, future, hole, **motion_options)
        margin = crop_margin(
            flows, sigma_per_step=reach.get("sigma_per_step", 0.0), ring=reach.get("ring", 0)
        )

        def fill(region: crops.Region) -> np.ndarray:
            crop = (slice(None), *region)
            given = () if entry.causal else (None if future is None else future[crop],)
            moved = tuple(flow.field[crop] for flow in flows)
            cut = _cut(frames[crop], hole[region])
            return entry.fill(cut, hole[region], *given, *moved, **fill_options)

        return _finish(frames[-1], hole, crops.infill_regions(hole, margin, fill))

    method.__name__ = method.__qualname__ = name
    method.__doc__ = entry.fill.__doc__
    return method


def _keywords(function: Callable[..., object]) -> Mapping[str, object]:
    """The keyword-only parameters of ``function`` and their defaults (a method's options)."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _cut(frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """A copy of ``frames`` with the current frame's hole set to NaN (never read, never leaked)."""
    frames = frames.copy()
    frames[-1][hole] = np.nan
    return frames


def _finish(current: np.ndarray, hole: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """``current`` with its hole taken from ``filled``: NaN there becomes 0, negatives 0."""
    output = current.copy()
    output[hole] = np.clip(np.nan_to_num(filled[hole], nan=0.0), 0.0, None)
    return output


def advection_with_flow(
    frames: np.ndarray,
    hole: np.ndarray,
    flow: np.ndarray,
    *,
    sigma_per_step: float = SIGMA_PER_STEP,
    ring: int = BOUNDARY_RING,
) -> np.ndarray:
    """``advection_boundary`` along a given motion field (``ring=0``: ``advection_smooth``;
    ``sigma_per_step=0`` as well: ``advection``).

    For callers that need the motion as well (the model's input features): the flow, from
    :func:`radinfill.model.motion.estimate` on the frames with the current hole cut, is then
    estimated once. Same call contract and output as the registered methods.
    """
    frames, hole, _ = check_inputs(frames, hole)
    if not hole.any():
        return frames[-1].copy()
    frames = _cut(frames, hole)
    return _finish(frames[-1], hole, _boundary_advection(frames, hole, flow, sigma_per_step, ring))


def _factor_bytes(factors: scipy.sparse.linalg.SuperLU) -> int:
    """Bytes a sparse factorisation holds, from its count of non-zeros in L and U: a float64
    value and an int32 index each (``factors.L`` would build a copy to measure)."""
    return int(factors.nnz) * (8 + 4)


_FACTORS: memo.ContentCache[scipy.sparse.linalg.SuperLU] = memo.ContentCache(
    FACTOR_CACHE_SIZE, max_bytes=FACTOR_CACHE_BYTES, sizeof=_factor_bytes
)


# --- hole fillers (pure; frames float32 with the current hole already NaN) ---------------------


def _zero(frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """0 everywhere."""
    return np.zeros(hole.shape, dtype=np.float32)


def _persistence(frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Each pixel's most recent finite value from earlier frames (NaN where there is none)."""
    return _latest_valid(frames[:-1], hole)[0]


def _laplace(frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Harmonic inpainting of the current frame: one sparse solve of the 5-point Laplace equation.

    Each hole pixel equals the mean of its 4 neighbours. Valid neighbours are Dirichlet values.
    No-data neighbours outside the hole (outside coverage) and the grid edge are Neumann
    (zero-flux) boundaries: unknown there is not the same as dry, so they do not pull the fill
    to 0. Hole components that touch no valid pixel have nothing to interpolate and stay NaN
    (-> 0). The matrix is symmetric positive definite; its sparse factorisation (SuperLU) for a
    150 km disc (~76,000 unknowns) takes about 0.25 s on 2 cores and grows faster than linearly,
    the solve with it about 10 ms. The matrix depends only on the hole and on where the field
    holds data, which stay the same while an outage persists, so the factorisation is kept
    (:data:`FACTOR_CACHE_SIZE`) and each later field of the outage costs the solve only.
    """
    current = frames[-1]
    solvable = _dirichlet_components(hole, np.isfinite(current))
    filled = np.full(hole.shape, np.nan, dtype=np.float32)
    n = int(solvable.sum())
    if n == 0:
        return filled
    index = np.full(hole.shape, -1, dtype=np.int64)
    index[solvable] = np.arange(n)
    rows, cols = np.nonzero(solvable)
    diagonal = np.zeros(n)
    rhs = np.zeros(n)
    off_i: list[np.ndarray] = []
    off_j: list[np.ndarray] = []
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        nr, nc = rows + dr, cols + dc
        inside = (nr >= 0) & (nr < hole.shape[0]) & (nc >= 0) & (nc < hole.shape[1])
        k = np.nonzero(inside)[0]
        neighbour = index[nr[k], nc[k]]
        value = current[nr[k], nc[k]]
        unknown = neighbour >= 0
        known = ~unknown & np.isfinite(value)
        diagonal[k[unknown | known]] += 1.0
        rhs[k[known]] += value[known]
        off_i.append(k[unknown])
        off_j.append(neighbour[unknown])
    i = np.concatenate([np.arange(n), *off_i])
    j = np.concatenate([np.arange(n), *off_j])
    data = np.concatenate([diagonal, -np.ones(len(i) - n)])
    matrix = scipy.sparse.csc_matrix((data, (i, j)), shape=(n, n))
    key = _system_key(solvable, np.isfinite(current))
    factors = _FACTORS.get(key, lambda: scipy.sparse.linalg.splu(matrix, **_SUPERLU))
    filled[solvable] = factors.solve(rhs)
    return filled


def _system_key(solvable: np.ndarray, known: np.ndarray) -> bytes:
    """Digest of what the Laplace matrix of :func:`_laplace` is a function of, wherever it is.

    The unknowns (``solvable``) and which of their neighbours hold data (``known``), in the box
    around the unknowns grown by 1 px; beyond the grid's edge counts as no data, which is what
    the matrix makes of it. So the same hole keys the same matrix in any crop of the grid.
    """
    rows, cols = np.nonzero(solvable)
    box = (slice(rows.min(), rows.max() + 3), slice(cols.min(), cols.max() + 3))
    return fingerprint.digest(*(np.pad(mask, 1)[box] for mask in (solvable, known)))


def _advection(frames: np.ndarray, hole: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Each hole pixel's last valid frame moved forward by its lead; persistence where it fails."""
    return _advect_or_persist(frames, hole, flow, 0.0)


def _advection_smooth(
    frames: np.ndarray,
    hole: np.ndarray,
    flow: np.ndarray,
    *,
    sigma_per_step: float = SIGMA_PER_STEP,
) -> np.ndarray:
    """``advection`` with each lead group blurred by a Gaussian of ``sigma_per_step * lead`` px.

    The position error of advection grows with the lead; the blur is the expected field under
    that uncertainty. 1 px per step lowered RMSE by 8-15 % on real cases and kept CSI; 3 px per
    step hurt CSI. The blur is NaN-aware, applied to the advected source, used only in the hole.
    """
    return _advect_or_persist(frames, hole, flow, sigma_per_step)


def _advection_boundary(
    frames: np.ndarray,
    hole: np.ndarray,
    flow: np.ndarray,
    *,
    sigma_per_step: float = SIGMA_PER_STEP,
    ring: int = BOUNDARY_RING,
) -> np.ndarray:
    """``advection_smooth`` corrected to what the current frame shows around the hole.

    Rain grows, decays and drifts off the motion estimate while a radar is down, and the
    current frame shows how much right at the hole's edge. On a ring of valid pixels up to
    ``ring`` px from each hole component, the departure ``log1p(current) - log1p(prior)`` is
    taken against ``advection_smooth`` itself, computed there over the lead of the nearest hole
    pixel; a ring wider than 1 px is averaged along itself (NaN-aware Gaussian, sigma ``ring /
    2``). The departure is interpolated harmonically into the hole (the ``laplace`` solve) and
    added to ``advection_smooth`` in ``log1p`` space: multiplicative for heavy rain, additive
    for light rain, never negative. So a uniform change of intensity is corrected exactly;
    where the current frame agrees with the prior on the ring the result is
    ``advection_smooth``; a hole component with no valid ring pixel (nothing observed around
    it) keeps ``advection_smooth``. log1p is of the frames' own unit (mm per interval for
    RADOLAN).
    """
    return _boundary_advection(frames, hole, flow, sigma_per_step, ring)


def _bidirectional(
    frames: np.ndarray,
    hole: np.ndarray,
    future: np.ndarray | None,
    past_flow: np.ndarray,
    back_flow: np.ndarray,
) -> np.ndarray:
    """Forward advection from the past blended with backward advection from the future.

    A hole pixel last valid ``a`` steps ago and first valid again ``b`` steps ahead gets
    ``(b * past + a * future) / (a + b)``, each term advected over its own lead; where one side
    has no value the other is used alone. Backward motion comes from the future frames in reverse
    order when there are at least two, else it is the past motion reversed.
    """
    return _two_sided(frames, hole, future, past_flow, back_flow, ring=0)


def _bidirectional_boundary(
    frames: np.ndarray,
    hole: np.ndarray,
    future: np.ndarray | None,
    past_flow: np.ndarray,
    back_flow: np.ndarray,
    *,
    ring: int = BOUNDARY_RING,
) -> np.ndarray:
    """``bidirectional`` corrected to the current frame around the hole.

    The correction of ``advection_boundary``, with ``bidirectional`` as the prior: on the ring
    of valid pixels around each hole component the departure of the current frame from the
    two-sided blend (over the past and future leads of the nearest hole pixel) is interpolated
    harmonically into the hole and added in ``log1p`` space. The strongest classical method for
    archives, where the frames after an outage are known.
    """
    return _two_sided(frames, hole, future, past_flow, back_flow, ring=ring)


# --- helpers ------------------------------------------------------------------------------------


def _advect_or_persist(
    frames: np.ndarray, hole: np.ndarray, flow: np.ndarray, sigma_per_step: float
) -> np.ndarray:
    """Advection from each pixel's last valid frame, persistence where the trajectory fails."""
    lead = _latest_valid(frames[:-1], hole)[1]
    advected = _advect_by_lead(frames[:-1], lead, flow, sigma_per_step)
    return np.where(np.isfinite(advected), advected, _persistence(frames, hole))


def _boundary_advection(
    frames: np.ndarray, hole: np.ndarray, flow: np.ndarray, sigma_per_step: float, ring: int
) -> np.ndarray:
    """``advection_smooth`` along ``flow`` corrected to the current frame's ring (see
    :func:`_advection_boundary`); ``ring=0`` leaves it uncorrected."""
    history = frames[:-1]
    prior = _advect_or_persist(frames, hole, flow, sigma_per_step)
    lead = _latest_valid(history, hole)[1]
    return _corrected(
        frames[-1],
        hole,
        prior,
        lambda on_ring: _advect_by_lead(history, on_ring(lead), flow, sigma_per_step),
        ring,
    )


def _two_sided(
    frames: np.ndarray,
    hole: np.ndarray,
    future: np.ndarray | None,
    past_flow: np.ndarray,
    back_flow: np.ndarray,
    ring: int,
) -> np.ndarray:
    """``bidirectional`` (``ring=0``) or ``bidirectional_boundary`` along the given motion."""
    history = frames[:-1]
    past_lead = _latest_valid(history, hole)[1]
    # Reversed, the future is a history whose last frame (future[0]) is 1 step ahead; without
    # one, no pixel has a future lead (forward only).
    reversed_future = history[:0] if future is None else future[::-1]
    future_lead = _latest_valid(reversed_future, hole)[1]

    def blend(past: np.ndarray, ahead: np.ndarray) -> np.ndarray:
        """Both sides weighted by the other's lead where both exist, else the one that does."""
        forward = _advect_by_lead(history, past, past_flow, 0.0)
        backward = _advect_by_lead(reversed_future, ahead, back_flow, 0.0)
        with np.errstate(invalid="ignore"):
            both = (ahead * forward + past * backward) / (past + ahead)
        return np.where(
            np.isfinite(backward), np.where(np.isfinite(forward), both, backward), forward
        )

    prior = blend(past_lead, future_lead)
    prior = np.where(np.isfinite(prior), prior, _persistence(frames, hole))
    return _corrected(
        frames[-1],
        hole,
        prior,
        lambda on_ring: blend(on_ring(past_lead), on_ring(future_lead)),
        ring,
    )


def _corrected(
    current: np.ndarray,
    hole: np.ndarray,
    prior: np.ndarray,
    predict: Callable[[Callable[[np.ndarray], np.ndarray]], np.ndarray],
    ring: int,
) -> np.ndarray:
    """``prior`` corrected to what ``current`` shows on a ring around the hole.

    ``predict(on_ring)`` is the prior's method evaluated on the ring: ``on_ring(lead)`` turns a
    per-hole-pixel lead map into one for the ring pixels (each takes the lead of its nearest
    hole pixel), NaN elsewhere. The departure ``log1p(current) - log1p(predicted)`` on the ring
    (averaged along a ring wider than 1 px) is interpolated harmonically into the hole and
    added to ``log1p(prior)``; where no ring pixel is valid the prior stands. ``ring <= 0``
    returns the prior.
    """
    if ring <= 0:
        return prior
    distance, (near_row, near_col) = ndimage.distance_transform_edt(~hole, return_indices=True)
    around = (distance <= ring) & ~hole & np.isfinite(current)

    def on_ring(lead: np.ndarray) -> np.ndarray:
        spread = np.full(hole.shape, np.nan, dtype=np.float32)
        spread[around] = lead[near_row[around], near_col[around]]
        return spread

    reference = predict(on_ring)
    departure = np.full(hole.shape, np.nan, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        departure[around] = np.log1p(current[around]) - np.log1p(reference[around])
    if ring > 1:
        departure = motion.nan_blur(departure, ring / 2.0)
    correction = _laplace(departure[None], hole)
    with np.errstate(invalid="ignore"):
        corrected = np.expm1(np.log1p(prior) + correction)
    return np.where(np.isfinite(correction), corrected, prior).astype(np.float32)


def _latest_valid(history: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most recent finite value of each ``where`` pixel in ``history`` and how far back it is.

    Parameters
    ----------
    history : numpy.ndarray
        ``(K, rows, cols)`` frames, oldest first; the last one is 1 step before the present.
    where : numpy.ndarray
        bool ``(rows, cols)``, the pixels to look up.

    Returns
    -------
    values, lead : numpy.ndarray
        float32 values (NaN where no frame is valid) and the lead in steps (the last frame is
        lead 1; NaN where no frame is valid), both ``(rows, cols)``.
    """
    values = np.full(where.shape, np.nan, dtype=np.float32)
    lead = np.full(where.shape, np.nan, dtype=np.float32)
    todo = where.copy()
    for steps, frame in enumerate(history[::-1], start=1):
        found = todo & np.isfinite(frame)
        values[found] = frame[found]
        lead[found] = steps
        todo &= ~found
        if not todo.any():
            break
    return values, lead


def _advect_by_lead(
    history: np.ndarray,
    lead: np.ndarray,
    flow: np.ndarray,
    sigma_per_step: float,
) -> np.ndarray:
    """Fill each pixel with a finite ``lead`` from ``history[-lead]`` moved forward by ``lead``.

    ``lead`` is in steps (the last frame of ``history`` is 1 step away; NaN: not filled), e.g.
    the steps since each hole pixel's last valid frame (:func:`_latest_valid`). Pixels are
    grouped by lead; each group's source frame is advected once, optionally blurred with sigma
    ``sigma_per_step * lead``, and fills that group. NaN where not filled, where the source is
    no-data or the trajectory leaves the data.
    """
    filled = np.full(lead.shape, np.nan, dtype=np.float32)
    for steps in np.unique(lead[np.isfinite(lead)]).astype(int):
        group = lead == steps
        moved = motion.advect(history[-steps], flow, steps)
        moved = motion.nan_blur(moved, sigma_per_step * steps)
        filled[group] = moved[group]
    return filled


def _dirichlet_components(hole: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Hole pixels whose 4-connected hole component touches at least one valid pixel."""
    labels, count = ndimage.label(hole)
    if count == 0:
        return np.zeros_like(hole)
    boundary = ndimage.binary_dilation(valid & ~hole) & hole
    touching = np.zeros(count + 1, dtype=bool)
    touching[np.unique(labels[boundary])] = True
    touching[0] = False
    return touching[labels]


_REGISTRY: MappingProxyType[str, _Entry] = MappingProxyType(
    {
        "zero": _Entry(_zero, causal=True),
        "persistence": _Entry(_persistence, causal=True),
        "laplace": _Entry(_laplace, causal=True),
        "advection": _Entry(_advection, causal=True, motion=_past_motion),
        "advection_smooth": _Entry(_advection_smooth, causal=True, motion=_past_motion),
        "advection_boundary": _Entry(_advection_boundary, causal=True, motion=_past_motion),
        "bidirectional": _Entry(_bidirectional, causal=False, motion=_two_sided_motion),
        "bidirectional_boundary": _Entry(
            _bidirectional_boundary, causal=False, motion=_two_sided_motion
        ),
    }
)


@dataclass(frozen=True)
class Ran:
    """What one infill produced and which method actually made the hole's values.

    Attributes
    ----------
    values
        float32 ``(rows, cols)`` under the call contract (the hole filled).
    method
        A baseline's name, or a network's variant, or the baseline that stood in for it.
    fallback
        "" when the chosen method ran as chosen; else why not (the network's reasons are in
        :mod:`radinfill.model.engine`: ``cuda_to_cpu``, ``model_to_baseline``, ``envelope``,
        ``interval``).
    """

    values: np.ndarray
    method: str
    fallback: str = ""


#: Prefix of a model spec that names a classical method. A model spec, wherever one model is
#: chosen (``[service] model``, ``--model``), is ``baseline:NAME`` or the path of a model
#: registry, release or checkpoint directory.
SPEC_PREFIX = "baseline:"


def spec_method(spec: str) -> str | None:
    """The method a model spec names (``baseline:NAME``), or None for a path."""
    return spec.removeprefix(SPEC_PREFIX) if spec.startswith(SPEC_PREFIX) else None


def method_spec(name: str) -> str:
    """The model spec of the method ``name``."""
    return SPEC_PREFIX + name


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def is_causal(name: str) -> bool:
    """Whether the method uses only the past and present (can run in real time)."""
    return _lookup(name).causal


def get_method(name: str, **options: object) -> InfillMethod:
    """Return the infill method ``name`` (case-insensitive) with the given options bound.

    Parameters
    ----------
    name : str
        One of :func:`list_methods`.
    **options
        Keyword options of that method, e.g. ``flow_sigma`` (pixels, motion smoothing) for the
        advection methods and ``sigma_per_step`` (pixels per step of lead) for
        ``advection_smooth``.

    Returns
    -------
    InfillMethod
        ``method(frames, hole, future=None) -> (rows, cols) float32`` (see the module docstring).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    TypeError
        For an option the method does not take.
    """
    entry = _lookup(name)
    known = {**_keywords(entry.fill), **_keywords(entry.motion)}
    unknown = sorted(key for key in options if key not in known)
    if unknown:
        raise TypeError(f"method {name!r} takes no option(s) {', '.join(unknown)}")
    return _contract(name.lower(), entry, **options)


def _lookup(name: str) -> _Entry:
    """The registry entry for ``name`` (case-insensitive)."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        known = ", ".join(list_methods())
        raise ValueError(f"unknown infill method {name!r}; known methods: {known}") from None
