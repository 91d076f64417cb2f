"""Hole-only scores against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radinfill import scores


def _cube(*steps: list[list[float]]) -> np.ndarray:
    return np.array(steps, dtype=float)


# Two steps of 2x2; the hole is the left column at both steps.
TRUTH = _cube([[1.0, 9.0], [3.0, 9.0]], [[0.0, 9.0], [6.0, 9.0]])
OUTPUT = _cube([[2.0, 9.0], [3.0, 9.0]], [[1.0, 9.0], [2.0, 9.0]])
HOLE = np.array([[True, False], [True, False]])


def test_keys_are_exactly_the_documented_names() -> None:
    result = scores.evaluate(TRUTH, OUTPUT, HOLE)
    assert list(result) == [
        "rmse",
        "mae",
        "ame",
        "temporal_corr",
        "spatial_corr",
        "csi_0.1",
        "csi_1",
        "csi_5",
        "pod_0.1",
        "pod_1",
        "pod_5",
        "far_0.1",
        "far_1",
        "far_5",
        "fss",
        "blur_ratio",
    ]


def test_continuous_scores_by_hand() -> None:
    result = scores.evaluate(TRUTH, OUTPUT, HOLE)
    errors = np.array([1.0, 0.0, 1.0, -4.0])  # output - truth over the 4 hole pixel-times
    assert result["rmse"] == pytest.approx(math.sqrt(np.mean(errors**2)))
    assert result["mae"] == pytest.approx(1.5)
    # hole means: truth (2, 3), output (2.5, 1.5) -> |diff| (0.5, 1.5)
    assert result["ame"] == pytest.approx(1.0)
    # two-point series are perfectly (anti)correlated: truth rises, output falls
    assert result["temporal_corr"] == pytest.approx(-1.0)
    # step 0: (1,3) vs (2,3) -> r = 1; step 1: (0,6) vs (1,2) -> r = 1
    assert result["spatial_corr"] == pytest.approx(1.0)


def test_categorical_scores_by_hand() -> None:
    result = scores.evaluate(TRUTH, OUTPUT, HOLE)
    # >= 1: truth (1,3,0,6) -> T,T,F,T ; output (2,3,1,2) -> T,T,T,T : H=3 M=0 F=1
    assert result["pod_1"] == pytest.approx(1.0)
    assert result["far_1"] == pytest.approx(0.25)
    assert result["csi_1"] == pytest.approx(0.75)
    # >= 5: truth only 6 ; output none : H=0 M=1 F=0
    assert result["csi_5"] == 0.0
    assert result["pod_5"] == 0.0
    assert math.isnan(result["far_5"])


def test_outputs_are_clipped_and_nan_counts_as_zero() -> None:
    truth = _cube([[1.0, 0.0]])
    hole = np.array([[True, True]])
    negative = scores.evaluate(truth, _cube([[-3.0, -1.0]]), hole)
    zero = scores.evaluate(truth, _cube([[0.0, 0.0]]), hole)
    missing = scores.evaluate(truth, _cube([[np.nan, np.nan]]), hole)
    assert negative["rmse"] == zero["rmse"] == missing["rmse"] == pytest.approx(math.sqrt(0.5))


def test_pixels_without_truth_are_not_scored() -> None:
    truth = _cube([[1.0, np.nan]])
    output = _cube([[1.0, 50.0]])
    result = scores.evaluate(truth, output, np.array([[True, True]]))
    assert result["rmse"] == 0.0


def test_valid_pixels_do_not_count() -> None:
    perfect_hole = OUTPUT.copy()
    perfect_hole[:, :, 0] = TRUTH[:, :, 0]
    perfect_hole[:, :, 1] = 0.0  # garbage outside the hole must not matter
    result = scores.evaluate(TRUTH, perfect_hole, HOLE)
    assert result["rmse"] == 0.0
    assert result["csi_1"] == 1.0


def test_fss_perfect_and_displaced() -> None:
    truth = np.zeros((1, 40, 40))
    truth[0, 10:20, 10:20] = 3.0
    hole = np.zeros((40, 40), bool)
    hole[5:25, 5:35] = True
    assert scores.evaluate(truth, truth, hole)["fss"] == pytest.approx(1.0)
    moved = np.roll(truth, 12, axis=2)
    far = scores.evaluate(truth, moved, hole)["fss"]
    near = scores.evaluate(truth, np.roll(truth, 3, axis=2), hole)["fss"]
    assert 0.0 <= far < near < 1.0


def test_blur_ratio_detects_smoothing() -> None:
    rng = np.random.default_rng(0)
    truth = rng.gamma(0.5, 2.0, size=(2, 32, 32))
    hole = np.ones((32, 32), bool)
    assert scores.evaluate(truth, truth, hole)["blur_ratio"] == pytest.approx(1.0)
    smooth = np.broadcast_to(truth.mean(axis=(1, 2), keepdims=True), truth.shape)
    assert scores.evaluate(truth, smooth, hole)["blur_ratio"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("truth", "output", "hole"),
    [
        (TRUTH, OUTPUT, np.zeros((2, 2), bool)),  # empty hole
        (np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), np.ones((4, 4), bool)),  # all dry
        (TRUTH[:1], OUTPUT[:1], HOLE),  # single step
        (np.ones((1, 1, 1)), np.ones((1, 1, 1)), np.ones((1, 1), bool)),  # single pixel
    ],
)
def test_edge_cases_give_nan_not_exceptions(truth, output, hole) -> None:
    result = scores.evaluate(truth, output, hole)
    assert set(result) == set(scores.score_names())
    assert all(isinstance(v, float) for v in result.values())
    if not np.asarray(hole).any():
        assert all(math.isnan(v) for v in result.values())
    else:
        assert math.isnan(result["temporal_corr"])  # constant or single-step series


def test_all_dry_perfect_fill() -> None:
    result = scores.evaluate(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), np.ones((4, 4), bool))
    assert result["rmse"] == 0.0
    assert result["ame"] == 0.0
    assert math.isnan(result["csi_1"])
    assert math.isnan(result["spatial_corr"])


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        scores.evaluate(TRUTH, OUTPUT[:1], HOLE)


def test_constant_series_up_to_rounding_has_no_correlation() -> None:
    truth = np.random.default_rng(3).gamma(1.0, 1.0, size=(12, 8, 8))
    frozen = np.full(truth.shape, 0.1)  # the mean of twelve 0.1 is not exactly 0.1
    result = scores.evaluate(truth, frozen, np.ones((8, 8), bool))
    assert math.isnan(result["temporal_corr"])
    assert math.isnan(result["spatial_corr"])
