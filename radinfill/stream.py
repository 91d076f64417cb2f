"""Write a synthetic RADOLAN stream: real products with radar outages, and their truth.

The service, the tests and the benchmarks need what DWD sends, with known answers: one RADOLAN
binary (or, as DWD sends since December 2025, ODIM-HDF5) file per time step, named and laid out
like DWD's, whose header ``MS`` list (ODIM: ``how/nodes``) lacks the radars that are down and
whose no-data pixels are exactly what a composite without those radars shows.
:func:`write_stream` makes such a stream from :mod:`radinfill.synth` rain and outages and
writes next to it the *truth*: the same products without outage holes, as one CF-netCDF file
whose ``infill_mask`` marks the holes of each step, so an infill can be scored against it. A
``manifest.json`` lists the files in order with their nominal times, failed radars and hole
sizes.

A step's product has no data (flag 0x2000, or 250 for RX) outside the coverage discs of its
listed radars and inside the masks of the outages active at that step; every other pixel holds
the synthetic value quantised by the encoder to the product precision. Coverage uses the radius
:func:`radinfill.holes.detect` applies to the same header (150 km; 128 km for RADKLIM ``YW``), so
the detector sees exactly the holes the stream made.

The holes of a step (its ``infill_mask``, and what :func:`radinfill.holes.detect` reports as
failure pixels) are its no-data pixels inside the nominal coverage: the outage masks, plus the
part of the failed radars' discs that no listed radar covers. The second part is not always
inside the first: when neighbouring radars fail together, their ``exclusive`` outage masks
(each disc minus all *other* discs) leave out the overlap of the failed discs, which is no-data
all the same.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import numpy as np

from radinfill import atomic, dataset, holes, netcdf, radolan, synth
from radinfill.radolan import Field, Grid, Header, build_header, grid_for, hdf5
from radinfill.radolan.sites import OPERATIONAL

#: File formats a stream is written in: RADOLAN binary, or ODIM-HDF5 (DWD's format since 2025-12).
FORMATS = ("binary", "odim")
TRUTH_NAME = "truth.nc"
MANIFEST_NAME = "manifest.json"
DEFAULT_NAME_PATTERN = "raa01-{product_lower}_10000-{time:%y%m%d%H%M}-dwd---bin"
#: The operational radars in the order DWD's RADOLAN software lists them in ``MS`` (RW/RY 2018+).
DWD_SITE_ORDER = (
    "asb", "boo", "ros", "hnr", "umd", "pro", "ess", "fld", "drs",
    "neu", "nhb", "oft", "eis", "tur", "isn", "fbg", "mem",
)  # fmt: skip
#: Marshall-Palmer Z = A R**B (Z in mm⁶/m³, R in mm/h) for the reflectivity product RX.
MARSHALL_PALMER = (200.0, 1.6)
#: Reflectivity (dBZ) below which RX writes "no echo" (-32.5 dBZ, raw 0), as DWD's RX does.
NO_ECHO_BELOW_DBZ = 5.0
NO_ECHO_DBZ = -32.5


@dataclass(frozen=True)
class ProductSpec:
    """How a product of the stream is written.

    Attributes
    ----------
    interval_minutes
        Accumulation interval (``INT``) and time step of the stream.
    precision_exponent
        ``PR``: one count is 10**exponent of the unit (mm per interval; dBZ for RX).
    extra
        Further header tokens with their value text as DWD writes them for this product.
    """

    interval_minutes: int
    precision_exponent: int
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


#: Products :func:`write_stream` writes, with the header facts of DWD's own files.
PRODUCTS: Mapping[str, ProductSpec] = MappingProxyType(
    {
        "RY": ProductSpec(5, -2),
        "RZ": ProductSpec(5, -2),
        "YW": ProductSpec(5, -2, MappingProxyType({"U": "0", "MF": " 00000000", "VR": "2017.002"})),
        "RX": ProductSpec(5, 0),
        "RW": ProductSpec(60, -1, MappingProxyType({"MF": " 00000001"})),
        "RH": ProductSpec(60, -1),
    }
)


@dataclass(frozen=True)
class StreamStep:
    """One written product: file, nominal time (UTC), radars down, failure-hole pixels."""

    path: Path
    time: datetime
    failed_sites: frozenset[str]
    hole_pixels: int


@dataclass(frozen=True)
class StreamManifest:
    """What :func:`write_stream` wrote.

    Attributes
    ----------
    out_dir
        Directory of the stream.
    product
        Product id.
    shape
        Grid (rows, cols).
    interval_minutes
        Time step between products (minutes).
    preset, seed
        Rain preset and seed of :func:`radinfill.synth.sequence` (the seed also drives the
        outages).
    steps
        The products in time order.
    truth
        CF-netCDF truth: the products without outage holes, with ``infill_mask`` (time, y, x)
        = the holes of each step (no-data inside the nominal coverage).
    manifest
        ``manifest.json``: these facts and the outage events, for tools outside Python.
    """

    out_dir: Path
    product: str
    shape: tuple[int, int]
    interval_minutes: int
    preset: str
    seed: int
    steps: tuple[StreamStep, ...]
    truth: Path
    manifest: Path

    @property
    def files(self) -> tuple[Path, ...]:
        """The product files in time order."""
        return tuple(step.path for step in self.steps)


def write_stream(
    out_dir: str | os.PathLike[str],
    *,
    product: str = "RY",
    grid: tuple[int, int] = (900, 900),
    steps: int,
    start: datetime,
    seed: int,
    preset: str = "mixed",
    outages: bool = True,
    outage_options: Mapping[str, object] | None = None,
    name_pattern: str | None = None,
    file_format: str = "binary",
) -> StreamManifest:
    """Write ``steps`` synthetic RADOLAN products with radar outages, their truth and a manifest.

    Parameters
    ----------
    out_dir
        Directory to write into (created if missing). Every file is written atomically.
    product
        Binary: a key of :data:`PRODUCTS`: 5-minute RY, RZ, YW (mm, 0.01 mm steps) and RX (dBZ
        from Marshall-Palmer, 0.5 dBZ steps), hourly RW and RH (mm, 0.1 mm steps). ODIM: a key
        of :data:`radinfill.radolan.hdf5.LAYOUTS` (hourly RW, 5-minute RV).
    grid
        (rows, cols): a RADOLAN grid or a centred crop of the national grid (see
        :func:`radinfill.radolan.grid_for`); small crops make fast tests. ODIM products are on
        the WGS84 grids DWD uses for them (1200x1100 is DE1200).
    steps
        Number of products, at least 1.
    start
        Nominal time of the first product (end of its interval); product ``i`` is at
        ``start + i * interval``. Naive times are taken as UTC.
    seed
        Seed of the rain sequence and of the outage events: equal arguments give equal files.
    preset
        Rain preset, one of :data:`radinfill.synth.PRESETS`.
    outages
        Whether radars fail; without, every product lists the full network.
    outage_options
        Keyword arguments for :func:`radinfill.synth.outage_events` (``kinds``, ``p_fail``,
        ``mean_duration_steps``, ``sites`` ...); ``radius_km`` defaults to the product's
        coverage radius.
    name_pattern
        File name, formatted with ``product``, ``product_lower``, ``time`` (UTC datetime),
        ``step`` and ``lead`` (0); the default is DWD's name for the format:
        ``raa01-ry_10000-2506011200-dwd---bin``, ``raa01-rw_10000-2506011200-dwd---bin.hdf5``,
        ``composite_rv_20250601_1200_000-hd5``.
    file_format
        ``binary`` (RADOLAN binary products) or ``odim`` (ODIM-HDF5 in DWD's layout, as DWD
        sends them since December 2025).

    Returns
    -------
    StreamManifest
        The files in time order with their facts, and where the truth and manifest went.

    Raises
    ------
    ValueError
        For an unknown format, product (of that format) or preset, ``steps`` < 1, or a name
        pattern that does not give distinct plain file names.
    RadolanError
        If ``grid`` is not a RADOLAN grid or a crop of the national grid.
    """
    spec = _spec(product, file_format)
    if steps < 1:
        raise ValueError(f"a stream needs at least one step, got steps={steps}")
    rows, cols = grid
    area = grid_for(rows, cols, "wgs84" if file_format == "odim" else "sphere")
    interval = timedelta(minutes=spec.interval_minutes)
    first = start if start.tzinfo else start.replace(tzinfo=UTC)
    times = [(first + step * interval).astimezone(UTC) for step in range(steps)]
    out = Path(out_dir)
    pattern = name_pattern or (
        hdf5.LAYOUTS[product].name if file_format == "odim" else DEFAULT_NAME_PATTERN
    )
    paths = [out / name for name in _names(pattern, product, times)]

    network = tuple(sorted(OPERATIONAL, key=DWD_SITE_ORDER.index))
    radius = holes.coverage_radius_km(_header(product, spec, times[0], area, network))
    rain = synth.sequence(
        area, steps, interval_minutes=spec.interval_minutes, preset=preset, seed=seed
    )
    events = (
        synth.outage_events(area, steps, seed, **{"radius_km": radius, **(outage_options or {})})
        if outages
        else []
    )
    nominal = holes.coverage(area, network, radius)
    values = reflectivity(rain, spec.interval_minutes) if product == "RX" else rain

    out.mkdir(parents=True, exist_ok=True)
    written: list[StreamStep] = []
    truth: list[Field] = []
    masks = np.zeros((steps, rows, cols), dtype=bool)
    for step, (time, path) in enumerate(zip(times, paths, strict=True)):
        failed = synth.failed_sites(events, step)
        listed = tuple(s for s in network if s not in failed)
        nodata = ~holes.coverage(area, listed, radius) | _active_mask(events, step, area.shape)
        masks[step] = nodata & nominal
        made = _product(file_format, product, spec, time, area, listed, values[step], nodata)
        radolan.write(made, path)
        truth.append(
            _product(file_format, product, spec, time, area, network, values[step], ~nominal, path)
        )
        written.append(StreamStep(path, made.time, failed, int(masks[step].sum())))

    manifest = StreamManifest(
        out_dir=out,
        product=product,
        shape=(rows, cols),
        interval_minutes=spec.interval_minutes,
        preset=preset,
        seed=seed,
        steps=tuple(written),
        truth=out / TRUTH_NAME,
        manifest=out / MANIFEST_NAME,
    )
    _write_truth(manifest, truth, masks, outages)
    atomic.write_bytes(manifest.manifest, _manifest_json(manifest, events).encode("utf-8"))
    return manifest


def reflectivity(rain: np.ndarray, interval_minutes: int) -> np.ndarray:
    """Radar reflectivity (dBZ) of rain amounts by the Marshall-Palmer Z-R relation.

    Parameters
    ----------
    rain
        float, any shape: rain amount per interval (mm), NaN passes through.
    interval_minutes
        Length of the interval (minutes), to turn amounts into rates (mm/h).

    Returns
    -------
    numpy.ndarray
        float32 like ``rain``: 10 log10(200 R**1.6) with R in mm/h; :data:`NO_ECHO_DBZ` where
        that is below :data:`NO_ECHO_BELOW_DBZ` (about 0.075 mm/h), as RX writes weak or no
        echo.
    """
    a, b = MARSHALL_PALMER
    rate = np.asarray(rain, dtype=np.float64) * (60.0 / interval_minutes)
    with np.errstate(divide="ignore", invalid="ignore"):
        dbz = 10.0 * np.log10(a * rate**b)
    dbz[~(dbz >= NO_ECHO_BELOW_DBZ) & ~np.isnan(rate)] = NO_ECHO_DBZ
    return dbz.astype(np.float32)


def _spec(product: str, file_format: str) -> ProductSpec:
    """The product's header facts; for ODIM those of its layout (its interval and precision)."""
    if file_format not in FORMATS:
        raise ValueError(f"unknown format {file_format!r}; supported: {', '.join(FORMATS)}")
    known = hdf5.LAYOUTS if file_format == "odim" else PRODUCTS
    if product not in known:
        raise ValueError(
            f"cannot write a synthetic {file_format} stream of product {product!r}; supported: "
            f"{', '.join(known)}"
        )
    if file_format == "binary":
        return PRODUCTS[product]
    layout = hdf5.LAYOUTS[product]
    return ProductSpec(layout.interval_minutes, round(math.log10(layout.gain)))


def _names(pattern: str, product: str, times: Sequence[datetime]) -> list[str]:
    """File names of the steps; distinct plain names, not the truth's or manifest's."""
    names = [
        pattern.format(product=product, product_lower=product.lower(), time=time, step=step, lead=0)
        for step, time in enumerate(times)
    ]
    reserved = {TRUTH_NAME, MANIFEST_NAME, "", ".", ".."}
    if len(set(names)) != len(names) or reserved & set(names) or any(os.sep in n for n in names):
        raise ValueError(
            f"name pattern {pattern!r} must give a distinct plain file name per step other than "
            f"{TRUTH_NAME} and {MANIFEST_NAME}; got e.g. {names[:3]}"
        )
    return names


def _header(
    product: str, spec: ProductSpec, time: datetime, grid: Grid, sites: Sequence[str]
) -> Header:
    return build_header(
        product,
        time,
        grid.shape,
        precision_exponent=spec.precision_exponent,
        interval_minutes=spec.interval_minutes,
        sites=sites,
        extra=spec.extra,
    )


def _product(
    file_format: str,
    product: str,
    spec: ProductSpec,
    time: datetime,
    grid: Grid,
    sites: Sequence[str],
    values: np.ndarray,
    nodata: np.ndarray,
    path: Path | None = None,
) -> Field:
    """One product as the service reads it: encoded in ``file_format``, decoded again (so values
    are quantised to the product's precision, and an ODIM field keeps its file)."""
    if file_format == "odim":
        data = hdf5.build(product, time, values, nodata, sites)
    else:
        header = _header(product, spec, time, grid, sites)
        data = radolan.encode(_field(header, values, nodata, grid))
    return radolan.decode(data, source=str(path) if path else "<synth>")


def _active_mask(events: Sequence[synth.Outage], step: int, shape: tuple[int, int]) -> np.ndarray:
    """bool (rows, cols): union of the masks of the outages active at ``step``."""
    mask = np.zeros(shape, dtype=bool)
    for event in events:
        if event.active(step):
            mask |= event.mask
    return mask


def _field(
    header: Header, values: np.ndarray, nodata: np.ndarray, grid: Grid, source: str = "<synth>"
) -> Field:
    """A product field with ``values`` (float32, NaN where ``nodata``) and no other flags."""
    planes = np.where(nodata, np.float32(np.nan), values).astype(np.float32)
    clear = np.zeros(grid.shape, dtype=bool)
    return Field(header.product, header.time, planes, nodata, clear, clear, header, grid, source)


def _write_truth(
    manifest: StreamManifest, fields: Sequence[Field], masks: np.ndarray, outages: bool
) -> None:
    """The complete products as CF-netCDF, ``infill_mask`` = the holes, with provenance."""
    ds = dataset.to_dataset(fields)
    for key in ("institution", "attribution"):  # synthetic: not DWD's data
        ds.attrs.pop(key, None)
    rows, cols = manifest.shape
    provenance = {
        "title": f"Synthetic RADOLAN {manifest.product} truth (complete fields)",
        "source": "synthetic rain and radar outages from radinfill.synth",
        "comment": "the stream's products without outage holes; infill_mask marks the holes "
        "of each step: its no-data pixels inside the nominal coverage",
        "generator": "radinfill.stream.write_stream",
        "preset": manifest.preset,
        "seed": str(manifest.seed),
        "grid": f"{rows}x{cols}",
        "steps": str(len(manifest.steps)),
        "outages": str(outages).lower(),
    }
    netcdf.write(ds, manifest.truth, infill_mask=masks, provenance=provenance)


def _manifest_json(manifest: StreamManifest, events: Sequence[synth.Outage]) -> str:
    record = {
        "generator": "radinfill.stream.write_stream",
        "product": manifest.product,
        "grid": list(manifest.shape),
        "interval_minutes": manifest.interval_minutes,
        "preset": manifest.preset,
        "seed": manifest.seed,
        "truth": manifest.truth.name,
        "files": [
            {
                "name": step.path.name,
                "time": step.time.isoformat(),
                "failed_sites": sorted(step.failed_sites),
                "hole_pixels": step.hole_pixels,
            }
            for step in manifest.steps
        ],
        "outages": [
            {
                "kind": e.kind,
                "site": e.site,
                "start": e.start,
                "stop": e.stop,
                "pixels": int(e.mask.sum()),
            }
            for e in events
        ],
    }
    return json.dumps(record, indent=2) + "\n"
