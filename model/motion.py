"""Optical-flow motion of precipitation fields and semi-Lagrangian advection.

Pure functions over numpy arrays, used by the classical baselines (:mod:`radinfill.model.baselines`)
and as the motion channels of the learned infiller.

Conventions
-----------
* Motion is a float32 array ``(2, rows, cols)`` in **pixels per step** (one step = the time between
  consecutive frames, 5 min for RY/YW). ``flow[0] = u`` is the displacement along columns (+x,
  east) and ``flow[1] = v`` the displacement along rows (+y). RADOLAN rows run south to north
  (row 0 = SOUTH), so ``v > 0`` means moving **north**. A feature at ``(row, col)`` in one frame
  is at ``(row + v, col + u)`` in the next.
* NaN marks no-data (outside coverage, failure holes) in every field.

Motion is estimated with OpenCV's DIS optical flow (Kroeger et al. 2016) between consecutive
frames on ``log1p`` rain scaled to 8 bits (DIS needs 8-bit images; the log compresses the
intensity range so that light rain carries texture). A pixel's flow counts only where both frames
have data, away from no-data edges (the artificial edge of a hole does not move and would drag the
flow towards zero). The valid flows of all pairs are then smoothed with a Gaussian by normalised
convolution, which also fills the flow inside holes and outside coverage; where data are too far
away for the fine scale, a coarser scale and finally the mean flow take over, so the result is
smooth and finite everywhere.

Motion is a property of the whole field, not of a hole's neighbourhood: the smoothing runs at 25
and 100 px and falls back to the field's mean flow in the middle of a large hole, so a crop
around a hole would need most of the grid to reproduce it. What is expensive is the optical flow
of each frame pair (about 90 ms per pair on 1100 x 900, 2 cores); while a window slides, every
pair but the newest was seen by an earlier call. :func:`pair_flow` therefore keeps the last
:data:`PAIR_CACHE_SIZE` pairs (:class:`radinfill.model.memo.ContentCache`), keyed by a digest of
the two frames' bytes (values and NaN, i.e. the masks) and the options, so a corrected or
re-delivered frame is a new key and is recomputed.
Each pair is scaled to 8 bits on its own (the two images share one scale, which is what the
optical flow needs), so a pair's flow does not depend on the other frames of the window.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from radinfill import fingerprint
from radinfill.model import memo

#: Relative weight of the next-coarser estimate in the multi-scale normalised convolution: the
#: fine scale wins where the local data weight (a fraction in [0, 1]) exceeds this.
_COARSE_WEIGHT = 0.05
#: Ratio between the two smoothing scales of the flow field.
_COARSE_FACTOR = 4.0
#: Smoothing scales up to this many pixels run at full resolution; larger ones on a grid
#: down-sampled so that the Gaussian is about this wide there (cost, not accuracy: the result is
#: smooth at that scale anyway).
_FULL_RES_SIGMA = 8.0
#: A backward-warped sample is valid when at least this share of its bilinear weight falls on data.
_MIN_SAMPLE_WEIGHT = 0.5
#: Frame pairs whose optical flow is kept: a window of n frames holds n - 1 pairs, and 4 covers the
#: default 3-frame estimate of two interleaved product streams (about 9 MB per pair on 1100 x 900).
PAIR_CACHE_SIZE = 4

#: Latest frames a motion estimate reads (two pairs: the usual nowcasting choice, robust yet
#: recent); callers holding a long window pass just these.
N_FRAMES = 3

#: A pair's flow (``(2, rows, cols)``, pixels per step) and where it counts (bool), or None.
PairFlow = tuple[np.ndarray, np.ndarray] | None


def estimate(
    frames: np.ndarray,
    *,
    n_frames: int = N_FRAMES,
    sigma: float = 25.0,
    erosion: int = 10,
    preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
) -> np.ndarray:
    """Estimate a smooth motion field from the last frames of a sequence.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(T, rows, cols)`` precipitation (any non-negative unit per interval), oldest first, NaN =
        no-data. Only the last ``n_frames`` frames are used; pairs of consecutive frames give one
        flow estimate each, and the estimates are pooled.
    n_frames : int
        How many of the latest frames to use (>= 2 for any motion; 3 gives two pairs, the usual
        nowcasting choice, robust yet recent).
    sigma : float
        Standard deviation in pixels of the Gaussian that smooths (and fills) the flow. ~25 px
        (25 km on RADOLAN grids) keeps the synoptic motion and drops the noise of single cells.
    erosion : int
        Pixels of each pair's common data area to discard along its edges, where hole and coverage
        edges corrupt the flow.
    preset : int
        ``cv2.DISOPTICAL_FLOW_PRESET_*`` (speed/accuracy trade-off).

    Returns
    -------
    numpy.ndarray
        float32 ``(2, rows, cols)``: ``u`` (+column, east) and ``v`` (+row, north), pixels per
        step, finite everywhere. All zeros when fewer than two frames or no common rain exists.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, rows, cols), got shape {frames.shape}")
    if n_frames < 2:
        raise ValueError(f"n_frames must be >= 2 to see motion, got {n_frames}")
    recent = frames[-n_frames:]
    flow_sum = np.zeros((2, *recent.shape[1:]), dtype=np.float32)
    weight = np.zeros(recent.shape[1:], dtype=np.float32)
    for first, second in itertools.pairwise(recent):
        pair = pair_flow(first, second, erosion=erosion, preset=preset)
        if pair is not None:
            flow, both = pair
            flow_sum += flow * both
            weight += both
    return _fill_smooth(flow_sum, weight, sigma)


def pair_flow(
    first: np.ndarray,
    second: np.ndarray,
    *,
    erosion: int = 10,
    preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
) -> PairFlow:
    """Optical flow from ``first`` to ``second`` and where it counts, computed once per pair.

    Parameters
    ----------
    first, second : numpy.ndarray
        float32 ``(rows, cols)`` consecutive frames, NaN = no-data.
    erosion, preset
        As for :func:`estimate`.

    Returns
    -------
    PairFlow
        ``(flow, counts)``: float32 ``(2, rows, cols)`` raw flow in pixels per step and the bool
        mask of the pair's common data area shrunk by ``erosion`` px; None when the pair holds
        no rain or no common data. Cached by content (see the module notes): treat as
        read-only.
    """
    first, second = (np.asarray(frame, dtype=np.float32) for frame in (first, second))
    key = fingerprint.digest(first, second, int(erosion), int(preset))
    return _PAIRS.get(key, lambda: _dis_flow(first, second, erosion, preset))


def _dis_flow(first: np.ndarray, second: np.ndarray, erosion: int, preset: int) -> PairFlow:
    """The uncached work of :func:`pair_flow`: DIS optical flow on the pair's 8-bit images."""
    images, valid = _to_uint8(np.stack([first, second]))
    if images is None:
        return None
    common = valid[0] & valid[1]
    counts = _erode(common, erosion)
    if not counts.any():
        return None
    # Blank what either frame lacks in BOTH images: a hole in one frame only would otherwise
    # read as rain vanishing or moving (a stationary cell under a new hole became motion
    # towards the hole's edge).
    blanked = [np.where(common, image, 0).astype(np.uint8) for image in images]
    flow = cv2.DISOpticalFlow_create(preset).calc(blanked[0], blanked[1], None)
    return np.ascontiguousarray(np.moveaxis(flow, -1, 0)), counts


_PAIRS: memo.ContentCache[PairFlow] = memo.ContentCache(PAIR_CACHE_SIZE)


def advect(field: np.ndarray, flow: np.ndarray, lead_steps: int) -> np.ndarray:
    """Move a field ``lead_steps`` steps along a motion field (semi-Lagrangian, backward).

    Each output pixel traces its trajectory back ``lead_steps`` steps, one step at a time with the
    motion interpolated at the current trajectory point, and takes the bilinearly interpolated
    value there. Backward warping leaves no gaps, and the step-wise trace follows curved flow.
    To move a field backwards in time, pass ``-flow``.

    Parameters
    ----------
    field : numpy.ndarray
        ``(rows, cols)`` values, NaN = no-data.
    flow : numpy.ndarray
        ``(2, rows, cols)`` motion in pixels per step (see the module conventions).
    lead_steps : int
        Number of steps (>= 0) to move forward.

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, cols)``; NaN where the trajectory starts outside the grid or where less
        than half of the interpolation weight falls on data (it "leaves the data").
    """
    field = np.asarray(field, dtype=np.float32)
    if field.ndim != 2 or flow.shape != (2, *field.shape):
        raise ValueError(
            f"field must be (rows, cols) and flow (2, rows, cols), got {field.shape}, {flow.shape}"
        )
    if int(lead_steps) != lead_steps or lead_steps < 0:
        raise ValueError(f"lead_steps must be a non-negative integer, got {lead_steps!r}")
    x, y = _backtrack(np.asarray(flow, dtype=np.float32), int(lead_steps))
    return _sample(field, x, y)


def nan_blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that ignores NaN (normalised convolution) and keeps NaN where it was.

    Parameters
    ----------
    field : numpy.ndarray
        ``(rows, cols)`` values, NaN = no-data.
    sigma : float
        Standard deviation in pixels; ``<= 0`` returns a copy.

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, cols)``: each valid pixel becomes the Gaussian-weighted mean of the valid
        pixels around it, so no-data neither spreads nor pulls values towards zero.
    """
    field = np.asarray(field, dtype=np.float32)
    if sigma <= 0:
        return field.copy()
    valid = np.isfinite(field)
    numerator = _blur(np.where(valid, field, 0.0).astype(np.float32), sigma)
    denominator = _blur(valid.astype(np.float32), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, numerator / denominator, np.nan).astype(np.float32)


def _to_uint8(frames: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``log1p`` rain on one common 0..255 scale (NaN -> 0) and the data masks.

    One scale for the frames of a pair keeps brightness constant between them, which optical
    flow assumes.
    Returns ``None`` for the images when no frame holds rain (nothing to track).
    """
    valid = np.isfinite(frames)
    # In place on one float32 buffer: this runs for every new frame on the whole grid.
    logs = np.fmax(frames, np.float32(0.0))  # NaN and negatives -> 0
    np.log1p(logs, out=logs)
    top = float(logs.max(initial=0.0))
    if top <= 0.0:
        return None, valid
    logs *= np.float32(255.0 / top)
    return np.rint(logs, out=logs).astype(np.uint8), valid


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink a mask by ``pixels`` (elliptical element); the grid edge itself does not erode."""
    if pixels <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 image, zero outside the grid.

    Wide kernels run on a grid down-sampled by area averaging and are interpolated back, which
    keeps every scale at a few milliseconds on 900 x 900.
    """
    factor = max(1, int(sigma // _FULL_RES_SIGMA))
    rows, cols = image.shape
    if factor == 1:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    small_size = (max(1, round(cols / factor)), max(1, round(rows / factor)))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_LINEAR)


def _fill_smooth(weighted: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth and gap-fill ``(k, rows, cols)`` data given as weighted sums and their weights.

    Two-scale normalised convolution: at each scale (``sigma * 4``, then ``sigma``) the estimate is
    ``(G*(w f) + c f_coarse) / (G*w + c)``, so it follows the data where the smoothed weight is
    large and blends continuously into the coarser estimate (finally the weighted mean) where data
    are far away, e.g. in the middle of a 150 km hole.
    """
    total = float(weight.sum())
    if total == 0.0:
        return np.zeros_like(weighted)
    estimate = (weighted.reshape(len(weighted), -1).sum(axis=1) / total)[:, None, None]
    estimate = np.broadcast_to(estimate, weighted.shape).astype(np.float32)
    for scale in (sigma * _COARSE_FACTOR, sigma):
        smoothed_weight = _blur(weight, scale) + _COARSE_WEIGHT
        estimate = np.stack(
            [
                (_blur(channel, scale) + _COARSE_WEIGHT * coarse) / smoothed_weight
                for channel, coarse in zip(weighted, estimate, strict=True)
            ]
        )
    return estimate.astype(np.float32)


def _backtrack(flow: np.ndarray, lead_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row where each pixel's trajectory was ``lead_steps`` steps earlier."""
    rows, cols = flow.shape[1:]
    x, y = np.meshgrid(
        np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32), indexing="xy"
    )
    for _ in range(lead_steps):
        u = cv2.remap(flow[0], x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        v = cv2.remap(flow[1], x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x = x - u
        y = y - v
    return x, y


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` at (``x`` = column, ``y`` = row), NaN-aware."""
    valid = np.isfinite(field)
    values = cv2.remap(
        np.where(valid, field, 0.0).astype(np.float32),
        x,
        y,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    share = cv2.remap(
        valid.astype(np.float32),
        x,
        y,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(share >= _MIN_SAMPLE_WEIGHT, values / share, np.nan).astype(np.float32)
