"""DWD radar sites and their nominal coverage.

Coordinates are those of wradlib's ``dwdlocs`` table (the 17 operational radars) plus the
historic Emden radar ``emd`` (listed in headers until 2017). Legacy ids of the 2009-2014
network without published coordinates (``ham``, ``han``, ``bln``, ``fri``, ``muc``, ``asw``)
are deliberately absent: nothing is invented. ``asd`` (the ASR Dresden radar that stood in for
``drs`` in 2014) is an alias of ``drs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Site:
    """A radar site: id, WMO number (None where unpublished), name, lat/lon (deg), height (m)."""

    id: str
    wmo: int | None
    name: str
    lat: float
    lon: float
    height: float


_TABLE = (
    Site("asb", 10103, "ASR Borkum", 53.564129, 6.748317, 36.22),
    Site("boo", 10132, "Boostedt", 54.004381, 10.046899, 124.56),
    Site("drs", 10488, "Dresden", 51.124639, 13.768639, 263.36),
    Site("eis", 10780, "Eisberg", 49.540667, 12.402788, 799.08),
    Site("ess", 10410, "Essen", 51.405649, 6.967111, 185.11),
    Site("fbg", 10908, "Feldberg", 47.873611, 8.003611, 1516.1),
    Site("fld", 10440, "Flechtdorf", 51.311197, 8.801998, 627.88),
    Site("hnr", 10339, "Hannover", 52.460083, 9.694533, 97.78),
    Site("isn", 10873, "Isen", 48.174705, 12.101779, 677.77),
    Site("mem", 10950, "Memmingen", 48.042145, 10.219222, 724.4),
    Site("neu", 10557, "Neuhaus", 50.500114, 11.135034, 879.65),
    Site("nhb", 10605, "Neuheilenbach", 50.109656, 6.548328, 585.85),
    Site("oft", 10629, "Offenthal", 49.984745, 8.712933, 245.8),
    Site("pro", 10392, "Prötzel", 52.648667, 13.858212, 193.92),
    Site("ros", 10169, "Rostock", 54.17566, 12.058076, 37.05),
    Site("tur", 10832, "Türkheim", 48.585379, 9.782675, 767.62),
    Site("umd", 10356, "Ummendorf", 52.160096, 11.176091, 185.2),
    Site("emd", None, "Emden (historic)", 53.33872, 7.02377, 58.0),
)

#: All known sites by id (the 17 operational radars and historic ``emd``).
SITES = MappingProxyType({s.id: s for s in _TABLE})
#: The operational network today; its union of discs is the nominal coverage.
OPERATIONAL = tuple(s.id for s in _TABLE if s.id != "emd")
_ALIASES = MappingProxyType({"asd": "drs"})

#: Nominal coverage radius (km) of a composite, and the reduced one of RADKLIM / VS <= 2.
RADIUS_KM = 150.0
RADIUS_REPROCESSED_KM = 128.0


def canonical(site_id: str) -> str:
    """Map a header site id to the id of :data:`SITES` (lower-case, aliases resolved)."""
    site_id = site_id.lower()
    return _ALIASES.get(site_id, site_id)
