"""Training data: sequence sources, the mask library and the window dataset."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from radinfill import dataset, netcdf, synth
from radinfill.holes import coverage
from radinfill.radolan import read, read_one
from radinfill.radolan.sites import OPERATIONAL
from radinfill.train import data
from tests.conftest import missing

from .conftest import SAMPLES

FMI = SAMPLES.parent / "fmi"
RY = Path("radolan_to_netcdf") / "radolan_ry"
RX = Path("wradlib-data") / "showcase" / "raa01-rx_10000-1408102050-dwd---bin.gz"
BOO_OUTAGE = [f"raa01-rw_10000-18112{h}50-dwd---bin.gz" for h in ("208", "209", "210")]


@pytest.fixture(scope="module")
def fmi() -> list[data.SequenceSource]:
    if not FMI.is_dir():
        missing(f"FMI events not found at {FMI}")
    return data.rate_sequences(FMI)


@pytest.fixture(scope="module")
def library() -> data.MaskLibrary:
    events = synth.outage_events((300, 300), 24, seed=1, p_fail=0.1, kinds=("full", "wedge"))
    return data.MaskLibrary(synthetic=events)


def _source(frames: np.ndarray, event: str = "test-0", interval: int = 5) -> data.SequenceSource:
    return data.SequenceSource("test", event, interval, len(frames), lambda: frames)


def _synthetic(preset: str = "mixed", size: int = 160, steps: int = 8) -> data.SequenceSource:
    return data.synthetic_sequences([preset], [0], (size, size), steps)[0]


def test_radolan_runs_split_at_a_gap_and_skip_other_products(samples, tmp_path):
    files = sorted((samples / RY).iterdir())
    for path in files[:5] + files[6:]:  # 15:25 missing
        shutil.copy(path, tmp_path)
    shutil.copy(samples / RX, tmp_path)
    (tmp_path / "notes.txt").write_text("not a RADOLAN file")

    runs = data.radolan_sequences(tmp_path)

    assert [(r.length, r.interval_minutes) for r in runs] == [(5, 5), (7, 5)]  # no RX (dBZ)
    assert {r.event for r in runs} == {"RY-20200101"}
    second = runs[1].frames()
    expected = np.stack([read_one(p).values for p in files[6:]])
    np.testing.assert_array_equal(second, expected)
    assert not second.flags.writeable


def test_netcdf_source_round_trip_splits_gaps_and_drops_infilled_pixels(samples, tmp_path):
    files = sorted((samples / RY).iterdir())
    fields = [f for i in (0, 1, 2, 4) for f in read(files[i])]
    infilled = np.zeros((len(fields), *fields[0].values.shape), dtype=bool)
    infilled[1, 400:420, 300:330] = True
    path = tmp_path / "ry.nc"
    netcdf.write(dataset.to_dataset(fields), path, infill_mask=infilled)

    runs = data.netcdf_sequences([path], min_length=1)

    assert [(r.length, r.interval_minutes) for r in runs] == [(3, 5), (1, 5)]
    frames = runs[0].frames()
    truth = np.stack([f.values for f in fields[:3]])
    assert np.isnan(frames[infilled[:3]]).all()
    np.testing.assert_array_equal(frames[~infilled[:3]], truth[~infilled[:3]])
    np.testing.assert_array_equal(runs[1].frames()[0], fields[3].values)


def test_netcdf_source_refuses_a_file_without_an_amount_variable(samples, tmp_path):
    path = tmp_path / "rx.nc"
    rx = read(samples / RX)
    netcdf.write(dataset.to_dataset(rx), path)
    with pytest.raises(ValueError, match=r"rx\.nc"):
        data.netcdf_sequences([path])


def test_fmi_sources_are_amounts_per_interval_with_south_first_rows(fmi):
    assert [(s.event, s.length, s.interval_minutes) for s in fmi] == [
        ("fmi-20160928", 40, 5),
        ("fmi-20170509", 40, 5),
    ]
    frames = fmi[0].frames()
    assert frames.shape == (40, 1226, 760)
    assert frames.dtype == np.float32
    with np.load(FMI / "fmi-20160928.npz") as z:
        raw = z["rain"][0]
    rate = np.where(raw == 65535, np.nan, raw / 100.0)  # the README's recipe, mm/h, north first
    np.testing.assert_allclose(frames[0], rate[::-1] * 5 / 60, rtol=1e-6)
    # The README's maximum rain rate of the event, 167 mm/h, as mm per 5 minutes.
    assert np.nanmax(frames) * 12 == pytest.approx(167, abs=1)


def test_synthetic_sources_are_deterministic_per_preset_and_seed():
    first, again = (data.synthetic_sequences(["mixed"], [0, 1], (96, 96), 4) for _ in range(2))
    assert [s.event for s in first] == ["synth-mixed-0", "synth-mixed-1"]
    np.testing.assert_array_equal(first[0].frames(), again[0].frames())
    np.testing.assert_array_equal(first[0].frames(), synth.sequence((96, 96), 4, 5, "mixed", 0))
    assert not np.array_equal(first[0].frames(), first[1].frames())


def test_masks_mined_from_the_boo_outage_are_inside_coverage_and_no_data(samples):
    paths = [samples / "radolan_to_netcdf" / "radolan_rw" / name for name in BOO_OUTAGE]
    mined = []
    for path in paths:
        field = read_one(path)
        nominal = coverage(field.grid, OPERATIONAL, 150.0)
        masks = data.MaskLibrary.mine([path])
        assert len(masks) == 1
        assert masks[0].any()
        assert not (masks[0] & ~nominal).any()
        assert not (masks[0] & ~field.nodata).any()
        mined += masks
    library = data.MaskLibrary(mined, min_pixels=1)
    assert library.real_count == len(library) <= len(mined)  # identical masks deduplicated


def test_library_build_mixes_real_and_synthetic_patterns(samples):
    paths = [samples / "radolan_to_netcdf" / "radolan_rw" / BOO_OUTAGE[0]]
    library = data.MaskLibrary.build(paths, grid=(300, 300), seeds=[0], steps=24, min_pixels=1)
    assert 0 < library.real_count < len(library)
    with pytest.raises(ValueError, match="no hole pattern"):
        data.MaskLibrary([np.zeros((10, 10), dtype=bool)])


def test_sampled_masks_persist_until_the_current_step(library):
    rng = np.random.default_rng(0)
    for _ in range(30):
        mask = library.sample(rng, (48, 48), 6)
        assert mask.shape == (6, 48, 48)
        assert mask.dtype == bool
        assert mask[-1].any()
        assert not mask[0].any()
        assert all(not (mask[t] & ~mask[t + 1]).any() for t in range(5))  # once down, down


def test_dataset_items_have_the_feature_shapes_and_rate_units(library):
    source = _synthetic()
    ds = data.WindowDataset([source], library, window=4, crop=48, length=8)
    item = ds[3]
    inputs = item["inputs"]
    assert inputs.values.shape == inputs.valid.shape == (4, 48, 48)
    assert inputs.aux.shape == (5, 48, 48)
    assert inputs.values.dtype == np.float32
    assert item["target"].shape == (48, 48)
    assert item["target"].dtype == np.float32
    assert item["loss_mask"].dtype == bool
    assert item["loss_mask"].any()
    np.testing.assert_array_equal(inputs.hole, item["loss_mask"])
    assert not inputs.valid[-1][item["loss_mask"]].any()  # the hole is cut from the input
    batch = data.collate([ds[0], ds[1]])
    assert tuple(batch["values"].shape) == (2, 4, 1, 48, 48)
    assert tuple(batch["aux"].shape) == (2, 5, 48, 48)
    assert tuple(batch["target"].shape) == tuple(batch["loss_mask"].shape) == (2, 1, 48, 48)


def test_target_is_the_current_rate_in_mm_per_hour(library):
    uniform = np.full((5, 64, 64), 0.25, dtype=np.float32)  # mm per 5 minutes = 3 mm/h
    ds = data.WindowDataset([_source(uniform)], library, window=3, crop=48, length=6)
    for index in range(len(ds)):
        target = ds[index]["target"]
        assert set(np.unique(target)) <= {0.0, 3.0}
        assert (target == 3.0).any()


def test_loss_mask_excludes_pixels_without_truth(library):
    frames = synth.sequence((96, 96), 6, 5, "stratiform", 2)
    frames[:, :, 40:] = np.nan  # the east half has no data
    ds = data.WindowDataset([_source(frames)], library, window=4, crop=64, length=20)
    for index in range(len(ds)):
        item = ds[index]
        target, loss = item["target"], item["loss_mask"]
        assert np.isfinite(target).all()
        # The pixels without truth are exactly those the (augmented) input never saw valid.
        no_truth = item["inputs"].valid.sum(axis=0) == 0
        assert not (loss & no_truth).any()
        assert (target[no_truth] == 0).all()


def test_samples_are_deterministic_per_seed_index_and_epoch(library):
    def sample(seed: int, epoch: int, index: int) -> np.ndarray:
        ds = data.WindowDataset([_synthetic()], library, window=3, crop=48, seed=seed)
        ds.set_epoch(epoch)
        item = ds[index]
        return np.concatenate([item["inputs"].values.ravel(), item["loss_mask"].ravel()])

    np.testing.assert_array_equal(sample(0, 0, 5), sample(0, 0, 5))
    assert not np.array_equal(sample(0, 0, 5), sample(0, 1, 5))
    assert not np.array_equal(sample(0, 0, 5), sample(0, 0, 6))
    assert not np.array_equal(sample(0, 0, 5), sample(1, 0, 5))


def test_crops_land_on_rain_more_often_than_uniform_crops(library):
    source = _synthetic("convective", size=256, steps=3)

    def wet_share(rain_bias: float) -> float:
        ds = data.WindowDataset(
            [source], library, window=2, crop=32, length=40, rain_bias=rain_bias
        )
        return float(np.mean([(ds[i]["target"] >= 0.1).mean() for i in range(len(ds))]))

    assert wet_share(1.0) > 1.5 * wet_share(0.0)


def test_held_out_events_never_reach_training(library, samples):
    def forbidden() -> np.ndarray:
        raise AssertionError("a held-out event was loaded")

    held = [data.SequenceSource(e, e, 5, 24, forbidden) for e in sorted(data.HELD_OUT)]
    ds = data.WindowDataset([*held, _synthetic()], library, window=3, crop=48, length=10)
    assert {s.event for s in ds.sources} == {"synth-mixed-0"}
    assert {ds[i]["source"] for i in range(len(ds))} == {ds.sources[0].name}
    # The ids match what the loaders give the real evaluation events.
    yw = data.radolan_sequences(samples / "radolan_to_netcdf" / "radolan_yw")
    assert {s.event for s in yw} <= data.HELD_OUT
    if FMI.is_dir():
        assert "fmi-20170509" in {s.event for s in data.rate_sequences(FMI)} & data.HELD_OUT
    with pytest.raises(ValueError, match="no source"):
        data.WindowDataset(held, library)


def test_datasets_pickle_into_worker_processes(library, fmi):
    source = _synthetic(size=96, steps=4)
    ds = data.WindowDataset([source, *fmi], library, window=3, crop=48, length=4)
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[1]["inputs"].values, ds[1]["inputs"].values)
