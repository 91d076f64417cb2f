"""The command line as a user runs it: real console script, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from radinfill.cli import build_parser, main
from radinfill.daemon.demo import ODIM_STEPS, model_spec

RW_NHB = "dwdradar/tests/raa01-rw_10000-1907010950-dwd---bin_weatherRadolan"
CORRUPT = "wradlib-data/showcase_CORRUPT/raa01-w3_10000-1408110550-dwd---bin.gz"
SCRIPT = Path(sys.executable).with_name("radinfill")


def _commands() -> list[str]:
    subparsers = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    return sorted(subparsers.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str) -> None:
    done = subprocess.run([SCRIPT, command, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert f"usage: radinfill {command}" in done.stdout


def test_inspect_json_reports_the_missing_radar(samples: Path) -> None:
    done = subprocess.run(
        [SCRIPT, "inspect", samples / RW_NHB, "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["product"] == "RW"
    assert record["time"] == "2019-07-01T09:50:00+00:00"
    assert record["grid"]["rows"] == 900
    assert "nhb" not in record["header"]["MS"]
    assert record["holes"]["missing_radars"] == ["nhb"]
    assert record["holes"]["failure_pixels"] > 1000


def test_inspect_text(samples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(samples / RW_NHB)]) == 0
    text = capsys.readouterr().out
    assert "missing radars nhb" in text
    assert "national 900x900" in text


@pytest.mark.parametrize(
    "args", [["inspect", CORRUPT], ["quicklook", CORRUPT], ["inspect", "missing"]]
)
def test_errors_are_one_line_without_traceback(
    samples: Path, tmp_path: Path, args: list[str]
) -> None:
    target = samples / args[1] if args[1] != "missing" else tmp_path / "no-such-file"
    done = subprocess.run([SCRIPT, args[0], target], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"radinfill {args[0]}: error:")
    assert str(target) in lines[0]


def test_quicklook_writes_png(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "rw.png"
    assert main(["quicklook", str(samples / RW_NHB), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_reads_a_model_path_from_where_it_was_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``radinfill demo --model assets/model`` from the repository: the service reads its
    configuration relative to ``out/demo``, so the demo hands it the absolute path."""
    (tmp_path / "assets" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_spec("assets/model") == str(tmp_path.resolve() / "assets" / "model")
    assert model_spec("baseline:advection") == "baseline:advection"
    assert model_spec(None) == "baseline:advection_boundary"


def test_demo_runs_the_service_on_a_generated_stream(samples: Path, tmp_path: Path) -> None:
    """The README's main job, shrunk: every delivered product gets its three outputs, the
    summary reports them, and the metrics snapshot is a real scrape of the running service."""
    out = tmp_path / "demo"
    done = subprocess.run(
        [
            SCRIPT,
            "demo",
            "--out",
            out,
            "--steps",
            "6",
            "--grid",
            "200x200",
            "--data",
            samples,
            "--model",
            "baseline:advection",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    real = len(list((samples / "radolan_to_netcdf" / "radolan_yw").glob("raa01-yw*")))
    delivered = 6 + ODIM_STEPS + real
    assert f"{delivered} of {delivered} products written" in done.stdout
    assert f"{ODIM_STEPS} of {ODIM_STEPS} ODIM inputs answered in ODIM_H5" in done.stdout
    odim = sorted((out / "outgoing").glob("composite_rv_*-hd5"))
    assert len(odim) == ODIM_STEPS
    with h5py.File(odim[-1], "r") as h5:  # an independent reader: ODIM_H5 out
        assert h5.attrs["Conventions"].startswith(b"ODIM_H5")
    outgoing = out / "outgoing"
    assert len(list(outgoing.glob("*.json"))) == delivered
    assert len(list(outgoing.glob("*.nc"))) == delivered
    assert "end-to-end latency" in done.stdout
    line = done.stdout.split("scores over the synthetic outages (mm/h, hole pixels only):")[1]
    found = dict(zip(*[iter(line.split("\n")[1].split())] * 2, strict=True))
    assert set(found) == {"rmse", "mae", "csi_1", "fss", "blur_ratio"}
    assert 0.0 < float(found["rmse"]) < 3.0  # an infill, neither the truth nor garbage
    assert 0.0 < float(found["fss"]) <= 1.0
    metrics = (out / "metrics.prom").read_text()
    assert 'radinfill_products_total{outcome="processed",product="YW"}' in metrics
    assert list((out / "quicklooks").glob("*.png"))
    assert not list(outgoing.glob(".*.tmp"))
