"""Parse and build the ASCII header of a RADOLAN binary product.

The header is ``PPddHHMMWWWWWmmyy`` followed by tokens (``BY``, ``VS``, ``SW``, ``PR``,
``INT``, ``GP``, ``MS`` ...) and ends with one ETX byte (0x03). Token widths differ between
DWD software generations, so tokens are matched one by one with a pattern per token rather
than at fixed offsets; ``MS``/``ST``/``RM`` carry a three-digit length of their text.
The raw bytes are kept verbatim so that re-encoding reproduces the product byte for byte.
:func:`build` writes a new header in the layout and widths of DWD's own products.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from radinfill.radolan.errors import RadolanError
from radinfill.radolan.products import info

ETX = 0x03
#: Longest header accepted before the ETX byte: the longest seen is < 300 bytes; three
#: length-prefixed texts of at most 999 characters bound any legal header well below this.
MAX_HEADER_BYTES = 4096

_FIXED = re.compile(rb"([A-Z0-9%]{2})(\d{6})(\d{5})(\d{4})")

# Value pattern per token (widths as observed in DWD products of 2009-2025).
_VALUE = {
    "BY": rb" *\d{1,10}",
    "VS": rb"[ \d]\d",
    "SW": rb"[ \w.]{9}",
    "PR": rb" ?E[+-]0\d",  # |exponent| <= 9 keeps values finite in float32
    "INT": rb"[ \d]{3}\d",
    "U": rb"[01]",
    "GP": rb"[ \d]{3}\dx[ \d]{3}\d",
    "VV": rb"[ \d]{3}\d",
    "MF": rb"[ \d]{8}\d",
    "QN": rb"[ \d]{3}\d",
    "VR": rb"\d{4}\.\d{3}",
    "CS": rb"\d",
    "MX": rb"[ \d]\d",
    "BG": rb"\d{6}",
    "LV": rb"[ \d]\d",
}
_LENGTH_PREFIXED = ("MS", "ST", "RM")
_TOKEN = re.compile(rb"INT|BY|VS|SW|PR|GP|VV|MF|QN|VR|MS|ST|RM|LV|CS|MX|BG|U")
_SITE_LIST = re.compile(r"<([^>]*)>")


def _parse_gp(text: str) -> tuple[int, int]:
    rows, cols = text.split("x")
    return int(rows), int(cols)


def _parse_sites(text: str) -> tuple[str, ...]:
    """Site ids of an ``MS`` text, lower-case, without the ``de`` prefix of new products."""
    match = _SITE_LIST.search(text)
    names = match.group(1).split(",") if match else []
    ids = (name.strip().lower() for name in names)
    return tuple(n[2:] if len(n) == 5 and n.startswith("de") else n for n in ids if n)


def _parse_st(text: str) -> dict[str, int]:
    hours = {}
    for item in _parse_sites(text.replace(" ", "_")):
        site, _, value = item.partition("_")
        hours[site] = int(value) if value.isdigit() else 0
    return hours


_CONVERT = {
    "BY": int,
    "VS": int,
    "SW": str.strip,
    "PR": lambda t: int(t.strip()[1:]),
    "INT": int,
    "U": int,
    "GP": _parse_gp,
    "VV": int,
    "MF": str.strip,
    "QN": int,
    "VR": str,
    "MS": _parse_sites,
    "ST": _parse_st,
    "RM": str.strip,
    "CS": int,
    "MX": int,
    "BG": lambda t: (int(t[:3]), int(t[3:])),
}


@dataclass(frozen=True)
class Header(Mapping[str, object]):
    """A parsed RADOLAN header; a read-only mapping of token name to parsed value.

    Keys are the tokens present, with values: ``BY`` total product length in bytes (int),
    ``VS`` format version (int), ``SW`` software (str), ``PR`` precision *exponent* (int,
    value = raw x 10**PR), ``INT`` interval as written (int), ``U`` interval unit (0 minutes,
    1 days), ``GP`` (rows, cols), ``VV`` forecast lead in minutes, ``MF`` module flags (str),
    ``QN`` (int), ``VR`` reanalysis version (str), ``MS`` site ids (tuple of lower-case ids,
    ``de`` prefix removed), ``ST`` hours per site (dict), ``LV`` class limits (tuple of float),
    ``BG`` picture size (rows, cols).
    """

    raw: bytes
    product: str
    time: datetime
    wmo: str
    tokens: Mapping[str, object] = field(repr=False)

    def __getitem__(self, key: str) -> object:
        return self.tokens[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        """Total product length in bytes (header, ETX and payload), from ``BY``."""
        return int(self.tokens["BY"])  # type: ignore[call-overload]

    @property
    def precision(self) -> float:
        """Physical value of one count (10**PR); 1.0 when ``PR`` is absent."""
        return 10.0 ** int(self.tokens.get("PR", 0))  # type: ignore[call-overload]

    @property
    def shape(self) -> tuple[int, int]:
        """Grid (rows, cols) from ``GP`` (or ``BG`` for run-length pictures)."""
        shape = self.tokens.get("GP", self.tokens.get("BG"))
        if shape is None:
            raise RadolanError("header has no grid size (GP)")
        return shape  # type: ignore[return-value]

    @property
    def sites(self) -> tuple[str, ...]:
        """Radar site ids listed in ``MS`` (empty when absent)."""
        return self.tokens.get("MS", ())  # type: ignore[return-value]

    @property
    def version(self) -> int:
        """Format version ``VS`` (0 when absent); VS >= 5 means the WGS84 grid."""
        return int(self.tokens.get("VS", 0))  # type: ignore[call-overload]

    @property
    def lead_minutes(self) -> int:
        """Forecast lead time ``VV`` in minutes (0 for analyses)."""
        return int(self.tokens.get("VV", 0))  # type: ignore[call-overload]

    @property
    def interval(self) -> timedelta:
        """Accumulation interval; W1-W4 write ``INT`` in units of 10 minutes."""
        value = int(self.tokens.get("INT", 0))  # type: ignore[call-overload]
        if int(self.tokens.get("U", 0)) == 1:  # type: ignore[call-overload]
            return timedelta(days=value)
        if self.product in ("W1", "W2", "W3", "W4"):
            return timedelta(minutes=10 * value)
        return timedelta(minutes=value)


def split(data: bytes, source: str = "<bytes>") -> tuple[bytes, bytes]:
    """Split a product into (header including ETX, payload); raise if there is no ETX."""
    etx = data.find(bytes([ETX]), 0, MAX_HEADER_BYTES)
    if etx < 0:
        what = "empty input" if not data else f"no ETX byte in the first {MAX_HEADER_BYTES} bytes"
        raise RadolanError(f"not a RADOLAN product: {what}", source=source)
    return data[: etx + 1], data[etx + 1 :]


def parse(raw: bytes, source: str = "<bytes>") -> Header:
    """Parse header bytes (up to and including ETX) into a :class:`Header`."""
    text = raw[:-1] if raw.endswith(bytes([ETX])) else raw
    bad = next((i for i, b in enumerate(text) if not 0x20 <= b < 0x7F), None)
    if bad is not None:
        raise RadolanError(
            f"garbled header: non-ASCII byte 0x{text[bad]:02x}", source=source, offset=bad
        )
    fixed = _FIXED.match(text)
    if fixed is None:
        raise RadolanError(
            "garbled header: bad product id, time or WMO number", source=source, offset=0
        )
    product, ddhhmm, wmo, mmyy = (g.decode() for g in fixed.groups())
    try:
        time = datetime(
            2000 + int(mmyy[2:]),
            int(mmyy[:2]),
            int(ddhhmm[:2]),
            int(ddhhmm[2:4]),
            int(ddhhmm[4:]),
            tzinfo=UTC,
        )
    except ValueError as err:
        raise RadolanError(
            f"garbled header: invalid time {ddhhmm}/{mmyy}", source=source, offset=2
        ) from err
    tokens = _parse_tokens(text, fixed.end(), source)
    return Header(raw=bytes(raw), product=product, time=time, wmo=wmo, tokens=tokens)


def _parse_tokens(text: bytes, pos: int, source: str) -> dict[str, object]:
    tokens: dict[str, object] = {}
    while pos < len(text):
        if text[pos] == 0x20:
            pos += 1
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            snippet = text[pos : pos + 8].decode("ascii")
            raise RadolanError(
                f"garbled header: unexpected text {snippet!r}", source=source, offset=pos
            )
        name = match.group().decode()
        if name in tokens:
            raise RadolanError(f"garbled header: token {name} repeated", source=source, offset=pos)
        value, pos = _read_value(text, name, match.end(), source)
        tokens[name] = value
    return tokens


def _read_value(text: bytes, name: str, pos: int, source: str) -> tuple[object, int]:
    if name in _LENGTH_PREFIXED:
        length = re.compile(rb"  \d| \d\d|\d{3}").match(text, pos)  # padded on the left only
        if length is None:
            raise RadolanError(f"garbled header: {name} has no length", source=source, offset=pos)
        end = length.end() + int(length.group())
        if end > len(text):
            raise RadolanError(
                f"garbled header: {name} text runs past the header", source=source, offset=pos
            )
        return _convert(name, text[length.end() : end], source, pos), end
    value = re.compile(_VALUE[name]).match(text, pos)
    if value is None:
        raise RadolanError(f"garbled header: bad value for {name}", source=source, offset=pos)
    end = value.end()
    if name == "LV":  # class count, then that many F5.1 limits
        count = int(value.group())
        limits = text[end : end + 5 * count]
        try:
            parsed = tuple(float(limits[i : i + 5]) for i in range(0, 5 * count, 5))
        except ValueError as err:
            raise RadolanError(
                "garbled header: bad LV class limits", source=source, offset=end
            ) from err
        if len(limits) != 5 * count:
            raise RadolanError("garbled header: LV limits truncated", source=source, offset=end)
        return parsed, end + 5 * count
    return _convert(name, value.group(), source, pos), end


def _convert(name: str, value: bytes, source: str, pos: int) -> object:
    """Convert a token's value; a malformed number (an inner blank, e.g. ``" 6 0"``) is garbled."""
    try:
        return _CONVERT[name](value.decode("ascii"))
    except ValueError:
        raise RadolanError(
            f"garbled header: bad value for {name}", source=source, offset=pos
        ) from None


#: Token order of DWD's headers; :func:`build` writes the tokens present in this order.
BUILD_ORDER = ("BY", "VS", "SW", "PR", "INT", "U", "GP", "VV", "MF", "QN", "VR", "MS")
_OPTIONAL = frozenset({"U", "VV", "MF", "QN", "VR"})
_WMO_COMPOSITE = "10000"
_BY_WIDTHS = (7, 10)


def build(
    product: str,
    time: datetime,
    shape: tuple[int, int],
    *,
    precision_exponent: int,
    interval_minutes: int,
    sites: Sequence[str],
    version: int = 3,
    software: str = "radinfill",
    extra: Mapping[str, str] | None = None,
) -> Header:
    """Build the header of a new composite product in DWD's layout and token widths.

    The header is ``PPddHHMM10000mmyy``, then ``BY VS SW PR INT [U] GP [VV] [MF] [QN] [VR] MS``
    and ETX, written as DWD's RADOLAN software writes them: ``BY`` right-aligned in 7 digits
    (10 when the length needs more), ``VS`` in 2, ``SW`` right-aligned in 9, ``PR`` as
    ``" E-02"``, ``INT`` in 4, ``GP`` as ``%4dx%4d``, ``MS`` as a three-digit length and
    ``<asb,boo,...>``. Classic products (``VS`` < 5 without ``VR``) pad the ``MS`` text with
    one blank to an even length, as every such DWD file does (RW/RY/RX 2014-2020 end in
    ``,mem> `` + ETX); RADKLIM (``VR``) and ``VS`` 5 products do not.

    Parameters
    ----------
    product
        Product id, e.g. ``"RY"``; its payload width (2 bytes, 1 for RVP6 ``RX``) sets ``BY``.
    time
        Nominal time (end of the interval), whole minutes; converted to UTC (naive times are
        taken as UTC), year 2000-2099.
    shape
        Grid (rows, cols).
    precision_exponent
        ``PR``: value = count x 10**exponent (-2 for RY, -1 for RW, 0 for RX); -9..9.
    interval_minutes
        ``INT`` in minutes (5 for RY/RX, 60 for RW).
    sites
        Radar site ids for ``MS``, lower-case, in the order to write (DWD's order is not
        alphabetical: ``asb,boo,ros,hnr,umd,...``).
    version
        Format version ``VS`` (3: 150 km classic; 5: WGS84 grid).
    software
        ``SW``, at most 9 characters (DWD writes e.g. ``"2.21.0"``); ``"radinfill"`` marks
        synthetic or infilled products.
    extra
        Optional tokens and their value text, written verbatim in DWD's widths, e.g.
        ``{"MF": " 00000001"}`` (RW 2017+), ``{"U": "0", "MF": " 00000000", "VR": "2017.002"}``
        (RADKLIM), ``{"VV": " 000"}`` (nowcasts). Allowed: ``U``, ``VV``, ``MF``, ``QN``, ``VR``.

    Returns
    -------
    Header
        The parsed header; ``raw`` holds the bytes including ETX, and ``size`` (``BY``) equals
        ``len(raw)`` plus the payload length rows x cols x bytes per pixel.

    Raises
    ------
    RadolanError
        If a value does not fit its field (e.g. an 11-character software name, a year
        outside 2000-2099, an unknown or run-length product) or an extra token is not allowed.
    """
    utc = time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)
    rows, cols = shape
    extra = dict(extra or {})
    encoding = info(product).encoding
    if encoding == "rle":
        raise RadolanError(
            f"cannot build a header for run-length picture product {product}", kind="unsupported"
        )
    if not 2000 <= utc.year <= 2099:
        raise RadolanError(
            f"RADOLAN headers hold years 2000-2099, got {utc.year}", kind="unsupported"
        )
    if unknown := sorted(extra.keys() - _OPTIONAL):
        raise RadolanError(
            f"header tokens {unknown} cannot be added; allowed: {sorted(_OPTIONAL)}",
            kind="unsupported",
        )
    site_text = f"<{','.join(sites)}>"
    if version < 5 and "VR" not in extra and len(site_text) % 2:
        site_text += " "
    values = {
        "VS": f"{version:2d}",
        "SW": f"{software:>9}",
        "PR": f" E{precision_exponent:+03d}",
        "INT": f"{interval_minutes:4d}",
        "GP": f"{rows:4d}x{cols:4d}",
        "MS": f"{len(site_text):3d}{site_text}",
        **extra,
    }
    prefix = f"{product}{utc:%d%H%M}{_WMO_COMPOSITE}{utc:%m%y}"
    tokens = "".join(f"{name}{values[name]}" for name in BUILD_ORDER[1:] if name in values)
    payload = rows * cols * (1 if encoding == "rvp6" else 2)
    for width in _BY_WIDTHS:
        header_bytes = len(prefix) + len("BY") + width + len(tokens) + 1
        if len(str(header_bytes + payload)) <= width:
            break
    text = f"{prefix}BY{header_bytes + payload:{width}d}{tokens}"
    try:
        built = parse(text.encode("ascii", errors="replace") + bytes([ETX]))
    except RadolanError as err:
        raise RadolanError(
            f"values do not fit DWD's header layout ({err}): {text!r}", kind="unsupported"
        ) from None
    wanted = {
        "BY": len(built.raw) + payload,
        "VS": version,
        "SW": software.strip(),
        "PR": precision_exponent,
        "INT": interval_minutes,
        "GP": (rows, cols),
    }
    if misfit := sorted(name for name, value in wanted.items() if built[name] != value):
        raise RadolanError(
            f"values of {misfit} do not fit DWD's header layout: {text!r}", kind="unsupported"
        )
    return built
