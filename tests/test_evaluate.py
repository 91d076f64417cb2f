"""The evaluation protocol: what each method sees, how outages are placed, the command."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radinfill import code_version, cuts, holes
from radinfill.cli import main
from radinfill.model import build, features, save_checkpoint
from radinfill.radolan import grid_for
from radinfill.radolan.sites import SITES
from radinfill.train import data, evaluate
from radinfill.train.train_config import DataConfig

GRID = grid_for(160, 160)


def _case(steps: int = 8, duration: int = 3) -> evaluate.Case:
    rng = np.random.default_rng(1)
    truth = rng.gamma(0.6, 1.0, size=(steps, *GRID.shape)).astype(np.float32)
    truth[:, :5, :] = np.nan  # a strip without data in every frame
    hole = cuts.wettest_disc_outage(
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
        assert len(frames) == max(4, t - (began - features.PRE_OUTAGE_FRAMES) + 1)
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
    mask = cuts.wettest_disc_outage(truth, GRID, start=3, duration=2, radius_km=30.0)
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


def test_rate_event_case_cuts_a_wet_disc_before_the_last_frames(samples: Path) -> None:
    path = samples.parent / "fmi" / "fmi-20170509.npz"
    case = evaluate.load_case(str(path))
    assert case.name == "fmi-20170509"
    assert case.interval_minutes == 5
    assert case.truth.shape == (40, 1226, 760)
    steps = case.steps
    assert len(steps) == evaluate.RATE_OUTAGE_STEPS
    assert np.array_equal(steps, np.arange(steps[0], steps[0] + len(steps)))
    assert steps[0] >= evaluate.WINDOW
    assert steps[-1] < 40 - evaluate.FUTURE_STEPS
    hole = case.hole[steps[0]]
    radius = evaluate.RATE_OUTAGE_RADIUS
    assert hole.sum() == pytest.approx(np.pi * radius**2, rel=0.03)  # a whole disc, all data
    assert np.isfinite(case.truth[:, hole]).all()
    rates = case.truth * 12.0
    assert (rates[steps[0] - 1][hole] > 0.1).mean() > 0.2  # it rains where the radar fails


def test_offline_methods_are_reported_apart() -> None:
    row = dict.fromkeys(evaluate.TABLE_COLUMNS, 0.0)
    names = ("bidirectional", "persistence", "model")
    table = evaluate.format_table("case", dict.fromkeys(names, row)).splitlines()
    assert [line.split()[0] for line in table[2:]] == [
        "persistence",
        "model",
        "offline",
        "bidirectional",
    ]
    assert evaluate.is_offline("bidirectional")
    assert not evaluate.is_offline("advection_boundary")
    assert not evaluate.is_offline("lstm_attention@step-00000400")


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


# --- checkpoints as methods, Markdown and HTML reports, the held-out set ------------------------


class _Page(HTMLParser):
    """Tables (rows of cell texts), image sources and headings of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """Section title -> table rows (cells without the bold marks), header row first."""
    tables: dict[str, list[list[str]]] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|") and not line.startswith("|:"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            tables.setdefault(title, []).append(cells)
    return tables


def _tiny_checkpoint(path: Path, seed: int) -> Path:
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(
                torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed)) * 0.1
            )
    meta = {"product": "RY", "interval_minutes": 5, "training": {"step": 100 + seed}}
    return save_checkpoint(model, path, meta)


def test_evaluate_checkpoints_with_markdown_and_html_reports(tmp_path: Path) -> None:
    first = _tiny_checkpoint(tmp_path / "first", 1)
    second = _tiny_checkpoint(tmp_path / "second", 2)
    spec = "synth:stratiform:seed=4:grid=64x64:steps=8:duration=3:radius=30"
    out = tmp_path / "out"
    argv = ["evaluate", "--method", "persistence", "--checkpoint", str(first)]
    argv += ["--checkpoint", str(second), "--data", spec, "--data", spec.replace("4", "5", 1)]
    assert main([*argv, "--out", str(out)]) == 0
    per_case = json.loads((out / "scores.json").read_text())
    methods = ["persistence", "baseline@first", "baseline@second"]  # one variant: disambiguated
    assert all(list(results) == methods for results in per_case.values())

    tables = _markdown_tables((out / "scores.md").read_text())
    assert list(tables) == [*(f"{c} (3 outage steps)" for c in per_case), "mean over 2 cases"]
    columns = ["RMSE (mm/h)", "AME (mm/h)", "temporal corr", "spatial corr", "CSI 1 mm/h"]
    columns += ["CSI 5 mm/h"]
    names = ["rmse", "ame", "temporal_corr", "spatial_corr", "csi_1", "csi_5"]  # seed's four first
    for (_title, rows), case in zip(tables.items(), [*per_case, None], strict=True):
        header, *body = rows
        assert header[:7] == ["method", *columns]
        assert header[7:] == ["FSS", "blur ratio", "s/field"]
        assert [row[0] for row in body] == methods
        if case is not None:  # the Markdown shows the JSON's numbers
            for row in body:
                for cell, name in zip(row[1:7], names, strict=True):
                    value = float("nan") if cell == "n/a" else float(cell)
                    wanted = per_case[case][row[0]][name]
                    assert value == pytest.approx(wanted, abs=6e-5, nan_ok=True)
    markdown = (out / "scores.md").read_text()
    best = min(methods, key=lambda m: per_case[next(iter(per_case))][m]["rmse"])
    assert f"| {best} | **" in markdown  # the lowest RMSE of the first case is in bold

    page = _Page()
    page.feed((out / "report.html").read_text())
    text = (out / "report.html").read_text()
    assert f"radinfill {code_version()}" in text
    assert spec in text
    assert page.headings[0].startswith("Hole-only")
    checkpoints = next(t for t in page.tables if t[0][:3] == ["method", "variant", "training step"])
    assert [row[:3] for row in checkpoints[1:]] == [
        ["baseline@first", "baseline", "101"],
        ["baseline@second", "baseline", "102"],
    ]
    for row, path in zip(checkpoints[1:], (first, second), strict=True):
        assert row[3] == json.loads((path / "metadata.json").read_text())["sha256"]
    score_tables = [t for t in page.tables if t[0][0] == "method" and t[0][1] == "RMSE (mm/h)"]
    assert len(score_tables) == 3  # two cases and the mean
    assert len(page.images) == 3  # two example panels and the bar chart, nothing linked
    for source in page.images:
        prefix, _, data = source.partition(",")
        assert prefix == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            image.verify()
            assert image.format == "PNG"


def test_model_method_names(tmp_path: Path) -> None:
    checkpoint = _tiny_checkpoint(tmp_path / "ck", 1)
    (model,) = evaluate.model_methods([checkpoint], device="cpu")
    assert model.name == "baseline"
    assert model.source == checkpoint.resolve()
    (renamed,) = evaluate.model_methods([checkpoint], taken={"baseline"}, device="cpu")
    assert renamed.name == "baseline@ck"
    with pytest.raises(ValueError, match="given twice"):
        evaluate.model_methods([checkpoint, tmp_path / "ck"], device="cpu")


def test_held_out_set(samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = evaluate.held_out_specs(samples)
    assert specs[:3] == [f"synth:{p}:seed=1000" for p in ("stratiform", "mixed", "convective")]
    assert DataConfig().synthetic_seeds <= evaluate.HELD_OUT_SEED  # never a training seed
    real = Path(specs[3])
    case = evaluate.load_case(str(real))
    assert case.truth.shape == (12, 1100, 900)
    events = {source.event for source in data.radolan_sequences(real)}
    assert events == {"YW-20170816"}
    assert events <= data.HELD_OUT  # training leaves it out
    fmi = Path(specs[4])
    assert fmi == (samples.parent / "fmi" / "fmi-20170509.npz").resolve()
    assert {s.event for s in data.rate_sequences(fmi.parent)} & data.HELD_OUT == {fmi.stem}
    assert len(specs) == 5
    assert evaluate.held_out_specs(None) == specs[:3]
    with pytest.raises(ValueError, match="not found"):
        evaluate.held_out_specs(tmp_path)

    seen: list[list[str]] = []
    monkeypatch.setattr(evaluate, "run", lambda specs, *a, **k: seen.append(list(specs)) or "")
    assert main(["evaluate", "--method", "zero", "--samples", str(samples)]) == 0
    assert seen == [specs]  # no --data: the held-out set
