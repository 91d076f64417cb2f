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

Model checkpoints are methods like the baselines (:func:`model_methods`); :func:`run` writes
``scores.csv``, ``scores.json``, ``scores.md`` (Markdown tables), ``report.html`` (one
self-contained page with the figures embedded and the checkpoints' metadata), ``scores.png``
and one ``examples_N.png`` per case. :func:`held_out_specs` is the default data set of the
command and of the promotion gate: cases no training run has seen.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from radinfill import atomic, code_version, cuts, report, scores, synth
from radinfill.model import envelope, features
from radinfill.model.cases import Case, infill_sequence
from radinfill.model.features import DEFAULT_WINDOW
from radinfill.radolan import Grid, grid_for, read
from radinfill.radolan.grids import parse_size
from radinfill.radolan.sites import RADIUS_KM

if TYPE_CHECKING:
    from radinfill.model.engine import InfillEngine

#: A method under the baseline call contract: ``method(frames, hole, future=None) -> field``.
Method = Callable[..., np.ndarray]
#: Frames of context a method gets, and frames after the current one offline methods may use.
WINDOW = DEFAULT_WINDOW
FUTURE_STEPS = features.FUTURE_FRAMES
#: Seed of the held-out synthetic cases. Training draws its synthetic sequences with seeds
#: ``0 .. synthetic_seeds - 1`` (a handful), so these sequences were never trained on.
HELD_OUT_SEED = 1000
HELD_OUT_PRESETS = ("stratiform", "mixed", "convective")
#: The held-out real sequence below the sample root: YW 2017-08-16, the event
#: ``YW-20170816`` that :data:`radinfill.train.data.HELD_OUT` keeps out of training.
HELD_OUT_SEQUENCE = Path("radolan_to_netcdf") / "radolan_yw"
#: The held-out real rain-rate event, FMI 2017-05-09 (convective, 7 % wet), beside the samples
#: (``shared/data/fmi``), and the outage cut into it: 55 px (55 km) over 5 steps.
HELD_OUT_RATES = Path("..") / "fmi" / "fmi-20170509.npz"
RATE_OUTAGE_RADIUS = 55
RATE_OUTAGE_STEPS = 5


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
    hole = cuts.wettest_disc_outage(
        truth, grid, start=start, duration=duration, radius_km=radius_km
    )
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
    hole = cuts.wettest_disc_outage(
        truth, first.grid, start=start, duration=duration, radius_km=radius_km
    )
    label = name or f"{first.product} {first.time:%Y-%m-%d %H:%M}"
    interval = first.interval_minutes
    return Case(label, truth, hole, first.grid, interval)


def rate_case(
    path: str | os.PathLike[str],
    *,
    radius_px: int = RATE_OUTAGE_RADIUS,
    duration: int = RATE_OUTAGE_STEPS,
) -> Case:
    """A real rain-rate event (``*.npz``, :func:`radinfill.train.data.rate_sequences`) with a
    disc outage of ``radius_px`` pixels over ``duration`` steps.

    These grids have no RADOLAN radar sites, so the candidate discs lie on a lattice (half a
    radius apart) inside the area with data in every frame; the outage is the wettest disc
    and time (:func:`radinfill.cuts.wettest`'s rule) among starts every ``duration`` steps that
    leave a full window before it and :data:`FUTURE_STEPS` frames after it.
    """
    from radinfill.train.data import rate_frames

    path = Path(path)
    truth = rate_frames(path)
    with np.load(path) as z:
        interval = int(z["interval_minutes"])
    steps, rows, cols = truth.shape
    discs = cuts.lattice_discs((rows, cols), radius_px)
    starts = range(WINDOW, steps - duration - FUTURE_STEPS + 1, duration)
    if not starts:
        raise ValueError(f"{path}: {steps} frames are too few for a {duration}-step outage")
    found = [(*cuts.wettest(truth, discs, start=t, duration=duration), t) for t in starts]
    disc, _, start = max(found, key=lambda item: item[1])
    if disc is None:
        raise ValueError(f"{path}: no disc of {radius_px} px has data in every frame")
    grid = Grid(f"{path.stem} {rows}x{cols}", rows, cols, 1000.0, 0.0, 0.0)
    hole = cuts.outage_mask(truth.shape, disc, start, duration)
    return Case(path.stem, truth, hole, grid, interval)


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
    """A case from a data spec: a directory (or file) of a consecutive RADOLAN sequence, a
    rain-rate event ``*.npz`` (:func:`rate_case`), or
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
    if path.suffix == ".npz":
        return rate_case(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no RADOLAN files in {path}")
    return real_case(files, name=path.name)


def held_out_specs(samples_root: str | os.PathLike[str] | None) -> list[str]:
    """Data specs of the held-out evaluation set: cases that no training run has seen.

    The three synthetic presets with :data:`HELD_OUT_SEED` on the training grid (256 x 256,
    24 steps, a 12-step outage), the real YW 2017-08-16 sequence (1100 x 900, a 4-step outage
    of a 150 km radar disc) below ``samples_root``, the directory of the DWD sample files, and
    the real FMI 2017-05-09 event beside it (a 5-step, 55 km outage). The same set ranks the
    baselines in ``radinfill evaluate`` and gates promotions in ``radinfill promote``.

    Parameters
    ----------
    samples_root
        Root of the sample data (``shared/data/radolan``), or None for the synthetic cases
        only (a machine without the samples).

    Raises
    ------
    ValueError
        If ``samples_root`` is given but the real held-out events are not there.
    """
    specs = [f"synth:{preset}:seed={HELD_OUT_SEED}" for preset in HELD_OUT_PRESETS]
    if samples_root is None:
        return specs
    real = Path(samples_root) / HELD_OUT_SEQUENCE
    rates = (Path(samples_root) / HELD_OUT_RATES).resolve()
    for path, what in ((real, "YW 2017-08-16 sequence"), (rates, "FMI 2017-05-09 event")):
        if not path.exists():
            raise ValueError(f"{path}: held-out {what} not found")
    return [*specs, str(real), str(rates)]


#: Grid, outage and frames of the safety cases (:func:`safety_cases`), 5-minute steps.
SAFETY_SHAPE = (160, 160)
SAFETY_HOLE_RADIUS = 40
SAFETY_STEPS = 6
SAFETY_OUTAGE_STEPS = 3
#: A method passes a safety case when its hole maximum is at most this factor times the
#: window's maximum and its hole RMSE at most this factor times the classical prior's.
SAFETY_MAX_FACTOR = envelope.EVIDENCE_MARGIN
SAFETY_RMSE_FACTOR = envelope.PRIOR_RMSE_FACTOR
#: Absolute slack of the RMSE bound (mm/h): on uniform rain the prior is exact (RMSE 0), and a
#: network whose correction moves 100 mm/h by a few hundredths is not inventing rain.
SAFETY_RMSE_SLACK = 0.1


def safety_cases() -> dict[str, Case]:
    """Fields on which a method must not invent rain: uniform 30 and 100 mm/h, a stationary
    200 mm/h cell and rain moving 6 px per step with 90 mm/h peaks, each with a 40 px disc
    outage over the last 3 of 6 five-minute steps (values in mm per 5 minutes).

    On the uniform and stationary cases persistence is exact; the moving one is a smooth
    random field shifted exactly (in Fourier space) by (5.5, 2.4) px per step.
    """
    rows, cols = SAFETY_SHAPE
    row, col = np.ogrid[:rows, :cols]
    centre = (row - rows // 2) ** 2 + (col - cols // 2) ** 2
    per_step = np.float32(5.0 / 60.0)

    def uniform(rate: float) -> np.ndarray:
        return np.full((SAFETY_STEPS, rows, cols), rate * per_step, dtype=np.float32)

    cell = uniform(1.0)
    cell[:, centre < 15**2] = 200.0 * per_step
    spectrum = np.fft.fft2(
        ndimage.gaussian_filter(np.random.default_rng(7).standard_normal(SAFETY_SHAPE), 6.0)
    )
    moving = np.stack(
        [
            np.fft.ifft2(ndimage.fourier_shift(spectrum, (2.4 * t, 5.5 * t))).real
            for t in range(SAFETY_STEPS)
        ]
    )
    moving = np.clip(moving, 0.0, None)
    moving *= 90.0 * per_step / moving.max()
    grid = Grid(f"safety {rows}x{cols}", rows, cols, 1000.0, 0.0, 0.0)
    hole = cuts.outage_mask(
        (SAFETY_STEPS, rows, cols),
        centre < SAFETY_HOLE_RADIUS**2,
        SAFETY_STEPS - SAFETY_OUTAGE_STEPS,
        SAFETY_OUTAGE_STEPS,
    )
    fields = {
        "uniform 30 mm/h": uniform(30.0),
        "uniform 100 mm/h": uniform(100.0),
        "stationary 200 mm/h cell": cell,
        "moving 90 mm/h peaks": moving.astype(np.float32),
    }
    return {name: Case(name, truth, hole, grid, 5) for name, truth in fields.items()}


def safety_check(method: Method) -> dict[str, str]:
    """Problems of ``method`` on the :func:`safety_cases` at the last outage step, by case
    (empty: it passed all): its hole maximum against :data:`SAFETY_MAX_FACTOR` times the
    window's maximum, its hole RMSE against :data:`SAFETY_RMSE_FACTOR` times that of the
    classical prior ``advection_boundary`` plus :data:`SAFETY_RMSE_SLACK`."""
    from radinfill.model import baselines

    prior = baselines.get_method("advection_boundary")
    problems = {}
    for name, case in safety_cases().items():
        to_rate = 60.0 / case.interval_minutes
        observed = np.where(case.hole, np.float32(np.nan), case.truth)
        hole, truth = case.hole[-1], case.truth[-1] * to_rate
        output, reference = (m(observed, hole)[hole] * to_rate for m in (method, prior))
        window_max = float(np.nanmax(observed)) * to_rate
        rmse, prior_rmse = (
            float(np.sqrt(np.mean((values - truth[hole]) ** 2))) for values in (output, reference)
        )
        found = []
        if output.max() > SAFETY_MAX_FACTOR * window_max * (1 + 1e-6):
            found.append(f"max {output.max():.1f} mm/h > {SAFETY_MAX_FACTOR} x {window_max:.1f}")
        if rmse > SAFETY_RMSE_FACTOR * prior_rmse + SAFETY_RMSE_SLACK:
            found.append(f"RMSE {rmse:.2f} mm/h > {SAFETY_RMSE_FACTOR} x prior's {prior_rmse:.2f}")
        if found:
            problems[name] = "; ".join(found)
    return problems


@dataclass(frozen=True)
class ModelMethod:
    """A model checkpoint scored as a method.

    Attributes
    ----------
    name
        Name in tables: the variant, or ``variant@directory`` where that is ambiguous.
    source
        The checkpoint or release directory, symbolic links resolved.
    engine
        The loaded engine; ``engine.infill`` is the method and ``engine.metadata`` the
        checkpoint metadata.
    """

    name: str
    source: Path
    engine: InfillEngine

    def describe(self) -> dict[str, str]:
        """What a report says about the checkpoint: variant, training step, sha256, ...

        Values are text (``"?"`` where the metadata has none), keys in display order.
        """
        meta = self.engine.metadata
        step = meta.get("training", {}).get("step")
        return {
            "method": self.name,
            "variant": str(meta.get("variant", "?")),
            "training step": "?" if step is None else str(step),
            "sha256": str(meta.get("sha256", "?")),
            "created": str(meta.get("created", "?")),
            "code version": str(meta.get("code_version", "?")),
            "path": str(self.source),
        }


def model_methods(
    paths: Sequence[str | os.PathLike[str]],
    *,
    taken: Collection[str] = (),
    device: str = "auto",
) -> list[ModelMethod]:
    """Load model checkpoints as methods named by their variant.

    Parameters
    ----------
    paths
        Checkpoint directories, release directories or registry directories (their current
        release), see :func:`radinfill.model.registry.resolve`.
    taken
        Names already used (the baselines): a variant clashing with one, or shared by two
        checkpoints, is named ``variant@directory`` instead.
    device
        Device of the engines (``"auto"``: CUDA when available). Engines run without a
        fallback baseline, so a failing model stops the evaluation instead of being scored
        under a baseline's results.

    Raises
    ------
    ValueError
        For an empty path, the same checkpoint twice, or names that stay ambiguous.
    CheckpointError, RegistryError
        If a checkpoint cannot be resolved or loaded.
    """
    from radinfill.model import registry
    from radinfill.model.engine import InfillEngine

    if any(not str(path) for path in paths):
        raise ValueError("a checkpoint path is empty")
    sources = [registry.resolve(path) for path in paths]
    if len(set(sources)) < len(sources):
        raise ValueError(f"a checkpoint is given twice: {', '.join(map(str, sources))}")
    engines = [InfillEngine.from_checkpoint(src, device, fallback=None) for src in sources]
    variants = [str(engine.metadata["variant"]) for engine in engines]
    names = [
        f"{variant}@{source.name}" if variants.count(variant) > 1 or variant in taken else variant
        for variant, source in zip(variants, sources, strict=True)
    ]
    if len({*names, *taken}) < len(names) + len(set(taken)):
        raise ValueError(f"checkpoint names stay ambiguous: {', '.join(names)}")
    return [ModelMethod(*entry) for entry in zip(names, sources, engines, strict=True)]


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


def is_offline(name: str) -> bool:
    """Whether a method in a report reads frames after the current one (a baseline that is
    not causal); models and unknown names count as causal."""
    from radinfill.model import baselines

    return name.lower() in baselines.list_methods() and not baselines.is_causal(name)


def format_table(title: str, results: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width text table: one row per method, :data:`TABLE_COLUMNS` as columns.

    Offline methods come last, below a line of their own: they see the frames after the
    outage, which real time never has, so they are not compared with the causal ones.
    """
    width = max(len(m) for m in results) + 2
    cells = [max(10, len(c) + 2) for c in TABLE_COLUMNS]
    header = "".join(f"{c:>{w}}" for c, w in zip(TABLE_COLUMNS, cells, strict=True))
    lines = [title, f"{'method':{width}}{header}"]
    for offline in (False, True):
        rows = [(m, v) for m, v in results.items() if is_offline(m) == offline]
        if offline and rows:
            lines.append("offline (frames after the outage, archives only):")
        for method, values in rows:
            cols = zip(TABLE_COLUMNS, cells, strict=True)
            lines.append(f"{method:{width}}" + "".join(f"{values[c]:{w}.4f}" for c, w in cols))
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


#: Columns of ``scores.md`` and ``report.html`` and their headings: the seed work's four
#: scores first (RMSE, AME, temporal and spatial correlation), then CSI at 1 mm/h, FSS, the
#: blur ratio, and the wall time per field.
REPORT_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "rmse": "RMSE (mm/h)",
        "ame": "AME (mm/h)",
        "temporal_corr": "temporal corr",
        "spatial_corr": "spatial corr",
        "csi_1": "CSI 1 mm/h",
        "csi_5": "CSI 5 mm/h",
        "fss": "FSS",
        "blur_ratio": "blur ratio",
        "seconds_per_field": "s/field",
    }
)


@dataclass(frozen=True)
class Evaluation:
    """What :func:`run` scored and wrote; its ``str`` is the text of the tables.

    Attributes
    ----------
    specs
        The data specs, in order.
    cases
        Case name -> method -> score -> value (mm/h; NaN where undefined).
    mean
        Method -> score -> mean over the cases.
    text
        The fixed-width tables printed by ``radinfill evaluate``.
    files
        Every file written.
    """

    specs: tuple[str, ...]
    cases: Mapping[str, Mapping[str, Mapping[str, float]]]
    mean: Mapping[str, Mapping[str, float]]
    text: str
    files: tuple[Path, ...]

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Section:
    """One table of a report: a case (or the mean) with its scores and figure."""

    title: str
    spec: str | None
    results: Mapping[str, Mapping[str, float]]
    figure: Path


def run(
    specs: Sequence[str],
    methods: Mapping[str, Method],
    out: Path,
    *,
    models: Sequence[ModelMethod] = (),
) -> Evaluation:
    """Score ``methods`` and ``models`` on every case of ``specs``; write tables and figures.

    Writes to ``out``: ``scores.csv``, ``scores.json`` (every score per case and method),
    ``scores.md``, ``report.html``, ``scores.png`` and ``examples_N.png`` (see the module
    docstring). Case names that two specs share get the spec appended.

    Raises
    ------
    ValueError
        For a bad spec, no methods or specs, or a model named like a method.
    """
    from radinfill import plots

    every = dict(methods)
    for model in models:
        if model.name in every:
            raise ValueError(f"model {model.name!r} has the name of another method")
        every[model.name] = model.engine.infill
    if not every or not specs:
        raise ValueError("nothing to evaluate: no methods or no data specs")
    out.mkdir(parents=True, exist_ok=True)
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    sections: list[_Section] = []
    texts = []
    for number, spec in enumerate(specs):
        case = load_case(spec)
        name = case.name if case.name not in per_case else f"{case.name} ({spec})"
        results, outputs = score_case(case, every)
        per_case[name] = results
        title = f"{name} ({len(case.steps)} outage steps)"
        texts.append(format_table(title, results))
        step = case.steps[len(case.steps) // 2]
        to_rate = 60.0 / case.interval_minutes
        figure = plots.infill_examples(
            case.truth[step] * to_rate,
            case.hole[step],
            {method: output[step] * to_rate for method, output in outputs.items()},
            grid=case.grid,
            path=out / f"examples_{number}.png",
            title=f"{name}: outage step {step}",
        )
        sections.append(_Section(title, spec, results, figure))
    summary = mean_scores(list(per_case.values()))
    bars = plots.score_bars(summary, path=out / "scores.png", title="hole-only scores (mm/h)")
    if len(per_case) > 1:
        texts.append(format_table(f"mean over {len(per_case)} cases", summary))
        sections.append(_Section(f"mean over {len(per_case)} cases", None, summary, bars))
    stamp = f"radinfill {code_version()}, {datetime.now(UTC).isoformat(timespec='seconds')}"
    files = [
        *write_results(out, per_case),
        _write_markdown(out / "scores.md", stamp, sections),
        _write_html(out / "report.html", stamp, sections, specs, list(every), models, bars),
        bars,
        *(s.figure for s in sections if s.figure != bars),
    ]
    return Evaluation(tuple(specs), per_case, summary, "\n\n".join(texts), tuple(files))


def _score_rows(
    results: Mapping[str, Mapping[str, float]],
) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """Header, text rows and best cells of a report table over :data:`REPORT_COLUMNS`.

    The best cell of each score column is the causal one closest to the score's ideal value
    (:func:`radinfill.scores.distance_to_ideal`); ties are all best. Times are not marked.
    Offline methods come last, marked ``(offline)``, and are never marked best.
    """
    header = ["method", *REPORT_COLUMNS.values()]
    ordered = sorted(results.items(), key=lambda item: is_offline(item[0]))
    rows = [
        [f"{method} (offline)" if is_offline(method) else method]
        + [_number(values[column]) for column in REPORT_COLUMNS]
        for method, values in ordered
    ]
    best: set[tuple[int, int]] = set()
    for j, column in enumerate(REPORT_COLUMNS, start=1):
        if column == "seconds_per_field":
            continue
        distances = [
            math.inf if is_offline(m) else scores.distance_to_ideal(column, v[column])
            for m, v in ordered
        ]
        finite = [d for d in distances if math.isfinite(d)]
        if finite:
            best |= {(i, j) for i, d in enumerate(distances) if d == min(finite)}
    return header, rows, best


def _write_markdown(path: Path, stamp: str, sections: Sequence[_Section]) -> Path:
    """``scores.md``: one Markdown table per case and the mean, best values in bold."""
    parts = [
        "# Hole-only infill scores (mm/h)",
        f"{stamp}. Bold: the best value of a column (closest to the score's ideal: 0 for "
        "errors, 1 for correlations, CSI, FSS and the blur ratio).",
    ]
    for section in sections:
        header, rows, best = _score_rows(section.results)
        parts.append(f"## {section.title}")
        if section.spec is not None:
            parts.append(f"Data: `{section.spec}`")
        parts.append(report.markdown_table(header, rows, strong=best))
    atomic.write_bytes(path, ("\n\n".join(parts) + "\n").encode("utf-8"))
    return path


def _write_html(
    path: Path,
    stamp: str,
    sections: Sequence[_Section],
    specs: Sequence[str],
    methods: Sequence[str],
    models: Sequence[ModelMethod],
    bars: Path,
) -> Path:
    """``report.html``: one self-contained page (figures embedded as data URIs).

    ``stamp`` (code version and time), the data specs and method names; the metadata of every
    model checkpoint among them (variant, training step, sha256, ...); then per case and for
    the mean the score table and its figure, and the score bar chart.
    """
    described = [model.describe() for model in models]
    body = [
        "<h1>Hole-only infill scores (mm/h)</h1>",
        f"<p>{html.escape(stamp)}. Bold: the best value of a column (closest to the score's "
        "ideal).</p>",
        "<h2>Data</h2>",
        "<ul>" + "".join(f"<li><code>{html.escape(s)}</code></li>" for s in specs) + "</ul>",
        "<h2>Methods</h2>",
        "<p>" + html.escape(", ".join(methods)) + "</p>",
    ]
    if described:
        body += [
            "<h3>Model checkpoints</h3>",
            report.html_table(list(described[0]), [list(d.values()) for d in described]),
        ]
    for section in sections:
        header, rows, best = _score_rows(section.results)
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.spec is not None:
            body.append(f"<p>Data: <code>{html.escape(section.spec)}</code></p>")
        body.append(report.html_table(header, rows, strong=best))
        body.append(report.html_image(section.figure.read_bytes(), section.title))
    if sections[-1].figure != bars:
        body += ["<h2>Scores</h2>", report.html_image(bars.read_bytes(), "scores")]
    page = report.html_page("radinfill evaluation", body)
    atomic.write_bytes(path, page.encode("utf-8"))
    return path


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
