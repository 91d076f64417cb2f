"""Optical-flow motion estimate and semi-Lagrangian advection (radinfill.model.motion).

Convention under test: flow[0] = u moves features along +column (east), flow[1] = v along +row,
which is NORTH because RADOLAN row 0 is the southern edge. A frame built as
``frame_t(row, col) = R(row - v t, col - u t)`` therefore has motion (u, v).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from radinfill.model import memo, motion


def translating_rain(
    shape: tuple[int, int] = (160, 160),
    velocity: tuple[float, float] = (2.3, -1.2),
    steps: int = 6,
    *,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Precipitation-like frames moving by ``velocity = (u, v)`` pixels per step.

    A periodic Gaussian random field (correlation length ~6 px) is shifted exactly in Fourier
    space by ``(v t, u t)`` (rows, columns), so
    ``frame_t(row, col) = frame_0(row - v t, col - u t)`` with sub-pixel accuracy; ``exp(g) - 1``
    where ``g > 0`` (0 elsewhere) gives half-dry fields with a skewed intensity distribution like
    rain. ``noise > 0`` mixes fresh small-scale noise
    (length ~2 px) into each frame, so that the field decorrelates in the moving frame.

    Returns
    -------
    numpy.ndarray
        float32 ``(steps, rows, cols)``, oldest first.
    """
    rng = np.random.default_rng(seed)

    def smooth(scale: float) -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal(shape), scale, mode="wrap")
        return field / field.std()

    spectrum = np.fft.fft2(smooth(6.0))
    u, v = velocity
    frames = []
    for t in range(steps):
        g = np.fft.ifft2(ndimage.fourier_shift(spectrum, (v * t, u * t))).real
        if noise:
            g = (g + noise * smooth(2.0)) / np.hypot(1.0, noise)
        frames.append(np.where(g > 0, np.expm1(g), 0.0))
    return np.stack(frames).astype(np.float32)


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    """Boolean disc of ``radius`` pixels around ``centre`` (row, col)."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2


@pytest.mark.parametrize("velocity", [(2.3, -1.2), (-1.5, 3.0), (0.4, 0.0)])
def test_estimate_recovers_translation_with_hole_and_no_coverage(velocity):
    frames = translating_rain(velocity=velocity, steps=3)
    shape = frames.shape[1:]
    hole = disc(shape, (80, 80), 30)
    outside = ~disc(shape, (80, 80), 95)  # corners: no coverage in any frame
    frames[-1][hole] = np.nan
    frames[:, outside] = np.nan
    flow = motion.estimate(frames)
    assert flow.shape == (2, *shape)
    assert flow.dtype == np.float32
    assert np.isfinite(flow).all()
    valid = ~hole & ~outside
    for component, expected in zip(flow, velocity, strict=True):
        assert abs(np.median(component[valid]) - expected) < 0.3
        # Filled by the normalised convolution from the surroundings.
        assert abs(np.median(component[hole]) - expected) < 0.3


@pytest.mark.parametrize("velocity", [(2.3, -1.2), (-1.5, 3.0), (0.0, 0.0)])
@pytest.mark.parametrize("with_hole", [False, True], ids=["complete", "hole"])
def test_estimate_is_accurate_to_a_fifth_of_a_pixel(velocity, with_hole):
    """A known translation is recovered within 0.2 px per step, with or without a hole."""
    frames = translating_rain(shape=(192, 192), velocity=velocity, steps=3)
    hole = disc(frames.shape[1:], (96, 96), 35)
    if with_hole:
        frames[-1][hole] = np.nan
    flow = motion.estimate(frames)
    inner = disc(frames.shape[1:], (96, 96), 70)  # away from the periodic field's wrap
    for component, expected in zip(flow, velocity, strict=True):
        assert np.abs(component[inner] - expected).max() < 0.2


def test_a_new_hole_over_a_stationary_cell_is_not_motion():
    """A heavy cell that stays put while the current frame loses it to a hole: zero motion.

    Before the fix, the edge of the hole (rain in the previous frame, a blank in the current
    one) read as motion and advection moved the cell out of the hole.
    """
    shape = (200, 200)
    frames = np.full((6, *shape), 0.5 / 12, dtype=np.float32)
    frames[:, disc(shape, (100, 100), 20)] = 200.0 / 12  # 200 mm/h in 5 minutes
    frames[:, disc(shape, (60, 140), 10)] = 30.0 / 12
    hole = disc(shape, (100, 100), 45)
    frames[-1][hole] = np.nan
    flow = motion.estimate(frames)
    assert np.abs(flow).max() < 1e-3


def test_estimate_sign_convention_row_zero_is_south():
    """A blob moving to higher rows (north) and higher columns (east) has v > 0 and u > 0."""
    frames = np.zeros((2, 96, 96), dtype=np.float32)
    rows, cols = np.ogrid[:96, :96]
    for t, (row, col) in enumerate([(40, 40), (43, 42)]):
        frames[t] = 5.0 * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 6.0**2))
    flow = motion.estimate(frames, erosion=0)
    u, v = flow[:, 41, 41]
    assert u == pytest.approx(2.0, abs=0.5)
    assert v == pytest.approx(3.0, abs=0.5)


@pytest.mark.parametrize(
    "frames",
    [
        np.ones((1, 40, 40), dtype=np.float32),  # one frame: no motion to see
        np.zeros((3, 40, 40), dtype=np.float32),  # dry: nothing to track
        np.full((3, 40, 40), np.nan, dtype=np.float32),  # no data at all
    ],
    ids=["single-frame", "dry", "all-nan"],
)
def test_estimate_without_information_is_zero(frames):
    flow = motion.estimate(frames)
    assert flow.shape == (2, 40, 40)
    assert not flow.any()


def test_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match="rows, cols"):
        motion.estimate(np.zeros((40, 40)))
    with pytest.raises(ValueError, match="n_frames"):
        motion.estimate(np.zeros((3, 40, 40)), n_frames=1)


def test_advect_reproduces_later_frames():
    velocity = (1.7, -0.6)
    frames = translating_rain(velocity=velocity, steps=4)
    flow = np.empty((2, *frames.shape[1:]), dtype=np.float32)
    flow[0], flow[1] = velocity
    spread = frames[3].std()
    for lead in (1, 3):
        moved = motion.advect(frames[0], flow, lead)
        valid = np.isfinite(moved)
        # Only the upwind border (entering from outside the grid) is undefined.
        assert valid.mean() > 0.9
        error = np.sqrt(np.mean((moved[valid] - frames[lead][valid]) ** 2))
        assert error < 0.05 * spread


def test_advect_integer_shift_is_exact_and_nan_where_trajectory_leaves_data():
    rng = np.random.default_rng(4)
    field = rng.random((30, 40)).astype(np.float32)
    field[10:14, 20:24] = np.nan
    flow = np.zeros((2, 30, 40), dtype=np.float32)
    flow[0], flow[1] = 2.0, 1.0  # east by 2, north by 1 per step
    moved = motion.advect(field, flow, 2)
    expected = np.full_like(field, np.nan)
    expected[2:, 4:] = field[:-2, :-4]
    np.testing.assert_array_equal(moved, expected)


def test_advect_lead_zero_and_errors():
    field = np.arange(12, dtype=np.float32).reshape(3, 4)
    flow = np.ones((2, 3, 4), dtype=np.float32)
    np.testing.assert_array_equal(motion.advect(field, flow, 0), field)
    with pytest.raises(ValueError, match="non-negative integer"):
        motion.advect(field, flow, -1)
    with pytest.raises(ValueError, match="flow"):
        motion.advect(field, flow[:, :2], 1)


def test_nan_blur_ignores_and_keeps_nan():
    field = np.full((50, 50), 3.0, dtype=np.float32)
    field[:, :20] = np.nan
    blurred = motion.nan_blur(field, 4.0)
    np.testing.assert_array_equal(np.isnan(blurred), np.isnan(field))
    # No pull towards zero next to the no-data area.
    np.testing.assert_allclose(blurred[:, 20:], 3.0, rtol=1e-5)
    spike = np.zeros((41, 41), dtype=np.float32)
    spike[20, 20] = 1.0
    spread = motion.nan_blur(spike, 3.0)
    assert spread[20, 20] < 0.1
    assert spread.sum() == pytest.approx(1.0, rel=1e-3)


# --- the pair cache: each frame pair's optical flow once while a window slides ------------------


@pytest.fixture
def counted_pairs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """An empty pair cache and the list of pairs the optical flow is actually computed for."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    compute = motion._dis_flow

    def counting(first, second, erosion, preset):
        calls.append((first.copy(), second.copy()))
        return compute(first, second, erosion, preset)

    monkeypatch.setattr(motion, "_PAIRS", memo.ContentCache(motion.PAIR_CACHE_SIZE))
    monkeypatch.setattr(motion, "_dis_flow", counting)
    return calls


def test_a_sliding_window_computes_each_pair_once(counted_pairs):
    frames = translating_rain(velocity=(1.5, 0.5), steps=8)
    flows = [motion.estimate(frames[t - 2 : t + 1]) for t in range(2, 8)]
    assert len(counted_pairs) == 7  # pairs (0, 1) ... (6, 7), not 2 per call
    for (first, second), t in zip(counted_pairs, range(7), strict=True):
        np.testing.assert_array_equal(first, frames[t])
        np.testing.assert_array_equal(second, frames[t + 1])
    assert len(motion._PAIRS) <= motion.PAIR_CACHE_SIZE
    # A reused pair gives what a fresh computation gives (the cache emptied first).
    motion._PAIRS.clear()
    np.testing.assert_array_equal(flows[-1], motion.estimate(frames[5:8]))


def test_a_corrected_frame_is_recomputed(counted_pairs):
    frames = translating_rain(velocity=(1.5, 0.5), steps=3)
    before = motion.estimate(frames)
    corrected = frames.copy()
    corrected[-1][40:80, 40:80] = np.nan  # the same product, delivered with a new hole
    after = motion.estimate(corrected)
    assert len(counted_pairs) == 3  # (0, 1) reused, (1, 2) once per content
    np.testing.assert_array_equal(counted_pairs[-1][1], corrected[-1])
    assert not np.array_equal(before, after)
    motion.estimate(frames)  # the original content is still cached
    assert len(counted_pairs) == 3


def test_the_pair_cache_is_bounded(counted_pairs):
    frames = translating_rain(velocity=(1.5, 0.5), steps=motion.PAIR_CACHE_SIZE + 3)
    for t in range(1, len(frames)):
        motion.estimate(frames[t - 1 : t + 1])
    assert len(motion._PAIRS) == motion.PAIR_CACHE_SIZE
    motion.estimate(frames[:2])  # the oldest pair was evicted
    assert len(counted_pairs) == len(frames)
