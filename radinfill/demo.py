"""``radinfill demo``: the main job on sample data, as far as the service goes today.

Decodes every RADOLAN file under a data directory, detects radar-failure holes, writes one
CF-netCDF file per input and quicklooks of the largest outages, and prints a hole report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from radinfill import holes
from radinfill.radolan import Field, RadolanError, read

#: Where the sample data lives relative to a checkout (``../shared/data/radolan``).
_SAMPLE_DIR = Path("shared") / "data" / "radolan"


def default_data_dir() -> Path | None:
    """``../shared/data/radolan`` next to the working directory or to the checkout, if present."""
    checkout = Path(__file__).resolve().parents[1]
    for base in (Path.cwd().parent, checkout.parent):
        candidate = base / _SAMPLE_DIR
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class _Row:
    path: Path
    field: Field
    report: holes.HoleReport


def _files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if p.is_file() and not p.name.lower().endswith(".md"))


def run(data: str | Path | None, out: Path, quicklooks: int = 6) -> int:
    """Run the demo; returns the exit status."""
    from radinfill import dataset, netcdf, plots

    directory = Path(data) if data else default_data_dir()
    if directory is None or not directory.is_dir():
        raise FileNotFoundError(
            f"no RADOLAN data directory {directory or _SAMPLE_DIR}: pass --data DIR"
        )
    (out / "netcdf").mkdir(parents=True, exist_ok=True)
    (out / "quicklooks").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[_Row] = []
    skipped: list[str] = []
    files = _files(directory)
    print(f"decoding {len(files)} files from {directory}", flush=True)
    for number, path in enumerate(files, 1):
        try:
            fields = read(path)
        except RadolanError as err:
            skipped.append(str(err))
            continue
        netcdf.write(dataset.to_dataset(fields), out / "netcdf" / f"{path.name}.nc")
        rows.extend(_Row(path, f, holes.detect(f)) for f in fields)
        if number % 20 == 0:
            print(f"  {number}/{len(files)} files", flush=True)
    _print_report(rows, directory)
    worst = sorted(rows, key=lambda r: r.report.pixels, reverse=True)[:quicklooks]
    for row in worst:
        name = f"{row.field.product}_{row.field.time:%Y%m%d%H%M}_{row.path.name}.png"
        plots.quicklook(row.field, row.report, path=out / "quicklooks" / name)
    print(f"\nskipped {len(skipped)} unreadable file(s):")
    for line in skipped:
        print(f"  {line}")
    print(
        f"\n{len(rows)} products in {time.perf_counter() - started:.1f} s; "
        f"netCDF in {out / 'netcdf'}, {len(worst)} quicklooks in {out / 'quicklooks'}"
    )
    return 0


def _print_report(rows: list[_Row], directory: Path) -> None:
    columns = f"{'product':7} {'time (UTC)':16} {'grid':18} {'hole px':>8} {'% cov':>6}"
    print(f"\n{columns}  {'missing':12} file")
    for row in rows:
        field, report = row.field, row.report
        coverage = int(report.coverage.sum())
        share = 100.0 * report.pixels / coverage if coverage else float("nan")
        missing = ",".join(sorted(report.missing_radars)) or "-"
        print(
            f"{field.product:7} {field.time:%Y-%m-%d %H:%M} {field.grid.name:18} "
            f"{report.pixels:8d} {share:6.2f}  {missing:12} {row.path.relative_to(directory)}"
        )
