"""Quicklook maps: real products drawn to PNG, read back and checked pixel by pixel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radinfill import holes, plots
from radinfill.radolan import Field, read_one
from radinfill.radolan.grids import unproject
from radinfill.radolan.sites import SITES

RW_NHB = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
RX_ASB_NHB = "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach"
YW_ASB_NHB = "dwdradar/tests/raa01-yw2017.002_10000-2006131525-dwd---bin"


def _image(path: Path) -> np.ndarray:
    """The PNG at ``path`` as float RGB (rows, cols, 3) in 0..1; fails if it is no PNG."""
    from matplotlib import image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return image.imread(path, format="png")[..., :3]


def _outline_pixels(rgb: np.ndarray) -> np.ndarray:
    """bool (rows, cols): pixels drawn in the hole outline colour (anti-aliasing aside)."""
    from matplotlib.colors import to_rgb

    return np.all(np.abs(rgb - np.array(to_rgb(plots.OUTLINE_COLOUR))) < 0.1, axis=-1)


def _assert_map_image(rgb: np.ndarray) -> None:
    """A plausible, non-blank quicklook: sized as specified, many distinct colours."""
    rows, cols, _ = rgb.shape
    assert 1000 <= cols <= 1400
    assert 900 <= rows <= 1600
    assert rgb.var() > 0.01
    colours = np.unique((rgb[::3, ::3] * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20


def _filled(field: Field, mask: np.ndarray, value: float) -> Field:
    """``field`` with the pixels of ``mask`` set to ``value`` and their no-data flag cleared."""
    values = np.where(mask, np.float32(value), field.values).astype(np.float32)
    return field.replace(values=values, nodata=field.nodata & ~mask)


@pytest.fixture(scope="module")
def rw(samples: Path) -> tuple[Field, holes.HoleReport]:
    field = read_one(samples / RW_NHB)
    return field, holes.detect(field)


def test_rw_quicklook_outlines_the_nhb_hole(rw, tmp_path):
    field, report = rw
    path = plots.quicklook(field, report, path=tmp_path / "rw.png")

    assert path == tmp_path / "rw.png"
    assert [p.name for p in tmp_path.iterdir()] == ["rw.png"]  # no temp file left behind
    rgb = _image(path)
    _assert_map_image(rgb)
    outline = _outline_pixels(rgb)
    assert outline.sum() > 300
    # the nhb footprint is at the western edge of Germany: the outline lies in the west
    assert np.nonzero(outline)[1].mean() < 0.45 * rgb.shape[1]


def test_no_outline_when_the_field_has_no_hole(rw, tmp_path):
    field, report = rw
    after = _filled(field, report.failure, 1.0)
    after_report = holes.detect(after)
    assert after_report.pixels == 0

    rgb = _image(plots.quicklook(after, after_report, path=tmp_path / "after.png"))
    _assert_map_image(rgb)
    assert not _outline_pixels(rgb).any()


def test_rx_quicklook_in_dbz(samples, tmp_path):
    field = read_one(samples / RX_ASB_NHB)
    report = holes.detect(field)
    scale = plots.colour_scale(field)
    assert scale.label == "dBZ"
    assert scale.levels[0] == 5.0

    rgb = _image(plots.quicklook(field, report, path=tmp_path / "rx.png"))
    _assert_map_image(rgb)
    assert _outline_pixels(rgb).sum() > 300


def test_yw_quicklook_is_taller_for_the_1100_row_grid(samples, rw, tmp_path):
    field = read_one(samples / YW_ASB_NHB)
    assert field.grid.shape == (1100, 900)
    yw = _image(plots.quicklook(field, holes.detect(field), path=tmp_path / "yw.png"))
    national = _image(plots.quicklook(rw[0], rw[1], path=tmp_path / "rw.png"))

    _assert_map_image(yw)
    assert yw.shape[1] == national.shape[1]
    # 200 more grid rows at about one image pixel per grid pixel
    assert 150 <= yw.shape[0] - national.shape[0] <= 260
    outline = _outline_pixels(yw)
    assert outline.sum() > 300
    assert np.nonzero(outline)[1].mean() < 0.45 * yw.shape[1]  # asb and nhb: the west


def test_before_after_outlines_the_infilled_area(rw, tmp_path):
    field, report = rw
    after = _filled(field, report.failure, 1.0)
    path = plots.before_after(field, after, report=report, path=tmp_path / "ba.png")

    assert [p.name for p in tmp_path.iterdir()] == ["ba.png"]
    rgb = _image(path)
    single = _image(plots.quicklook(field, report, path=tmp_path / "one.png"))
    assert rgb.shape[0] == single.shape[0]
    assert rgb.shape[1] > 1.6 * single.shape[1]  # two map panels side by side
    outline = _outline_pixels(rgb)
    columns = np.nonzero(outline)[1]
    half = rgb.shape[1] // 2
    assert (columns < half).sum() > 300  # input panel
    assert (columns >= half).sum() > 300  # infilled panel


def test_before_after_with_difference_panel(rw, tmp_path):
    field, report = rw
    truth = _filled(field, report.failure, 2.0)
    infilled = _filled(field, report.failure, 1.0)
    two = _image(
        plots.before_after(truth, infilled, infill_mask=report.failure, path=tmp_path / "2.png")
    )
    three = _image(
        plots.before_after(
            truth, infilled, infill_mask=report.failure, path=tmp_path / "3.png", difference=True
        )
    )
    assert three.shape[1] > 1.3 * two.shape[1]
    # the -1 mm error fills the hole in the blue half of the diverging scale
    blueish = (three[..., 2] > three[..., 0] + 0.3) & (three[..., 2] > 0.5)
    assert blueish[:, 2 * three.shape[1] // 3 :].sum() > 1000


def test_before_after_rejects_different_grids(rw, samples, tmp_path):
    other = read_one(samples / YW_ASB_NHB)
    with pytest.raises(ValueError, match="grids differ"):
        plots.before_after(rw[0], other, path=tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_behind(rw, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.quicklook(rw[0], rw[1], path=tmp_path / "rw.png")
    assert list(tmp_path.iterdir()) == []


def test_caption_names_product_time_hole_and_missing_radar(rw):
    field, report = rw
    text = plots.caption(field, report)
    assert "RW" in text
    assert "2019-07-01 09:50 UTC" in text
    assert "60 min" in text
    assert f"{report.pixels:,} px" in text
    assert "missing radars: nhb" in text
    assert "no hole" not in text
    assert plots.caption(field, report, title="custom").startswith("custom\n")


def test_caption_marks_an_absent_radar_without_hole(rw):
    field, report = rw
    after = _filled(field, report.failure, 1.0)
    assert "missing radars: nhb (no hole)" in plots.caption(after, holes.detect(after))


def test_colour_scale_for_amounts_starts_at_the_precision(rw):
    scale = plots.colour_scale(rw[0])
    # RW carries PR E-01: 0.1 mm is the smallest non-zero amount, 1-2-5 steps over 3 decades
    assert scale.levels == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    assert scale.label == "mm per 60 min"
    assert len(scale.colours) == len(scale.levels) - 1


def test_rgba_classes_and_no_data_colours():
    from matplotlib.colors import to_rgba

    scale = plots.ColourScale((0.1, 0.2, 0.5), ("#0000ff", "#00ff00"), "#ff0000", "mm")
    values = np.array([[0.0, np.float32(0.1), 0.3, 0.6, np.nan, np.nan]], dtype=np.float32)
    hole = np.array([[False, False, False, False, True, False]])
    out = plots.rgba(values, scale, hole)
    expected = ["#ffffff", "#0000ff", "#00ff00", "#ff0000", plots.HOLE_COLOUR, plots.OUTSIDE_COLOUR]
    np.testing.assert_allclose(out[0], [to_rgba(c) for c in expected], atol=1e-6)


def test_coverage_circles_are_at_true_distance(rw):
    grid = rw[0].grid
    x, y = plots.coverage_circles(grid, ["nhb", "ros"], 150.0)
    assert x.shape == y.shape == (2, 181)

    for row, site in enumerate(("nhb", "ros")):
        lon, lat = unproject(x[row], y[row], grid.ellipsoid)
        s = SITES[site]
        distance, _ = holes.great_circle(s.lon, s.lat, np.asarray(lon), np.asarray(lat))
        np.testing.assert_allclose(distance, 150.0, atol=0.1)


def test_outline_mask_drops_slivers_keeps_holes():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = True  # a real hole
    mask[30, 2:38] = True  # a one-pixel rim sliver
    kept = plots.outline_mask(mask)
    assert kept[5:15, 5:15].all()
    assert not kept[30].any()


def test_import_is_cheap():
    code = "import sys, radinfill.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_map_is_north_up_and_west_left(rw, tmp_path):
    from matplotlib.colors import to_rgb

    field = rw[0]
    rows, cols = field.grid.shape
    values = np.zeros(field.grid.shape, dtype=np.float32)
    values[rows // 2 :, : cols // 2] = 5.0  # rain only in the north-west quadrant (row 0 = south)
    field = field.replace(values=values, nodata=np.zeros_like(field.nodata))
    scale = plots.colour_scale(field)
    rain = to_rgb(scale.colours[scale.levels.index(5.0)])

    rgb = _image(plots.quicklook(field, path=tmp_path / "nw.png"))
    left = rgb[:, : int(0.8 * rgb.shape[1])]  # the map, not the colour bar
    r, c = np.nonzero(np.all(np.abs(left - np.array(rain)) < 0.02, axis=-1))
    assert r.size > 50_000
    assert r.mean() < 0.5 * rgb.shape[0]  # upper half of the image: north
    assert c.mean() < 0.4 * rgb.shape[1]  # left: west
