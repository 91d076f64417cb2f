"""Classical infill baselines: the shared call contract, the registry and each method's skill."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg

from radinfill.model import baselines, memo
from tests.conftest import require
from tests.test_motion import disc, translating_rain

SHAPE = (160, 160)
METHODS = baselines.list_methods()
CAUSAL = [name for name in METHODS if baselines.is_causal(name)]


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2)))


def bits(values: np.ndarray) -> np.ndarray:
    """float32 bit patterns, so that NaN compares equal to itself and -0.0 differs from 0.0."""
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """8 frames of rain moving east-south-east at 2.3/1.2 px per step; frames 0-5 are "now"."""
    return translating_rain(SHAPE, steps=8)


@pytest.fixture(scope="module")
def hole() -> np.ndarray:
    return disc(SHAPE, (80, 80), 28)


@pytest.fixture(scope="module")
def outside() -> np.ndarray:
    """No coverage (NaN in every frame): the corners, one of which touches the hole."""
    covered = disc(SHAPE, (80, 80), 95)
    covered[:, 100:] |= True
    return ~covered


def outage(truth: np.ndarray, hole: np.ndarray, outside: np.ndarray, steps: int) -> np.ndarray:
    """Frames 0-5 with no data outside coverage and the hole missing in the last ``steps``."""
    frames = truth[:6].copy()
    frames[:, outside] = np.nan
    frames[-steps:, hole] = np.nan
    return frames


# --- the contract, for every method -------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("steps", [1, 3, 6], ids=["fresh", "persisting", "never-seen"])
def test_contract(name, steps, truth, hole, outside):
    frames = outage(truth, hole, outside, steps)
    before = frames.copy()
    output = baselines.get_method(name)(frames, hole, future=truth[6:])
    assert output.shape == SHAPE
    assert output.dtype == np.float32
    np.testing.assert_array_equal(bits(output[~hole]), bits(frames[-1][~hole]))
    assert np.isfinite(output[hole]).all()
    assert (output[hole] >= 0).all()
    np.testing.assert_array_equal(bits(frames), bits(before))  # inputs untouched


@pytest.mark.parametrize("name", METHODS)
def test_single_frame_and_empty_hole(name, truth, hole):
    current = truth[5].copy()
    current[hole] = np.nan
    output = baselines.get_method(name)(current[None], hole)
    assert np.isfinite(output).all()
    assert (output >= 0).all()
    np.testing.assert_array_equal(output[~hole], current[~hole])
    unchanged = baselines.get_method(name)(current[None], np.zeros(SHAPE, dtype=bool))
    np.testing.assert_array_equal(bits(unchanged), bits(current))


@pytest.mark.parametrize("name", METHODS)
def test_current_hole_values_are_never_read(name, truth, hole, outside):
    """Passing the truth (or garbage) inside the current hole must not change the infill."""
    frames = outage(truth, hole, outside, 2)
    method = baselines.get_method(name)
    reference = method(frames, hole, future=truth[6:])
    frames[-1][hole] = truth[5][hole] + 100.0
    np.testing.assert_array_equal(method(frames, hole, future=truth[6:])[hole], reference[hole])


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_methods_ignore_the_future(name, truth, hole, outside):
    frames = outage(truth, hole, outside, 2)
    method = baselines.get_method(name)
    reference = method(frames, hole)
    np.testing.assert_array_equal(method(frames, hole, future=truth[6:]), reference)
    np.testing.assert_array_equal(method(frames, hole, future=truth[6:] * 3.0 + 1.0), reference)


def test_offline_method_reads_the_future(truth, hole, outside):
    assert not baselines.is_causal("bidirectional")
    frames = outage(truth, hole, outside, 2)
    method = baselines.get_method("bidirectional")
    changed = method(frames, hole, future=truth[6:] * 3.0 + 1.0)
    assert not np.array_equal(method(frames, hole, future=truth[6:]), changed)


# --- input validation (one shared checker) ------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "hole", "future", "message"),
    [
        (np.zeros((8, 8)), np.zeros((8, 8), bool), None, "frames must be"),
        (np.zeros((0, 8, 8)), np.zeros((8, 8), bool), None, "frames must be"),
        (np.zeros((2, 8, 8), complex), np.zeros((8, 8), bool), None, "real numbers"),
        (np.zeros((2, 8, 8)), np.zeros((8, 8), np.uint8), None, "bool"),
        (np.zeros((2, 8, 8)), [[True] * 8] * 8, None, "bool"),
        (np.zeros((2, 8, 8)), np.zeros((8, 9), bool), None, "does not match"),
        (np.zeros((2, 8, 8)), np.zeros((8, 8), bool), np.zeros((1, 8, 9)), "future must be"),
        (np.zeros((2, 8, 8)), np.zeros((8, 8), bool), np.zeros((8, 8)), "future must be"),
    ],
)
def test_invalid_input_raises(frames, hole, future, message):
    with pytest.raises(ValueError, match=message):
        baselines.get_method("persistence")(frames, hole, future)


def test_valid_input_variants_are_accepted():
    hole = np.zeros((8, 8), dtype=bool)
    hole[3:5, 3:5] = True
    frames = np.arange(2 * 64, dtype=np.int64).reshape(2, 8, 8)  # integers, float64 NaN-free
    output = baselines.get_method("persistence")(frames, hole, np.zeros((0, 8, 8)))
    assert output.dtype == np.float32
    np.testing.assert_array_equal(output[hole], frames[0][hole])
    np.testing.assert_array_equal(output[~hole], frames[1][~hole])


# --- registry -----------------------------------------------------------------------------------


def test_registry_names_case_and_errors(truth, hole, outside):
    assert {"zero", "persistence", "laplace", "advection", "advection_smooth"} <= set(CAUSAL)
    assert "bidirectional" in METHODS
    frames = outage(truth, hole, outside, 1)
    np.testing.assert_array_equal(
        baselines.get_method("AdVecTion")(frames, hole),
        baselines.get_method("advection")(frames, hole),
    )
    with pytest.raises(ValueError, match="unknown infill method 'kriging'") as info:
        baselines.get_method("kriging")
    assert all(name in str(info.value) for name in METHODS)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    with pytest.raises(TypeError, match="sigma_per_step"):
        baselines.get_method("advection", sigma_per_step=1.0)
    with pytest.raises(TypeError, match="flow_sigma"):
        baselines.get_method("laplace", flow_sigma=3.0)


def test_options_are_bound(truth, hole, outside):
    frames = outage(truth, hole, outside, 3)
    unsmoothed = baselines.get_method("advection_smooth", sigma_per_step=0.0)(frames, hole)
    np.testing.assert_array_equal(unsmoothed, baselines.get_method("advection")(frames, hole))
    smoothed = baselines.get_method("advection_smooth")(frames, hole)
    assert smoothed[hole].std() < unsmoothed[hole].std()


# --- what each method does ----------------------------------------------------------------------


def test_zero():
    frames = np.ones((2, 10, 10), dtype=np.float32)
    hole = np.eye(10, dtype=bool)
    output = baselines.get_method("zero")(frames, hole)
    assert not output[hole].any()
    assert (output[~hole] == 1).all()


def test_persistence_looks_back_past_nan_frames():
    frames = np.full((4, 3, 3), np.nan, dtype=np.float32)
    frames[0, 0, 0], frames[1, 0, 0] = 7.0, 5.0  # last valid two steps back
    frames[0, 1, 1] = 9.0  # last valid three steps back
    frames[2, 2, 2] = -1.0  # negative (an artefact) is clipped to 0
    frames[3] = 1.0
    hole = np.zeros((3, 3), dtype=bool)
    hole[0, 0] = hole[1, 1] = hole[2, 2] = hole[0, 2] = True  # (0, 2) never valid
    output = baselines.get_method("persistence")(frames, hole)
    assert output[0, 0] == 5.0
    assert output[1, 1] == 9.0
    assert output[2, 2] == 0.0
    assert output[0, 2] == 0.0


def test_laplace_reproduces_a_linear_field():
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    field = (2.0 + 0.03 * rows + 0.01 * cols).astype(np.float32)
    hole = disc(SHAPE, (70, 90), 35)
    output = baselines.get_method("laplace")(field[None], hole)
    np.testing.assert_allclose(output[hole], field[hole], rtol=1e-4)


def test_laplace_factorises_a_persisting_hole_once(monkeypatch):
    """Fields of one outage share the matrix: one factorisation, also where the same hole sits
    elsewhere in a larger grid (another crop); a changed hole is factorised anew. The solves
    equal those of a fresh factorisation, and a linear field is still reproduced."""
    factorised = []
    splu = scipy.sparse.linalg.splu

    def counting(matrix, **options):
        factorised.append(matrix.shape[0])
        return splu(matrix, **options)

    monkeypatch.setattr(baselines, "_FACTORS", memo.ContentCache(baselines.FACTOR_CACHE_SIZE))
    monkeypatch.setattr(scipy.sparse.linalg, "splu", counting)
    laplace = baselines.get_method("laplace")
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    hole = disc(SHAPE, (70, 90), 35)
    fields = [(a + 0.03 * rows + b * cols).astype(np.float32) for a, b in ((2, 0.01), (1, 0.02))]
    outputs = [laplace(field[None], hole) for field in fields]
    shifted = np.pad(fields[1], ((7, 0), (0, 11)), constant_values=1.0)
    moved = laplace(shifted[None], np.pad(hole, ((7, 0), (0, 11))))
    assert len(factorised) == 1
    for field, output in zip(fields, outputs, strict=True):
        np.testing.assert_allclose(output[hole], field[hole], rtol=1e-4)
    np.testing.assert_allclose(moved[7:, :-11], outputs[1], rtol=1e-6)
    baselines._FACTORS.clear()
    np.testing.assert_array_equal(laplace(fields[1][None], hole), outputs[1])
    laplace(fields[1][None], disc(SHAPE, (70, 90), 34))
    assert len(factorised) == 3


def test_laplace_boundaries():
    """No-data neighbours are zero-flux (Neumann); a hole with no valid neighbour gives 0."""
    field = np.full((60, 60), 4.0, dtype=np.float32)
    field[:, :20] = np.nan  # outside coverage, touching the hole
    hole = np.zeros((60, 60), dtype=bool)
    hole[20:40, 15:35] = True  # straddles the coverage edge
    hole[0:5, 0:5] = True  # entirely outside coverage: nothing to interpolate
    output = baselines.get_method("laplace")(field[None], hole)
    np.testing.assert_allclose(output[20:40, 20:35], 4.0, rtol=1e-5)
    np.testing.assert_allclose(output[20:40, 15:20], 4.0, rtol=1e-5)
    assert not output[0:5, 0:5].any()


def test_advection_beats_persistence_on_a_translating_field(truth, hole, outside):
    frames = outage(truth, hole, outside, 3)
    advected = baselines.get_method("advection")(frames, hole)
    persisted = baselines.get_method("persistence")(frames, hole)
    assert rmse(advected, truth[5], hole) < 0.2 * rmse(persisted, truth[5], hole)


def test_advection_smooth_wins_on_a_decorrelating_field(hole, outside):
    noisy = translating_rain(SHAPE, steps=6, noise=0.7, seed=3)
    frames = outage(noisy, hole, outside, 3)
    smooth = baselines.get_method("advection_smooth")(frames, hole)
    plain = baselines.get_method("advection")(frames, hole)
    assert rmse(smooth, noisy[5], hole) < 0.9 * rmse(plain, noisy[5], hole)


def test_advection_boundary_corrects_a_uniform_change_of_intensity_exactly(hole, outside):
    """Rain 3x heavier now than in every earlier frame (uniform): the ring shows the factor."""
    earlier = np.full((6, *SHAPE), 2.0, dtype=np.float32)
    frames = earlier.copy()
    frames[-1] = 6.0
    frames[:, outside] = np.nan
    frames[-3:, hole] = np.nan
    smooth = baselines.get_method("advection_smooth")(frames, hole)
    corrected = baselines.get_method("advection_boundary")(frames, hole)
    assert np.allclose(smooth[hole], 2.0, rtol=1e-5)  # the prior misses the change
    assert np.allclose(corrected[hole], 6.0, rtol=1e-5)


def test_bidirectional_boundary_corrects_a_uniform_change_of_intensity_exactly(hole, outside):
    """Rain at 2 before and after, 6 now: the blend of past and future misses it, the ring not."""
    frames = np.full((6, *SHAPE), 2.0, dtype=np.float32)
    frames[-1] = 6.0
    future = np.full((2, *SHAPE), 2.0, dtype=np.float32)
    for stack in (frames, future):
        stack[:, outside] = np.nan
    frames[-3:, hole] = np.nan
    future[0, hole] = np.nan  # the outage lasts one more step
    blend = baselines.get_method("bidirectional")(frames, hole, future)
    corrected = baselines.get_method("bidirectional_boundary")(frames, hole, future)
    assert np.allclose(blend[hole], 2.0, rtol=1e-5)
    assert np.allclose(corrected[hole], 6.0, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 3])
def test_advection_boundary_without_change_at_the_ring_is_advection_smooth(hole, steps):
    """Where the current frame equals the prior around the hole, the prior stands.

    A stationary field whose current frame outside the hole is the previous valid frame
    blurred by the lead, as ``advection_smooth`` predicts it; the motion is given (zero), so
    the prior is known exactly.
    """
    field = translating_rain(SHAPE, velocity=(0.0, 0.0), steps=1)[0]
    frames = np.repeat(field[None], 6, axis=0)
    frames[-steps:, hole] = np.nan
    frames[-1] = baselines.motion.nan_blur(frames[-steps - 1], float(steps))
    frames[-1][hole] = np.nan
    still = np.zeros((2, *SHAPE), dtype=np.float32)
    smooth = baselines.advection_with_flow(frames, hole, still, ring=0)
    corrected = baselines.advection_with_flow(frames, hole, still)
    assert np.abs(smooth[hole]).max() > 0.5  # it rains in the hole
    assert np.allclose(corrected[hole], smooth[hole], rtol=1e-5, atol=1e-6)
    outside = ~hole
    assert np.array_equal(bits(corrected[outside]), bits(frames[-1][outside]))


def test_advection_boundary_keeps_the_prior_where_no_ring_exists(truth, hole):
    """A hole with no valid pixel around it in the current frame has nothing to correct to."""
    frames = truth[:6].copy()
    frames[:, ~disc(SHAPE, (80, 80), 40)] = np.nan  # coverage just beyond the hole...
    frames[-1][~hole] = np.nan  # ...but the current frame lost all of it
    frames[-1][hole] = np.nan
    smooth = baselines.get_method("advection_smooth")(frames, hole)
    corrected = baselines.get_method("advection_boundary")(frames, hole)
    assert np.array_equal(bits(corrected[~hole]), bits(smooth[~hole]))
    # The two reach differently far (the ring), so they run on crops of different sizes, whose
    # OpenCV blurs and remaps round differently in the last bits.
    np.testing.assert_allclose(corrected[hole], smooth[hole], rtol=1e-5, atol=1e-6)


def test_advection_boundary_follows_growth_seen_at_the_edge(truth, hole, outside):
    """Rain moving and intensifying by 40 % per step: the ring carries the growth into the hole."""
    growing = truth[:6] * (1.4 ** np.arange(6, dtype=np.float32))[:, None, None]
    frames = outage(growing, hole, outside, 3)
    smooth = baselines.get_method("advection_smooth")(frames, hole)
    corrected = baselines.get_method("advection_boundary")(frames, hole)
    assert rmse(corrected, growing[5], hole) < 0.8 * rmse(smooth, growing[5], hole)


def test_bidirectional_uses_the_future(truth, hole, outside):
    """Rain that grows linearly in time: the frame after the outage brings the missing growth.

    Advection from 3 steps back sees intensity factor 1.4 where the truth has 2.0; the time
    weights (1/4 past at 1.4, 3/4 future at 2.2) give exactly 2.0, so only motion errors remain.
    """
    growth = (1.0 + 0.2 * np.arange(len(truth), dtype=np.float32))[:, None, None]
    growing = truth * growth
    frames = outage(growing, hole, outside, 3)
    future = growing[6:].copy()
    future[:, outside] = np.nan
    both = baselines.get_method("bidirectional")(frames, hole, future)
    causal = baselines.get_method("advection")(frames, hole)
    assert rmse(both, growing[5], hole) < 0.2 * rmse(causal, growing[5], hole)


def test_bidirectional_without_a_valid_future_is_advection(truth, hole, outside):
    frames = outage(truth, hole, outside, 2)
    method = baselines.get_method("bidirectional")
    causal = baselines.get_method("advection")(frames, hole)
    np.testing.assert_array_equal(method(frames, hole), causal)
    np.testing.assert_array_equal(method(frames, hole, np.zeros((0, *SHAPE))), causal)
    missing = np.full((2, *SHAPE), np.nan, dtype=np.float32)
    np.testing.assert_array_equal(method(frames, hole, missing), causal)


def test_advection_matches_pysteps(truth, hole):
    """Our causal advection against pysteps LK motion + semi-Lagrangian extrapolation.

    Both extrapolate the last complete frame (3 steps before the current one) over a 28 px hole
    of a field moving at 2.6 px/step. Both are near exact here (pysteps' sparse LK recovers a
    uniform translation almost perfectly; our DIS flow is smoothed and filled into the hole, and
    remap interpolates on a 1/32 px grid), so the two fills should agree to a few percent of the
    field's spread, as the prototype found on real cases (0.02-0.17 mm/h).
    """
    pysteps_motion = require("pysteps.motion")
    pysteps_extrapolation = require("pysteps.extrapolation")
    lead = 3
    frames = truth[:6].copy()
    frames[-lead:, hole] = np.nan
    complete = truth[: 6 - lead]
    velocity = pysteps_motion.get_method("LK")(complete[-3:])
    theirs = pysteps_extrapolation.get_method("semilagrangian")(complete[-1], velocity, lead)[-1]
    ours = baselines.get_method("advection")(frames, hole)
    assert np.isfinite(theirs[hole]).all()
    spread = float(truth[5][hole].std())
    ours_error = rmse(ours, truth[5], hole)
    theirs_error = rmse(theirs, truth[5], hole)
    assert ours_error < 0.05 * spread
    assert abs(ours_error - theirs_error) < 0.05 * spread
    assert rmse(ours, theirs, hole) < 0.05 * spread
