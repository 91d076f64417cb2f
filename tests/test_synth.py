"""Synthetic rain sequences and outage masks.

Statistics are measured here with code written independently of the generator (Pearson r of
whole fields, phase correlation for the motion, haversine distances for the geometry) and
compared with the target ranges each preset declares, which come from real radar sequences
(``reference/baselines-metrics-synthetic.md`` §4.2). Like those, each one event on a domain
of several hundred km, they are measured on a 512 x 512 grid and pooled over a few events
(seeds): a Pearson r over a smaller domain discounts the scales larger than it, so smaller
grids serve only the tests that measure no correlation.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy import fft

from radinfill import synth
from radinfill.holes import angular_spread, coverage, great_circle
from radinfill.radolan import grid_for
from radinfill.radolan.sites import OPERATIONAL, SITES

STATS_GRID = (512, 512)
STATS_STEPS = 25
STATS_SEEDS = range(4)
WET_MMH = 0.1
EARTH_KM = 6371.0088


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _displacement(a: np.ndarray, b: np.ndarray, limit: int = 80) -> np.ndarray:
    """Integer (rows, cols) shift d, |d| <= ``limit`` px per axis, with b(p) ~ a(p - d), by
    phase correlation (Hann-windowed, so the non-periodic edges do not count)."""
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    cross = np.conj(fft.rfft2((a - a.mean()) * window)) * fft.rfft2((b - b.mean()) * window)
    surface = fft.irfft2(cross / np.maximum(np.abs(cross), 1e-12), s=a.shape)
    near = np.roll(surface, (limit, limit), axis=(0, 1))[: 2 * limit + 1, : 2 * limit + 1]
    return np.array(np.unravel_index(np.argmax(near), near.shape)) - limit


def _overlap(a: np.ndarray, b: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The parts of ``a`` and ``b`` that coincide once ``a`` is moved by ``shift``."""
    dy, dx = (int(v) for v in shift)
    h, w = a.shape[0] - abs(dy), a.shape[1] - abs(dx)
    return (
        a[max(0, -dy) : max(0, -dy) + h, max(0, -dx) : max(0, -dx) + w],
        b[max(0, dy) : max(0, dy) + h, max(0, dx) : max(0, dx) + w],
    )


def _statistics(values: np.ndarray, minutes: int) -> dict[str, float]:
    """The statistics of :class:`synth.Targets` of one sequence (mm per interval)."""
    rate = values * (60.0 / minutes)
    wet = rate >= WET_MMH * (1 - 1e-6)
    log_rate = np.log(rate[wet])
    hour = 60 // minutes

    def lags(lag: int) -> range:
        return range(len(values) - lag)

    stats = {
        "wet_fraction": float(wet.mean()),
        "log_mean": float(log_rate.mean()),
        "log_sd": float(log_rate.std()),
        "p99": float(np.percentile(rate[wet], 99)),
        "lag_1h": float(np.mean([_pearson(values[t], values[t + hour]) for t in lags(hour)])),
        "max_rate": float(rate.max()),
    }
    if minutes == 5:
        log1p = np.log1p(rate)
        per_step = _displacement(log1p[0], log1p[6]) / 6.0
        stats["lag_5min"] = float(np.mean([_pearson(f, g) for f, g in itertools.pairwise(values)]))
        for lag, name in ((1, "advected_5min"), (5, "advected_25min")):
            shift = np.round(per_step * lag)
            pairs = [_overlap(log1p[t], log1p[t + lag], shift) for t in lags(lag)]
            stats[name] = float(np.mean([_pearson(f, g) for f, g in pairs]))
    return stats


def _pooled(preset: str, steps: int, minutes: int) -> dict[str, float]:
    per_seed = [
        _statistics(synth.sequence(STATS_GRID, steps, minutes, preset, seed), minutes)
        for seed in STATS_SEEDS
    ]
    pooled = {key: float(np.mean([s[key] for s in per_seed])) for key in per_seed[0]}
    pooled["max_rate"] = max(s["max_rate"] for s in per_seed)
    return pooled


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, float]]:
    """Statistics of 5-min sequences per preset, pooled over :data:`STATS_SEEDS`."""
    return {name: _pooled(name, STATS_STEPS, 5) for name in synth.PRESETS}


TARGETS = [f.name for f in dataclasses.fields(synth.Targets)]


@pytest.mark.parametrize("statistic", TARGETS)
@pytest.mark.parametrize("preset", list(synth.PRESETS))
def test_statistics_reach_the_preset_targets(measured, preset: str, statistic: str):
    low, high = getattr(synth.PRESETS[preset].targets, statistic)
    assert low <= measured[preset][statistic] <= high, (preset, statistic, measured[preset])


def test_targets_follow_the_reference_rules_of_thumb():
    # §4.2: wet fraction 5-30 %, conditional ln R ~ N(-1...+0.4, 0.85-1.25), Eulerian r at
    # 5 min 0.55-0.85 and at 1 h 0.05-0.4; every preset's range overlaps these.
    rules = {
        "wet_fraction": (0.05, 0.30),
        "log_mean": (-1.0, 0.4),
        "log_sd": (0.85, 1.25),
        "lag_5min": (0.55, 0.85),
        "lag_1h": (0.05, 0.4),
    }
    for preset in synth.PRESETS.values():
        for name, (low, high) in rules.items():
            target_low, target_high = getattr(preset.targets, name)
            assert target_low < high, (preset.name, name)
            assert target_high > low, (preset.name, name)
        assert all(10.0 <= s <= 60.0 for s in preset.speed_kmh)


def test_presets_are_ordered_by_regime(measured):
    strat, mixed, conv = (measured[n] for n in ("stratiform", "mixed", "convective"))
    for key in ("lag_5min", "lag_1h", "advected_25min"):
        assert strat[key] > mixed[key] > conv[key], key
    assert conv["p99"] > mixed["p99"] > strat["p99"]
    assert strat["wet_fraction"] > mixed["wet_fraction"] > conv["wet_fraction"]


def test_rain_is_capped_and_the_cap_binds_for_convection(measured):
    for name, stats in measured.items():
        assert stats["max_rate"] <= synth.CAP_MMH * (1 + 1e-6), name
    assert measured["convective"]["max_rate"] == pytest.approx(synth.CAP_MMH)


@pytest.mark.parametrize("preset", list(synth.PRESETS))
def test_values_are_finite_non_negative_mm_per_interval(preset: str):
    values = synth.sequence((200, 160), 6, 5, preset, seed=7)
    assert values.shape == (6, 200, 160)
    assert values.dtype == np.float32
    assert np.isfinite(values).all()
    assert values.min() == 0.0
    wet = values[values > 0] * 12.0
    assert wet.min() >= WET_MMH * (1 - 1e-6)
    assert wet.max() <= synth.CAP_MMH * (1 + 1e-6)


def test_hourly_frames_are_mm_per_hour_of_the_same_process():
    five = synth.sequence((128, 128), 3, 5, "mixed", seed=11)
    hourly = synth.sequence((128, 128), 3, 60, "mixed", seed=11)
    # The first frame is the same draw; only the accumulation interval differs.
    np.testing.assert_allclose(hourly[0], 12.0 * five[0], rtol=1e-6)
    assert not np.allclose(hourly[1], 12.0 * five[1])


@pytest.mark.parametrize("preset", list(synth.PRESETS))
def test_hourly_lag_correlation_matches_the_1h_target(preset: str):
    stats = _pooled(preset, 12, 60)
    targets = synth.PRESETS[preset].targets
    assert targets.lag_1h[0] <= stats["lag_1h"] <= targets.lag_1h[1], stats
    assert targets.p99[0] <= stats["p99"] <= targets.p99[1], stats


def test_rain_moves_at_the_drawn_speed_mostly_from_west_southwest():
    low, high = synth.PRESETS["stratiform"].speed_kmh
    seeds = range(8)
    eastward, moved, in_place = 0, [], []
    for seed in seeds:
        log1p = np.log1p(synth.sequence((256, 256), 7, 5, "stratiform", seed))
        shift = _displacement(log1p[0], log1p[6])  # px = km in 30 min
        assert low - 2.0 <= 2.0 * np.hypot(*shift) <= high + 2.0, (seed, shift)
        eastward += shift[1] > 0  # columns run west to east
        moved.append(_pearson(*_overlap(log1p[0], log1p[6], shift)))
        in_place.append(_pearson(log1p[0], log1p[6]))
        # The motion is physical: on the 2 km national grid the same event moves as far in km.
        coarse = np.log1p(synth.sequence(grid_for(450, 450), 7, 5, "stratiform", seed))
        coarse_shift = _displacement(coarse[0], coarse[6])
        assert np.abs(2 * coarse_shift - shift).max() <= 2, (seed, shift, coarse_shift)
    assert eastward >= 0.75 * len(seeds)
    # Moved back, the later frame matches the earlier one better than in place.
    assert all(m > p for m, p in zip(moved, in_place, strict=True))
    assert np.mean(moved) > np.mean(in_place) + 0.2


def test_hourly_motion_is_the_same_physical_motion():
    agree = 0
    for seed in range(8):
        five = np.log1p(synth.sequence((256, 256), 7, 5, "stratiform", seed))
        hourly = np.log1p(synth.sequence((256, 256), 2, 60, "stratiform", seed))
        per_half_hour = _displacement(five[0], five[6])
        per_hour = _displacement(hourly[0], hourly[1])
        agree += np.abs(per_hour - 2 * per_half_hour).max() <= 2
    assert agree >= 6  # an hour of evolution blurs the odd estimate


def test_same_seed_same_bytes_and_longer_sequences_extend_shorter_ones():
    a = synth.sequence((96, 80), 8, 5, "convective", seed=5)
    b = synth.sequence(grid_for(96, 80), 8, 5, "convective", seed=5)
    assert a.tobytes() == b.tobytes()
    assert synth.sequence((96, 80), 3, 5, "convective", seed=5).tobytes() == a[:3].tobytes()
    assert not np.array_equal(a, synth.sequence((96, 80), 8, 5, "convective", seed=6))
    assert not np.array_equal(a, synth.sequence((96, 80), 8, 5, "mixed", seed=5))


def test_national_grid_37_steps():
    values = synth.sequence(grid_for(900, 900), 37)
    assert values.shape == (37, 900, 900)
    assert values.dtype == np.float32
    assert (values > 0).any(axis=(1, 2)).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"convective.*mixed.*stratiform"):
        synth.sequence((32, 32), 2, preset="drizzle")
    with pytest.raises(ValueError, match="steps"):
        synth.sequence((32, 32), 0)
    with pytest.raises(ValueError, match="kind"):
        synth.outage_events((32, 32), 2, 0, kinds=("meteor",))
    with pytest.raises(ValueError, match="no coordinates"):
        synth.outage_events((32, 32), 2, 0, sites=("xyz",))


# --- outages ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def national():
    return grid_for(900, 900)


@pytest.fixture(scope="module")
def distance_to(national):
    """Haversine distance (km) of every national pixel from a site, written out here."""
    lon, lat = national.lonlat()
    cache: dict[str, np.ndarray] = {}

    def distance(site: str) -> np.ndarray:
        if site not in cache:
            s = SITES[site]
            p1, p2 = np.radians(s.lat), np.radians(lat)
            a = (
                np.sin((p2 - p1) / 2) ** 2
                + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon - s.lon) / 2) ** 2
            )
            cache[site] = 2 * EARTH_KM * np.arcsin(np.sqrt(a))
        return cache[site]

    return distance


@pytest.fixture(scope="module")
def events(national) -> list[synth.Outage]:
    """Many national outage events of every kind (high failure rate, several seeds)."""
    return [
        e
        for seed in range(3)
        for e in synth.outage_events(national, 40, seed, p_fail=0.05, mean_duration_steps=8)
    ]


def _of_kind(events: list[synth.Outage], kind: str) -> list[synth.Outage]:
    found = [e for e in events if e.kind == kind]
    assert found, f"no {kind} events to check"
    return found


def test_outage_masks_lie_in_the_nominal_coverage_and_are_read_only(national, events):
    nominal = coverage(national, OPERATIONAL, 150.0)
    assert {e.kind for e in events} == set(synth.KINDS)
    for e in events:
        assert e.mask.shape == national.shape
        assert e.mask.dtype == bool
        assert e.mask.any()
        assert not (e.mask & ~nominal).any()
        assert 0 <= e.start < e.stop <= 40
        with pytest.raises(ValueError, match="read-only"):
            e.mask[0, 0] = True


def test_full_outage_is_the_disc(events, distance_to):
    for e in _of_kind(events, "full"):
        d = distance_to(e.site)
        clear = np.abs(d - 150.0) > 1e-3
        np.testing.assert_array_equal(e.mask[clear], (d <= 150.0)[clear])


def test_exclusive_outage_is_the_disc_no_other_radar_covers(events, distance_to):
    for e in _of_kind(events, "exclusive"):
        others = np.zeros_like(e.mask)
        clear = np.abs(distance_to(e.site) - 150.0) > 1e-3
        for site in OPERATIONAL:
            if site != e.site:
                disc = distance_to(site) <= 150.0
                assert not (e.mask & disc & (distance_to(site) < 150.0 - 1e-3)).any()
                others |= disc
                clear &= np.abs(distance_to(site) - 150.0) > 1e-3
        expected = (distance_to(e.site) <= 150.0) & ~others
        np.testing.assert_array_equal(e.mask[clear], expected[clear])


def test_interior_radars_have_no_exclusive_outage(national):
    # Flechtdorf and Türkheim are wholly covered by neighbours (§4.4: 0 exclusive pixels).
    for seed in range(3):
        kw = {"p_fail": 0.3, "sites": ("fld", "tur")}
        assert synth.outage_events(national, 30, seed, kinds=("exclusive",), **kw) == []
        assert synth.outage_events(national, 30, seed, kinds=("full",), **kw)


def test_wedges_are_narrow_sectors_from_their_site(national, events):
    lon, lat = national.lonlat()
    for e in _of_kind(events, "wedge"):
        s = SITES[e.site]
        distance, azimuth = great_circle(s.lon, s.lat, lon[e.mask], lat[e.mask])
        assert 1.0 <= angular_spread(azimuth) <= synth.WEDGE_WIDTH_DEG[1]
        assert synth.WEDGE_START_KM[0] - 1.0 <= distance.min() <= synth.WEDGE_START_KM[1] + 1.0
        assert distance.max() <= 150.0


def test_blind_zones_are_small_discs_at_the_site(events, distance_to):
    for e in _of_kind(events, "blind"):
        d = distance_to(e.site)
        assert d[e.mask].max() <= synth.BLIND_RADIUS_KM[1]
        assert e.mask[d < 1.0].all()  # the site's own pixels
        assert (d[e.mask] >= synth.BLIND_RADIUS_KM[0] - 1.0).any()


def test_outages_persist_with_the_requested_mean_duration():
    grid = grid_for(64, 64)  # inside the Flechtdorf disc
    for mean in (4, 16):
        runs, gaps = [], []
        for seed in range(12):
            spans = [
                (e.start, e.stop)
                for e in synth.outage_events(
                    grid, 1500, seed, kinds=("full",), sites=("fld",), mean_duration_steps=mean
                )
            ]
            runs += [b - a for a, b in spans if a > 0 and b < 1500]  # uncensored only
            gaps += [a2 - b1 for (_, b1), (a2, _) in itertools.pairwise(spans)]
        assert np.mean(runs) > 1
        assert 0.75 * mean <= np.mean(runs) <= 1.3 * mean, (mean, np.mean(runs))
        assert 0.8 / 0.02 <= np.mean(gaps) <= 1.2 / 0.02  # P(up -> down) = p_fail


def test_static_features_are_long_lived(national):
    spans = [
        e.stop - e.start
        for seed in range(4)
        for e in synth.outage_events(national, 60, seed, kinds=("wedge", "blind"), p_fail=0.05)
    ]
    assert spans
    assert np.median(spans) >= 30


def test_outages_overlap_and_can_be_under_way_at_the_start(events):
    assert any(e.start == 0 for e in events)
    disc = [e for e in events if e.kind in ("full", "exclusive")]
    active = [sum(e.start <= t < e.stop for e in disc) for t in range(40)]
    assert max(active) >= 2


def test_outages_are_the_union_of_the_events_and_deterministic():
    grid = grid_for(300, 300)
    kw = {"p_fail": 0.05, "mean_duration_steps": 6}
    events = synth.outage_events(grid, 30, 4, **kw)
    union = np.zeros((30, 300, 300), dtype=bool)
    for e in events:
        for t in range(e.start, e.stop):
            union[t] |= e.mask
    masks = synth.outages(grid, 30, 4, **kw)
    assert masks.dtype == bool
    assert masks.shape == (30, 300, 300)
    np.testing.assert_array_equal(masks, union)
    assert union.any()

    again = synth.outage_events(grid, 30, 4, **kw)
    assert [(e.kind, e.site, e.start, e.stop) for e in again] == [
        (e.kind, e.site, e.start, e.stop) for e in events
    ]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again, events, strict=True))
    assert not np.array_equal(synth.outages(grid, 30, 5, **kw), masks)


def test_failed_sites_are_the_radars_down_at_a_step(events):
    for step in range(40):
        expected = {
            e.site for e in events if e.kind in ("full", "exclusive") and e.start <= step < e.stop
        }
        assert synth.failed_sites(events, step) == expected

    mask = np.zeros((2, 2), dtype=bool)
    hand = [
        synth.Outage("full", "asb", 2, 5, mask),
        synth.Outage("exclusive", "boo", 4, 6, mask),
        synth.Outage("wedge", "drs", 0, 9, mask),
        synth.Outage("blind", "eis", 0, 9, mask),
    ]
    assert synth.failed_sites(hand, 1) == frozenset()
    assert synth.failed_sites(hand, 4) == {"asb", "boo"}
    assert synth.failed_sites(hand, 5) == {"boo"}
    assert synth.failed_sites(hand, 6) == frozenset()
