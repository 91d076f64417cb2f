"""Find radar-failure holes in a RADOLAN field and attribute them to causes.

A composite's no-data pixels are of two kinds (DESIGN §4):

* **outside** the nominal coverage: beyond the range of every radar of the network. They are
  never infilled and stay no-data.
* **failure** holes inside the nominal coverage. Most come from a radar that is missing from
  the header ``MS`` list; the rest are sector (beam-blockage) wedges, small blind zones and other
  gaps inside the coverage of radars that did report.

The nominal coverage is the union of discs of radius :func:`coverage_radius_km` (150 km; 128 km
for RADKLIM reprocessed products and format versions ``VS`` <= 2) around the 17 operational
sites of :data:`~radinfill.radolan.sites.OPERATIONAL`, plus any other known site listed in ``MS``
(the historic Emden radar ``emd``). The *expected* coverage is the same union over the listed
sites only; nominal minus expected is the footprint of the missing radars. Distances are
great-circle distances between pixel centres (from :meth:`Grid.lonlat`) and sites on a sphere
of the mean Earth radius, not distances in the projection plane, whose scale is true only at
60 N (about 6 % too large over Germany).

Each failure pixel gets one cause code (see :data:`CAUSES`): :data:`RADAR` for pixels that no
listed radar's disc covers, and for the rest a class of the 8-connected component it belongs to,
decided in this order:

1. :data:`BLIND_ZONE` if the component is small (at most :data:`BLIND_MAX_KM2` of nominal pixel
   area), or lies entirely within :data:`BLIND_SITE_KM` of a listed site. Such holes are the
   permanent blanking and orographic masks (e.g. the ~130-145 px blob at 47.72 N 8.20 E, 23 km
   SE of Feldberg) and the near-range masks around a site; at this size shape is not a reliable
   clue, so no other test is made.
2. :data:`WEDGE` if, seen from a listed site whose disc holds at least :data:`WEDGE_MIN_INSIDE`
   of its pixels, it spans at most :data:`WEDGE_MAX_SPREAD_DEG` of azimuth, at least
   :data:`WEDGE_MIN_RADIAL_KM` of range, and its range extent is at least
   :data:`WEDGE_MIN_ELONGATION` times its arc width at the median range: a narrow sector
   pointing away from the radar, the signature of beam blockage or a sector blanked by the
   radar (e.g. the 4,500 px wedge NE of Rostock on 2014-08-10).
3. :data:`OTHER` otherwise.

Coverage masks are cached per (grid, radius, site set): the service calls :func:`detect` for
every product on the same grid, so after the first call only the per-field work remains (a few
milliseconds on 900 x 900).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from radinfill.radolan import Field, Grid
from radinfill.radolan.header import Header
from radinfill.radolan.sites import (
    OPERATIONAL,
    RADIUS_KM,
    RADIUS_REPROCESSED_KM,
    SITES,
    canonical,
)

#: Cause code of a pixel that is not a failure hole (valid, or outside the nominal coverage).
NONE = 0
#: Failure pixel that no listed radar's disc covers: the footprint of a missing radar.
RADAR = 1
#: Failure pixel in a narrow radial sector inside a listed radar's disc (beam blockage).
WEDGE = 2
#: Failure pixel in a small component or one close to a site (blanking, cone of silence).
BLIND_ZONE = 3
#: Any other failure pixel inside the coverage of listed radars.
OTHER = 4
#: Cause name -> code, the keys of :attr:`HoleReport.causes`.
CAUSES = MappingProxyType(
    {"radar": RADAR, "wedge": WEDGE, "blind_zone": BLIND_ZONE, "other": OTHER}
)

#: Mean Earth radius (km, IUGG) used for great-circle distances.
EARTH_RADIUS_KM = 6371.0088
#: A component of at most this nominal area (km²) is a blind zone.
BLIND_MAX_KM2 = 500.0
#: A component entirely within this distance (km) of a listed site is a blind zone.
BLIND_SITE_KM = 25.0
#: Share of a component's pixels that must lie in a site's disc to judge its shape from there.
WEDGE_MIN_INSIDE = 0.9
#: Largest azimuth spread (degrees) of a wedge, seen from its radar.
WEDGE_MAX_SPREAD_DEG = 45.0
#: Smallest range extent (km) of a wedge.
WEDGE_MIN_RADIAL_KM = 50.0
#: Smallest ratio of range extent to arc width (at the median range) of a wedge.
WEDGE_MIN_ELONGATION = 1.5
#: Smallest share of a component's pixels in a site's disc for the site to judge its cause
#: (half of :data:`WEDGE_MIN_INSIDE`: a margin for the sampling of :data:`_GEOMETRY_SAMPLE`).
_JUDGE_SHARE = WEDGE_MIN_INSIDE / 2
#: Most pixels of one component whose geometry is evaluated (a regular subsample beyond).
_GEOMETRY_SAMPLE = 20_000
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True, eq=False)
class HoleReport:
    """The no-data structure of one field.

    All masks are (rows, cols) like the field, row 0 = south. The cached ``coverage`` and
    ``expected`` masks are shared between reports and read-only.

    The failure mask and its size are computed at once (a few boolean operations: all an infill
    needs); the attribution to causes and missing radars, which labels the hole's components
    and measures their geometry, only when first asked for. The service publishes the drop-in
    product before it reads them, for its sidecar and metrics.

    Attributes
    ----------
    failure
        bool: radar-failure holes, no-data pixels inside the nominal coverage.
    outside
        bool: no-data pixels outside the nominal coverage (never infilled).
        ``failure | outside`` equals the field's no-data plane.
    pixels
        Number of failure pixels.
    coverage
        bool: nominal coverage (operational sites plus other known listed sites).
    expected
        bool: coverage of the known sites listed in ``MS``.
    radius_km
        Coverage radius used (km).
    unknown_sites
        Ids listed in ``MS`` that have no known coordinates (legacy ``ham``, ``bln`` ...). They
        contribute nothing to ``expected``, so when this is not empty their no-data footprint
        outside the known listed discs counts as :data:`RADAR`, and ``missing_radars`` may name
        an operational site that an unknown legacy radar stood in for (2009-2014 headers list
        ``ham``, ``han``, ``bln``, ``muc`` ... instead of today's ids): attribution is then
        less reliable.
    grid, listed
        The field's grid and the known sites that reported (the causes are judged from them).
    """

    failure: np.ndarray
    outside: np.ndarray
    pixels: int
    coverage: np.ndarray
    expected: np.ndarray
    radius_km: float
    unknown_sites: frozenset[str]
    grid: Grid
    listed: frozenset[str]

    @cached_property
    def radar(self) -> np.ndarray:
        """bool: failure pixels that no listed radar's disc covers (cause :data:`RADAR`)."""
        return self.failure & ~self.expected

    @cached_property
    def labels(self) -> np.ndarray:
        """uint8 cause code per pixel: :data:`NONE`, :data:`RADAR`, :data:`WEDGE`,
        :data:`BLIND_ZONE` or :data:`OTHER`."""
        labels = classify_components(
            self.failure & self.expected, self.grid, self.listed, self.radius_km
        )
        labels[self.radar] = RADAR
        return labels

    @cached_property
    def causes(self) -> dict[str, int]:
        """Failure pixel count per cause name (keys of :data:`CAUSES`); the counts sum to
        ``pixels``."""
        counts = np.bincount(self.labels.ravel(), minlength=len(CAUSES) + 1)
        return {name: int(counts[code]) for name, code in CAUSES.items()}

    @cached_property
    def missing_radars(self) -> frozenset[str]:
        """Operational sites absent from the header ``MS`` list whose disc contains failure
        pixels that no listed radar covers (cause :data:`RADAR`).

        A site whose disc is wholly covered by listed neighbours leaves no trace in the data
        and is not reported. The historic ``emd`` belongs to the nominal coverage only while
        listed (no dated network history is assumed), so it is never reported missing.
        """
        discs = _discs(self.grid, self.radius_km)
        missing = set(OPERATIONAL) - self.listed
        return frozenset(s for s in missing if (self.radar[discs[s].box] & discs[s].mask).any())


def coverage_radius_km(header: Header) -> float:
    """Nominal range (km) of the radars of a product.

    128 km for RADKLIM reprocessed products (header token ``VR``) and for format versions
    ``VS`` <= 2 (the 2009-2014 generation), 150 km otherwise (also when ``VS`` is absent).
    """
    reprocessed = "VR" in header or ("VS" in header and header.version <= 2)
    return RADIUS_REPROCESSED_KM if reprocessed else RADIUS_KM


def coverage(grid: Grid, site_ids: Iterable[str], radius_km: float) -> np.ndarray:
    """Union of discs of ``radius_km`` around known sites on ``grid``.

    Parameters
    ----------
    grid
        Target grid.
    site_ids
        Ids of :data:`~radinfill.radolan.sites.SITES` (canonical, lower-case).
    radius_km
        Disc radius (great-circle, km).

    Returns
    -------
    numpy.ndarray
        bool (rows, cols), read-only and cached per (grid, site set, radius).

    Raises
    ------
    ValueError
        If a site id has no known coordinates.
    """
    ids = frozenset(site_ids)
    if unknown := sorted(ids - SITES.keys()):
        raise ValueError(f"no coordinates for radar site(s) {unknown}; known: {sorted(SITES)}")
    return _coverage(grid, ids, float(radius_km))


def detect(field: Field) -> HoleReport:
    """Split a field's no-data into failure holes and outside-coverage pixels, with causes.

    Parameters
    ----------
    field
        A decoded product; its ``nodata`` plane, grid and header ``MS``/``VS``/``VR`` are
        used. Products whose no-data means "no precipitation" (RE) have no failure holes.
        Without an ``MS`` list (or with an empty one) the full network is assumed to
        have reported, so holes are classified by shape only and no radar is named missing.

    Returns
    -------
    HoleReport
        Masks, counts and attributions (see :class:`HoleReport` and the module notes for the
        cause rules and thresholds).
    """
    grid, radius = field.grid, coverage_radius_km(field.header)
    ms = frozenset(canonical(s) for s in field.header.sites)
    unknown = frozenset(s for s in ms if s not in SITES)
    listed = ms - unknown if ms else frozenset(OPERATIONAL)
    nominal = coverage(grid, listed | set(OPERATIONAL), radius)
    expected = coverage(grid, listed, radius)

    nodata = np.asarray(field.nodata, dtype=bool)
    failure = np.zeros_like(nodata) if field.info.nodata_means_dry else nodata & nominal
    return HoleReport(
        failure=failure,
        outside=nodata & ~nominal,
        pixels=int(np.count_nonzero(failure)),
        coverage=nominal,
        expected=expected,
        radius_km=radius,
        unknown_sites=unknown,
        grid=grid,
        listed=listed,
    )


def classify_components(
    holes: np.ndarray, grid: Grid, site_ids: Iterable[str], radius_km: float
) -> np.ndarray:
    """Cause codes of holes inside the coverage of reporting radars, by connected component.

    Parameters
    ----------
    holes
        bool (rows, cols): failure pixels covered by at least one of ``site_ids``.
    grid
        The field's grid.
    site_ids
        Known sites that reported (the listed ones).
    radius_km
        Coverage radius (km).

    Returns
    -------
    numpy.ndarray
        uint8 (rows, cols): :data:`BLIND_ZONE`, :data:`WEDGE` or :data:`OTHER` on ``holes``
        (rules in the module notes), :data:`NONE` elsewhere.
    """
    components, count = ndimage.label(holes, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    pixel_km2 = (grid.resolution / 1000.0) ** 2
    codes = np.full(count + 1, BLIND_ZONE, dtype=np.uint8)
    codes[0] = NONE
    large = np.flatnonzero(sizes[1:] * pixel_km2 > BLIND_MAX_KM2) + 1
    if large.size:
        lon, lat = grid.lonlat()
        discs = _discs(grid, radius_km)
        sites = sorted(site_ids)
        slices = ndimage.find_objects(components)
        for label in large:
            window = slices[label - 1]
            inside = components[window] == label
            step = max(1, int(inside.sum()) // _GEOMETRY_SAMPLE)
            lons, lats = lon[window][inside][::step], lat[window][inside][::step]
            views = [
                great_circle(SITES[s].lon, SITES[s].lat, lons, lats)
                for s in _sites_reaching(inside, window, sites, discs)
            ]
            codes[label] = _component_cause(views, radius_km)
    return codes[components]


def _sites_reaching(
    inside: np.ndarray,
    window: tuple[slice, slice],
    site_ids: Iterable[str],
    discs: Mapping[str, _Disc],
) -> list[str]:
    """The sites whose disc holds at least :data:`_JUDGE_SHARE` of a component's pixels
    (``inside`` its bounding ``window``): the only ones that can judge its cause.

    :func:`_component_cause` judges from a site only when :data:`WEDGE_MIN_INSIDE` (90 %) of
    the sampled pixels lie in its disc, and calls it a blind zone only when all of them lie
    within :data:`BLIND_SITE_KM` of the site; a regular sample of a component holding half
    that share cannot reach it. Skipping the others saves their great-circle geometry, about
    2.5 ms per site on a 150 km component (11 sites reach the disc of ``oft``, 1 holds it).
    """
    needed = _JUDGE_SHARE * int(inside.sum())
    return [s for s in site_ids if np.count_nonzero(discs[s].within(window) & inside) >= needed]


def _component_cause(views: list[tuple[np.ndarray, np.ndarray]], radius_km: float) -> int:
    """Cause of one large component from its (distance km, azimuth deg) seen from each site."""
    if any(distance.max() <= BLIND_SITE_KM for distance, _ in views):
        return BLIND_ZONE
    for distance, azimuth in views:
        if np.mean(distance <= radius_km) < WEDGE_MIN_INSIDE:
            continue
        spread = angular_spread(azimuth)
        extent = float(np.ptp(distance))
        width = np.radians(spread) * float(np.median(distance))
        if (
            spread <= WEDGE_MAX_SPREAD_DEG
            and extent >= WEDGE_MIN_RADIAL_KM
            and extent >= WEDGE_MIN_ELONGATION * width
        ):
            return WEDGE
    return OTHER


def great_circle(
    lon0: float, lat0: float, lon: np.ndarray, lat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Great-circle distance (km) and initial azimuth (degrees from north, clockwise in
    [0, 360)) from the point ``lon0``/``lat0`` to the points ``lon``/``lat`` (degrees)."""
    phi0, phi = np.radians(lat0), np.radians(lat)
    dlon = np.radians(lon - lon0)
    half = np.sin((phi - phi0) / 2) ** 2 + np.cos(phi0) * np.cos(phi) * np.sin(dlon / 2) ** 2
    distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(half, 0.0, 1.0)))
    azimuth = np.degrees(
        np.arctan2(
            np.sin(dlon) * np.cos(phi),
            np.cos(phi0) * np.sin(phi) - np.sin(phi0) * np.cos(phi) * np.cos(dlon),
        )
    )
    return distance, azimuth % 360.0


def angular_spread(azimuth: np.ndarray) -> float:
    """Smallest arc (degrees) containing all ``azimuth`` values (degrees): 360 minus the
    largest gap between neighbouring directions around the circle; 0 for one direction."""
    ordered = np.sort(np.asarray(azimuth, dtype=float) % 360.0)
    gaps = np.diff(ordered, append=ordered[0] + 360.0)
    return float(360.0 - gaps.max())


@lru_cache(maxsize=32)
def _coverage(grid: Grid, site_ids: frozenset[str], radius_km: float) -> np.ndarray:
    discs = _discs(grid, radius_km)
    mask = np.zeros(grid.shape, dtype=bool)
    for site in site_ids:
        mask[discs[site].box] |= discs[site].mask
    mask.flags.writeable = False
    return mask


#: Most a map distance on a RADOLAN grid exceeds the great-circle one: the polar stereographic
#: scale factor (1 + sin 60 deg) / (1 + sin lat) is 1.14 at 40 N, south of every grid.
_MAX_MAP_SCALE = 1.25


@dataclass(frozen=True)
class _Disc:
    """A site's disc on a grid: its bounding box and the bool mask inside it.

    A disc is a few per cent of a national grid: 18 full-grid masks of 1100 x 900 held 18 MB
    for the life of the service, their boxes hold 1.5 MB.
    """

    box: tuple[slice, slice]
    mask: np.ndarray  # bool, the box's shape, read-only

    def within(self, window: tuple[slice, slice]) -> np.ndarray:
        """The disc on ``window`` (explicit start and stop) of the grid, bool, its shape."""
        out = np.zeros([w.stop - w.start for w in window], dtype=bool)
        overlap = [
            slice(max(w.start, b.start), min(w.stop, b.stop))
            for w, b in zip(window, self.box, strict=True)
        ]
        if all(o.start < o.stop for o in overlap):
            out[_shift(overlap, window)] = self.mask[_shift(overlap, self.box)]
        return out


def _shift(part: list[slice], origin: tuple[slice, slice]) -> tuple[slice, slice]:
    """``part`` (grid indices) as indices into the array that starts at ``origin``."""
    rows, cols = (
        slice(p.start - o.start, p.stop - o.start) for p, o in zip(part, origin, strict=True)
    )
    return rows, cols


@lru_cache(maxsize=8)
def _discs(grid: Grid, radius_km: float) -> MappingProxyType[str, _Disc]:
    """Per known site, its :class:`_Disc`: pixel centres within ``radius_km`` of the site.

    Compares the cosine of the central angle (dot product of unit vectors) with that of the
    radius: exact great-circle distances on the sphere at three multiply-adds per pixel, on
    the pixels of a box that holds the disc at the largest scale of the map
    (:data:`_MAX_MAP_SCALE`, plus 2 px).
    """
    lon, lat = grid.lonlat()
    threshold = np.cos(radius_km / EARTH_RADIUS_KM)
    reach = int(np.ceil(radius_km * 1000.0 * _MAX_MAP_SCALE / grid.resolution)) + 2
    discs = {}
    for site in SITES.values():
        row, col = (int(np.rint(i)) for i in grid.index(site.lon, site.lat))
        box = (
            slice(min(max(row - reach, 0), grid.rows), min(max(row + reach + 1, 0), grid.rows)),
            slice(min(max(col - reach, 0), grid.cols), min(max(col + reach + 1, 0), grid.cols)),
        )
        pixels = _unit_vector(np.radians(lon[box]), np.radians(lat[box]))
        mask = pixels @ _unit_vector(np.radians(site.lon), np.radians(site.lat)) >= threshold
        mask.flags.writeable = False
        discs[site.id] = _Disc(box, mask)
    return MappingProxyType(discs)


def _unit_vector(lon: np.ndarray | float, lat: np.ndarray | float) -> np.ndarray:
    """Unit vectors (..., 3) of points given by longitude and latitude in radians."""
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)], axis=-1)
