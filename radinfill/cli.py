"""The ``radinfill`` command line: one thin subcommand per job.

Every command parses its arguments and calls one library function; heavy imports (xarray,
matplotlib, torch) happen inside the commands so ``--help`` is instant. Errors are one
readable line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from radinfill.radolan import RadolanError

EXIT_ERROR = 1


def _inspect(args: argparse.Namespace) -> int:
    from radinfill import report

    records = [report.describe(field) for field in _read(args.file)]
    if args.json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=2))
    else:
        print("\n\n".join(report.format_description(r) for r in records))
    return 0


def _quicklook(args: argparse.Namespace) -> int:
    from radinfill import holes, plots

    fields = _read(args.file)
    afters = _read(args.after) if args.after else [None] * len(fields)
    if len(afters) != len(fields):
        raise ValueError(
            f"{args.after} holds {len(afters)} products but {args.file} holds {len(fields)}"
        )
    base = Path(args.output) if args.output else Path(Path(args.file).name + ".png")
    for index, (field, after) in enumerate(zip(fields, afters, strict=True)):
        path = base if len(fields) == 1 else base.with_stem(f"{base.stem}_{index:03d}")
        report = holes.detect(field)
        if after is None:
            plots.quicklook(field, report, path=path)
        else:
            plots.before_after(field, after, report=report, path=path)
        print(path)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from radinfill.model import baselines
    from radinfill.train import evaluate

    names = args.method or baselines.list_methods()
    methods = {name: _method(name) for name in names}
    print(evaluate.run(args.data, methods, Path(args.out)))
    print(f"\nscores.csv, scores.json, scores.png and example panels in {args.out}")
    return 0


def _method(spec: str) -> Callable:
    """A baseline by name, or a model as ``checkpoint:PATH`` (torch is loaded only then)."""
    if spec.startswith("checkpoint:"):
        from radinfill.model.engine import method_from_spec

        return method_from_spec(spec)
    from radinfill.model import baselines

    return baselines.get_method(spec)


def _infill(args: argparse.Namespace) -> int:
    from radinfill.model import baselines, files
    from radinfill.model.features import DEFAULT_WINDOW

    if args.checkpoint:
        from radinfill.model.engine import InfillEngine

        engine = InfillEngine.from_checkpoint(args.checkpoint)
        method, provenance = engine.infill, engine.provenance
        window, interval = engine.window, engine.interval_minutes
    else:
        method = baselines.get_method(args.method)
        provenance = {"infill_method": args.method.lower()}
        window, interval = DEFAULT_WINDOW, None
    window = window if args.window is None else args.window
    if window < 1:
        raise ValueError(f"--window must be >= 1, got {window}")
    names = [Path(path).name for path in args.inputs]
    if clash := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"inputs share file names, outputs would collide: {', '.join(clash)}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for path, field, frames in files.windows(args.inputs, window, interval):
        print(files.write_infilled(path, field, frames, method, out, provenance))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from radinfill import demo

    return demo.run(data=args.data, out=Path(args.out), quicklooks=args.quicklooks)


def _synth(args: argparse.Namespace) -> int:
    from datetime import datetime

    from radinfill import stream
    from radinfill.radolan.grids import parse_size

    try:
        start = datetime.fromisoformat(args.start)
    except ValueError:
        raise ValueError(f"--start must be an ISO 8601 time, got {args.start!r}") from None
    manifest = stream.write_stream(
        Path(args.out),
        product=args.product,
        grid=parse_size(args.grid),
        steps=args.steps,
        start=start,
        seed=args.seed,
        preset=args.preset,
        outages=args.outages,
    )
    for step in manifest.steps:
        failed = ",".join(sorted(step.failed_sites)) or "-"
        print(f"{step.path}  failed radars: {failed}  hole px: {step.hole_pixels}")
    print(f"truth: {manifest.truth}  manifest: {manifest.manifest}")
    return 0


def _read(path: str):
    from radinfill import radolan

    return radolan.read(path)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="radinfill",
        description="Infill radar-failure holes in DWD RADOLAN composites.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the main job on the sample data and print a hole report",
        description="Decode RADOLAN files, detect radar-failure holes, write CF-netCDF and "
        "quicklooks, and print a hole report.",
    )
    demo.add_argument(
        "--data",
        help="directory of RADOLAN files (default: ../shared/data/radolan when present)",
    )
    demo.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    demo.add_argument(
        "--quicklooks", type=int, default=6, help="how many quicklook PNGs to draw (default: 6)"
    )
    demo.set_defaults(run=_demo)

    inspect = commands.add_parser(
        "inspect",
        help="print header, grid, flags and the hole report of a file",
        description="Print header, grid, flag counts and the radar-failure hole report of every "
        "product in FILE (plain, gz, bz2, tar or ODIM-HDF5).",
    )
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(run=_inspect)

    quicklook = commands.add_parser(
        "quicklook",
        help="draw a north-up map of a file with its holes outlined",
        description="Draw a PNG map of FILE: values, failure holes outlined, radar sites and "
        "coverage circles. With --after, draw before/after panels of an input and its infill.",
    )
    quicklook.add_argument("file", metavar="FILE")
    quicklook.add_argument("-o", "--output", help="PNG path (default: FILE's name + .png here)")
    quicklook.add_argument(
        "--after", metavar="FILE", help="infilled output for before/after panels"
    )
    quicklook.set_defaults(run=_quicklook)

    evaluate = commands.add_parser(
        "evaluate",
        help="score infill methods on sequences with known truth",
        description="Cut a persisting outage into sequences with known truth, infill it with each "
        "method as it would run live, and print hole-only scores (mm/h). Writes scores.csv, "
        "scores.json, a bar chart and example panels.",
    )
    evaluate.add_argument(
        "--method",
        action="append",
        metavar="NAME",
        help="baseline name or checkpoint:PATH of a model (repeatable; default: every baseline)",
    )
    evaluate.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SPEC",
        help="directory of a consecutive RADOLAN sequence, or synth:PRESET[:seed=N][:grid=RxC]"
        "[:steps=N][:interval=MIN][:duration=N][:radius=KM] (repeatable)",
    )
    evaluate.add_argument("--out", default="out/evaluate", help="output directory")
    evaluate.set_defaults(run=_evaluate)

    infill = commands.add_parser(
        "infill",
        help="fill radar-failure holes of RADOLAN files with a model or a baseline",
        description="Read RADOLAN precipitation files, order them by nominal time per product, "
        "and fill the radar-failure holes of each with the earlier files as context. Writes per "
        "input the same-format RADOLAN file of the same name to DIR (infilled pixels lose the "
        "no-data flag; files without holes are copied byte for byte) and a CF-netCDF with the "
        "infill_mask and provenance.",
    )
    infill.add_argument("inputs", nargs="+", metavar="IN", help="RADOLAN files (one product each)")
    source = infill.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="PATH", help="model checkpoint directory")
    source.add_argument("--method", metavar="NAME", help="classical method, e.g. advection")
    infill.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    infill.add_argument(
        "--window",
        type=int,
        metavar="N",
        help="frames of context incl. the current one (default: the checkpoint's, else 6)",
    )
    infill.set_defaults(run=_infill)

    synth = commands.add_parser(
        "synth",
        help="write a synthetic RADOLAN stream with radar outages and its truth",
        description="Write STEPS synthetic RADOLAN binary products named and laid out like "
        "DWD's, with radars failing (dropped from the header MS list, their discs no-data), "
        "plus truth.nc (the products without outage holes, their holes as infill_mask) and "
        "manifest.json.",
    )
    synth.add_argument(
        "--product", default="RY", help="RY, RZ, YW, RX (5 min) or RW, RH (hourly); default RY"
    )
    synth.add_argument(
        "--grid",
        default="900x900",
        help="ROWSxCOLS: a RADOLAN grid or a crop of the national grid (default: 900x900)",
    )
    synth.add_argument("--steps", type=int, required=True, help="number of products to write")
    synth.add_argument("--out", required=True, help="output directory (created if missing)")
    synth.add_argument(
        "--outages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="let radars fail (default: on)",
    )
    synth.add_argument("--preset", default="mixed", help="rain preset (default: mixed)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument(
        "--start",
        default="2025-06-01T12:00",
        help="nominal time of the first product, ISO 8601, UTC unless an offset is given "
        "(default: 2025-06-01T12:00)",
    )
    synth.set_defaults(run=_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (RadolanError, ValueError, OSError) as err:
        print(f"radinfill {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
