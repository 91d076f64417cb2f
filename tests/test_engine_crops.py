"""The inference engine on crops around the hole, against the same network on the whole grid.

The reference is computed here without the crops: the features of the whole grid, one forward
pass over it, the envelope over the whole hole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radinfill import synth
from radinfill.cuts import wettest_disc_outage
from radinfill.model import baselines, crops, engine, envelope, features, motion
from radinfill.model.engine import InfillEngine
from radinfill.radolan import grid_for
from tests.test_checkpoint import tiny_model
from tests.test_motion import disc, translating_rain

ASSET = Path(__file__).resolve().parents[1] / "assets" / "model"
SHAPE = (480, 560)
VARIANTS = ["baseline", "lstm", "attention", "lstm_attention"]
#: Largest difference inside the hole between cropped and whole-grid predictions, relative to
#: the largest predicted value. Within the receptive field the inputs are identical up to float
#: rounding (the motion's remap, see tests/test_crops.py); channel attention pools its weights
#: over the crop instead of the whole field. Measured: up to 2e-6 for every variant.
TOLERANCE = 1e-4


def whole_grid(infill: InfillEngine, frames: np.ndarray, hole: np.ndarray) -> tuple:
    """The network's prediction and the engine's infill computed on the whole grid at once,
    both in mm per interval (hole pixels; the infill as the envelope leaves it)."""
    inputs = features.prepare(
        frames, hole, window=infill.window, interval_minutes=infill.interval_minutes
    )
    rate = infill._forward(infill.model, infill.device, [inputs])[0]
    to_rate = np.float32(60.0 / infill.interval_minutes)
    cap = envelope.evidence_cap(frames * to_rate, hole)
    prior = inputs.aux[features.AUX_ADVECTED]
    bounded, _ = envelope.bound(rate[hole], prior[hole], cap[hole])
    return rate[hole] / to_rate, bounded / to_rate


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray]:
    """Rain moving 2.6 px per step (mm per 5 min); two discs whose neighbourhoods overlap and
    one in the corner, the outage persisting over the last two frames."""
    frames = translating_rain(SHAPE, velocity=(2.3, -1.2), steps=6, noise=0.3) * 0.5
    hole = disc(SHAPE, (160, 160), 30) | disc(SHAPE, (160, 240), 12)
    hole |= disc(SHAPE, (SHAPE[0] - 1, SHAPE[1] - 1), 25)  # touches two grid edges
    frames[-2:, hole] = np.nan
    return frames, hole


def test_the_case_has_two_regions_smaller_than_the_grid(case) -> None:
    _, hole = case
    regions = crops.regions(hole, engine.NETWORK_MARGIN)
    assert len(regions) == 2
    assert sum((r.stop - r.start) * (c.stop - c.start) for r, c in regions) < 0.5 * hole.size


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_on_crops_matches_the_whole_grid(variant, case) -> None:
    frames, hole = case
    infill = InfillEngine(
        tiny_model(variant, head_scale=0.05), window=6, interval_minutes=5, device="cpu"
    )
    prediction, expected = whole_grid(infill, frames, hole)
    scale = TOLERANCE * prediction.max()
    assert np.abs(infill.predict(frames, hole)[hole] - prediction).max() <= scale
    output = infill.infill(frames, hole)
    assert not infill.fallbacks  # the envelope let the network through: its output is compared
    assert np.abs(output[hole] - expected).max() <= scale
    assert np.array_equal(output[~hole], frames[-1][~hole], equal_nan=True)


def test_specks_are_the_baselines_and_cost_the_network_nothing(case, monkeypatch) -> None:
    """Components of at most SMALL_HOLE_PIXELS get the fallback baseline's values and no crop;
    the network fills the rest as it would with the specks merely missing. Without a fallback
    the network fills the specks too."""
    frames, hole = case
    specks = np.zeros_like(hole)
    specks[400, 20] = specks[30, 500:502] = True  # 1 and 2 px, far from the discs
    specks[300:308, 400:408] = True  # 64 px: still a speck
    frames = frames.copy()
    frames[-1, specks] = np.nan
    model = tiny_model("lstm_attention", head_scale=0.05)
    infill = InfillEngine(model, window=6, interval_minutes=5, device="cpu")
    shapes = []
    forward = infill._forward
    monkeypatch.setattr(
        infill, "_forward", lambda *a: shapes.extend(i.aux.shape for i in a[2]) or forward(*a)
    )
    ran = infill.run(frames, hole | specks)
    assert len(shapes) == 2  # the two regions of the discs, none for the specks
    area = sum(rows * cols for *_, rows, cols in shapes)
    prior = baselines.get_method(infill.fallback)(frames, specks)
    assert np.array_equal(ran.values[specks], prior[specks])
    alone = infill.run(frames, hole)
    assert ran.method == alone.method == "lstm_attention"
    assert np.array_equal(ran.values[hole], alone.values[hole])
    only = infill.run(frames, specks)
    assert (only.method, only.fallback) == (infill.fallback, "")
    assert np.array_equal(only.values, prior, equal_nan=True)
    shapes.clear()
    bare = InfillEngine(model, window=6, interval_minutes=5, device="cpu", fallback=None)
    monkeypatch.setattr(
        bare, "_forward", lambda *a: shapes.extend(i.aux.shape for i in a[2]) or forward(*a)
    )
    bare.run(frames, hole | specks)
    assert sum(rows * cols for *_, rows, cols in shapes) > 1.5 * area


def test_too_small_a_margin_is_caught(case, monkeypatch) -> None:
    """The comparison above can fail: crops that cut the advected prior's trajectories."""
    frames, hole = case
    infill = InfillEngine(
        tiny_model("baseline", head_scale=0.05), window=6, interval_minutes=5, device="cpu"
    )
    prediction, _ = whole_grid(infill, frames, hole)
    monkeypatch.setattr(engine, "CROP_MARGIN", 0)
    monkeypatch.setattr(features, "crop_margin", lambda flow, frames, hole: 2)
    difference = np.abs(infill.predict(frames, hole)[hole] - prediction).max()
    assert difference > 100 * TOLERANCE * prediction.max()


@pytest.mark.parametrize("variant", ["baseline", "lstm_attention"])
def test_a_long_outage_keeps_the_network_crop_and_matches_the_whole_grid(
    variant, monkeypatch
) -> None:
    """30 steps of outage: the advected prior reaches far beyond the network's margin (its
    inputs are built on a wider crop), yet the network runs on the hole plus CROP_MARGIN and
    agrees with the whole grid as closely as on a short outage."""
    frames = translating_rain(SHAPE, velocity=(2.3, -1.2), steps=32, noise=0.3) * 0.5
    hole = disc(SHAPE, (200, 260), 40)
    frames[-30:, hole] = np.nan
    infill = InfillEngine(
        tiny_model(variant, head_scale=0.05), window=6, interval_minutes=5, device="cpu"
    )
    flow = motion.estimate(np.where(hole, np.nan, frames[-3:]))
    assert features.crop_margin(flow, frames, hole) > 2 * engine.CROP_MARGIN
    shapes: list[tuple[int, ...]] = []
    forward = InfillEngine._forward

    def recording(self, model, device, inputs):
        shapes.extend(item.aux.shape[1:] for item in inputs)
        return forward(self, model, device, inputs)

    monkeypatch.setattr(InfillEngine, "_forward", recording)
    cropped = infill.predict(frames, hole)[hole]
    ((rows, cols),) = crops.regions(hole, engine.CROP_MARGIN, infill._align)
    assert shapes == [(rows.stop - rows.start, cols.stop - cols.start)]
    prediction, _ = whole_grid(infill, frames, hole)
    assert np.abs(cropped - prediction).max() <= TOLERANCE * prediction.max()


def test_crops_of_one_shape_share_a_forward_pass(case, monkeypatch) -> None:
    """Two fields with the same hole: each crop shape is one batch of two, not four passes."""
    frames, hole = case
    infill = InfillEngine(tiny_model("baseline"), window=6, interval_minutes=5, device="cpu")
    batches: list[int] = []
    forward = InfillEngine._forward

    def counting(self, model, device, inputs):
        batches.append(len(inputs))
        return forward(self, model, device, inputs)

    monkeypatch.setattr(InfillEngine, "_forward", counting)
    infill.infill_batch([(frames, hole), (frames[::-1].copy(), hole)])
    assert batches == [2, 2]


def test_no_hole_costs_no_motion_and_no_forward_pass(case, monkeypatch) -> None:
    frames, hole = case
    infill = InfillEngine(tiny_model("baseline"), window=6, interval_minutes=5, device="cpu")

    def refuse(*args, **kwargs):
        raise AssertionError("work done for a field without a hole")

    monkeypatch.setattr(motion, "estimate", refuse)
    monkeypatch.setattr(InfillEngine, "_forward", refuse)
    empty = np.zeros_like(hole)
    assert np.array_equal(infill.infill(frames, empty), frames[-1], equal_nan=True)
    assert np.array_equal(infill.predict(frames, empty), frames[-1], equal_nan=True)


#: The shipped network on a 150 km outage: mean and largest difference inside the hole
#: (mm per 5 min) between cropped and whole-grid predictions; its channel attention pools over
#: the crop. Measured: mean 7e-5, largest 2e-3 here (rain up to 3.5 mm per 5 min); mean 2e-4,
#: largest 3e-3 on the real YW 2017-08-16 event.
SHIPPED_MEAN = 5e-4
SHIPPED_MAX = 1e-2


def test_the_shipped_model_on_crops_matches_the_whole_grid() -> None:
    grid = (900, 900)
    frames = synth.sequence(grid, 6, 5, "mixed", seed=0)
    outage = wettest_disc_outage(frames, grid_for(*grid), start=3, duration=3)
    frames[outage] = np.nan
    hole = outage[-1]
    infill = InfillEngine.from_checkpoint(ASSET, "cpu")
    prediction, expected = whole_grid(infill, frames, hole)
    cropped = infill.predict(frames, hole)[hole]
    assert np.abs(cropped - prediction).mean() <= SHIPPED_MEAN
    assert np.abs(cropped - prediction).max() <= SHIPPED_MAX
    output = infill.infill(frames, hole)[hole]
    assert np.abs(output - expected).max() <= SHIPPED_MAX
