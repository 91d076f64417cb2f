"""Input features of the learned infill networks, built from a window of radar frames (numpy).

The networks in :mod:`radinfill.model.unet` take physical quantities; this module turns the
baseline call contract (``frames`` in the product unit, oldest first, current last with NaN in the
hole; ``hole`` bool, see :mod:`radinfill.model.baselines`) into those inputs:

* ``values`` float32 ``(T, H, W)``: rain RATE in mm/h of the last ``window`` frames, oldest first,
  NaN -> 0. Missing leading frames at start-up are all-zero with ``valid`` 0.
* ``valid`` float32 ``(T, H, W)``: 1 where the frame had data, 0 where it was NaN (outside
  coverage, holes, padding frames).
* ``aux`` float32 ``(A, H, W)``: channels for the CURRENT step, in the order of
  :data:`AUX_NAMES`:

  =============  ===========================================================================
  ``advected``   ``advection_boundary`` of the window into the hole in mm/h; the current frame
                 outside the hole; 0 where there are no data at all
  ``u``, ``v``   motion in pixels per step (:func:`radinfill.model.motion.estimate`; u east,
                 v north since row 0 is south)
  ``hole``       1 inside the hole, 0 elsewhere
  ``lead``       steps since each hole pixel was last valid, divided by ``window`` (0 outside
                 the hole; 1 where the pixel was not valid in any earlier frame of the window)
  ...            optional NWP channels (on the grid, standardised), appended in the given order
  =============  ===========================================================================

The advected field is the residual base of the networks: an untrained network returns it unchanged
inside the hole. It is computed by the ``advection_boundary`` baseline itself, and the motion
channels by the same :func:`~radinfill.model.motion.estimate` with the same defaults, so the
learned infill starts from the strongest classical causal method, ``advection_boundary``
(:mod:`radinfill.model.baselines`), and an untrained network equals it exactly.

:func:`prepare` and :func:`to_arrays` are pure numpy; :func:`to_tensors` is the one place that
imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from radinfill.model import baselines, motion

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUX_ADVECTED",
    "AUX_CHANNELS",
    "AUX_HOLE",
    "AUX_LEAD",
    "AUX_NAMES",
    "DEFAULT_WINDOW",
    "FUTURE_FRAMES",
    "PRE_OUTAGE_FRAMES",
    "Inputs",
    "crop_margin",
    "cropped",
    "lead_steps",
    "prepare",
    "to_arrays",
    "to_tensors",
]

#: Frames of context when a checkpoint does not say otherwise (30 min of 5-minute data).
DEFAULT_WINDOW = 6
#: Complete frames kept before a running outage began, so that a long outage, once it is older
#: than the window, still has observed rain to advect into the hole.
PRE_OUTAGE_FRAMES = 3
#: Frames after the current one that offline methods (archives) are given.
FUTURE_FRAMES = 3
#: The classical method the networks correct (their residual base, the ``advected`` channel),
#: and what the engine hands back when a prediction leaves the safety envelope.
PRIOR = "advection_boundary"
#: Names of the base auxiliary channels, in channel order.
AUX_NAMES: tuple[str, ...] = ("advected", "u", "v", "hole", "lead")
#: Number of base auxiliary channels (NWP channels come after them).
AUX_CHANNELS: int = len(AUX_NAMES)
#: Channel index of the advected field (mm/h), the residual base of the networks.
AUX_ADVECTED: int = AUX_NAMES.index("advected")
#: Channel index of the hole mask.
AUX_HOLE: int = AUX_NAMES.index("hole")
#: Channel index of the normalised lead.
AUX_LEAD: int = AUX_NAMES.index("lead")


@dataclass(frozen=True)
class Inputs:
    """The inputs of one infill step (see the module docstring for units and channels).

    Attributes
    ----------
    values : numpy.ndarray
        float32 ``(T, H, W)``, rain rate in mm/h, oldest first, 0 where not valid.
    valid : numpy.ndarray
        float32 ``(T, H, W)``, 1 where the frame had data.
    aux : numpy.ndarray
        float32 ``(A, H, W)``, auxiliary channels of the current step.
    hole : numpy.ndarray
        bool ``(H, W)``, the pixels to infill.
    """

    values: np.ndarray
    valid: np.ndarray
    aux: np.ndarray
    hole: np.ndarray


def prepare(
    frames: np.ndarray,
    hole: np.ndarray,
    *,
    window: int,
    interval_minutes: float,
    nwp: np.ndarray | None = None,
    flow: np.ndarray | None = None,
) -> Inputs:
    """Build the network inputs of the current step from a window of frames.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(T', H, W)`` precipitation in mm per interval (the product unit), T' >= 1, oldest first;
        the last is the current frame. NaN = no-data. Values inside ``hole`` in the current frame
        are never read (the baseline contract), so the truth may be passed there in training.
    hole : numpy.ndarray
        bool ``(H, W)``, the pixels to infill.
    window : int
        Number of frames the network sees (>= 1): the last ``window`` frames, zero-padded at
        the front (``valid`` 0) when fewer are given. Motion reads the last
        :data:`radinfill.model.motion.N_FRAMES` frames and the advected channel every frame
        back to the hole's last valid one (:func:`radinfill.model.baselines.lead_reach`), so
        that an outage longer than the window still has the complete frames before it to
        advect from.
    interval_minutes : float
        Minutes per frame (5 for RY/YW): mm per interval times ``60 / interval_minutes`` is mm/h.
    nwp : numpy.ndarray, optional
        ``(K, H, W)`` finite NWP fields on the grid, already standardised, appended to ``aux``.
    flow : numpy.ndarray, optional
        ``(2, H, W)`` motion of the frames (:func:`radinfill.model.motion.estimate` of the frames
        with the current hole cut), estimated here when None. For a crop of a larger grid, pass
        the whole grid's motion cut to the crop (motion is a property of the whole field) and
        a crop reaching :func:`crop_margin` px beyond the hole.

    Returns
    -------
    Inputs
        ``values``/``valid`` ``(window, H, W)``, ``aux`` ``(AUX_CHANNELS + K, H, W)``, ``hole``.

    Raises
    ------
    ValueError
        For a non-positive window or interval, or an NWP array of the wrong shape or with
        non-finite values; the baseline's own checks cover ``frames`` and ``hole``.
    """
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if not interval_minutes > 0:
        raise ValueError(f"interval_minutes must be positive, got {interval_minutes!r}")
    frames, hole, _ = baselines.check_inputs(frames, hole)
    # Advection reads back to each hole pixel's last valid frame, however old (an outage longer
    # than the window still has its last complete frames to advect); the network sees the last
    # ``window``. Only the frames read are copied (a long outage's window holds 24 fields).
    used = max(window, motion.N_FRAMES, baselines.lead_reach(frames, hole) + 1)
    history = np.array(frames[-used:], dtype=np.float32)  # a copy: the hole is cut below
    history[-1][hole] = np.nan  # the contract: the current hole is never read
    if flow is None:
        flow = motion.estimate(history)
    elif flow.shape != (2, *hole.shape):
        raise ValueError(f"flow must be (2, {hole.shape[0]}, {hole.shape[1]}), got {flow.shape}")
    advected = baselines.advection_with_flow(history, hole, flow)
    recent = history[-window:]

    rows, cols = hole.shape
    valid = np.zeros((window, rows, cols), dtype=np.float32)
    valid[window - len(recent) :] = np.isfinite(recent)
    values = np.zeros((window, rows, cols), dtype=np.float32)
    values[window - len(recent) :] = np.nan_to_num(recent, nan=0.0)
    to_mm_per_hour = np.float32(60.0 / interval_minutes)

    base = np.stack(
        [
            np.nan_to_num(advected, nan=0.0) * to_mm_per_hour,
            flow[0],
            flow[1],
            hole.astype(np.float32),
            lead_steps(valid.astype(bool), hole).astype(np.float32) / np.float32(window),
        ]
    )
    return Inputs(
        values=values * to_mm_per_hour,
        valid=valid,
        aux=np.concatenate([base, _checked_nwp(nwp, hole.shape)]),
        hole=hole,
    )


def cropped(inputs: Inputs, rows: slice, cols: slice) -> Inputs:
    """The inputs of a sub-crop (``rows``, ``cols`` of the crop ``inputs`` were built on).

    Every channel but the advected one is per pixel; the advected one is exact where the
    crop ``inputs`` were built on reached :func:`crop_margin` beyond the hole, so the
    sub-crop's inputs are those of the whole grid there, however small it is.
    """
    window = (..., rows, cols)
    return Inputs(
        values=np.ascontiguousarray(inputs.values[window]),
        valid=np.ascontiguousarray(inputs.valid[window]),
        aux=np.ascontiguousarray(inputs.aux[window]),
        hole=np.ascontiguousarray(inputs.hole[window]),
    )


def crop_margin(flow: np.ndarray, frames: np.ndarray, hole: np.ndarray) -> int:
    """Pixels beyond a hole component that its inputs are computed from (the advected channel).

    Parameters
    ----------
    flow : numpy.ndarray
        ``(2, rows, cols)`` motion of the whole grid, pixels per step.
    frames : numpy.ndarray
        ``(T, rows, cols)`` given to :func:`prepare`; the advection reaches back as many steps
        as the hole needs (:func:`radinfill.model.baselines.lead_reach`, at most ``T - 1``).
    hole : numpy.ndarray
        bool ``(rows, cols)``, the pixels to infill.

    Returns
    -------
    int
        :func:`radinfill.model.baselines.crop_margin` of ``advection_boundary`` with its
        defaults, as :func:`prepare` computes it.
    """
    return baselines.crop_margin(
        [baselines.Flow(flow, baselines.lead_reach(frames, hole))],
        sigma_per_step=baselines.SIGMA_PER_STEP,
        ring=baselines.BOUNDARY_RING,
    )


def lead_steps(frames_valid: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Steps since each hole pixel was last valid.

    Parameters
    ----------
    frames_valid : numpy.ndarray
        bool ``(T, H, W)``, where each frame had data, oldest first; the last is the current
        frame (its hole is not valid).
    hole : numpy.ndarray
        bool ``(H, W)``.

    Returns
    -------
    numpy.ndarray
        int64 ``(H, W)``: 1 for a hole pixel valid in the previous frame, k if last valid k frames
        before the current one, ``T`` if valid in no earlier frame (at least ``T`` steps ago), and
        0 outside the hole. Same convention as the lead of the advection baselines.
    """
    frames_valid = np.asarray(frames_valid, dtype=bool)
    if frames_valid.ndim != 3 or frames_valid.shape[1:] != hole.shape:
        raise ValueError(
            f"frames_valid must be (T, {hole.shape[0]}, {hole.shape[1]}), got {frames_valid.shape}"
        )
    newest_first = frames_valid[-2::-1]  # earlier frames, the previous one first
    seen = newest_first.any(axis=0)
    steps = np.where(seen, np.argmax(newest_first, axis=0) + 1, len(frames_valid))
    return np.where(hole, steps, 0).astype(np.int64)


def to_arrays(inputs: Sequence[Inputs]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack the inputs of several steps into the batched float32 arrays of the networks.

    Parameters
    ----------
    inputs : sequence of Inputs
        B >= 1 inputs with identical shapes.

    Returns
    -------
    values, valid, aux : numpy.ndarray
        ``(B, T, 1, H, W)``, ``(B, T, 1, H, W)`` and ``(B, A, H, W)``.

    Raises
    ------
    ValueError
        For an empty sequence or inputs of different shapes.
    """
    if not inputs:
        raise ValueError("to_arrays needs at least one Inputs")
    shapes = {(item.values.shape, item.aux.shape) for item in inputs}
    if len(shapes) != 1:
        raise ValueError(f"inputs differ in shape (values, aux): {sorted(shapes)}")

    def stack(name: str) -> np.ndarray:
        arrays = [getattr(item, name) for item in inputs]
        # One input (the live service) is viewed, not copied: 18 MB on a 512 x 528 crop, alive
        # beside the network's activations.
        return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)

    return stack("values")[:, :, None], stack("valid")[:, :, None], stack("aux")


def to_tensors(
    inputs: Sequence[Inputs],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`to_arrays` as CPU tensors (views of the arrays), for training."""
    import torch

    values, valid, aux = to_arrays(inputs)
    return torch.from_numpy(values), torch.from_numpy(valid), torch.from_numpy(aux)


def _checked_nwp(nwp: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The NWP channels as float32 ``(K, H, W)`` (K = 0 without NWP), checked."""
    if nwp is None:
        return np.zeros((0, *shape), dtype=np.float32)
    nwp = np.asarray(nwp, dtype=np.float32)
    if nwp.ndim != 3 or nwp.shape[1:] != shape:
        raise ValueError(f"nwp must be (K, {shape[0]}, {shape[1]}), got {nwp.shape}")
    if not np.isfinite(nwp).all():
        raise ValueError("nwp must be finite everywhere (standardised fields on the grid)")
    return nwp


def context_length(outage: Sequence[bool], window: int, pre_outage: int = PRE_OUTAGE_FRAMES) -> int:
    """How many of the latest frames to hand to a method for the current (last) frame.

    Parameters
    ----------
    outage
        One flag per available frame, oldest first, the current frame last: whether the frame
        had failure holes (the current frame's own flag is not used).
    window
        The method's window (frames).
    pre_outage
        Complete frames wanted before the outage running into the current frame began.

    Returns
    -------
    int
        ``max(window, frames since the outage began + pre_outage)``, at most ``len(outage)``:
        the service and the evaluation both keep the frames before a running outage, because
        after ``window`` steps a fixed window would hold nothing observed inside the hole.
    """
    available = len(outage)
    running = 0
    while running < available - 1 and outage[available - 2 - running]:
        running += 1
    return min(available, max(window, running + 1 + pre_outage))
