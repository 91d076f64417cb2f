"""Computing in proportion to the hole (radinfill.model.crops) and the classical methods on crops.

The regions are checked against boxes worked out by hand; every classical method on crops is
checked against the same method computed on the whole grid (its filler called directly, without
the crops), inside the hole.
"""

from __future__ import annotations

import numpy as np
import pytest

from radinfill.model import baselines, crops, motion
from tests.test_motion import disc, translating_rain

SHAPE = (240, 320)
#: Cropped and whole-grid results agree to float32 rounding, not bit for bit: OpenCV's remap
#: quantises interpolation weights to 1/32 px, and a coordinate computed relative to a crop's
#: origin can round to the neighbouring step; blurs of different widths round differently.
#: Observed: up to 2e-5 on rain of up to 6 (mm per interval).
CROP_ATOL = 1e-4
CROP_RTOL = 1e-4


def test_regions_of_separate_components_with_their_margins() -> None:
    hole = np.zeros((100, 120), dtype=bool)
    hole[20:30, 30:40] = True
    hole[70:75, 90:100] = True
    assert crops.regions(hole, 10) == [
        (slice(10, 40), slice(20, 50)),
        (slice(60, 85), slice(80, 110)),
    ]


def test_overlapping_boxes_merge_also_through_a_third() -> None:
    hole = np.zeros((100, 120), dtype=bool)
    hole[20:30, 20:30] = True  # grown: 12-38 x 12-38
    hole[20:30, 45:55] = True  # grown: 12-38 x 37-63, overlaps the first
    hole[44:50, 60:66] = True  # grown: 36-58 x 52-74, overlaps only the union of the two
    hole[90:92, 100:102] = True  # far away
    assert crops.regions(hole, 8) == [
        (slice(12, 58), slice(12, 74)),
        (slice(82, 100), slice(92, 110)),
    ]


def test_a_box_holding_part_of_another_component_is_merged_with_it() -> None:
    """An L-shaped component's box holds a pixel of another: one region, even with no margin."""
    hole = np.zeros((20, 20), dtype=bool)
    hole[2:12, 2] = True
    hole[11, 2:12] = True
    hole[5, 8] = True  # inside the L's box, not connected to it
    assert crops.regions(hole, 0) == [(slice(2, 12), slice(2, 12))]


def test_regions_are_clipped_at_the_grid_edge_and_aligned() -> None:
    hole = np.zeros((100, 120), dtype=bool)
    hole[0:5, 110:120] = True
    hole[50:53, 50:53] = True
    assert crops.regions(hole, 6, align=16) == [
        (slice(0, 16), slice(96, 120)),
        (slice(32, 64), slice(32, 64)),
    ]


def test_regions_cover_every_component_with_its_margin_once() -> None:
    rng = np.random.default_rng(3)
    hole = rng.random((150, 170)) > 0.9995
    hole |= disc(hole.shape, (0, 0), 20) | disc(hole.shape, (75, 90), 15)
    margin = 12
    boxes = crops.regions(hole, margin)
    owner = np.zeros(hole.shape, dtype=int)
    for rows, cols in boxes:
        owner[rows, cols] += 1
    assert owner.max() == 1  # disjoint
    for row, col in np.argwhere(hole):
        around = owner[
            max(row - margin, 0) : row + margin + 1, max(col - margin, 0) : col + margin + 1
        ]
        assert (around == 1).all()


def test_no_hole_no_region_and_bad_arguments() -> None:
    assert crops.regions(np.zeros((10, 10), dtype=bool), 5) == []
    with pytest.raises(ValueError, match="margin"):
        crops.regions(np.zeros((10, 10), dtype=bool), -1)


def test_paste_takes_hole_pixels_only() -> None:
    hole = np.zeros((6, 6), dtype=bool)
    hole[1, 1] = hole[4, 4] = True
    part = np.arange(9, dtype=np.float32).reshape(3, 3)
    filled = crops.paste(hole, [((slice(0, 3), slice(0, 3)), part)])
    assert filled[1, 1] == part[1, 1]
    assert np.isnan(np.delete(filled.ravel(), 1 * 6 + 1)).all()


# --- the classical methods on crops equal the whole grid -----------------------------------------


@pytest.fixture(scope="module")
def case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rain moving 2.6 px per step; two holes whose neighbourhoods overlap, one in the corner.

    The outage persists over the last 3 frames; the first future frame still has it.
    """
    truth = translating_rain(SHAPE, velocity=(2.3, -1.2), steps=9, noise=0.3)
    hole = disc(SHAPE, (140, 130), 25) | disc(SHAPE, (140, 185), 12)
    hole |= disc(SHAPE, (0, SHAPE[1] - 1), 20)  # touches two grid edges
    frames, future = truth[:6].copy(), truth[6:].copy()
    frames[-3:, hole] = np.nan
    future[0, hole] = np.nan
    return frames, hole, future


def whole_grid(name: str, frames: np.ndarray, hole: np.ndarray, future: np.ndarray) -> np.ndarray:
    """The method's filler run once on the whole grid, without the crops (the reference)."""
    entry = baselines._REGISTRY[name]
    cut = frames.copy()
    cut[-1][hole] = np.nan
    flows = [flow.field for flow in entry.motion(cut, future, hole)]
    given = [] if entry.causal else [future]
    return entry.fill(cut, hole, *given, *flows)


@pytest.mark.parametrize("name", baselines.list_methods())
def test_every_method_on_crops_equals_the_whole_grid(name, case) -> None:
    frames, hole, future = case
    cut = frames.copy()
    cut[-1][hole] = np.nan
    flows = baselines._REGISTRY[name].motion(cut, future, hole)
    regions = crops.regions(hole, baselines.crop_margin(flows, sigma_per_step=1.0, ring=1))
    # Moving methods: the two discs share a region, the corner has its own; the others read
    # only the hole's 4-neighbours and see every disc on its own.
    assert len(regions) == (2 if flows else 3)
    output = baselines.get_method(name)(frames, hole, future)
    expected = np.clip(np.nan_to_num(whole_grid(name, frames, hole, future)[hole]), 0.0, None)
    np.testing.assert_allclose(output[hole], expected, rtol=CROP_RTOL, atol=CROP_ATOL)
    assert np.array_equal(output[~hole], frames[-1][~hole], equal_nan=True)


@pytest.mark.parametrize("name", ["advection_boundary", "bidirectional_boundary"])
def test_too_small_a_margin_is_caught(name, case, monkeypatch) -> None:
    """The comparison above can fail: a crop that cuts the trajectories changes the infill."""
    frames, hole, future = case
    monkeypatch.setattr(baselines, "crop_margin", lambda *args, **kwargs: 3)
    output = baselines.get_method(name)(frames, hole, future)
    expected = np.clip(np.nan_to_num(whole_grid(name, frames, hole, future)[hole]), 0.0, None)
    assert np.abs(output[hole] - expected).max() > 100 * CROP_ATOL


def test_crop_margin_covers_travel_blur_and_ring() -> None:
    flow = np.zeros((2, 8, 8), dtype=np.float32)
    flow[0, 3, 3], flow[1, 3, 3] = 3.0, 4.0  # fastest: 5 px per step
    past = baselines.Flow(flow, 4)
    assert baselines.crop_margin([]) == baselines.STENCIL_REACH
    assert baselines.crop_margin([past]) == 20 + baselines.STENCIL_REACH
    # 20 px travel + 5 sigmas of 0.5 px x 4 steps + a 1 px ring
    assert baselines.crop_margin([past], sigma_per_step=0.5, ring=1) == 20 + 10 + 1 + 2
    ahead = baselines.Flow(flow * 2, 3)  # the future side reaches further: 30 px
    assert baselines.crop_margin([past, ahead]) == 30 + baselines.STENCIL_REACH


@pytest.mark.parametrize("name", baselines.list_methods())
def test_no_hole_costs_no_motion(name, case, monkeypatch) -> None:
    frames, hole, future = case

    def refuse(*args, **kwargs):
        raise AssertionError("motion estimated for a field without a hole")

    monkeypatch.setattr(motion, "estimate", refuse)
    empty = np.zeros_like(hole)
    output = baselines.get_method(name)(frames, empty, future)
    assert np.array_equal(output, frames[-1], equal_nan=True)


def test_a_grown_region_holds_the_region_at_the_offset_inside_gives() -> None:
    """Cutting ``inside(region, grown(region))`` from an array of the grown crop gives the
    array of the region, clipped at the grid's edges."""
    shape = (50, 70)
    field = np.arange(shape[0] * shape[1]).reshape(shape)
    region = (slice(3, 20), slice(40, 68))
    outer = crops.grown(region, 5, shape)
    assert outer == (slice(0, 25), slice(35, 70))
    np.testing.assert_array_equal(field[outer][crops.inside(region, outer)], field[region])


def test_lead_reach_is_the_oldest_frame_a_hole_pixel_is_advected_from(case) -> None:
    """The largest lead of the hole (persisting 3 frames: its pixels were last seen 3 steps
    back, the current frame not counted), and 0 for a hole no frame ever saw."""
    frames, hole, _ = case
    _, lead = baselines._latest_valid(frames[:-1], hole)
    assert baselines.lead_reach(frames, hole) == int(np.nanmax(lead)) == 3
    blocked = frames.copy()
    blocked[:, hole] = np.nan
    assert baselines.lead_reach(blocked, hole) == 0
    assert baselines.lead_reach(frames[-1:], hole) == 0


def test_a_hole_never_seen_keeps_small_crops_and_equals_the_whole_grid(case) -> None:
    """A beam blockage present in every frame moves nothing: its crop reaches the ring and
    stencil only, however long the window, and the fill equals the whole grid's."""
    frames, hole, future = case
    blocked = frames.copy()
    blocked[:, hole] = np.nan
    flows = baselines._REGISTRY["advection_boundary"].motion(blocked, None, hole)
    assert [flow.steps for flow in flows] == [0]
    output = baselines.get_method("advection_boundary")(blocked, hole)
    expected = whole_grid("advection_boundary", blocked, hole, future)[hole]
    np.testing.assert_allclose(
        output[hole], np.clip(np.nan_to_num(expected), 0.0, None), rtol=CROP_RTOL, atol=CROP_ATOL
    )
