"""The ``radinfill`` command line: one thin subcommand per job.

Every command parses its arguments and calls one library function; heavy imports (xarray,
matplotlib, torch) happen inside the commands so ``--help`` is instant. Errors are one
readable line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from radinfill.radolan import RadolanError

if TYPE_CHECKING:
    from radinfill.daemon.backfill import Item, Summary
    from radinfill.daemon.service_config import ServiceConfig

EXIT_ERROR = 1
#: Exit status of ``radinfill promote`` when the gate rejects the candidate.
EXIT_REJECTED = 3
#: Exit status for an invalid service configuration (systemd: do not restart in a loop).
EXIT_CONFIG = 2


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
    methods = {n: baselines.get_method(n) for n in names}
    paths = args.checkpoint or []
    models = evaluate.model_methods(paths, taken=methods) if paths else []
    specs = args.data or _held_out_specs(args.samples)
    result = evaluate.run(specs, methods, Path(args.out), models=models)
    print(result)
    print(f"\nreport.html, scores.md, scores.csv, scores.json and figures in {args.out}")
    return 0


def _held_out_specs(samples: str | None) -> list[str]:
    """The held-out data specs; the real sequence from ``samples`` or the default sample root."""
    from radinfill import defaults
    from radinfill.train import evaluate

    root = Path(samples) if samples else defaults.sample_data_dir()
    if root is None:
        print("note: sample data not found, held-out set is synthetic only", file=sys.stderr)
    return evaluate.held_out_specs(root)


def _promote(args: argparse.Namespace) -> int:
    from radinfill.train import promote

    decision = promote.promote(
        args.candidate,
        args.registry,
        specs=args.data or _held_out_specs(args.samples),
        gate=args.score or promote.DEFAULT_SCORES,
        tolerance=args.tolerance,
        floor_methods=args.floor,
        floor_margin=promote.FLOOR_MARGIN if args.floor_margin is None else args.floor_margin,
        force=args.force,
        export=args.export,
        out=Path(args.out) if args.out else None,
    )
    print(decision.table())
    if decision.report is not None:
        print(f"report: {decision.report / 'report.html'}")
    if decision.promoted and args.reload_pid:
        _reload(Path(args.reload_pid))
    return 0 if decision.promoted else EXIT_REJECTED


def _reload(pid_file: Path) -> None:
    """Send SIGHUP to the service whose pid is in ``pid_file``; warn (only) if that fails.

    The release is current already, and the service also notices the new ``current`` link
    on its own, so a failed signal does not make the promotion fail.
    """
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as err:
        print(f"radinfill promote: warning: no reload signal sent: {err}", file=sys.stderr)
    else:
        print(f"sent SIGHUP to {pid} ({pid_file})")


def _infill(args: argparse.Namespace) -> int:
    from radinfill.daemon import backfill

    paths = [Path(path) for path in args.inputs]
    items = backfill.plan_files(paths)  # every input exists before anything is written
    # the files themselves are the sources: OUT may lie beside or below them, never hold them
    summary = _fill(args, paths, lambda config: items, {})
    if summary is None:
        return EXIT_CONFIG
    # every input was asked for by name: one that was not infilled or passed through failed
    return 1 if summary.problems and not summary.interrupted else summary.status


def _serve(args: argparse.Namespace) -> int:
    # A SIGHUP (reload) before the service installs its handlers must not end the process: the
    # model is loaded fresh at start anyway, so an early one has nothing to reload.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from radinfill.daemon.service import Service, StartupError

    settings = _service_config(args.config)
    if settings is None:
        return EXIT_CONFIG
    try:
        return Service(settings).run()
    except StartupError as err:
        print(f"radinfill serve: {err}", file=sys.stderr)
        return EXIT_CONFIG


def _check_config(args: argparse.Namespace) -> int:
    from radinfill import config
    from radinfill.daemon import service_config
    from radinfill.train import retrain, schedule, train_config

    parsers = {
        "service": service_config.from_document,
        "train": train_config.from_document,
        "retrain": retrain.from_document,
    }
    try:  # the file is read once, every section is checked, every problem is printed
        parsed = config.check(config.read(args.config), parsers, required=("service",))
    except config.ConfigError as err:
        _print_problems(err)
        return EXIT_CONFIG
    for section, values in parsed["service"].effective().items():
        print(f"[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value)}")
        print()
    for section in ("train", "retrain"):
        if section in parsed:
            print(f"[{section}] section valid")
    cron = parsed["retrain"].schedule if "retrain" in parsed else None
    if cron is not None:
        print(f"next runs of schedule {cron!r} (UTC):")
        for when in schedule.next_runs(cron, datetime.now(UTC), 3):
            print(f"  {when:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def _service_config(path: str) -> ServiceConfig | None:
    """The validated service configuration, or None after printing every problem."""
    from radinfill import config
    from radinfill.daemon import service_config

    try:
        return service_config.load(path)
    except config.ConfigError as err:
        _print_problems(err)
        return None


def _demo(args: argparse.Namespace) -> int:
    from radinfill.daemon import demo
    from radinfill.radolan.grids import parse_size

    return demo.run(
        Path(args.out),
        steps=args.steps,
        grid=parse_size(args.grid),
        model=args.model,
        data=Path(args.data) if args.data else None,
        real=args.real,
    )


def _synth(args: argparse.Namespace) -> int:
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
        file_format=args.format,
    )
    for step in manifest.steps:
        failed = ",".join(sorted(step.failed_sites)) or "-"
        print(f"{step.path}  failed radars: {failed}  hole px: {step.hole_pixels}")
    print(f"truth: {manifest.truth}  manifest: {manifest.manifest}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from radinfill.train import job, supervise, train_config

    overrides = list(args.set or [])
    if args.checkpoint_dir is not None:  # relative to the working directory, not to the file
        args.checkpoint_dir = Path(args.checkpoint_dir).absolute()
    for key in ("variant", "epochs", "checkpoint_dir"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={_toml_literal(value)}")
    settings = train_config.load(args.config, overrides)  # a bad file fails here, not N times
    if args.max_restarts:
        if supervise.under_launcher():
            raise ValueError(
                "--max-restarts restarts a single process; under torchrun use torchrun "
                "--max-restarts, which restarts all workers together"
            )
        sets = [part for item in overrides for part in ("--set", item)]
        child = [sys.executable, "-m", "radinfill", "train", "--config", args.config, *sets]
        return supervise.supervise([*child, "--max-restarts", "0"], args.max_restarts)
    last = job.run(settings)
    print(f"last snapshot: {last}")
    if not settings.data.validation_fraction:
        return 0
    best = job.best_snapshot(last.parent)
    if best is None:
        print("best on validation: none (no snapshot passes the safety cases)")
    else:
        print(
            f"best on validation: {best[0]} (hole RMSE {best[1]:.4f} x advection_boundary; "
            "passes the safety cases)"
        )
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from radinfill.train import retrain

    return retrain.retrain(args.config).status


def _schedule(args: argparse.Namespace) -> int:
    from radinfill.train import schedule

    try:
        return schedule.run(args.config, run_now=args.run_now)
    except ValueError as err:  # an invalid [train] or [retrain], found before anything runs
        _print_problems(err)
        return EXIT_CONFIG


def _print_problems(err: ValueError) -> None:
    """Every problem of a configuration error on a line of its own, naming the file."""
    from radinfill.config import ConfigError

    if isinstance(err, ConfigError):
        for problem in err.problems:
            print(f"{err.source}: {problem}", file=sys.stderr)
    else:
        print(err, file=sys.stderr)


def _backfill(args: argparse.Namespace) -> int:
    from radinfill import defaults
    from radinfill.daemon import backfill

    changes: dict[str, object] = {}
    if args.model is not None:
        changes["model"] = args.model
    elif not args.causal:
        changes["model"] = defaults.ARCHIVE_MODEL
    if args.products is not None:
        changes["products"] = tuple(p for p in args.products.split(",") if p)
    if args.patterns is not None:
        changes["patterns"] = tuple(p for p in args.patterns.split(",") if p)
    src = Path(args.src)
    start, end = _utc_time(args.start, "--from"), _utc_time(args.end, "--to")
    summary = _fill(
        args,
        [src],
        lambda config: backfill.plan(src, config.patterns, config.products, start, end),
        changes,
    )
    return EXIT_CONFIG if summary is None else summary.status


def _fill(
    args: argparse.Namespace,
    sources: list[Path],
    planner: Callable[[ServiceConfig], list[Item]],
    changes: dict[str, object],
) -> Summary | None:
    """``infill`` and ``backfill``: the service pipeline over planned files into the output
    directory; its summary, or None for an invalid ``--config``.

    The model is ``--model``, else ``--config``'s, else the service default; ``--device`` and
    ``--window`` override. One line per input that was quarantined, ignored or failed goes to
    stderr.
    """
    from radinfill import defaults
    from radinfill.daemon import backfill

    base = None
    if args.config is not None:
        base = _service_config(args.config)
        if base is None:
            return None
    if args.model is not None:
        changes.setdefault("model", args.model)
    if base is None:
        changes.setdefault("model", defaults.DEFAULT_MODEL)
    if args.device is not None:
        changes["device"] = args.device
    if getattr(args, "window", None) is not None:
        if args.window < 1:
            raise ValueError(f"--window must be >= 1, got {args.window}")
        changes["window"] = args.window
    settings = backfill.settings(sources, Path(args.out), base, **changes)
    summary = backfill.run(settings, planner)
    for line in summary.problems:
        print(line, file=sys.stderr)
    outcomes = " ".join(f"{k}={v}" for k, v in sorted(summary.outcomes.items())) or "nothing"
    print(
        f"rank {summary.rank}/{summary.world}: {summary.planned} planned, {summary.skipped} "
        f"already done, {outcomes}, {summary.fields_per_s:.2f} fields/s; outputs in {args.out}"
        + (" (interrupted: run again to resume)" if summary.interrupted else "")
    )
    return summary


def _utc_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time as UTC (naive means UTC), or None."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} must be an ISO 8601 time, got {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _toml_literal(value: object) -> str:
    """``value`` as a TOML literal for :func:`radinfill.train.train_config.override`."""
    return str(value) if isinstance(value, int) else json.dumps(str(value))


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

    serve = commands.add_parser(
        "serve",
        help="run the near-real-time infill service",
        description="Watch the incoming directories, infill radar-failure holes in every new "
        "product and write gap-free RADOLAN, netCDF and JSON outputs. SIGTERM stops, SIGHUP "
        "reloads the model. Exit status 2 for an invalid configuration.",
    )
    serve.add_argument("--config", required=True, help="service TOML file")
    serve.set_defaults(run=_serve)

    fill = commands.add_parser(
        "backfill",
        help="infill a whole archive with the service's pipeline (resumable, torchrun-parallel)",
        description="Infill every product file under SRC (recursive) into OUT with the "
        "service's engine, window and outputs. Resumable: files handled by an earlier run "
        "are skipped. Under torchrun each rank takes a stretch of time. Exit status 0 when "
        "every file was handled, 1 when some failed (run again to retry them), 130 when "
        "interrupted, 2 for an invalid configuration.",
    )
    fill.add_argument("src", help="archive directory (read only)")
    fill.add_argument("out", help="output directory (outside SRC)")
    fill.add_argument("--from", dest="start", help="first nominal time, ISO 8601 (UTC)")
    fill.add_argument("--to", dest="end", help="last nominal time, ISO 8601 (UTC)")
    fill.add_argument("--config", help="service TOML file: model, window, products, naming")
    fill.add_argument(
        "--model",
        help="release/checkpoint or baseline:NAME (default: baseline:bidirectional_boundary, "
        "which also uses the frames after each outage; with --causal the service's model)",
    )
    fill.add_argument(
        "--causal",
        action="store_true",
        help="use the past only, as the live service does: the model of --config, else the "
        "service default",
    )
    fill.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    fill.add_argument("--products", help="comma-separated product ids (default: all amounts)")
    fill.add_argument("--patterns", help="comma-separated file-name globs (default: *)")
    fill.set_defaults(run=_backfill)

    check = commands.add_parser(
        "check-config",
        help="validate a service configuration and print the effective settings",
        description="Validate a radinfill TOML file; print every problem (exit status 2) or "
        "the effective configuration with defaults filled in.",
    )
    check.add_argument("config", help="service TOML file")
    check.set_defaults(run=_check_config)

    demo = commands.add_parser(
        "demo",
        help="run the infill service on a generated stream and print a summary",
        description="Start the service on a temporary tree with the default infill "
        "(baseline:advection_boundary, the measured best), feed it a "
        "synthetic RY stream with radar outages (plus the real YW sample sequence when the "
        "sample data is present), and print products, holes, latency percentiles and scores "
        "against the synthetic truth.",
    )
    demo.add_argument("--out", default="out/demo", help="working directory (replaced)")
    demo.add_argument("--steps", type=int, default=18, help="synthetic products (default 18)")
    demo.add_argument("--grid", default="900x900", help="synthetic grid ROWSxCOLS")
    demo.add_argument(
        "--model",
        help="model release/checkpoint or baseline:NAME (default: baseline:advection_boundary; "
        "assets/model runs the shipped network)",
    )
    demo.add_argument(
        "--data", help="sample data root (default: ../shared/data/radolan when present)"
    )
    demo.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also feed the real YW sample sequence when present (default: on)",
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
        "method as it would run live, and print hole-only scores (mm/h). Writes report.html "
        "(self-contained), scores.md, scores.csv, scores.json, a bar chart and example panels.",
    )
    evaluate.add_argument(
        "--method",
        action="append",
        metavar="NAME",
        help="classical method (repeatable; default: every one); models: --checkpoint",
    )
    evaluate.add_argument(
        "--checkpoint",
        action="append",
        metavar="PATH",
        help="model checkpoint, release or registry directory to score next to the methods, "
        "named by its variant (repeatable)",
    )
    evaluate.add_argument(
        "--data",
        action="append",
        metavar="SPEC",
        help="directory of a consecutive RADOLAN sequence, or synth:PRESET[:seed=N][:grid=RxC]"
        "[:steps=N][:interval=MIN][:duration=N][:radius=KM] (repeatable; default: the held-out "
        "set, synthetic stratiform, mixed and convective with seed 1000 and the real YW "
        "2017-08-16 sequence)",
    )
    evaluate.add_argument(
        "--samples",
        metavar="DIR",
        help="root of the DWD sample data for the held-out set (default: ../shared/data/radolan "
        "when present)",
    )
    evaluate.add_argument("--out", default="out/evaluate", help="output directory")
    evaluate.set_defaults(run=_evaluate)

    promote = commands.add_parser(
        "promote",
        help="publish a checkpoint as the current model release if it beats the classical "
        "floor and the current one",
        description="Champion/challenger gate with a classical floor: score CANDIDATE, the "
        "registry's current release and the classical causal methods on the same held-out "
        "cases; if the candidate's RMSE is at least --floor-margin below the strongest "
        "classical method's with CSI at 1 and 5 mm/h not lower, it invents no rain on the "
        "safety cases, and it is no worse than the current release on every gate score "
        "(within --tolerance), publish it as an immutable release with decision.json and "
        "scores.json and switch REGISTRY/current to it. A rejected candidate's decision goes "
        "to REGISTRY/rejected/. Exit status: 0 promoted, 3 rejected, 1 error.",
    )
    promote.add_argument("candidate", metavar="CANDIDATE", help="checkpoint directory")
    promote.add_argument("--registry", required=True, metavar="DIR", help="model registry")
    promote.add_argument(
        "--data",
        action="append",
        metavar="SPEC",
        help="evaluation data spec as for evaluate (repeatable; default: the held-out set)",
    )
    promote.add_argument(
        "--samples",
        metavar="DIR",
        help="root of the DWD sample data for the held-out set (default: ../shared/data/radolan "
        "when present)",
    )
    promote.add_argument(
        "--score",
        action="append",
        metavar="NAME",
        help="gate score that must not get worse, e.g. rmse or csi_1 (repeatable; default: "
        "rmse, ame, temporal_corr, spatial_corr, csi_1)",
    )
    promote.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        metavar="X",
        help="how much further from a score's ideal than the champion the candidate may be "
        "(absolute, score units; default 0)",
    )
    promote.add_argument(
        "--floor",
        action="append",
        metavar="METHOD",
        help="classical causal method of the floor the candidate must beat (repeatable; "
        "default: every causal baseline, the strongest on mean RMSE counts)",
    )
    promote.add_argument(
        "--floor-margin",
        type=float,
        metavar="F",
        help="how much lower than the floor's the candidate's RMSE must be (fraction; "
        "default 0.02); its CSI at 1 and 5 mm/h must not be lower",
    )
    promote.add_argument("--force", action="store_true", help="promote even if the gate fails")
    promote.add_argument(
        "--no-export",
        dest="export",
        action="store_false",
        help="publish without the ONNX graph that lets the service infill on the CPU without "
        "torch (saves the export's 15-30 s; the release then runs with torch)",
    )
    promote.add_argument(
        "--out", metavar="DIR", help="report directory (default: REGISTRY/reports/VERSION)"
    )
    promote.add_argument(
        "--reload-pid",
        metavar="FILE",
        help="after a promotion send SIGHUP to the pid in FILE (the running service)",
    )
    promote.set_defaults(run=_promote)

    infill = commands.add_parser(
        "infill",
        help="fill radar-failure holes of the given files with the service's pipeline",
        description="Infill the given product files into OUT exactly as the service and "
        "backfill do (same stages, window with the frames before a long outage, outputs): per "
        "input the same-format product (infilled pixels lose the no-data flag; files without "
        "holes are copied byte for byte), a CF-netCDF with the infill_mask and provenance, and "
        "a JSON sidecar. The past only (causal). Exit status 1 when an input was quarantined, "
        "ignored or failed (one line each on stderr).",
    )
    infill.add_argument("inputs", nargs="+", metavar="IN", help="product files")
    infill.add_argument("-o", "--output", dest="out", required=True, metavar="OUT")
    infill.add_argument(
        "--model",
        help="model registry, release or checkpoint directory, or baseline:NAME "
        "(default: baseline:advection_boundary)",
    )
    infill.add_argument("--config", help="service TOML file: model, window, products, naming")
    infill.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    infill.add_argument(
        "--window", type=int, metavar="N", help="frames of context incl. the current one"
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
    synth.add_argument(
        "--format",
        choices=("binary", "odim"),
        default="binary",
        help="RADOLAN binary, or ODIM-HDF5 as DWD sends RW and RV since 2025-12 (default: binary)",
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

    train = commands.add_parser(
        "train",
        help="train or resume an infill network (single process or under torchrun)",
        description="Train the network of the [train] section of a radinfill TOML file. "
        "Rerunning resumes from the latest snapshot; under torchrun every worker runs this "
        "command and they train together (DistributedDataParallel).",
    )
    train.add_argument("--config", required=True, help="TOML file with a [train] section")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a [train] key, e.g. epochs=2 or data.crop=96 (TOML values; repeatable)",
    )
    train.add_argument("--variant", help="network variant (overrides train.variant)")
    train.add_argument("--epochs", type=int, help="passes over the data (overrides train.epochs)")
    train.add_argument("--checkpoint-dir", help="snapshot directory (overrides the config)")
    train.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        metavar="N",
        help="run training in a child process and restart it up to N times after a crash, "
        "resuming from the latest snapshot (default 0; under torchrun use torchrun's own "
        "--max-restarts)",
    )
    train.set_defaults(run=_train)

    retrain = commands.add_parser(
        "retrain",
        help="one scheduled retraining run: train, then promote through the gate, then reload",
        description="Train a fresh run from the [train] section into [retrain] checkpoint_root/"
        "run-<UTC time>, put its last snapshot through the champion/challenger gate of the "
        "[retrain] registry and, after a promotion, reload the service ([retrain] reload). "
        "Exit status: 0 promoted, 3 rejected, 1 a step failed.",
    )
    retrain.add_argument(
        "--config", required=True, help="TOML file with [train] and [retrain] sections"
    )
    retrain.set_defaults(run=_retrain)

    schedule = commands.add_parser(
        "schedule",
        help="run retrain on the [retrain] schedule (for hosts without systemd timers)",
        description="Long-running scheduler: start `radinfill retrain --config FILE` in a child "
        "process at the fire times of the [retrain] schedule (five-field crontab, UTC), never "
        "two at once; a run more than [retrain] misfire_grace_s late is skipped. SIGTERM or "
        "SIGINT terminates a running child (SIGTERM, then waits) and exits 0. Exit status 2 "
        "for an invalid configuration.",
    )
    schedule.add_argument(
        "--config", required=True, help="TOML file with [train] and [retrain] sections"
    )
    schedule.add_argument(
        "--run-now", action="store_true", help="also run once right after start-up"
    )
    schedule.set_defaults(run=_schedule)
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
