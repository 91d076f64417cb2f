"""Input features of the infill networks (radinfill.model.features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radinfill.model import baselines, motion
from radinfill.model.features import (
    AUX_ADVECTED,
    AUX_CHANNELS,
    AUX_HOLE,
    AUX_LEAD,
    AUX_NAMES,
    Inputs,
    lead_steps,
    prepare,
    to_tensors,
)
from tests.test_motion import disc, translating_rain

SHAPE = (64, 64)
WINDOW = 6
#: mm per 5 minutes -> mm/h.
PER_HOUR = 12.0


@pytest.fixture(scope="module")
def hole() -> np.ndarray:
    return disc(SHAPE, (32, 32), 12)


@pytest.fixture(scope="module")
def frames(hole) -> np.ndarray:
    """6 frames of moving rain in mm per 5 min; no coverage in a corner; the hole is missing in
    the last 3 frames except a ring that was still seen in frame 3 (lead 2)."""
    frames = translating_rain(SHAPE, steps=WINDOW) / 10.0
    frames[:, ~disc(SHAPE, (32, 32), 40)] = np.nan
    frames[-3:][:, hole] = np.nan
    frames[3][disc(SHAPE, (32, 32), 12) & ~disc(SHAPE, (32, 32), 8)] = 0.3
    return frames


@pytest.fixture(scope="module")
def inputs(frames, hole) -> Inputs:
    return prepare(frames, hole, window=WINDOW, interval_minutes=5)


def test_shapes_and_dtypes(inputs, hole):
    assert inputs.values.shape == inputs.valid.shape == (WINDOW, *SHAPE)
    assert inputs.aux.shape == (AUX_CHANNELS, *SHAPE)
    assert AUX_NAMES == ("advected", "u", "v", "hole", "lead")
    for array in (inputs.values, inputs.valid, inputs.aux):
        assert array.dtype == np.float32
        assert np.isfinite(array).all()
    assert inputs.hole.dtype == np.bool_
    assert np.array_equal(inputs.hole, hole)


def test_values_are_rates_and_nan_becomes_zero_with_valid_zero(inputs, frames):
    finite = np.isfinite(frames)
    assert np.array_equal(inputs.valid, finite.astype(np.float32))
    assert np.allclose(inputs.values[finite], frames[finite] * PER_HOUR, rtol=1e-6)
    assert (inputs.values[~finite] == 0).all()


def test_hourly_product_keeps_its_values(frames, hole):
    inputs = prepare(frames, hole, window=WINDOW, interval_minutes=60)
    finite = np.isfinite(frames)
    assert np.array_equal(inputs.values[finite], frames[finite])


def test_truth_in_the_current_hole_is_never_read(frames, hole, inputs):
    with_truth = frames.copy()
    with_truth[-1][hole] = 5.0
    leaked = prepare(with_truth, hole, window=WINDOW, interval_minutes=5)
    for name in ("values", "valid", "aux"):
        assert np.array_equal(getattr(leaked, name), getattr(inputs, name)), name


def test_fewer_frames_than_the_window_are_zero_padded_at_the_front(frames, hole):
    inputs = prepare(frames[-2:], hole, window=WINDOW, interval_minutes=5)
    assert inputs.values.shape == (WINDOW, *SHAPE)
    assert (inputs.values[:4] == 0).all()
    assert (inputs.valid[:4] == 0).all()
    finite = np.isfinite(frames[-2:])
    assert np.allclose(inputs.values[4:][finite], frames[-2:][finite] * PER_HOUR)
    # The hole has never been seen in the padded window: lead 1 (the whole window).
    assert (inputs.aux[AUX_LEAD][hole] == 1.0).all()


def test_more_frames_than_the_window_use_the_last_ones(frames, hole):
    longer = np.concatenate([translating_rain(SHAPE, steps=2, seed=5), frames])
    assert len(longer) == WINDOW + 2
    inputs = prepare(longer, hole, window=WINDOW, interval_minutes=5)
    expected = prepare(frames, hole, window=WINDOW, interval_minutes=5)
    for name in ("values", "valid", "aux"):
        assert np.array_equal(getattr(inputs, name), getattr(expected, name)), name


def test_advected_channel_is_the_boundary_corrected_advection_baseline(inputs, frames, hole):
    baseline = baselines.get_method("advection_boundary")(frames, hole)
    advected = inputs.aux[AUX_ADVECTED]
    assert np.allclose(advected[hole], baseline[hole] * PER_HOUR, rtol=1e-6)
    assert advected[hole].max() > 0  # it rains in the hole: the comparison means something
    current = frames[-1]
    outside = ~hole & np.isfinite(current)
    assert np.allclose(advected[outside], current[outside] * PER_HOUR, rtol=1e-6)
    assert (advected[~hole & ~np.isfinite(current)] == 0).all()


def test_motion_and_hole_channels(inputs, frames, hole):
    current_hole_missing = frames.copy()
    current_hole_missing[-1][hole] = np.nan
    flow = motion.estimate(current_hole_missing)
    assert np.array_equal(inputs.aux[1:3], flow)
    # translating_rain moves by (2.3, -1.2) px per step.
    assert abs(np.median(inputs.aux[1][hole]) - 2.3) < 0.3
    assert abs(np.median(inputs.aux[2][hole]) + 1.2) < 0.3
    assert np.array_equal(inputs.aux[AUX_HOLE], hole.astype(np.float32))


def test_lead_channel(inputs, hole):
    ring = disc(SHAPE, (32, 32), 12) & ~disc(SHAPE, (32, 32), 8)
    lead = inputs.aux[AUX_LEAD]
    assert np.allclose(lead[hole & ring], 2 / WINDOW)  # seen in frame 3 of 0..5
    assert np.allclose(lead[hole & ~ring], 3 / WINDOW)  # last seen in frame 2
    assert (lead[~hole] == 0).all()


def test_lead_steps_counts_back_to_the_last_valid_frame():
    valid = np.zeros((4, 1, 5), dtype=bool)
    valid[:, 0, 0] = [True, True, True, False]  # previous frame valid: 1
    valid[:, 0, 1] = [True, False, False, False]  # 3
    valid[:, 0, 2] = [False, False, False, False]  # never: T = 4
    valid[:, 0, 3] = [False, False, True, True]  # valid now, but in the hole: 1
    valid[:, 0, 4] = [True, True, True, True]  # not in the hole: 0
    hole = np.array([[True, True, True, True, False]])
    assert lead_steps(valid, hole).tolist() == [[1, 3, 4, 1, 0]]
    with pytest.raises(ValueError, match="frames_valid"):
        lead_steps(valid[0], hole)


def test_nwp_channels_are_appended(frames, hole):
    nwp = np.stack([np.full(SHAPE, 0.5), np.linspace(-1, 1, SHAPE[0] * SHAPE[1]).reshape(SHAPE)])
    inputs = prepare(frames, hole, window=WINDOW, interval_minutes=5, nwp=nwp)
    assert inputs.aux.shape == (AUX_CHANNELS + 2, *SHAPE)
    assert np.array_equal(inputs.aux[AUX_CHANNELS:], nwp.astype(np.float32))
    with pytest.raises(ValueError, match="nwp"):
        prepare(frames, hole, window=WINDOW, interval_minutes=5, nwp=nwp[:, :10])
    nwp[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        prepare(frames, hole, window=WINDOW, interval_minutes=5, nwp=nwp)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0, "interval_minutes": 5}, "window"),
        ({"window": 6, "interval_minutes": 0}, "interval"),
    ],
)
def test_bad_options_are_refused(frames, hole, options, message):
    with pytest.raises(ValueError, match=message):
        prepare(frames, hole, **options)


def test_to_tensors_batches_inputs(inputs, frames, hole):
    other = prepare(frames[:-1], hole, window=WINDOW, interval_minutes=5)
    values, valid, aux = to_tensors([inputs, other])
    assert values.shape == valid.shape == (2, WINDOW, 1, *SHAPE)
    assert aux.shape == (2, AUX_CHANNELS, *SHAPE)
    assert values.dtype == valid.dtype == aux.dtype == torch.float32
    assert np.array_equal(values[1, :, 0].numpy(), other.values)
    assert np.array_equal(aux[0].numpy(), inputs.aux)
    with pytest.raises(ValueError, match="at least one"):
        to_tensors([])
    smaller = prepare(frames[:, :32], hole[:32], window=WINDOW, interval_minutes=5)
    with pytest.raises(ValueError, match="differ in shape"):
        to_tensors([inputs, smaller])


def test_to_tensors_views_a_single_input_instead_of_copying_it(inputs):
    """The live service passes one input: its tensors are the arrays' memory, not a copy."""
    values, valid, aux = to_tensors([inputs])
    assert values.shape == (1, WINDOW, 1, *SHAPE)
    for tensor, array in ((values, inputs.values), (valid, inputs.valid), (aux, inputs.aux)):
        assert np.shares_memory(tensor.numpy(), array)
        assert np.array_equal(tensor.numpy().reshape(array.shape), array)


def test_a_long_outage_advects_from_frames_older_than_the_window(hole):
    """10 frames, the hole missing in the last 8: its rain comes from frame 1, beyond the
    6-frame window, as the advection baseline given every frame finds it."""
    frames = translating_rain(SHAPE, steps=10) / 10.0
    frames[-8:][:, hole] = np.nan
    assert baselines.lead_reach(frames, hole) == 8 > WINDOW
    inputs = prepare(frames, hole, window=WINDOW, interval_minutes=5)
    baseline = baselines.get_method("advection_boundary")(frames, hole)
    assert baseline[hole].max() > 0
    np.testing.assert_allclose(inputs.aux[AUX_ADVECTED][hole], baseline[hole] * PER_HOUR, rtol=1e-6)
