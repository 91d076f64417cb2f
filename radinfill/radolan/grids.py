"""RADOLAN grids: polar stereographic geometry, pixel coordinates, CF grid mapping.

All grids are polar stereographic (true at 60 N, central meridian 10 E) on a sphere of
radius 6370.040 km, or on WGS84 for format version VS >= 5 (POLARA/RADVOR from 2022 and the
ODIM-HDF5 composites). They are anchored at the reference point 9 E / 51 N: the lower-left
grid corner lies ``(j0, i0)`` kilometres west and south of it. Row 0 is the southern edge,
as the binary products store it; columns run west to east.

Grid sizes not in the catalogue but at most 900 x 900 are read as the centred crop of the
national 900 x 900 grid, which is what small synthetic streams use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from typing import Literal

import numpy as np
import pyproj

from radinfill.radolan.errors import RadolanError

Ellipsoid = Literal["sphere", "wgs84"]

_PROJ = {
    "sphere": "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +a=6370040 +b=6370040 +units=m +no_defs",
    "wgs84": "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +ellps=WGS84 +units=m +no_defs",
}
_REFERENCE_LONLAT = (9.0, 51.0)

# (rows, cols) -> (name, resolution km, j0 km west of reference, i0 km south of reference)
_CATALOGUE: dict[tuple[int, int], tuple[str, float, float, float]] = {
    (900, 900): ("national", 1.0, 450.0, 450.0),
    (1100, 900): ("extended-national", 1.0, 370.0, 550.0),
    (1200, 1100): ("DE1200", 1.0, 470.0, 600.0),
    (1500, 1400): ("middle-european", 1.0, 600.0, 800.0),
    (450, 450): ("national-2km", 2.0, 450.0, 450.0),
    (460, 460): ("picture-2km", 2.0, 460.0, 460.0),
    (4800, 4400): ("DE4800", 0.25, 470.0, 600.0),
}


@cache
def crs(ellipsoid: Ellipsoid) -> pyproj.CRS:
    """The pyproj CRS of the RADOLAN projection on ``ellipsoid``."""
    return pyproj.CRS.from_proj4(_PROJ[ellipsoid])


@cache
def _transformer(ellipsoid: Ellipsoid) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(crs(ellipsoid).geodetic_crs, crs(ellipsoid), always_xy=True)


def project(lon: np.ndarray | float, lat: np.ndarray | float, ellipsoid: Ellipsoid = "sphere"):
    """Project lon/lat (degrees) to RADOLAN x/y in metres."""
    return _transformer(ellipsoid).transform(lon, lat)


def unproject(x: np.ndarray | float, y: np.ndarray | float, ellipsoid: Ellipsoid = "sphere"):
    """Inverse of :func:`project`: x/y in metres to lon/lat in degrees."""
    return _transformer(ellipsoid).transform(
        x, y, direction=pyproj.enums.TransformDirection.INVERSE
    )


@dataclass(frozen=True)
class Grid:
    """A RADOLAN grid.

    Attributes
    ----------
    name
        Catalogue name (``national``, ``DE1200`` ...) or ``crop-RxC``.
    rows, cols
        Size; row 0 is the southernmost row.
    resolution
        Pixel size in metres.
    x0, y0
        Projection coordinates (m) of the lower-left *corner* (edge, not pixel centre).
    ellipsoid
        ``sphere`` (VS < 5) or ``wgs84`` (VS >= 5, ODIM-HDF5).
    """

    name: str
    rows: int
    cols: int
    resolution: float
    x0: float
    y0: float
    ellipsoid: Ellipsoid = "sphere"

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (self.rows, self.cols)

    @cached_property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates in metres, west to east, shape (cols,)."""
        return self.x0 + (np.arange(self.cols) + 0.5) * self.resolution

    @cached_property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates in metres, south to north, shape (rows,)."""
        return self.y0 + (np.arange(self.rows) + 0.5) * self.resolution

    @property
    def crs(self) -> pyproj.CRS:
        """The pyproj CRS of this grid."""
        return crs(self.ellipsoid)

    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Longitude and latitude of every pixel centre, each (rows, cols) float64 degrees."""
        return _lonlat(self)

    def corners(self) -> dict[str, tuple[float, float]]:
        """Outer corners as lon/lat: keys ``LL``, ``LR``, ``UR``, ``UL``."""
        xe, ye = self.x0 + self.cols * self.resolution, self.y0 + self.rows * self.resolution
        xs, ys = np.array([self.x0, xe, xe, self.x0]), np.array([self.y0, self.y0, ye, ye])
        lon, lat = unproject(xs, ys, self.ellipsoid)
        return {k: (float(lon[i]), float(lat[i])) for i, k in enumerate(("LL", "LR", "UR", "UL"))}

    def index(self, lon: np.ndarray | float, lat: np.ndarray | float):
        """Fractional (row, col) of lon/lat points; pixel centres are whole numbers, so round."""
        x, y = project(lon, lat, self.ellipsoid)
        return (np.asarray(y) - self.y0) / self.resolution - 0.5, (
            np.asarray(x) - self.x0
        ) / self.resolution - 0.5

    def cf_grid_mapping(self) -> dict[str, object]:
        """CF ``grid_mapping`` attributes (``polar_stereographic``) including ``crs_wkt``."""
        attrs = {
            "grid_mapping_name": "polar_stereographic",
            "straight_vertical_longitude_from_pole": 10.0,
            "standard_parallel": 60.0,
            "latitude_of_projection_origin": 90.0,
            "false_easting": 0.0,
            "false_northing": 0.0,
        }
        if self.ellipsoid == "sphere":
            attrs["earth_radius"] = 6370040.0
        else:
            attrs |= {"semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563}
        attrs["crs_wkt"] = self.crs.to_wkt()
        attrs["proj4"] = _PROJ[self.ellipsoid]
        return attrs


@cache
def _lonlat(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(grid.x, grid.y)
    lon, lat = unproject(xx, yy, grid.ellipsoid)
    lon.flags.writeable = False
    lat.flags.writeable = False
    return lon, lat


@cache
def _reference_xy(ellipsoid: Ellipsoid) -> tuple[float, float]:
    x, y = project(*_REFERENCE_LONLAT, ellipsoid)
    return float(x), float(y)


def grid_for(rows: int, cols: int, ellipsoid: Ellipsoid = "sphere") -> Grid:
    """The grid of a product of ``rows`` x ``cols`` pixels.

    Raises
    ------
    RadolanError
        If the size is neither a catalogued RADOLAN grid nor a crop of the national grid.
    """
    ref_x, ref_y = _reference_xy(ellipsoid)
    if (rows, cols) in _CATALOGUE:
        name, res_km, j0, i0 = _CATALOGUE[(rows, cols)]
        return Grid(
            name, rows, cols, res_km * 1000.0, ref_x - j0 * 1000.0, ref_y - i0 * 1000.0, ellipsoid
        )
    if 0 < rows <= 900 and 0 < cols <= 900:
        return Grid(
            f"crop-{rows}x{cols}",
            rows,
            cols,
            1000.0,
            ref_x - 450e3 + (900 - cols) // 2 * 1000.0,
            ref_y - 450e3 + (900 - rows) // 2 * 1000.0,
            ellipsoid,
        )
    raise RadolanError(f"unknown grid size {rows}x{cols}", kind="wrong_grid")


def parse_size(text: str) -> tuple[int, int]:
    """Parse a grid size written ``ROWSxCOLS`` (e.g. ``900x900``)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"grid size must be ROWSxCOLS, got {text!r}") from None
    return rows, cols
