"""Evaluate infill methods on sequences with known truth (the protocol of ``radinfill evaluate``).

A :class:`Case` is a truth sequence (T, rows, cols) in mm per interval plus an outage mask that
persists over consecutive steps. Every method sees exactly what it would see in real time: at
each outage step ``t`` the last ``window`` frames up to ``t`` with the outage cut out of every
frame where it was active (so an outage that persists leaves NaN in earlier frames too), and,
for offline methods only, up to ``future_steps`` later frames with the same cut. Scores come
from :func:`radinfill.scores.evaluate` over the outage pixels, in mm/h.

Outages are placed where they matter: the disc of the radar site that is wettest both when it
fails and during the outage (dry holes make every method look alike), restricted to pixels that
have data in every frame (so real sequences can be scored: "synthetic outages cut into complete
areas").
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radinfill import atomic, holes, scores, synth
from radinfill.model.features import DEFAULT_WINDOW
from radinfill.radolan import Grid, grid_for, read
from radinfill.radolan.grids import parse_size
from radinfill.radolan.sites import OPERATIONAL, RADIUS_KM

#: A method under the baseline call contract: ``method(frames, hole, future=None) -> field``.
Method = Callable[..., np.ndarray]
#: Frames of context a method gets, and frames after the current one offline methods may use.
WINDOW = DEFAULT_WINDOW
FUTURE_STEPS = 3
#: Complete frames before an outage that stay in a method's history while the outage lasts.
PRE_OUTAGE_FRAMES = 3


@dataclass(frozen=True)
class Case:
    """A sequence with known truth and an outage to infill.

    Attributes
    ----------
    name
        Label used in tables (e.g. ``synthetic mixed seed 0``).
    truth
        float32 (T, rows, cols), mm per interval, NaN where there is no data.
    hole
        bool (T, rows, cols): the outage at each step (empty outside the outage).
    grid
        Grid of the fields.
    interval_minutes
        Product interval; scores convert to mm/h with it.
    """

    name: str
    truth: np.ndarray
    hole: np.ndarray
    grid: Grid
    interval_minutes: int

    @property
    def steps(self) -> np.ndarray:
        """Indices of the steps at which the outage is active."""
        return np.flatnonzero(self.hole.any(axis=(1, 2)))


def wettest_disc_outage(
    truth: np.ndarray,
    grid: Grid,
    *,
    start: int,
    duration: int,
    radius_km: float = RADIUS_KM,
) -> np.ndarray:
    """Outage mask (T, rows, cols): the disc of the site that is wettest when it fails and after.

    A site's wetness is the smaller of its rain in the frame before the outage and its mean
    rain during it: rain only arriving after the failure (pure inflow, which no causal method
    can see) or only leaving before it (a dry hole) does not make a representative case. Only
    pixels with data in every frame are cut (a real sequence's no-data stays no-data), and only
    sites whose disc reaches into the grid are considered.
    """
    if start < 1:
        raise ValueError(f"an outage needs at least one frame before it, starts at {start}")
    steps = slice(start, start + duration)
    complete = np.isfinite(truth).all(axis=0)
    before = np.nan_to_num(truth[start - 1])
    during = np.nan_to_num(truth[steps]).mean(axis=0)  # only complete pixels are compared
    best, best_rain = None, -1.0
    for site in OPERATIONAL:
        disc = holes.coverage(grid, [site], radius_km) & complete
        if not disc.any():
            continue
        rain = min(float(before[disc].sum()), float(during[disc].sum()))
        if rain > best_rain:
            best, best_rain = disc, rain
    if best is None:
        raise ValueError(f"no radar disc of {radius_km} km reaches into grid {grid.name}")
    mask = np.zeros(truth.shape, dtype=bool)
    mask[steps] = best
    return mask


def synthetic_case(
    preset: str,
    *,
    grid: Grid | tuple[int, int] = (256, 256),
    steps: int = 24,
    interval_minutes: int = 5,
    seed: int = 0,
    duration: int = 12,
    radius_km: float = RADIUS_KM,
) -> Case:
    """A synthetic ``preset`` sequence with a wet disc outage of ``duration`` steps.

    The outage ends :data:`FUTURE_STEPS` before the sequence does, so offline methods have
    frames after it.
    """
    grid = grid if isinstance(grid, Grid) else grid_for(*grid)
    start = steps - duration - FUTURE_STEPS
    if start < 1 or duration < 1:
        raise ValueError(
            f"{steps} steps cannot hold history, a {duration}-step outage and "
            f"{FUTURE_STEPS} later frames"
        )
    truth = synth.sequence(grid, steps, interval_minutes, preset, seed)
    hole = wettest_disc_outage(truth, grid, start=start, duration=duration, radius_km=radius_km)
    return Case(f"synthetic {preset} seed {seed}", truth, hole, grid, interval_minutes)


def real_case(
    files: Sequence[Path],
    *,
    name: str | None = None,
    duration: int | None = None,
    radius_km: float = RADIUS_KM,
) -> Case:
    """A decoded consecutive sequence with a synthetic outage cut into its complete area.

    By default the outage covers half of the steps before the last :data:`FUTURE_STEPS`, so
    the methods have history before it and offline methods frames after it.

    Raises
    ------
    ValueError
        If the files are not one product on one grid at consecutive nominal times.
    """
    fields = sorted((f for path in files for f in read(path)), key=lambda f: f.time)
    if len(fields) < 2:
        raise ValueError(f"need at least two consecutive fields, got {len(fields)}")
    first = fields[0]
    for previous, field in itertools.pairwise(fields):
        if (field.product, field.grid) != (first.product, first.grid):
            raise ValueError(f"{field.source} is not {first.product} on grid {first.grid.name}")
        if field.time - previous.time != first.interval:
            raise ValueError(f"gap between {previous.source} and {field.source}")
    truth = np.stack([f.values for f in fields]).astype(np.float32)
    duration = duration or max(1, (len(fields) - FUTURE_STEPS) // 2)
    start = len(fields) - duration - FUTURE_STEPS
    if start < 1:
        raise ValueError(f"{len(fields)} fields are too few for a {duration}-step outage")
    hole = wettest_disc_outage(
        truth, first.grid, start=start, duration=duration, radius_km=radius_km
    )
    label = name or f"{first.product} {first.time:%Y-%m-%d %H:%M}"
    interval = first.interval_minutes
    return Case(label, truth, hole, first.grid, interval)


def infill_sequence(
    method: Method,
    case: Case,
    *,
    window: int = WINDOW,
    future_steps: int = FUTURE_STEPS,
) -> np.ndarray:
    """Run ``method`` at every outage step as it would run live; returns the infilled sequence.

    Steps without an outage are returned as the truth. ``observed`` is the truth with every
    step's outage set to NaN. The input at step ``t`` is the last ``window`` observed frames,
    extended back to :data:`PRE_OUTAGE_FRAMES` frames before the running outage began: the
    service keeps those for an ongoing outage, since after ``window`` steps a fixed window would
    hold nothing to advect into the hole. ``future`` is ``observed[t + 1 : t + 1 +
    future_steps]`` (None at the end of the sequence).
    """
    observed = np.where(case.hole, np.nan, case.truth).astype(np.float32)
    active = case.hole.any(axis=(1, 2))
    output = case.truth.copy()
    for t in case.steps:
        began = t
        while began > 0 and active[began - 1]:
            began -= 1
        first = max(0, min(t - window + 1, began - PRE_OUTAGE_FRAMES))
        frames = observed[first : t + 1]
        future = observed[t + 1 : t + 1 + future_steps]
        output[t] = method(frames, case.hole[t], future=future if len(future) else None)
    return output


def score_case(
    case: Case,
    methods: Mapping[str, Method],
    *,
    window: int = WINDOW,
    future_steps: int = FUTURE_STEPS,
) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Scores (mm/h) and infilled sequences of every method on ``case``.

    Each method's scores also carry ``seconds_per_field``: mean wall time of one infill.
    """
    to_rate = 60.0 / case.interval_minutes
    steps = case.steps
    results: dict[str, dict[str, float]] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, method in methods.items():
        started = time.perf_counter()
        output = infill_sequence(method, case, window=window, future_steps=future_steps)
        elapsed = (time.perf_counter() - started) / max(len(steps), 1)
        outputs[name] = output
        results[name] = scores.evaluate(
            case.truth[steps] * to_rate, output[steps] * to_rate, case.hole[steps]
        ) | {"seconds_per_field": elapsed}
    return results, outputs


def mean_scores(
    per_case: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """Mean of each score over cases, per method (NaN-aware: undefined cases are skipped)."""
    methods = list(per_case[0])
    names = list(per_case[0][methods[0]])
    return {
        method: {
            name: float(np.nanmean([case[method][name] for case in per_case]))
            if any(np.isfinite(case[method][name]) for case in per_case)
            else float("nan")
            for name in names
        }
        for method in methods
    }


_SPEC_KEYS = {
    "seed": int,
    "grid": str,
    "steps": int,
    "interval": int,
    "duration": int,
    "radius": float,
}


def load_case(spec: str) -> Case:
    """A case from a data spec: a directory (or file) of a consecutive RADOLAN sequence, or
    ``synth:PRESET[:key=value...]`` with keys seed, grid (``ROWSxCOLS``), steps, interval
    (minutes), duration (outage steps) and radius (outage disc, km).

    Raises
    ------
    ValueError
        For an unknown key, a bad value, or a path without RADOLAN files.
    """
    if spec.startswith("synth:"):
        preset, *pairs = spec.removeprefix("synth:").split(":")
        options: dict[str, object] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key not in _SPEC_KEYS:
                raise ValueError(f"unknown key {key!r} in {spec!r}; known: {sorted(_SPEC_KEYS)}")
            options[key] = _SPEC_KEYS[key](value)
        grid = parse_size(str(options.pop("grid", "256x256")))
        interval = int(options.pop("interval", 5))
        radius = float(options.pop("radius", RADIUS_KM))
        return synthetic_case(
            preset, grid=grid, interval_minutes=interval, radius_km=radius, **options
        )  # type: ignore[arg-type]
    path = Path(spec)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no RADOLAN files in {path}")
    return real_case(files, name=path.name)


#: Columns of the printed table, in order (the CSV/JSON files hold every score).
TABLE_COLUMNS = (
    "rmse",
    "mae",
    "ame",
    "temporal_corr",
    "spatial_corr",
    "csi_0.1",
    "csi_1",
    "csi_5",
    "fss",
    "blur_ratio",
    "seconds_per_field",
)


def format_table(title: str, results: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width text table: one row per method, :data:`TABLE_COLUMNS` as columns."""
    width = max(len(m) for m in results) + 2
    cells = [max(10, len(c) + 2) for c in TABLE_COLUMNS]
    header = "".join(f"{c:>{w}}" for c, w in zip(TABLE_COLUMNS, cells, strict=True))
    lines = [title, f"{'method':{width}}{header}"]
    for method, values in results.items():
        row = "".join(f"{values[c]:{w}.4f}" for c, w in zip(TABLE_COLUMNS, cells, strict=True))
        lines.append(f"{method:{width}}{row}")
    return "\n".join(lines)


def write_results(
    out: Path, per_case: Mapping[str, Mapping[str, Mapping[str, float]]]
) -> tuple[Path, Path]:
    """Write ``scores.csv`` (one row per case and method) and ``scores.json``; return both."""
    rows = [
        {"case": case, "method": method, **values}
        for case, results in per_case.items()
        for method, values in results.items()
    ]
    csv_path, json_path = out / "scores.csv", out / "scores.json"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_bytes(csv_path, buffer.getvalue().encode())
    atomic.write_bytes(json_path, json.dumps(per_case, indent=2, allow_nan=True).encode())
    return csv_path, json_path


def run(specs: Sequence[str], methods: Mapping[str, Method], out: Path) -> str:
    """Score ``methods`` on every case of ``specs``; write tables and figures to ``out``.

    Returns the text of the tables (per case, and the mean over cases when there are several).
    """
    from radinfill import plots

    out.mkdir(parents=True, exist_ok=True)
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    texts = []
    for number, spec in enumerate(specs):
        case = load_case(spec)
        results, outputs = score_case(case, methods)
        per_case[case.name] = results
        texts.append(format_table(f"{case.name} ({len(case.steps)} outage steps)", results))
        step = case.steps[len(case.steps) // 2]
        to_rate = 60.0 / case.interval_minutes
        plots.infill_examples(
            case.truth[step] * to_rate,
            case.hole[step],
            {name: output[step] * to_rate for name, output in outputs.items()},
            grid=case.grid,
            path=out / f"examples_{number}.png",
            title=f"{case.name}: outage step {step}",
        )
    summary = mean_scores(list(per_case.values()))
    if len(per_case) > 1:
        texts.append(format_table(f"mean over {len(per_case)} cases", summary))
    write_results(out, per_case)
    plots.score_bars(summary, path=out / "scores.png", title="hole-only scores (mm/h)")
    return "\n\n".join(texts)
