"""Benchmark workloads: product streams with the holes a benchmark asks for.

Shared by ``bench/service.py`` and ``bench/backfill.py``. Three kinds of stream:

* ``synth`` (the former default): a synthetic RY stream whose radars fail at random
  (``radinfill.synth.outage_events`` with ``p_fail``), often several at once;
* ``outage``: exactly one radar's ``radius_km`` disc missing in every field, nothing else
  (the one-outage case the latency target is stated for); from a synthetic stream, or from a
  real sequence when ``data`` is given (its files are read, never changed: the holes go into
  copies);
* ``archive``: what a real archive looks like: every field with the small static holes
  (beam blockages, blind discs) composites have, and one radar out in ``outage_share`` of
  the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from radinfill import atomic, holes, radolan, stream, synth
from radinfill.radolan import Field, grid_for

#: Nominal time of the first synthetic product.
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
#: Seed of the synthetic rain and outages: every run sees the same stream.
SEED = 11
#: Default failing radar of the one-outage stream: its 150 km disc lies inside both the
#: 900 x 900 and the 1100 x 900 grids (about 79 000 pixels in each).
OUTAGE_SITE = "oft"
#: Mean outage length (steps) far beyond any stream: a chain that starts down stays down.
FOREVER_STEPS = 1e9
#: Static holes of the archive stream: beam blockages and blind discs around every site,
#: each present in about this share of the fields (``synth`` draws them per site).
STATIC_SHARE = 0.999
#: Sites with a static hole in the archive stream (a handful, as in real composites).
STATIC_SITES = ("asb", "boo", "fld", "isn", "mem", "tur")


def synthetic(out: Path, grid: tuple[int, int], steps: int, p_fail: float) -> list[Path]:
    """A synthetic RY stream whose radars fail at random (``p_fail`` per radar and step)."""
    manifest = stream.write_stream(
        out, grid=grid, steps=steps, start=START, seed=SEED, outage_options={"p_fail": p_fail}
    )
    return list(manifest.files)


def one_outage(
    out: Path,
    grid: tuple[int, int],
    steps: int,
    *,
    radius_km: float,
    site: str = OUTAGE_SITE,
    data: Path | None = None,
) -> list[Path]:
    """Products with exactly ``site``'s ``radius_km`` disc missing in every field.

    Synthetic RY products on ``grid``, or the first ``steps`` files of the real sequence in
    ``data`` (its grid) with the disc cut out; every other pixel as it was.
    """
    if data is None:
        files = complete(out / "complete", grid, steps)
    else:
        files = sorted(p for p in data.iterdir() if p.name.startswith("raa01"))[:steps]
    disc = holes.coverage(radolan.read_one(files[0]).grid, [site], radius_km)
    return cut(files, [disc] * len(files), out)


def archive(
    out: Path, grid: tuple[int, int], steps: int, *, radius_km: float, outage_share: float
) -> list[Path]:
    """Products as a real archive holds them: small static holes in every field, and one
    radar's ``radius_km`` disc missing in ``outage_share`` of the fields (one outage, in the
    middle of the archive)."""
    files = complete(out / "complete", grid, steps)
    area = grid_for(*grid)
    static = synth.outages(
        area,
        1,
        SEED,
        kinds=("wedge", "blind"),
        p_fail=STATIC_SHARE,
        mean_duration_steps=FOREVER_STEPS,
        radius_km=radius_km,
        sites=STATIC_SITES,
    )[0]
    disc = holes.coverage(area, [OUTAGE_SITE], radius_km)
    down = round(outage_share * steps)
    first = (steps - down) // 2
    masks = [static | disc if first <= i < first + down else static for i in range(steps)]
    return cut(files, masks, out)


def complete(out: Path, grid: tuple[int, int], steps: int) -> list[Path]:
    """A synthetic RY stream without outages (only outside-coverage no-data)."""
    manifest = stream.write_stream(
        out, grid=grid, steps=steps, start=START, seed=SEED, outages=False
    )
    return list(manifest.files)


def cut(files: Sequence[Path], masks: Sequence[np.ndarray], out: Path) -> list[Path]:
    """Copies of ``files`` in ``out`` with the pixels of each ``masks`` entry made no-data.

    The header (radar list included) stays as it was: the hole is a failure inside the
    coverage, which is what the service detects and fills.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, mask in zip(files, masks, strict=True):
        field = radolan.read_one(path)
        holed = _holed(field, mask)
        target = out / path.name.removesuffix(".gz")
        atomic.write_bytes(target, radolan.encode(holed))
        written.append(target)
    return written


def _holed(field: Field, mask: np.ndarray) -> Field:
    """``field`` with no data where ``mask`` is set."""
    values = np.where(mask, np.float32(np.nan), field.values).astype(np.float32)
    return field.replace(values=values, nodata=field.nodata | mask)
