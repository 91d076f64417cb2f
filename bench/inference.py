"""Benchmark inference: size, FLOPs, CPU latency and peak memory of every variant vs baselines.

Usage: ``python bench/inference.py [--grid 900x900] [--window 6] [--repeat 1] [--threads N]
[--variant NAME ...]``, or ``python bench/inference.py --crops [--repeat 3] [--threads N]``

Input: a synthetic ``mixed`` RY-like sequence (:func:`radinfill.synth.sequence`, mm per 5 min)
of ``window`` frames with the 150 km disc of the wettest radar site cut out of the last three
frames (:func:`radinfill.cuts.wettest_disc_outage`), as in a persisting outage.
Each variant is an untrained network of its default size (speed does not depend on the
weights). Latency is per new field as the service computes it: the whole window is recomputed
(``InfillEngine.infill``: features incl. the motion estimate, one forward pass, write-back);
``features`` is the share of :func:`radinfill.model.features.prepare` in it. FLOPs are counted
for one forward pass with :class:`torch.utils.flop_counter.FlopCounterMode` (2 per
multiply-add; convolutions and matrix products only, element-wise operations are not counted).
Each row runs in its own process on the case saved by the parent, so peak memory is that
process's maximum resident set size (``getrusage``) and ``+model`` its growth beyond the
process after imports and loading the case.

``--crops`` compares, in one process, the whole-grid computation with the computation on the
neighbourhood of the hole (:mod:`radinfill.model.crops`) for the service default
``advection_boundary`` and the shipped model (``assets/model``), on 1100 x 900 and 900 x 900
with the same case. ``full``: every region is the whole grid (the computation before crops),
nothing cached; ``cropped``: the same with crops; ``+cache``: crops, right after the previous
field of the same outage (the window one frame earlier), as while the service's window slides:
the optical flow of all frame pairs but the newest and the factorised Laplace matrix of the
unchanged hole are cached (:mod:`radinfill.model.memo`). ``crop %``: the share of the grid the
method's crops cover.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np

BASELINES = ("laplace", "advection", "advection_smooth")
REFERENCE = "advection"
#: Grids and methods of the ``--crops`` table.
CROP_GRIDS = ((1100, 900), (900, 900))
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "model"


def case(grid: tuple[int, int], window: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (window, rows, cols) in mm per 5 min with the outage cut out, and the hole."""
    from radinfill import synth
    from radinfill.cuts import wettest_disc_outage
    from radinfill.radolan import grid_for

    frames = synth.sequence(grid, window, 5, "mixed", seed=0)
    outage = wettest_disc_outage(frames, grid_for(*grid), start=max(window - 3, 0), duration=3)
    frames[outage] = np.nan
    return frames, outage[-1]


def measure(
    name: str, frames: np.ndarray, hole: np.ndarray, window: int, repeat: int
) -> dict[str, object]:
    """Time one method (a variant or a baseline) in this process; a JSON-ready record.

    Everything is imported before the idle memory is read, and each method runs once untimed
    (first-call costs: kernel selection, OpenCV/SciPy set-up).
    """
    from radinfill.model import baselines, features

    record: dict[str, object] = {"name": name, "hole_px": int(hole.sum())}
    if name in BASELINES:
        idle_mib = _rss_mib()
        method: Callable[..., np.ndarray] = baselines.get_method(name)
    else:
        import torch  # noqa: F401 (imported before the idle memory is read)

        idle_mib = _rss_mib()
        method = _model_method(name, frames, hole, window, record)
        record["features_s"] = _best_of(
            repeat,
            lambda: features.prepare(frames, hole, window=window, interval_minutes=5),
        )
    method(frames, hole)
    record["cpu_s"] = _best_of(repeat, lambda: method(frames, hole))
    record["peak_mib"] = _peak_mib()
    record["model_mib"] = record["peak_mib"] - idle_mib
    return record


def _model_method(
    name: str, frames: np.ndarray, hole: np.ndarray, window: int, record: dict[str, object]
) -> Callable[..., np.ndarray]:
    """A CPU engine for variant ``name``; adds parameters, FLOPs and GPU numbers to ``record``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from radinfill.model import build, features
    from radinfill.model.engine import InfillEngine

    model = build(name, window=window)
    record["params"] = sum(p.numel() for p in model.parameters())
    inputs = features.to_tensors(
        [features.prepare(frames, hole, window=window, interval_minutes=5)]
    )
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(*inputs)
    record["gflop"] = counter.get_total_flops() / 1e9
    if torch.cuda.is_available():
        record |= _gpu(model, frames, hole, window)
    engine = InfillEngine(model, window=window, interval_minutes=5, device="cpu")
    return engine.infill


def _gpu(model, frames: np.ndarray, hole: np.ndarray, window: int) -> dict[str, float]:
    """GPU latency per field (fp32 and bf16, after a warm-up) and peak GPU memory."""
    import copy

    import torch

    from radinfill.model.engine import InfillEngine

    result = {}
    for precision in ("fp32", "bf16"):
        engine = InfillEngine(
            copy.deepcopy(model), window=window, interval_minutes=5, device="cuda",
            precision=precision,
        )  # fmt: skip
        engine.infill(frames, hole)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        engine.infill(frames, hole)
        torch.cuda.synchronize()
        result[f"gpu_{precision}_s"] = time.perf_counter() - start
        result[f"gpu_{precision}_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def crop_records(window: int, repeat: int) -> list[dict[str, object]]:
    """Whole grid vs crops for the default baseline and the shipped model on every grid."""
    from radinfill.model import baselines
    from radinfill.model.engine import InfillEngine

    methods = {
        "advection_boundary": baselines.get_method("advection_boundary"),
        "shipped model": InfillEngine.from_checkpoint(SHIPPED, "cpu").infill,
    }
    records = []
    for grid in CROP_GRIDS:
        frames, hole = case(grid, window)
        for name, method in methods.items():
            records.append(
                {"grid": "x".join(map(str, grid)), "name": name}
                | _crop_record(method, frames, hole, repeat)
                | {"crop_share": _crop_share(method, frames, hole)}
            )
    return records


def _crop_record(
    method: Callable[..., np.ndarray], frames: np.ndarray, hole: np.ndarray, repeat: int
) -> dict[str, float]:
    """Seconds per field of ``method`` on the whole grid, on crops, and on crops right after
    the previous field of the outage."""
    from radinfill.model import crops

    whole = [(slice(0, hole.shape[0]), slice(0, hole.shape[1]))]
    method(frames, hole)  # first-call costs
    with mock.patch.object(crops, "regions", return_value=whole):
        full = _best_of(repeat, lambda: method(frames, hole), _forget)
    return {
        "full_s": full,
        "cropped_s": _best_of(repeat, lambda: method(frames, hole), _forget),
        "cached_s": _best_of(
            repeat, lambda: method(frames, hole), lambda: (_forget(), method(frames[:-1], hole))
        ),
    }


def _forget() -> None:
    """Empty the caches of optical flow and Laplace factorisations (a field all new)."""
    from radinfill.model import baselines, motion

    motion._PAIRS.clear()
    baselines._FACTORS.clear()


def _crop_share(method: Callable[..., np.ndarray], frames: np.ndarray, hole: np.ndarray) -> float:
    """Share of the grid covered by the crops ``method`` computes on."""
    from radinfill.model import crops

    regions = crops.regions
    areas: list[int] = []

    def recorded(*args: object, **kwargs: object) -> list[crops.Region]:
        boxes = regions(*args, **kwargs)
        areas.extend((r.stop - r.start) * (c.stop - c.start) for r, c in boxes)
        return boxes

    with mock.patch.object(crops, "regions", recorded):
        method(frames, hole)
    return sum(areas) / hole.size


def crop_table(records: list[dict[str, object]]) -> str:
    """The ``--crops`` results as a fixed-width text table, with full / cropped ratios."""
    head = (
        f"{'grid':<10}{'method':<20}{'crop %':>8}{'full s':>8}{'cropped s':>11}{'+cache s':>10}"
        f"{'x faster':>10}{'w/ cache':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        lines.append(
            f"{r['grid']:<10}{r['name']:<20}{100 * r['crop_share']:>8.0f}{r['full_s']:>8.2f}"
            f"{r['cropped_s']:>11.2f}{r['cached_s']:>10.2f}{r['full_s'] / r['cropped_s']:>10.1f}"
            f"{r['full_s'] / r['cached_s']:>10.1f}"
        )
    return "\n".join(lines)


def _best_of(
    repeat: int, run: Callable[[], object], setup: Callable[[], object] = lambda: None
) -> float:
    """Shortest wall time of ``repeat`` runs (s), each after an untimed ``setup``: the least
    disturbed by other load."""
    times = []
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _rss_mib() -> float:
    """Current resident set size (MiB), from /proc where available, else the peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _peak_mib()


def _peak_mib() -> float:
    """Peak resident set size of this process (MiB; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def table(records: list[dict[str, object]]) -> str:
    """The results as a fixed-width text table, latencies also as multiples of advection."""
    reference = next((r["cpu_s"] for r in records if r["name"] == REFERENCE), None)
    gpu = any("gpu_fp32_s" in r for r in records)
    head = (
        f"{'method':<16}{'params':>9}{'GFLOP':>8}{'CPU s':>8}{'features':>9}{'x adv.':>8}"
        f"{'peak MiB':>10}{'+model':>8}"
    )
    head += f"{'GPU fp32 s':>12}{'GPU bf16 s':>12}{'GPU MiB':>9}" if gpu else ""
    lines = [head, "-" * len(head)]
    for r in records:
        ratio = f"{r['cpu_s'] / reference:.1f}" if reference else "-"
        line = (
            f"{r['name']:<16}{_num(r.get('params'), ',d'):>9}{_num(r.get('gflop'), '.1f'):>8}"
            f"{r['cpu_s']:>8.2f}{_num(r.get('features_s'), '.2f'):>9}{ratio:>8}"
            f"{r['peak_mib']:>10.0f}{r['model_mib']:>8.0f}"
        )
        if gpu:
            line += (
                f"{_num(r.get('gpu_fp32_s'), '.3f'):>12}{_num(r.get('gpu_bf16_s'), '.3f'):>12}"
                f"{_num(r.get('gpu_fp32_mib'), '.0f'):>9}"
            )
        lines.append(line)
    return "\n".join(lines)


def _num(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="900x900", help="ROWSxCOLS (default 900x900)")
    parser.add_argument("--window", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per row (best kept)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--variant", action="append", help="default: every variant")
    parser.add_argument(
        "--crops", action="store_true", help="whole grid vs crops around the hole (see above)"
    )
    # One row in a fresh process, on the case saved by the parent (so that generating it does
    # not count towards the row's peak memory).
    parser.add_argument("--child", nargs=2, metavar=("NAME", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crops:
        records = crop_records(args.window, args.repeat)
        print(
            f"Whole grid vs crops, window {args.window}, one 150 km outage, "
            f"{torch.get_num_threads()} CPU threads ({os.cpu_count()} cores), "
            f"best of {args.repeat}\n"
        )
        print(crop_table(records))
        return 0
    if args.child:
        name, saved = args.child
        with np.load(saved) as data:
            frames, hole = data["frames"], data["hole"]
        print(json.dumps(measure(name, frames, hole, args.window, args.repeat)))
        return 0

    from radinfill.model import list_variants
    from radinfill.radolan.grids import parse_size

    names = [*(args.variant or list_variants()), *BASELINES]
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        saved = f"{tmp}/case.npz"
        frames, hole = case(parse_size(args.grid), args.window)
        np.savez(saved, frames=frames, hole=hole)
        for name in names:
            command = [sys.executable, __file__, "--child", name, saved, *_passed_on(args)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{name}: benchmark process failed:\n{done.stderr}")
            records.append(json.loads(done.stdout.splitlines()[-1]))
            print(f"measured {name}", file=sys.stderr, flush=True)
    threads = args.threads or torch.get_num_threads()
    print(
        f"Inference on {args.grid}, window {args.window}, {int(hole.sum())} hole px, "
        f"{threads} CPU threads ({os.cpu_count()} cores), best of {args.repeat}\n"
    )
    print(table(records))
    if not torch.cuda.is_available():
        print("\nGPU: not measured (no CUDA device)")
    return 0


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The options a child process needs to measure the same case."""
    options = ["--window", str(args.window), "--repeat", str(args.repeat)]
    return options + (["--threads", str(args.threads)] if args.threads else [])


if __name__ == "__main__":
    raise SystemExit(main())
