"""Benchmark the classical infill baselines: wall time per field and hole-only scores.

Usage: ``python bench/baselines.py [--samples DIR] [--grid 900x900] [--steps 24] [--duration 12]
[--method NAME ...] [--out DIR]``

Cases: the three synthetic presets (a 150 km disc outage over the wettest site, persisting for
``--duration`` steps at the end of the sequence) and the real consecutive sequences among the
DWD samples (RY 2020-01-01, YW 2017-08-16, RW 2018-11-22) with the same kind of synthetic
outage cut into the area that has data in every frame. Every method runs exactly as it would
live (see ``radinfill.train.evaluate``); scores are in mm/h over the outage pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radinfill.model import baselines
from radinfill.train import evaluate

DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "radolan"
REAL = (
    "radolan_to_netcdf/radolan_ry",
    "radolan_to_netcdf/radolan_yw",
    "radolan_to_netcdf/radolan_rw",
)


def specs(samples: Path, grid: str, steps: int, duration: int) -> list[str]:
    """Data specs of every benchmark case (real ones only when the samples exist)."""
    synthetic = [
        f"synth:{preset}:seed=0:grid={grid}:steps={steps}:duration={duration}"
        for preset in ("stratiform", "mixed", "convective")
    ]
    return synthetic + [str(samples / r) for r in REAL if (samples / r).is_dir()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    parser.add_argument("--grid", default="900x900")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--duration", type=int, default=12)
    parser.add_argument("--method", action="append", help="default: every baseline")
    parser.add_argument("--out", type=Path, default=Path("out/bench-baselines"))
    args = parser.parse_args(argv)
    names = args.method or baselines.list_methods()
    methods = {name: baselines.get_method(name) for name in names}
    cases = specs(args.samples, args.grid, args.steps, args.duration)
    print(evaluate.run(cases, methods, args.out))
    print(f"\nper-case scores in {args.out}/scores.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
