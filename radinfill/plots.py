"""Quicklook maps of RADOLAN fields and their radar-failure holes, written as PNG.

A quicklook is what an operator opens to judge one product at a glance: the field on its own
polar stereographic grid (north up, projection kilometres), a colour scale suited to the
quantity (stepped 1-2-5 mm classes for amounts, 5 dBZ classes for reflectivity), no-data in
grey (light grey outside the nominal coverage, darker grey inside it where a radar failed),
radar-failure holes outlined, the radar network with true-distance coverage circles (missing
radars red and dashed), a lon/lat graticule for orientation, and a title that names the
product, the time, the hole size and the missing radars.

Everything is drawn on a :class:`matplotlib.figure.Figure` with an explicit Agg canvas, so
no pyplot state, no global backend switch and no display are involved, and nothing is cached
between calls. matplotlib is imported inside the functions: ``import radinfill.plots`` is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radinfill.atomic import replacing
from radinfill.radolan.grids import Grid, project, unproject
from radinfill.radolan.sites import OPERATIONAL, SITES, canonical

if TYPE_CHECKING:
    from datetime import timedelta

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from radinfill.holes import HoleReport
    from radinfill.radolan import Field

#: Colours (RGB hex) of the map elements. The hole outline colour is used for nothing else,
#: so its presence in an image means a hole was outlined.
OUTSIDE_COLOUR = "#dcdcdc"
HOLE_COLOUR = "#8c8c8c"
OUTLINE_COLOUR = "#ff00ff"
MISSING_COLOUR = "#d00000"
_SITE_COLOUR = "#202020"
_GRATICULE_COLOUR = "#6a6a6a"
#: Anchors of the precipitation / reflectivity palette, weak to strong (light blue, blue,
#: green, yellow, orange, red, dark crimson); resampled to the number of classes.
_PALETTE = (
    "#d4f1fc", "#91d3f5", "#3f9de0", "#1f5cbf", "#2fa84a", "#9ccd1e",
    "#fff033", "#ffb01c", "#f2591c", "#d1151c", "#8a0b3e",
)  # fmt: skip
_OVER_COLOUR = "#4a0630"
#: 1-2-5 class limits in units of the product's precision (three decades).
_DECADE_STEPS = (1.0, 2.0, 5.0)
_DECADES = 3
#: Reflectivity classes (dBZ): 5 dBZ steps; weaker echoes are drawn white.
_DBZ_LEVELS = tuple(float(v) for v in range(5, 75, 5))
#: Relative tolerance that puts a value equal to a class limit (float32 of a decimal such as
#: 0.02 mm lies just below it) into the class that starts there.
_LIMIT_TOLERANCE = 1e-6
#: Figure geometry: width of one map panel in inches; dpi puts about one image pixel per grid
#: pixel on the map, within sensible bounds.
_PANEL_INCHES = 6.4
_DPI_RANGE = (100.0, 200.0)
#: Room (inches) beyond the map panels: colour bar (width), title and legend (height).
_MARGIN_INCHES = (1.6, 1.3)
#: Great-circle points per coverage circle and graticule spacing (degrees).
_CIRCLE_POINTS = 181
_GRATICULE_DEG = 2.0
#: Longest title line (characters) that fits over one panel at the title font size.
_TITLE_LINE_CHARS = 80


@dataclass(frozen=True)
class ColourScale:
    """How values map to colours for one product.

    Attributes
    ----------
    levels
        Class limits in the field's unit, ascending; values below the first are drawn white
        (dry, or echo too weak to matter), values above the last in the "over" colour.
    colours
        One RGB hex colour per class (``len(levels) - 1``).
    over
        Colour of values above the last limit.
    label
        Colour bar label with the unit, e.g. ``"mm per 60 min"`` or ``"dBZ"``.
    """

    levels: tuple[float, ...]
    colours: tuple[str, ...]
    over: str
    label: str


def colour_scale(field: Field) -> ColourScale:
    """The colour scale for ``field``, chosen from its encoding and unit.

    RVP6 products (RX, WX, EX) use fixed 5 dBZ classes from 5 to 70 dBZ. Precipitation amounts
    use 1-2-5 classes starting at the product's precision (``10**PR`` mm, the smallest
    non-zero value it can hold) over three decades, so the same product always gets the same
    scale and a dry pixel (0 mm) is white. Anything else (fractions, raw RVP6 counts) gets
    about ten evenly spaced classes with round limits over its finite data range.
    """
    if field.info.encoding == "rvp6":
        return _scale(_DBZ_LEVELS, "dBZ")
    if field.unit == "mm":
        precision = field.header.precision
        steps = np.outer(10.0 ** np.arange(_DECADES), _DECADE_STEPS).ravel()
        levels = np.round([*(precision * steps), precision * 10.0**_DECADES], 9)
        per = f" per {_interval_text(field.interval)}" if field.interval.total_seconds() else ""
        return _scale(levels, f"mm{per}")
    from matplotlib.ticker import MaxNLocator

    finite = field.values[np.isfinite(field.values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    levels = MaxNLocator(10).tick_values(low, high if high > low else low + 1.0)
    return _scale(levels, f"{field.info.long_name} [{field.unit}]")


def _scale(levels: Sequence[float], label: str) -> ColourScale:
    """A scale over ``levels`` with one colour per class, sampled evenly from the palette."""
    from matplotlib.colors import LinearSegmentedColormap, to_hex

    ramp = LinearSegmentedColormap.from_list("radinfill", _PALETTE)
    positions = np.linspace(0.0, 1.0, len(levels) - 1)
    colours = tuple(to_hex(ramp(p)) for p in positions)
    return ColourScale(tuple(float(v) for v in levels), colours, _OVER_COLOUR, label)


def _interval_text(interval: timedelta) -> str:
    """``60 min``, ``24 h`` or ``7 d``: the accumulation interval as a colour bar unit reads it."""
    minutes = int(interval.total_seconds() // 60)
    if minutes >= 2 * 24 * 60 and minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)} d"
    if minutes > 60 and minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def rgba(values: np.ndarray, scale: ColourScale, hole: np.ndarray | None) -> np.ndarray:
    """Colour every pixel: data by ``scale``, no-data grey (``hole`` pixels darker).

    Parameters
    ----------
    values
        float (rows, cols) in the field's unit; NaN is no-data.
    scale
        The colour scale of the product.
    hole
        bool (rows, cols): no-data pixels that are radar-failure holes, or None when unknown.

    Returns
    -------
    numpy.ndarray
        float32 (rows, cols, 4) RGBA in 0..1, row 0 south (draw with ``origin="lower"``).
        Values below the first limit are white, a value equal to a limit takes the class
        starting there, NaN outside ``hole`` is light grey.
    """
    from matplotlib.colors import to_rgba, to_rgba_array

    palette = to_rgba_array(["#ffffff", *scale.colours, scale.over]).astype(np.float32)
    finite = np.isfinite(values)
    limits = np.asarray(scale.levels)
    limits = limits - _LIMIT_TOLERANCE * np.abs(limits)
    classes = np.searchsorted(limits, np.where(finite, values, 0.0), "right")
    out = palette[classes]
    out[~finite] = to_rgba(OUTSIDE_COLOUR)
    if hole is not None:
        out[hole & ~finite] = to_rgba(HOLE_COLOUR)
    return out


def quicklook(
    field: Field, report: HoleReport | None = None, *, path: str | Path, title: str | None = None
) -> Path:
    """Draw one north-up map of ``field`` and write it to ``path`` as PNG, atomically.

    Parameters
    ----------
    field
        The decoded product.
    report
        Its hole report (:func:`radinfill.holes.detect`). With it, radar-failure holes are
        filled darker grey and outlined and the title gives their size; without it every
        no-data pixel is light grey.
    path
        Where the PNG goes; replaced atomically (temp file, fsync, rename).
    title
        First title line; default product, time (UTC), interval and forecast lead. The line
        with the hole size and the missing radars is always added.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    scale = colour_scale(field)
    hole = None if report is None else report.failure
    radars = network(field, report)
    fig = _figure(field.grid, panels=1)
    ax = fig.add_subplot(1, 1, 1)
    _draw_map(ax, field, rgba(field.values, scale, hole), hole, radars)
    _colour_bar(fig, [ax], scale)
    _legend(fig, report, radars, hole, "radar-failure hole")
    fig.suptitle(caption(field, report, title), fontsize=11)
    return _save(fig, path, field.grid)


def before_after(
    before: Field,
    after: Field,
    *,
    infill_mask: np.ndarray | None = None,
    report: HoleReport | None = None,
    path: str | Path,
    title: str | None = None,
    difference: bool = False,
) -> Path:
    """Draw the input with its holes next to the infilled output, on one colour scale.

    Parameters
    ----------
    before, after
        The input product and the infilled one, on the same grid.
    infill_mask
        bool (rows, cols): the infilled pixels, outlined in every panel. Default: the
        report's failure mask, or else the pixels that are no-data in ``before`` and valid in
        ``after``.
    report
        Hole report of ``before``: hole shading and the hole line of the title.
    path
        Where the PNG goes; replaced atomically.
    title
        First title line (default as :func:`quicklook`).
    difference
        Add a third panel with ``after - before`` on the mask where ``before`` has values
        (when ``before`` holds the truth of a synthetic outage, this is the infill error).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if before.grid.shape != after.grid.shape:
        raise ValueError(
            f"cannot compare {before.source} ({before.grid.shape[0]}x{before.grid.shape[1]}) "
            f"with {after.source} ({after.grid.shape[0]}x{after.grid.shape[1]}): grids differ"
        )
    if infill_mask is None:
        infill_mask = (
            report.failure
            if report is not None
            else np.isnan(before.values) & np.isfinite(after.values)
        )
    scale = colour_scale(before)
    hole = None if report is None else report.failure
    radars = network(before, report)
    panels = 3 if difference else 2
    fig = _figure(before.grid, panels)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    for ax, field, name in ((axes[0], before, "input"), (axes[1], after, "infilled")):
        _draw_map(ax, field, rgba(field.values, scale, hole), infill_mask, radars)
        ax.set_title(name, fontsize=10)
    _colour_bar(fig, axes[:2], scale)
    if difference:
        _difference_panel(fig, axes[2], before, after, infill_mask, scale.label, radars)
    _legend(fig, report, radars, infill_mask, f"infilled area ({int(infill_mask.sum()):,} px)")
    fig.suptitle(caption(before, report, title), fontsize=11)
    return _save(fig, path, before.grid)


def _difference_panel(
    fig: Figure,
    ax: Axes,
    before: Field,
    after: Field,
    mask: np.ndarray,
    label: str,
    radars: Network,
) -> None:
    """``after - before`` on ``mask`` in a symmetric blue-red scale; grey where undefined."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize, to_rgba

    diff = np.where(mask, after.values - before.values, np.nan)
    finite = np.isfinite(diff)
    limit = float(np.max(np.abs(diff[finite]), initial=0.0)) or 1.0
    mappable = ScalarMappable(Normalize(-limit, limit), "RdBu_r")
    image = mappable.to_rgba(np.where(finite, diff, 0.0)).astype(np.float32)
    image[~finite] = to_rgba(OUTSIDE_COLOUR)
    _draw_map(ax, before, image, mask, radars)
    if not finite.any():
        ax.set_title("after − before: no reference values on the mask", fontsize=10)
        return
    ax.set_title("after − before on the mask", fontsize=10)
    fig.colorbar(mappable, ax=ax, shrink=0.8, pad=0.02).set_label(f"difference ({label})")


def _figure(grid: Grid, panels: int) -> Figure:
    """An Agg-backed figure sized so a map panel has about one image pixel per grid pixel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    extra_width, extra_height = _MARGIN_INCHES
    fig = Figure(
        figsize=(
            _PANEL_INCHES * panels + extra_width,
            _PANEL_INCHES * grid.rows / grid.cols + extra_height,
        ),
        layout="constrained",
        facecolor="white",
    )
    FigureCanvasAgg(fig)
    return fig


def _dpi(grid: Grid) -> float:
    """Dots per inch that give one map panel about ``grid.cols`` pixels across."""
    low, high = _DPI_RANGE
    return min(max(grid.cols / _PANEL_INCHES, low), high)


def _extent_km(grid: Grid) -> tuple[float, float, float, float]:
    """(west, east, south, north) edges of the grid in projection kilometres."""
    x0, y0, res = grid.x0 / 1e3, grid.y0 / 1e3, grid.resolution / 1e3
    return (x0, x0 + grid.cols * res, y0, y0 + grid.rows * res)


def _draw_map(
    ax: Axes, field: Field, image: np.ndarray, outline: np.ndarray | None, radars: Network
) -> None:
    """One map panel: the RGBA image, outline of ``outline``, radars, graticule, attribution."""
    grid = field.grid
    extent = _extent_km(grid)
    ax.imshow(image, origin="lower", extent=extent, interpolation="nearest")
    if outline is not None and outline.any():
        ax.contour(
            grid.x / 1e3, grid.y / 1e3, outline_mask(outline).astype(np.float32), levels=[0.5],
            colors=OUTLINE_COLOUR, linewidths=1.3,
        )  # fmt: skip
    _draw_sites(ax, grid, radars)
    _graticule(ax, grid)
    source = Path(field.source).name
    ax.text(0.995, 0.004, f"Quelle: Deutscher Wetterdienst · {source}", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=6.5, color="#444444",
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1.5})  # fmt: skip
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.set_aspect("equal")


def outline_mask(mask: np.ndarray) -> np.ndarray:
    """The part of ``mask`` worth outlining: what survives a 3 x 3 morphological opening.

    Slivers one or two pixels wide, mostly along the coverage rim where DWD's composite
    boundary and the nominal discs disagree by a pixel, would otherwise draw the outline
    colour around the whole network and hide the real holes. They stay filled grey; only
    holes at least 3 pixels across are outlined.

    Parameters
    ----------
    mask
        bool (rows, cols).

    Returns
    -------
    numpy.ndarray
        bool (rows, cols), a subset of ``mask``.
    """
    from scipy import ndimage

    return ndimage.binary_opening(mask, structure=np.ones((3, 3), dtype=bool))


@dataclass(frozen=True)
class Network:
    """The radars a map shows.

    Attributes
    ----------
    present
        Known sites listed in the header ``MS`` (the operational network when ``MS`` is absent).
    absent
        Operational sites missing from ``MS``: drawn red and dashed, named in the title.
    radius_km
        Coverage circle radius (km), as the hole detection uses it.
    """

    present: tuple[str, ...]
    absent: tuple[str, ...]
    radius_km: float


def network(field: Field, report: HoleReport | None = None) -> Network:
    """The radars of ``field``: which reported, which are absent, and their coverage radius."""
    from radinfill import holes

    listed = {canonical(s) for s in field.header.sites} & SITES.keys()
    absent = set(OPERATIONAL) - listed if field.header.sites else set()
    radius = holes.coverage_radius_km(field.header) if report is None else report.radius_km
    return Network(
        tuple(sorted((listed | set(OPERATIONAL)) - absent)), tuple(sorted(absent)), radius
    )


def _draw_sites(ax: Axes, grid: Grid, radars: Network) -> None:
    """Radar markers with their ids and coverage circles; absent radars red and dashed."""
    from matplotlib import patheffects

    halo = [patheffects.withStroke(linewidth=2.2, foreground="white")]
    for ids, colour, style, marker in (
        (radars.present, _SITE_COLOUR, "-", "^"),
        (radars.absent, MISSING_COLOUR, "--", "x"),
    ):
        if not ids:
            continue
        xs, ys = coverage_circles(grid, ids, radars.radius_km)
        ax.plot(xs.T / 1e3, ys.T / 1e3, color=colour, linestyle=style, linewidth=0.8,
                alpha=0.9 if style == "--" else 0.45)  # fmt: skip
        x, y = project([SITES[s].lon for s in ids], [SITES[s].lat for s in ids], grid.ellipsoid)
        x, y = np.asarray(x) / 1e3, np.asarray(y) / 1e3
        ax.plot(x, y, linestyle="none", marker=marker, color=colour, markersize=4.5,
                markeredgewidth=1.4)  # fmt: skip
        for site, xi, yi in zip(ids, x, y, strict=True):
            ax.annotate(site, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7.5,
                        color=colour, fontweight="bold", path_effects=halo)  # fmt: skip


def coverage_circles(
    grid: Grid, site_ids: Sequence[str], radius_km: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points at great-circle distance ``radius_km`` around each site, in projection metres.

    The distance is measured on the grid's own figure of the earth (sphere or WGS84), so the
    circles show the true range of each radar rather than a projected-plane circle, which
    polar stereographic scale (about 5 % at 51 N) would distort.

    Returns
    -------
    tuple of numpy.ndarray
        x and y, each float64 (len(site_ids), 181); each row is one closed circle.
    """
    geod = grid.crs.get_geod()
    lon0 = np.repeat([SITES[s].lon for s in site_ids], _CIRCLE_POINTS)
    lat0 = np.repeat([SITES[s].lat for s in site_ids], _CIRCLE_POINTS)
    azimuth = np.tile(np.linspace(0.0, 360.0, _CIRCLE_POINTS), len(site_ids))
    lon, lat, _ = geod.fwd(lon0, lat0, azimuth, np.full(lon0.shape, radius_km * 1e3))
    x, y = project(lon, lat, grid.ellipsoid)
    shape = (len(site_ids), _CIRCLE_POINTS)
    return np.reshape(x, shape), np.reshape(y, shape)


def _graticule(ax: Axes, grid: Grid) -> None:
    """Meridians and parallels every 2 degrees, labelled where they cut the west/south edges."""
    west, east, south, north = (v * 1e3 for v in _extent_km(grid))
    lon_b, lat_b = _boundary_lonlat(grid)
    step = _GRATICULE_DEG
    lons = np.arange(np.floor(lon_b.min() / step) * step, lon_b.max() + step, step)
    lats = np.arange(np.floor(lat_b.min() / step) * step, lat_b.max() + step, step)
    lat_line = np.linspace(lat_b.min() - 1.0, lat_b.max() + 1.0, 200)
    lon_line = np.linspace(lon_b.min() - 1.0, lon_b.max() + 1.0, 200)
    style = {"color": _GRATICULE_COLOUR, "linewidth": 0.5, "linestyle": ":", "zorder": 1.5}
    xticks, xlabels, yticks, ylabels = [], [], [], []
    for lon in lons:
        x, y = project(np.full_like(lat_line, lon), lat_line, grid.ellipsoid)
        ax.plot(np.asarray(x) / 1e3, np.asarray(y) / 1e3, **style)
        crossing = float(np.interp(south, y, x))
        if west < crossing < east:
            xticks.append(crossing / 1e3)
            xlabels.append(_degrees(lon, "E", "W"))
    for lat in lats:
        x, y = project(lon_line, np.full_like(lon_line, lat), grid.ellipsoid)
        ax.plot(np.asarray(x) / 1e3, np.asarray(y) / 1e3, **style)
        crossing = float(np.interp(west, x, y))
        if south < crossing < north:
            yticks.append(crossing / 1e3)
            ylabels.append(_degrees(lat, "N", "S"))
    ax.set_xticks(xticks, xlabels, fontsize=8)
    ax.set_yticks(yticks, ylabels, fontsize=8)
    ax.tick_params(direction="out", length=3)


def _boundary_lonlat(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (degrees) of points along the grid's outer edge: the map's geographic range."""
    west, east, south, north = (v * 1e3 for v in _extent_km(grid))
    t = np.linspace(0.0, 1.0, 50)
    x = np.concatenate([west + (east - west) * t, west + (east - west) * t,
                        np.full(50, west), np.full(50, east)])  # fmt: skip
    y = np.concatenate([np.full(50, south), np.full(50, north),
                        south + (north - south) * t, south + (north - south) * t])  # fmt: skip
    lon, lat = unproject(x, y, grid.ellipsoid)
    return np.asarray(lon), np.asarray(lat)


def _degrees(value: float, positive: str, negative: str) -> str:
    return f"{abs(value):g}°{positive if value >= 0 else negative}"


def _colour_bar(fig: Figure, axes: Sequence[Axes], scale: ColourScale) -> None:
    """A stepped colour bar for ``scale`` next to ``axes``, labelled with the unit."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap([*scale.colours, scale.over])
    norm = BoundaryNorm(scale.levels, cmap.N, extend="max")
    bar = fig.colorbar(
        ScalarMappable(norm, cmap), ax=list(axes), shrink=0.8, pad=0.02, extend="max",
        ticks=scale.levels, spacing="uniform",
    )  # fmt: skip
    bar.set_label(scale.label)
    bar.ax.set_yticklabels([f"{v:g}" for v in scale.levels], fontsize=8)


def _legend(
    fig: Figure,
    report: HoleReport | None,
    radars: Network,
    outline: np.ndarray | None,
    outline_label: str,
) -> None:
    """Legend under the maps: grey no-data classes, the outline, coverage and absent radars."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    nodata = "no data (outside coverage)" if report is not None else "no data"
    handles = [Patch(facecolor=OUTSIDE_COLOUR, edgecolor="#999999", label=nodata)]
    if outline is not None and outline.any():
        handles.append(Patch(facecolor=HOLE_COLOUR, edgecolor=OUTLINE_COLOUR, label=outline_label))
    handles.append(
        Line2D([], [], color=_SITE_COLOUR, alpha=0.45, linewidth=0.8, marker="^", markersize=4,
               label=f"radar, {radars.radius_km:g} km coverage")
    )  # fmt: skip
    if radars.absent:
        handles.append(
            Line2D([], [], color=MISSING_COLOUR, linestyle="--", marker="x", linewidth=0.8,
                   label="radar missing from the composite")
        )  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False)  # fmt: skip


def caption(field: Field, report: HoleReport | None = None, title: str | None = None) -> str:
    """The title of a quicklook: what, when, how big the hole is and which radars are missing.

    The first line is ``title`` or product, nominal time (UTC), interval and forecast lead;
    then the hole size in pixels and as a share of the nominal coverage (with a report) and
    the operational radars absent from the header ``MS`` list. An absent radar whose disc its
    neighbours cover leaves no hole; it is marked ``no hole``, so the title agrees both with
    the red circles on the map and with ``report.missing_radars``.
    """
    radars = network(field, report)
    if title is None:
        parts = [field.product, field.time.strftime("%Y-%m-%d %H:%M UTC")]
        if field.interval.total_seconds() > 0:
            parts.append(f"({_interval_text(field.interval)})")
        if field.header.lead_minutes:
            parts.append(f"+{field.header.lead_minutes} min forecast")
        title = "  ".join(parts)
    missing = f"missing radars: {', '.join(radars.absent) or 'none'}"
    facts = [missing]
    if report is not None:
        covered = int(report.coverage.sum())
        share = f" ({100.0 * report.pixels / covered:.1f} % of coverage)" if covered else ""
        quiet = sorted(set(radars.absent) - report.missing_radars)
        if quiet:
            whom = "" if len(quiet) == len(radars.absent) else f": {', '.join(quiet)}"
            facts = [f"{missing} (no hole{whom})"]
        facts.insert(0, f"radar-failure hole {report.pixels:,} px{share}")
    separator = "\n" if sum(len(f) for f in facts) > _TITLE_LINE_CHARS else "  ·  "
    return f"{title}\n{separator.join(facts)}"


def _save(fig: Figure, path: str | Path, grid: Grid) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path."""
    target = Path(path)
    with replacing(target) as tmp:
        fig.savefig(tmp, format="png", dpi=_dpi(grid), facecolor="white")
    return target


def rain_rate_scale() -> ColourScale:
    """1-2-5 classes from 0.1 to 100 mm/h: the common scale of evaluation panels."""
    steps = np.outer(10.0 ** np.arange(-1, 2), _DECADE_STEPS).ravel()
    return _scale(np.round([*steps, 100.0], 9), "mm/h")


def infill_examples(
    truth: np.ndarray,
    hole: np.ndarray,
    outputs: dict[str, np.ndarray],
    *,
    grid: Grid,
    path: str | Path,
    title: str,
) -> Path:
    """Panels of one step: the truth, the input with the hole, and each method's infill.

    Parameters
    ----------
    truth
        float (rows, cols) in mm/h, NaN = no data.
    hole
        bool (rows, cols): the outage, drawn dark grey in the input and outlined everywhere.
    outputs
        Method name -> infilled field (rows, cols) in mm/h.
    """
    scale = rain_rate_scale()
    panels = {"truth": truth, "input (outage cut)": np.where(hole, np.nan, truth), **outputs}
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    fig = _figure(grid, columns)
    fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    extent = _extent_km(grid)
    for ax, (name, values) in zip(axes, panels.items(), strict=False):
        ax.imshow(rgba(values, scale, hole), origin="lower", extent=extent, interpolation="nearest")
        ax.contour(
            hole, levels=[0.5], colors=OUTLINE_COLOUR, linewidths=1.0, origin="lower", extent=extent
        )
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    _colour_bar(fig, axes[: len(panels)], scale)
    fig.suptitle(title)
    return _save(fig, path, grid)


def score_bars(
    results: dict[str, dict[str, float]],
    *,
    path: str | Path,
    title: str,
    names: Sequence[str] = ("rmse", "ame", "spatial_corr", "csi_1", "fss", "blur_ratio"),
) -> Path:
    """Bar chart: one panel per score, one bar per method (NaN scores are left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(results)
    fig = Figure(figsize=(3.2 * len(names), 3.6), layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        values = [results[m][name] for m in methods]
        ax.bar(range(len(methods)), np.nan_to_num(values), color=_PALETTE[1])
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
    fig.suptitle(title)
    target = Path(path)
    with replacing(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="white")
    return target
