"""The inference engine under the baseline call contract, its fallbacks; ``radinfill infill``."""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from radinfill import holes, radolan
from radinfill.cli import main
from radinfill.model import baselines, build, engine, save_checkpoint
from radinfill.model.engine import (
    CUDA_TO_CPU,
    MODEL_TO_BASELINE,
    InfillEngine,
    ramp,
    tile_spans,
)
from tests.conftest import require
from tests.test_checkpoint import tiny_model

RW_0750 = "radolan_to_netcdf/radolan_rw/raa01-rw_10000-1811220750-dwd---bin.gz"
RW_0850 = "radolan_to_netcdf/radolan_rw/raa01-rw_10000-1811220850-dwd---bin.gz"  # boo missing
RW_NHB = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
RW_NO_HOLES = "dwdradar/tests/raa01-rw_10000-1907311350-dwd---bin_hourRadRecentBin.gz"
RX = "dwdradar/tests/raa01-rx_10000-1605290600-dwd---bin_Braunsbach"
SCRIPT = Path(sys.executable).with_name("radinfill")


def rain_case(
    shape: tuple[int, int] = (96, 128), steps: int = 6, phase: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (mm per 5 min, 0-0.6) of a pattern moving east, with a disc outage persisting over
    the last two frames and a no-data strip (outside coverage) along the south edge."""
    t, r, c = np.mgrid[:steps, : shape[0], : shape[1]].astype(np.float32)
    frames = 0.3 * (1 + np.sin((c - 2 * t) / 7 + phase) * np.cos((r + t) / 9))
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    hole = (rows - shape[0] // 2) ** 2 + (cols - shape[1] // 2) ** 2 < 28**2
    frames[-2:, hole] = np.nan
    frames[:, :6] = np.nan
    return frames.astype(np.float32), hole


def cpu_engine(variant: str = "lstm_attention", **options: object) -> InfillEngine:
    options = {"device": "cpu", **options}
    return InfillEngine(tiny_model(variant), window=6, interval_minutes=5, **options)


def assert_contract(frames: np.ndarray, hole: np.ndarray, output: np.ndarray) -> None:
    """The baseline call contract: outside the hole bit-identical, inside finite and >= 0."""
    assert output.dtype == np.float32
    assert output.shape == hole.shape
    current = frames[-1].astype(np.float32)
    assert np.array_equal(output[~hole].view(np.uint32), current[~hole].view(np.uint32))
    assert np.isfinite(output[hole]).all()
    assert (output[hole] >= 0).all()


# --- the call contract -------------------------------------------------------------------------


def test_infill_keeps_the_contract_and_a_random_network_is_caught_by_the_envelope() -> None:
    frames, hole = rain_case()
    infill = cpu_engine()
    output = infill.infill(frames, hole)
    assert_contract(frames, hole, output)
    assert np.isnan(output[:6]).all()  # no-data outside the hole stays no-data
    prior = baselines.get_method("advection_boundary")(frames, hole)
    # Random weights correct the prior wildly: the envelope hands back the prior and counts it.
    np.testing.assert_allclose(output[hole], prior[hole], rtol=1e-5, atol=1e-7)
    assert infill.fallbacks == {engine.ENVELOPE: 1}


def test_untrained_model_gives_the_boundary_corrected_prior_in_product_units() -> None:
    """The head starts at zero, so mm -> mm/h -> model -> mm must reproduce the baseline."""
    frames, hole = rain_case()
    model = build("lstm", widths=(4, 8), kernels=(3, 3))
    infill = InfillEngine(model, window=6, interval_minutes=5, device="cpu")
    output = infill.infill(frames, hole)
    assert not infill.fallbacks  # equal to its prior: inside the envelope
    advected = baselines.get_method("advection_boundary")(frames, hole)
    np.testing.assert_allclose(output[hole], advected[hole], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 2, 9])
def test_any_number_of_frames(steps: int) -> None:
    frames, hole = rain_case(steps=steps)
    frames[-1][hole] = np.nan
    assert_contract(frames, hole, cpu_engine().infill(frames, hole))


def test_nan_in_earlier_frames_and_an_empty_hole() -> None:
    frames, hole = rain_case()
    frames[:-1, 40:60, :] = np.nan  # a band with no data in every earlier frame
    output = cpu_engine().infill(frames, hole)
    assert_contract(frames, hole, output)
    untouched = cpu_engine().infill(frames, np.zeros_like(hole))
    assert np.array_equal(untouched, frames[-1], equal_nan=True)


def test_future_frames_are_ignored_and_calls_are_deterministic() -> None:
    frames, hole = rain_case()
    infill = cpu_engine()
    first = infill.infill(frames, hole)
    again = infill.infill(frames, hole, future=frames[:2] * 10)
    assert np.array_equal(first, again, equal_nan=True)


def test_bad_input_is_refused_like_the_baselines() -> None:
    frames, hole = rain_case()
    with pytest.raises(ValueError, match="hole shape"):
        cpu_engine().infill(frames, hole[:-1])


# --- devices and fallbacks ---------------------------------------------------------------------


def test_explicit_cpu_device() -> None:
    infill = cpu_engine()
    assert infill.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in infill.model.parameters())
    assert "device=cpu" in repr(infill)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on CPU-only machines")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        cpu_engine(device="cuda")


def test_auto_device_picks_what_the_machine_has() -> None:
    infill = InfillEngine(tiny_model(), window=6, interval_minutes=5)
    assert infill.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_model_failure_falls_back_to_the_baseline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    frames, hole = rain_case()
    infill = cpu_engine()

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(infill.model, "forward", fail)
    with caplog.at_level(logging.WARNING, logger=engine.__name__):
        output = infill.infill(frames, hole)
        infill.infill(frames, hole)
    assert np.array_equal(
        output, baselines.get_method("advection_boundary")(frames, hole), equal_nan=True
    )
    assert infill.fallbacks == {MODEL_TO_BASELINE: 2}
    assert "baseline 'advection_boundary'" in caplog.text
    assert "out of memory" in caplog.text


@pytest.mark.parametrize("case", ["network", "envelope", "failure", "other error", "interval"])
def test_run_says_which_method_made_the_values(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The one place that decides the fallback reports it: the service publishes this."""
    frames, hole = rain_case()
    untrained = build("lstm", widths=(4, 8), kernels=(3, 3))  # equal to its prior
    infill = InfillEngine(
        untrained if case != "envelope" else tiny_model(),
        window=6,
        interval_minutes=5,
        device="cpu",
    )
    errors = {"failure": RuntimeError("device lost"), "other error": KeyError("a bug")}
    if case in errors:

        def fail(*args: object, **kwargs: object) -> None:
            raise errors[case]

        monkeypatch.setattr(infill, "_forward_all", fail)
    ran = infill.run(frames, hole, interval_minutes=60 if case == "interval" else 5)
    expected = {
        "network": ("lstm", ""),
        "envelope": ("advection_boundary", engine.ENVELOPE),
        "failure": ("advection_boundary", MODEL_TO_BASELINE),
        "other error": ("advection_boundary", MODEL_TO_BASELINE),
        "interval": ("advection_boundary", engine.INTERVAL),
    }[case]
    assert (ran.method, ran.fallback) == expected
    assert_contract(frames, hole, ran.values)
    if case != "network":
        assert infill.fallbacks == {expected[1]: 1}


def test_without_a_fallback_the_error_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    frames, hole = rain_case()
    infill = cpu_engine(fallback=None)
    monkeypatch.setattr(
        infill.model, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    with pytest.raises(RuntimeError, match="boom"):
        infill.infill(frames, hole)


@pytest.mark.parametrize("cpu_fails", [False, True])
def test_cuda_failure_retries_on_the_cpu_then_the_baseline(
    monkeypatch: pytest.MonkeyPatch, cpu_fails: bool
) -> None:
    """The device path without a GPU: the engine believes it runs on CUDA, whose forward pass
    runs out of memory; the CPU copy of the model takes over (or fails too)."""
    frames, hole = rain_case()
    infill = cpu_engine()
    expected = infill.infill(frames, hole)
    infill.fallbacks.clear()  # the random network left the envelope: not what is tested here
    forward = InfillEngine._forward

    def on_device(self: InfillEngine, model: torch.nn.Module, device: torch.device, inputs):
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if cpu_fails:
            raise RuntimeError("DefaultCPUAllocator: not enough memory")
        return forward(self, model, device, inputs)

    monkeypatch.setattr(InfillEngine, "_forward", on_device)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    infill.device = torch.device("cuda")
    output = infill.infill(frames, hole)
    if cpu_fails:
        fallback = baselines.get_method("advection_boundary")(frames, hole)
        assert np.array_equal(output, fallback, equal_nan=True)
        assert infill.fallbacks == {CUDA_TO_CPU: 1, MODEL_TO_BASELINE: 1}
    else:
        assert np.array_equal(output, expected, equal_nan=True)
        assert infill.fallbacks == {CUDA_TO_CPU: 1, engine.ENVELOPE: 1}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_matches_cpu(precision: str) -> None:
    frames, hole = rain_case()
    gpu = InfillEngine(
        tiny_model(), window=6, interval_minutes=5, device="cuda", precision=precision
    )
    tolerance = 1e-4 if precision == "fp32" else 5e-2
    np.testing.assert_allclose(
        gpu.infill(frames, hole), cpu_engine().infill(frames, hole), rtol=tolerance, atol=1e-4
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "int8"}, "precision must be one of"),
        ({"fallback": "magic"}, "unknown infill method"),
        ({"tile": (64, 64), "overlap": 32}, "more than twice the overlap"),
        ({"device": "tpu:0"}, "unknown device"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cpu_engine(**options)


# --- batches and tiles -------------------------------------------------------------------------


def test_a_batch_equals_one_by_one() -> None:
    """Same numbers up to float rounding: the CPU kernels block a batch differently."""
    items = [rain_case(phase=p) for p in (0.0, 1.0, 2.0)]
    items.append((items[0][0], np.zeros_like(items[0][1])))  # nothing to fill
    infill = cpu_engine()
    batched = infill.infill_batch(items, batch_size=2)
    for (frames, hole), output in zip(items, batched, strict=True):
        assert_contract(frames, hole, output)
        np.testing.assert_allclose(output, infill.infill(frames, hole), rtol=1e-5, atol=1e-6)


def test_channels_last_weights_change_the_speed_not_the_values() -> None:
    """The engine stores the weights channels-last (the fast oneDNN layout, which a one-channel
    radar input cannot carry); the forward pass gives what the plain layout gives."""
    frames, hole = rain_case()
    model = tiny_model("lstm_attention")
    plain = copy.deepcopy(model).eval()
    infill = InfillEngine(model, window=6, interval_minutes=5, device="cpu")
    weight = infill.model.encoder.blocks[1].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    inputs = [item for _, item in infill._crops(frames, hole)]
    cpu = torch.device("cpu")
    fast = infill._forward(infill.model, cpu, inputs)
    np.testing.assert_allclose(fast, infill._forward(plain, cpu, inputs), rtol=1e-5, atol=1e-6)


def test_a_batch_needs_one_grid() -> None:
    with pytest.raises(ValueError, match="one grid"):
        cpu_engine().infill_batch([rain_case(), rain_case((64, 64))])


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "align"), [(96, 72, 32, 4), (900, 256, 64, 16), (50, 60, 8, 4)]
)
def test_tiles_cover_the_grid_with_positive_blend_weights(
    size: int, tile: int, overlap: int, align: int
) -> None:
    spans = tile_spans(size, tile, overlap, align)
    assert spans[0][0] == 0
    assert spans[-1][1] == size
    assert all(start % align == 0 for start, _ in spans)
    for (_, stop), (start, _) in itertools.pairwise(spans):
        assert stop - start >= overlap
    weight = np.zeros(size)
    for start, stop in spans:
        weight[start:stop] += ramp(start, stop, size, overlap)
    assert (weight > 0).all()
    assert np.allclose(ramp(spans[0][0], spans[0][1], size, overlap)[: overlap // 2], 1.0)


@pytest.mark.parametrize(
    ("variant", "tolerance"),
    # Relative to the largest value in the hole. The purely local ``baseline`` variant has a
    # receptive field inside the zero-weight quarter of the overlap, so tiles agree up to float
    # rounding; the ConvLSTM widens the field with every frame, and channel attention pools over
    # the whole (tile) field, so tiles see other statistics: 0.5 % is what this size allows.
    [("baseline", 1e-5), ("lstm_attention", 5e-3)],
)
def test_tiled_is_close_to_untiled(variant: str, tolerance: float) -> None:
    frames, hole = rain_case()
    whole = cpu_engine(variant).infill(frames, hole)
    tiled = cpu_engine(variant, tile=(72, 72), overlap=32).infill(frames, hole)
    assert_contract(frames, hole, tiled)
    assert np.abs(tiled - whole)[hole].max() <= tolerance * whole[hole].max()


# --- method specs and checkpoints --------------------------------------------------------------


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A tiny untrained checkpoint for hourly RW (the fastest variant: 900 x 900 fields)."""
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    return save_checkpoint(model, tmp_path / "release", {"product": "RW", "interval_minutes": 60})


# --- radinfill infill --------------------------------------------------------------------------


def _inputs(samples: Path) -> list[Path]:
    """The two consecutive RW files (boo outage at 08:50), the nhb outage, one without holes."""
    return [samples / name for name in (RW_0850, RW_0750, RW_NHB, RW_NO_HOLES)]


@pytest.mark.parametrize("source", ["method", "checkpoint"])
def test_infill_command_on_real_files(
    samples: Path,
    tmp_path: Path,
    release: Path,
    source: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = _inputs(samples)
    model = "baseline:advection" if source == "method" else str(release)
    out = tmp_path / "out"
    assert main(["infill", "--model", model, *map(str, inputs), "-o", str(out)]) == 0
    report = capsys.readouterr()
    assert "4 planned, 0 already done, passthrough=1 processed=3" in report.out
    assert not {"quarantined", "ignored", "failed"} & set(report.err.split())
    for path in inputs:
        before, after = radolan.read_one(path), radolan.read_one(out / path.name)
        hole = holes.detect(before).failure
        assert before.header.raw == after.header.raw
        assert np.array_equal(after.values[~hole], before.values[~hole], equal_nan=True)
        assert not after.nodata[hole].any()
        assert not after.secondary[hole].any()
        assert np.isfinite(after.values[hole]).all()
        assert (after.values[hole] >= 0).all()
        assert not holes.detect(after).failure.any()
        stem = path.name.removesuffix(".gz")
        sidecar = json.loads((out / f"{stem}.json").read_text())
        assert sidecar["hole_pixels"] == int(hole.sum())
        with xr.open_dataset(out / f"{stem}.nc") as ds:
            assert np.array_equal(ds["infill_mask"].values[0].astype(bool), hole)
            assert ds.attrs["infill_input_file"] == str(path.resolve())
            assert ds.attrs["radinfill_version"]
            if not hole.any():
                continue
            if source == "checkpoint":
                assert ds.attrs["infill_checkpoint"] == str(release)
                assert len(ds.attrs["infill_checkpoint_sha256"]) == 64
            else:
                assert ds.attrs["infill_method"] == "advection"
            np.testing.assert_array_equal(ds["RW"].values[0], after.values)
    assert (out / Path(RW_NO_HOLES).name).read_bytes() == (samples / RW_NO_HOLES).read_bytes()
    assert gzip.decompress((out / Path(RW_0850).name).read_bytes())  # gz in, gz out


def test_infill_output_reads_in_wradlib(samples: Path, tmp_path: Path) -> None:
    wrl = require("wradlib")
    out = tmp_path / "out"
    assert (
        subprocess.run(
            [
                SCRIPT,
                "infill",
                "--model",
                "baseline:laplace",
                str(samples / RW_NHB),
                "-o",
                str(out),
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    data, attrs = wrl.io.read_radolan_composite(str(out / Path(RW_NHB).name))
    hole = holes.detect(radolan.read_one(samples / RW_NHB)).failure
    assert data.shape == (900, 900)
    assert not np.isin(np.flatnonzero(hole), attrs["nodatamask"]).any()
    assert np.isfinite(np.asarray(data, dtype=float)[hole]).all()


def test_infill_with_a_model_of_another_interval_falls_back(samples: Path, tmp_path: Path) -> None:
    five_minute = save_checkpoint(
        build("baseline", widths=(4, 8), kernels=(3, 3)),
        tmp_path / "five",
        {"product": "RY", "interval_minutes": 5},
    )
    out = tmp_path / "out"
    args = ["infill", "--model", str(five_minute), str(samples / RW_NHB), "-o", str(out)]
    assert main(args) == 0
    sidecar = json.loads((out / f"{Path(RW_NHB).name}.json").read_text())
    assert (sidecar["method"], sidecar["fallback"]) == ("advection_boundary", "interval")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "baseline:kriging", RW_NHB], "unknown infill method 'kriging'"),
        (["--model", "baseline:zero", "--window", "0", RW_NHB], "--window must be >= 1"),
    ],
)
def test_infill_command_errors_are_one_line(
    samples: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    args = [str(samples / a) if a in (RW_NHB, RX) else a for a in args]
    assert main(["infill", *args, "-o", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_infill_names_each_input_it_did_not_infill(
    samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["infill", "--model", "baseline:zero", str(samples / RX), str(samples / RW_NHB)]
    assert main([*args, "-o", str(out)]) == 1
    problems = [line for line in capsys.readouterr().err.splitlines() if ": ignored" in line]
    assert problems == [f"{(samples / RX).resolve()}: ignored (RX is not a product to infill)"]
    assert (out / Path(RW_NHB).name).is_file()  # the other input still got its outputs
    assert not (out / Path(RX).name).exists()


def test_infill_writes_beside_its_inputs_but_never_over_them(
    samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    source = inputs / Path(RW_NHB).name
    source.write_bytes((samples / RW_NHB).read_bytes())
    assert main(["infill", "--model", "baseline:zero", str(source), "-o", str(inputs / "out")]) == 0
    assert (inputs / "out" / source.name).is_file()
    capsys.readouterr()
    assert main(["infill", "--model", "baseline:zero", str(source), "-o", str(inputs)]) == 1
    assert "must lie outside the inputs" in capsys.readouterr().err
    assert source.read_bytes() == (samples / RW_NHB).read_bytes()
