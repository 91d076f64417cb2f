"""Plain summaries of a decoded field and its holes, for ``inspect``, the demo and logs; and
the Markdown and self-contained HTML building blocks of evaluation reports."""

from __future__ import annotations

import base64
import html
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from radinfill import holes
from radinfill.radolan import Field


def _jsonable(value: object) -> object:
    if isinstance(value, tuple | list | frozenset | set):
        return [
            _jsonable(v) for v in (sorted(value) if isinstance(value, frozenset | set) else value)
        ]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def hole_summary(field: Field, report: holes.HoleReport) -> dict[str, Any]:
    """Failure pixels, their share of nominal coverage, missing radars and causes."""
    coverage = int(report.coverage.sum())
    return {
        "failure_pixels": int(report.pixels),
        "failure_percent_of_coverage": round(100.0 * report.pixels / coverage, 3)
        if coverage
        else None,
        "outside_pixels": int(report.outside.sum()),
        "missing_radars": sorted(report.missing_radars),
        "causes": {k: int(v) for k, v in report.causes.items()},
        "coverage_radius_km": float(report.radius_km),
    }


def describe(field: Field) -> dict[str, Any]:
    """Everything ``radinfill inspect`` shows about one field, as JSON-able data."""
    valid = field.values[~field.nodata & np.isfinite(field.values)]
    grid = field.grid
    return {
        "source": field.source,
        "product": field.product,
        "time": field.time.isoformat(),
        "interval_minutes": field.interval.total_seconds() / 60,
        "unit": field.unit,
        "header": _jsonable(dict(field.header)),
        "grid": {
            "name": grid.name,
            "rows": grid.rows,
            "cols": grid.cols,
            "resolution_m": grid.resolution,
            "ellipsoid": grid.ellipsoid,
            "corners_lonlat": {k: [round(c, 5) for c in v] for k, v in grid.corners().items()},
        },
        "flags": {
            "nodata": int(field.nodata.sum()),
            "clutter": int(field.clutter.sum()),
            "secondary": int(field.secondary.sum()),
        },
        "values": {
            "valid_pixels": int(valid.size),
            "min": float(valid.min()) if valid.size else None,
            "max": float(valid.max()) if valid.size else None,
            "mean": round(float(valid.mean()), 4) if valid.size else None,
            "wet_fraction": round(float((valid > 0).mean()), 4) if valid.size else None,
        },
        "holes": hole_summary(field, holes.detect(field)),
    }


def format_description(record: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s record."""
    grid, flags, values, hole = record["grid"], record["flags"], record["values"], record["holes"]
    header = " ".join(f"{k}={v}" for k, v in record["header"].items() if k not in ("MS", "ST"))
    lines = [
        f"{record['source']}",
        f"  product   {record['product']}  time {record['time']}  "
        f"interval {record['interval_minutes']:g} min  unit {record['unit']}",
        f"  header    {header}",
        f"  radars    {','.join(record['header'].get('MS', [])) or '-'}",
        f"  grid      {grid['name']} {grid['rows']}x{grid['cols']} {grid['resolution_m']:g} m "
        f"{grid['ellipsoid']}  LL {grid['corners_lonlat']['LL']} UR {grid['corners_lonlat']['UR']}",
        f"  flags     nodata {flags['nodata']}  clutter {flags['clutter']}  "
        f"secondary {flags['secondary']}",
        f"  values    valid {values['valid_pixels']}  min {values['min']}  max {values['max']}  "
        f"mean {values['mean']}  wet {values['wet_fraction']}",
        f"  holes     {hole['failure_pixels']} px ({hole['failure_percent_of_coverage']} % of "
        f"coverage, {hole['coverage_radius_km']:g} km)  missing radars "
        f"{','.join(hole['missing_radars']) or 'none'}",
        "  causes    " + "  ".join(f"{k} {v}" for k, v in hole["causes"].items()),
    ]
    return "\n".join(lines)


#: Style of :func:`html_page`: readable tables, images scaled to the page width.
_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:3px 8px}td{text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    "code{background:#f3f3f3}"
)


def markdown_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    strong: Collection[tuple[int, int]] = (),
) -> str:
    """A Markdown (GitHub) table: first column left-aligned, the others right-aligned.

    Parameters
    ----------
    columns
        Header cells.
    rows
        Body cells as text, one sequence per row (``|`` is escaped).
    strong
        ``(row, column)`` indices of body cells to set in bold (e.g. the best value).
    """

    def cell(text: str, bold: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold else text

    lines = [
        "| " + " | ".join(cell(c, False) for c in columns) + " |",
        "|" + "|".join([":---", *["---:"] * (len(columns) - 1)]) + "|",
    ]
    for i, row in enumerate(rows):
        cells = [cell(text, (i, j) in strong) for j, text in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    strong: Collection[tuple[int, int]] = (),
) -> str:
    """An HTML ``<table>`` of text cells (escaped); ``strong`` as for :func:`markdown_table`."""

    def cell(text: str, bold: bool) -> str:
        text = html.escape(text)
        return f"<td><strong>{text}</strong></td>" if bold else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(cell(text, (i, j) in strong) for j, text in enumerate(row)) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_image(png: bytes, alt: str) -> str:
    """An ``<img>`` whose PNG bytes are embedded as a base64 data URI (no file to ship along)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def html_page(title: str, body: Sequence[str]) -> str:
    """A complete, self-contained HTML5 page: ``title`` (escaped) and ``body`` HTML fragments."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
