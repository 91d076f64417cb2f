"""The evaluation protocol: what each method sees, how outages are placed, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radinfill import holes
from radinfill.cli import main
from radinfill.radolan import grid_for
from radinfill.radolan.sites import SITES
from radinfill.train import evaluate

GRID = grid_for(160, 160)


def _case(steps: int = 8, duration: int = 3) -> evaluate.Case:
    rng = np.random.default_rng(1)
    truth = rng.gamma(0.6, 1.0, size=(steps, *GRID.shape)).astype(np.float32)
    truth[:, :5, :] = np.nan  # a strip without data in every frame
    hole = evaluate.wettest_disc_outage(
        truth, GRID, start=steps - duration, duration=duration, radius_km=40.0
    )
    return evaluate.Case("test", truth, hole, GRID, 5)


def test_methods_see_only_the_past_with_the_outage_cut() -> None:
    case = _case()
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def spy(frames, hole, future=None):
        seen.append((frames.copy(), hole.copy(), None if future is None else future.copy()))
        return np.where(hole, 0.0, frames[-1])

    evaluate.infill_sequence(spy, case, window=4, future_steps=2)
    assert len(seen) == len(case.steps) == 3
    began = case.steps[0]
    for t, (frames, hole, future) in zip(case.steps, seen, strict=True):
        # the window, extended back to the complete frames before the outage began
        assert len(frames) == max(4, t - (began - evaluate.PRE_OUTAGE_FRAMES) + 1)
        np.testing.assert_array_equal(hole, case.hole[t])
        # every frame passed hides the outage wherever it was active at that step
        for offset, frame in enumerate(frames):
            step = t - len(frames) + 1 + offset
            assert np.isnan(frame[case.hole[step]]).all()
            valid = ~case.hole[step]
            np.testing.assert_array_equal(frame[valid], case.truth[step][valid])
        if t == case.truth.shape[0] - 1:
            assert future is None
        else:
            assert future is not None
            assert len(future) <= 2
            assert np.isnan(future[0][case.hole[t + 1]]).all()


def test_outage_is_cut_into_the_complete_area_under_the_rain() -> None:
    truth = np.zeros((6, *GRID.shape), np.float32)
    site = min(SITES.values(), key=lambda s: np.hypot(*np.subtract(GRID.index(s.lon, s.lat), 80)))
    row, col = (round(float(v)) for v in GRID.index(site.lon, site.lat))
    truth[:, max(row - 3, 0) : row + 3, max(col - 3, 0) : col + 3] = 5.0
    truth[:, :2, :] = np.nan
    mask = evaluate.wettest_disc_outage(truth, GRID, start=3, duration=2, radius_km=30.0)
    assert not mask[:3].any()
    assert not mask[5:].any()
    expected = holes.coverage(GRID, [site.id], 30.0) & np.isfinite(truth).all(axis=0)
    np.testing.assert_array_equal(mask[3], expected)
    assert mask[3, row, col]


def test_a_perfect_method_scores_zero_error_and_zero_does_not() -> None:
    case = _case()

    steps = iter(case.steps)  # methods are called once per outage step, in order

    def oracle(frames, hole, future=None):
        return case.truth[next(steps)]

    def zero(frames, hole, future=None):
        return np.where(hole, 0.0, frames[-1])

    results, outputs = evaluate.score_case(case, {"oracle": oracle, "zero": zero})
    assert results["oracle"]["rmse"] == 0.0
    assert results["oracle"]["csi_1"] == 1.0
    assert results["zero"]["rmse"] > 0.5
    assert results["zero"]["seconds_per_field"] >= 0.0
    np.testing.assert_array_equal(outputs["zero"][0], case.truth[0])  # no outage at step 0


def test_real_sequence_case(samples: Path) -> None:
    case = evaluate.load_case(str(samples / "radolan_to_netcdf" / "radolan_ry"))
    assert case.truth.shape == (13, 900, 900)
    assert case.interval_minutes == 5
    # half of the 10 steps before the last 3 (kept for offline methods), ending before them
    np.testing.assert_array_equal(case.steps, [5, 6, 7, 8, 9])
    assert np.isfinite(case.truth[:, case.hole.any(axis=0)]).all()


def test_real_sequence_with_a_gap_is_refused(samples: Path) -> None:
    files = sorted((samples / "radolan_to_netcdf" / "radolan_ry").iterdir())
    with pytest.raises(ValueError, match="gap"):
        evaluate.real_case([files[0], files[2]])


@pytest.mark.parametrize(
    ("spec", "message"),
    [("synth:mixed:colour=red", "unknown key"), ("synth:mixed:steps=many", "invalid literal")],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate.load_case(spec)


def test_synthetic_outage_leaves_frames_after_it() -> None:
    case = evaluate.synthetic_case(
        "stratiform", grid=(96, 96), steps=10, duration=4, radius_km=30.0, seed=1
    )
    np.testing.assert_array_equal(case.steps, [3, 4, 5, 6])
    with pytest.raises(ValueError, match="cannot hold"):
        evaluate.synthetic_case("stratiform", grid=(96, 96), steps=6, duration=4)


def test_evaluate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = "synth:convective:seed=2:grid=128x128:steps=10:duration=3:radius=40"
    status = main(
        [
            "evaluate",
            "--method",
            "zero",
            "--method",
            "persistence",
            "--data",
            spec,
            "--data",
            spec.replace("seed=2", "seed=3"),
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    text = capsys.readouterr().out
    assert "mean over 2 cases" in text
    assert "persistence" in text
    assert "zero" in text
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores) == {"synthetic convective seed 2", "synthetic convective seed 3"}
    assert (tmp_path / "scores.csv").read_text().count("\n") == 5  # header + 2 cases x 2 methods
    for name in ("scores.png", "examples_0.png", "examples_1.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
