"""The safety envelope: no checkpoint, however trained, puts rain into a hole beyond the evidence.

The safety cases of the quality issue: uniform 30 and 100 mm/h rain, a stationary 200 mm/h cell
and a fast-moving field with 90 mm/h peaks, each with a 40 px hole. For every network, honest
or broken, the output's hole maximum stays within 1.25 x the window's maximum and its hole RMSE
within 1.1 x that of the classical prior (``advection_boundary``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from radinfill.model import baselines, build, envelope, features
from radinfill.model.engine import ENVELOPE, InfillEngine
from radinfill.train import evaluate
from tests.test_checkpoint import tiny_model

CASES = evaluate.safety_cases()
PER_HOUR = 12.0  # 5-minute amounts -> mm/h


def biased(shift: float) -> torch.nn.Module:
    """An untrained network whose correction is a constant ``shift`` in log1p (mm/h): it
    multiplies heavy rain by ``exp(shift)`` everywhere, the rain-inventing failure."""
    model = build("lstm_attention", widths=(4, 8), kernels=(3, 3))
    with torch.no_grad():
        model.head.block.conv.bias.fill_(shift)
    return model.eval()


MODELS = {
    "untrained": lambda: build("lstm_attention", widths=(4, 8), kernels=(3, 3)).eval(),
    "bias+0.1": lambda: biased(0.1),
    "bias+1": lambda: biased(1.0),
    "bias-1": lambda: biased(-1.0),
    "random": tiny_model,
}


def rmse(a: np.ndarray, b: np.ndarray, hole: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[hole] - b[hole]) ** 2)) * PER_HOUR)


def test_the_safety_cases_are_what_they_say() -> None:
    assert list(CASES) == [
        "uniform 30 mm/h",
        "uniform 100 mm/h",
        "stationary 200 mm/h cell",
        "moving 90 mm/h peaks",
    ]
    for case in CASES.values():
        assert case.hole[-1].sum() == pytest.approx(np.pi * 40**2, rel=0.02)
        assert case.steps.tolist() == [3, 4, 5]
    assert np.nanmax(CASES["stationary 200 mm/h cell"].truth) * PER_HOUR == pytest.approx(200)
    moving = CASES["moving 90 mm/h peaks"].truth
    assert moving.max() * PER_HOUR == pytest.approx(90)
    inner = (slice(30, -30), slice(30, -30))

    def match(shift: tuple[int, int]) -> float:
        moved = np.roll(moving[0], shift, axis=(0, 1))[inner]
        return float(np.corrcoef(moved.ravel(), moving[5][inner].ravel())[0, 1])

    assert match((12, 28)) > 0.95 > 0.5 > match((0, 0))  # 5 steps of (2.4, 5.5) px


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", MODELS)
def test_no_network_leaves_the_envelope(case: str, name: str) -> None:
    truth, hole = CASES[case].truth, CASES[case].hole[-1]
    frames = np.where(CASES[case].hole, np.float32(np.nan), truth)
    infill = InfillEngine(MODELS[name](), window=6, interval_minutes=5, device="cpu")
    output = infill.infill(frames, hole)
    prior = baselines.get_method("advection_boundary")(frames, hole)
    window_max = np.nanmax(frames)
    assert output[hole].max() <= 1.25 * window_max * (1 + 1e-6)
    assert rmse(output, truth[-1], hole) <= 1.1 * rmse(prior, truth[-1], hole) + 1e-4
    if name in ("bias+1", "bias-1"):
        assert infill.fallbacks[ENVELOPE] == 1  # a constant bias is caught and counted


def test_the_unbounded_network_would_have_invented_rain() -> None:
    """The same biased network without the envelope: what the envelope prevents (the test
    above would pass vacuously if the network were harmless)."""
    case = CASES["uniform 100 mm/h"]
    frames = np.where(case.hole, np.float32(np.nan), case.truth)
    inputs = features.prepare(frames, case.hole[-1], window=6, interval_minutes=5)
    values, valid, aux = features.to_tensors([inputs])
    with torch.no_grad():
        raw = biased(1.0)(values, valid, aux)[0][0, 0].numpy()
    assert raw[case.hole[-1]].max() > 250.0  # 100 mm/h rain made 270 mm/h


def test_safety_check_names_what_fails() -> None:
    assert evaluate.safety_check(baselines.get_method("advection_boundary")) == {}
    problems = evaluate.safety_check(baselines.get_method("persistence"))
    assert list(problems) == ["moving 90 mm/h peaks"]  # exact on the others
    assert "RMSE" in problems["moving 90 mm/h peaks"]

    def doubled(frames: np.ndarray, hole: np.ndarray, future: object = None) -> np.ndarray:
        output = baselines.get_method("advection_boundary")(frames, hole)
        output[hole] *= 2.0
        return output

    problems = evaluate.safety_check(doubled)
    assert set(problems) == set(CASES)
    assert problems["uniform 100 mm/h"].startswith("max 200.0 mm/h > 1.25 x 100.0")


def test_evidence_cap_is_the_local_maximum_times_the_margin() -> None:
    frames = np.zeros((3, 100, 100), dtype=np.float32)
    frames[0, 10, 10] = 40.0  # an old peak in the corner
    frames[2, 90, 90] = 8.0  # a current one in the opposite corner
    frames[1, 50, 50] = np.nan
    hole = np.zeros((100, 100), dtype=bool)
    hole[45:55, 45:55] = True
    frames[2, 50, 50] = 500.0  # the truth inside the current hole: never read
    cap = envelope.evidence_cap(frames, hole, radius=20)
    assert cap[10, 10] == pytest.approx(50.0)
    assert cap[30, 30] == pytest.approx(50.0)  # 20 px away in each direction: inside
    assert cap[31, 31] == 0.0  # beyond the square of every peak: dry evidence, no rain
    assert cap[90, 90] == pytest.approx(10.0)
    assert cap[50, 50] == 0.0  # the 500 in the hole counts for nothing


def test_evidence_cap_is_the_local_maximum_of_what_the_window_saw() -> None:
    """Against the definition on all frames at once: non-finite values and the current
    frame's hole count for nothing, and the cap is never below 0."""
    rng = np.random.default_rng(3)
    frames = rng.gamma(0.6, 3.0, (7, 60, 50)).astype(np.float32) - 0.5
    frames[rng.random(frames.shape) < 0.1] = np.nan
    frames[2, 5, 5], frames[4, 40, 40] = np.inf, -np.inf
    hole = np.zeros((60, 50), dtype=bool)
    hole[20:35, 10:30] = True
    frames[-1][hole] = 1000.0  # the truth in evaluation: never read
    seen = np.isfinite(frames)
    seen[-1] &= ~hole
    peak = np.where(seen, frames, 0.0).max(axis=0).clip(min=0.0)
    expected = 1.25 * ndimage.maximum_filter(peak, size=9, mode="constant", cval=0.0)
    cap = envelope.evidence_cap(frames, hole, radius=4, margin=1.25)
    np.testing.assert_allclose(cap, expected, rtol=1e-6)
    assert cap.max() < 1000.0


def test_bound_limits_each_pixel_and_falls_back_on_departure() -> None:
    prior = np.full(100, 10.0, dtype=np.float32)  # the hole's pixels
    cap = np.full(100, 100.0, dtype=np.float32)
    # One wild pixel among faithful ones: clipped to exp(0.7) times the prior, kept.
    prediction = prior.copy()
    prediction[0] = 90.0
    values, departed = envelope.bound(prediction, prior, cap)
    assert not departed
    assert values[0] == pytest.approx(np.expm1(np.log1p(10.0) + envelope.MAX_CORRECTION))
    assert values[1] == pytest.approx(10.0)
    # A uniform 10 % excess is a bias: the prior is used.
    values, departed = envelope.bound(prior * 1.1, prior, cap)
    assert departed
    assert np.array_equal(values, prior)
    # The evidence caps the prior too.
    values, _ = envelope.bound(prior, prior, np.full(100, 4.0, dtype=np.float32))
    assert values.max() == pytest.approx(4.0)
    # Nothing to judge: no fallback.
    empty = np.zeros(0, dtype=np.float32)
    assert envelope.bound(empty, empty, empty) == (pytest.approx(empty), False)
    with pytest.raises(ValueError, match="differ in shape"):
        envelope.bound(prior, prior[:5], cap)
