"""What each RADOLAN product id means: payload encoding, unit and CF names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from radinfill.radolan.errors import RadolanError

Encoding = Literal["uint16", "rvp6", "rle"]


@dataclass(frozen=True)
class ProductInfo:
    """Static facts about a product id.

    Attributes
    ----------
    encoding
        ``uint16`` (12-bit value + flag bits, little-endian), ``rvp6`` (one byte,
        dBZ = raw / 2 - 32.5) or ``rle`` (run-length picture, not decoded).
    unit
        Unit of :attr:`Field.values` (amounts are per product interval).
    standard_name
        CF standard name, or ``None`` where CF has none.
    long_name
        Human-readable description.
    nodata_means_dry
        True where the product writes no-data for "no precipitation" (RE): its no-data
        pixels are not radar-failure holes.
    """

    encoding: Encoding
    unit: str
    standard_name: str | None
    long_name: str
    nodata_means_dry: bool = False


_AMOUNT = "lwe_thickness_of_precipitation_amount"
_REFLECTIVITY = "equivalent_reflectivity_factor"

_PRODUCTS: dict[str, ProductInfo] = {
    **{p: ProductInfo("rvp6", "dBZ", _REFLECTIVITY, f"{p} radar reflectivity composite")
       for p in ("RX", "WX", "EX")},
    **{p: ProductInfo("rle", "1", None, f"{p} run-length picture product") for p in ("PG", "PC")},
    **{p: ProductInfo("uint16", "mm", _AMOUNT, f"{p} precipitation amount per interval")
       for p in ("RW", "RY", "RZ", "RH", "RB", "RL", "RU", "RV", "RQ", "YW", "SF", "SH", "SQ",
                 "W1", "W2", "W3", "W4", "EY", "EZ", "EH", "EB", "EW", "%J", "%M", "%Y")},
    "RE": ProductInfo("uint16", "1", None, "RE solid fraction of precipitation", True),
    "FZ": ProductInfo("uint16", "RVP6", None, "FZ reflectivity nowcast in RVP6 units"),
}  # fmt: skip


def info(product: str) -> ProductInfo:
    """Facts about ``product``; raise :class:`RadolanError` for an unknown id."""
    try:
        return _PRODUCTS[product]
    except KeyError:
        raise RadolanError(
            f"unknown product encoding for product id {product!r}", kind="unsupported"
        ) from None


def known() -> tuple[str, ...]:
    """All product ids this codec knows."""
    return tuple(sorted(_PRODUCTS))
