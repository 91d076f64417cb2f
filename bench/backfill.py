"""Benchmark ``radinfill backfill``: archive fields per second, one process and torchrun ranks.

Usage: ``python bench/backfill.py [--products 24] [--grid 900x900] [--model SPEC]
[--nproc 1,2] [--device cpu] [--baseline SPEC] [--archive SHARE]``

A synthetic RY archive of ``--products`` products (``bench/workload.py``): radars failing at
random (``radinfill synth``), or with ``--archive SHARE`` what a real archive holds: every
field with the small static holes of real composites, one radar's 150 km disc out in SHARE
of the fields (0.1: one in ten). It is backfilled by real ``radinfill backfill`` processes,
each into a fresh output tree:

* **model, N ranks**: ``torchrun --nproc-per-node N -m radinfill backfill`` (N = 1: a plain
  process) with ``--model``: the service's default (``baseline:advection_boundary``) unless
  given, e.g. the shipped network (``--model assets/model``);
* **baseline**: a classical method in one process (``--baseline``, default the service's
  ``advection_boundary``), the cost of everything but the network (decode, holes, window,
  RADOLAN + netCDF + sidecar with fsyncs). ``--nproc ""`` runs this one alone.

Throughput is files handled / wall time of the run's processing loop (the slowest rank's
summary; planning and model loading excluded, printed apart as start-up). Ratios are to the
one-process model run of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import workload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backfill(src: Path, out: Path, model: str, device: str, nproc: int) -> dict[str, float]:
    """Run one backfill; returns fields/s of the slowest rank and the start-up seconds."""
    args = ["-m", "radinfill", "backfill", str(src), str(out), "--model", model]
    args += ["--device", device]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        command = [*launcher, "--master-port", str(free_port()), *args]
    else:
        command = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"backfill failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob(".backfill/summary-*.json"))]
    handled = sum(sum(s["outcomes"].values()) for s in summaries)
    loop = max(s["seconds"] for s in summaries)
    return {"fields": handled, "fields_per_s": handled / loop, "loop_s": loop, "wall_s": wall}


#: Probability per radar and step that it fails in the default synthetic archive.
P_FAIL = 0.02
#: Radius (km) of the radar outages of the ``--archive`` workload.
RADIUS_KM = 150.0


def main() -> None:
    from radinfill.defaults import DEFAULT_MODEL
    from radinfill.radolan.grids import parse_size

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=24)
    parser.add_argument("--grid", default="900x900")
    parser.add_argument("--model", default=None, help="default: the service's default")
    parser.add_argument("--nproc", default="1,2", help="rank counts to run (comma-separated)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--baseline", default="baseline:advection_boundary")
    parser.add_argument(
        "--archive", type=float, default=None, metavar="SHARE", help="realistic archive"
    )
    args = parser.parse_args()
    model = args.model or DEFAULT_MODEL
    grid = parse_size(args.grid)
    with tempfile.TemporaryDirectory(prefix="radinfill-bench-") as tmp:
        root = Path(tmp)
        if args.archive is None:
            files = workload.synthetic(root / "made", grid, args.products, P_FAIL)
        else:
            made = root / "made"
            files = workload.archive(
                made, grid, args.products, radius_km=RADIUS_KM, outage_share=args.archive
            )
        (root / "src").mkdir()
        for path in files:  # the products alone, as an archive holds them
            path.rename(root / "src" / path.name)
        runs: list[tuple[str, dict[str, float]]] = []
        for nproc in (int(n) for n in args.nproc.split(",") if n):
            name = f"model, {nproc} rank{'s' if nproc > 1 else ''}"
            result = backfill(root / "src", root / f"m{nproc}", model, args.device, nproc)
            runs.append((name, result))
            print(f"measured {name}", file=sys.stderr, flush=True)
        base = backfill(root / "src", root / "base", args.baseline, args.device, 1)
        runs.append((f"{args.baseline}, 1 rank", base))
    reference = runs[0][1]["fields_per_s"]
    kind = f"archive, outage share {args.archive}" if args.archive is not None else "synthetic"
    print(f"\n{args.products} RY products ({kind}) on {args.grid}, model {model}, {args.device}")
    print(f"{'run':<36} {'fields':>6} {'fields/s':>9} {'ratio':>6} {'loop s':>7} {'wall s':>7}")
    for name, r in runs:
        print(
            f"{name:<36} {r['fields']:>6.0f} {r['fields_per_s']:>9.2f} "
            f"{r['fields_per_s'] / reference:>6.2f} {r['loop_s']:>7.1f} {r['wall_s']:>7.1f}"
        )
    print("\nstart-up (wall - loop) covers planning, model loading and verification per rank.")


if __name__ == "__main__":
    main()
