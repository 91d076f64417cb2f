"""Champion/challenger promotion: the gate, the registry it writes, the command's exit status."""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from radinfill import scores
from radinfill.cli import EXIT_REJECTED, main
from radinfill.model import build, registry, save_checkpoint
from radinfill.model.registry import RegistryError
from radinfill.train import promote

#: A small synthetic case: 3 outage steps on 64 x 64 pixels.
SPEC = "synth:mixed:seed=1:grid=64x64:steps=8:duration=3:radius=30"
META = {"product": "RY", "interval_minutes": 5, "training": {"step": 10}}


def tiny(path: Path, bias: float = 0.0) -> Path:
    """A tiny network checkpoint. Its head starts at zero, so with ``bias`` 0 it returns its
    prior, ``advection_boundary``; a ``bias`` scales the rain in the hole by ``exp(bias)`` in
    log1p (mm/h). A small one (inside the engine's safety envelope) adds rain, which makes
    the error scores worse and fails the safety cases; a large one is caught by the
    envelope."""
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    with torch.no_grad():
        model.head.block.conv.bias.fill_(bias)
    return save_checkpoint(model, path, META)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny(tmp_path_factory.mktemp("good") / "checkpoint")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny(tmp_path_factory.mktemp("bad") / "checkpoint", bias=0.04)


def promote_cli(candidate: Path, root: Path, *options: str) -> int:
    """``radinfill promote`` with persistence as the floor: the untrained network (its prior,
    advection_boundary) clears that floor easily, so these tests are about the champion."""
    return main(
        ["promote", str(candidate), "--registry", str(root), "--data", SPEC, "--floor",
         "persistence", "--no-export", *options]
    )  # fmt: skip


#: The floor of the champion tests (see :func:`promote_cli`).
#: Persistence as the floor, and no exported graph (15-30 s each; tests/test_graph.py has it).
FLOOR = {"floor_methods": ["persistence"], "export": False}


def test_every_score_has_an_ideal_value() -> None:
    ideals = {name: scores.ideal(name) for name in scores.score_names()}
    assert {name for name, value in ideals.items() if value == 0} == {
        "rmse",
        "mae",
        "ame",
        "far_0.1",
        "far_1",
        "far_5",
    }  # errors and false alarms; the rest (correlations, CSI, POD, FSS, blur ratio) ideal 1
    assert set(ideals.values()) == {0.0, 1.0}
    assert scores.distance_to_ideal("spatial_corr", -0.5) == 1.5
    assert scores.distance_to_ideal("blur_ratio", 1.25) == 0.25  # too sharp is off too
    with pytest.raises(ValueError, match="unknown score"):
        scores.ideal("seconds_per_field")


def test_compare_knows_each_score_direction() -> None:
    champion = {"rmse": 1.0, "spatial_corr": 0.5, "blur_ratio": 0.8, "csi_1": math.nan}
    better = {"rmse": 0.9, "spatial_corr": 0.6, "blur_ratio": 1.1, "csi_1": 0.2}
    worse = {"rmse": 1.1, "spatial_corr": 0.4, "blur_ratio": 1.3, "csi_1": math.nan}
    names = list(champion)
    assert all(v.passed for v in promote.compare(better, champion, names, 0.0))
    verdicts = promote.compare(worse, champion, names, 0.0)
    assert [v.passed for v in verdicts] == [False, False, False, True]  # NaN for both passes
    assert verdicts[3].reason == "undefined for both"
    assert all(v.passed for v in promote.compare(worse, champion, names, 0.11))
    undefined = promote.compare({"csi_1": math.nan}, {"csi_1": 0.3}, ["csi_1"], 1.0)
    assert not undefined[0].passed
    assert all(v.passed for v in promote.compare(worse, None, names, 0.0))


def test_first_candidate_is_promoted_and_a_worse_one_rejected(
    good: Path, bad: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "reg"
    pid_file = tmp_path / "service.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    hangups: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda number, frame: hangups.append(number))
    try:
        assert promote_cli(good, root, "--reload-pid", str(pid_file)) == 0
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert hangups == [signal.SIGHUP]  # the service is told to reload
    release = registry.current(root)
    assert release is not None
    assert registry.verify(release).keys() >= {"decision.json", "scores.json"}
    decision = json.loads((release / "decision.json").read_text())
    assert decision["promoted"] is True
    assert decision["champion"] is None
    assert decision["version"] == release.name
    assert decision["candidate"]["path"] == str(good.resolve())
    assert decision["candidate"]["training"] == {"step": 10}
    assert decision["data"] == [SPEC]
    floor_checks = {"floor rmse", "floor csi_1", "floor csi_5", "safety"}
    assert set(decision["reasons"]) == set(promote.DEFAULT_SCORES) | floor_checks
    own = json.loads((release / "scores.json").read_text())
    assert own["mean"] == decision["scores"]["candidate"]
    report = json.loads((Path(decision["report"]) / "scores.json").read_text())
    (case,) = report.values()
    assert case["candidate"]["rmse"] == pytest.approx(own["mean"]["rmse"])
    assert "PROMOTED" in capsys.readouterr().out

    assert promote_cli(bad, root, "--score", "rmse", "--score", "csi_1") == EXIT_REJECTED
    assert registry.current(root) == release  # the champion stays
    assert os.listdir(root / "releases") == [release.name]  # nothing published
    (rejected,) = (root / "rejected").iterdir()
    decision = json.loads(rejected.read_text())
    assert decision["promoted"] is False
    assert decision["champion"]["version"] == release.name
    assert decision["gate"] == {
        "scores": ["rmse", "csi_1"],
        "tolerance": 0.0,
        "floor": {"methods": ["persistence"], "margin": 0.02},
    }
    scores = decision["scores"]
    assert scores["candidate"]["rmse"] > scores["champion"]["rmse"]
    assert decision["verdicts"]["rmse"]["passed"] is False
    assert decision["reasons"]["rmse"].startswith("worse")
    assert decision["verdicts"]["safety"]["passed"] is False  # it adds rain to uniform rain
    assert "REJECTED" in capsys.readouterr().out


def test_a_candidate_no_worse_replaces_the_champion_and_force_overrides(
    good: Path, bad: Path, tmp_path: Path
) -> None:
    root = tmp_path / "reg"
    first = promote.promote(good, root, specs=[SPEC], gate=["rmse"], **FLOOR)
    assert first.promoted
    assert first.verdicts[-1].reason == "no champion yet"
    # Other weights, the same outputs to rounding (a head weight of 1e-7).
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    with torch.no_grad():
        model.head.block.conv.weight.fill_(1e-7)
    twin = save_checkpoint(model, tmp_path / "twin", META)
    second = promote.promote(twin, root, specs=[SPEC], gate=["rmse"], tolerance=1e-4, **FLOOR)
    assert second.promoted
    assert registry.current(root) == root.resolve() / "releases" / second.version
    assert second.content["champion"]["version"] == first.version
    assert second.verdicts[-1].candidate == pytest.approx(second.verdicts[-1].reference, 1e-4)

    forced = promote.promote(bad, root, specs=[SPEC], gate=["rmse"], force=True, **FLOOR)
    assert forced.promoted
    assert not forced.verdicts[-1].passed
    assert forced.content["forced"] is True
    assert registry.current(root).name == forced.version


def test_the_current_weights_again_are_rejected_without_scoring(good: Path, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    assert promote.promote(good, root, specs=[SPEC], **FLOOR).promoted
    again = promote.promote(good, root, specs=[SPEC], **FLOOR)
    assert not again.promoted
    assert again.report is None
    assert "weights of the current release" in again.content["reasons"]["weights"]
    assert "weights of the current release" in again.table()


def test_refusals(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "reg"
    assert promote_cli(good, root, "--score", "rmse_typo") == 1
    assert "unknown gate score" in capsys.readouterr().err
    assert promote_cli(good, root, "--tolerance", "-1") == 1
    assert promote_cli(good, root, "--floor", "bidirectional") == 1
    assert "not causal" in capsys.readouterr().err
    assert promote_cli(good, root, "--floor-margin", "1.5") == 1
    assert "floor margin" in capsys.readouterr().err
    root.mkdir(exist_ok=True)
    with open(root / ".promote.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(RegistryError, match="another promotion"):
            promote.promote(good, root, specs=[SPEC], export=False)
    assert registry.current(root) is None


def test_the_classical_floor_rejects_a_tie_and_a_constant_bias_into_an_empty_registry(
    good: Path, tmp_path: Path
) -> None:
    """The untrained network is exactly advection_boundary; a biased one falls back to it
    through the safety envelope. Neither adds anything, so neither becomes the first release."""
    root = tmp_path / "reg"
    biased = tiny(tmp_path / "biased", bias=1.0)
    for candidate in (good, biased):
        decision = promote.promote(candidate, root, specs=[SPEC])
        assert not decision.promoted
        floor_rmse = decision.content["verdicts"]["floor rmse"]
        assert floor_rmse["passed"] is False
        methods = decision.content["gate"]["floor"]["methods"]
        assert set(methods) >= {"advection_boundary", "persistence", "laplace"}
        classical = {m: decision.content["scores"][m]["rmse"] for m in methods}
        strongest = min(classical, key=classical.get)
        assert floor_rmse["reference"] == classical[strongest]
        ratio = floor_rmse["candidate"] / floor_rmse["reference"]
        prior = decision.content["scores"]["advection_boundary"]["rmse"]
        assert floor_rmse["candidate"] == pytest.approx(prior, rel=1e-5)  # it is its prior
        assert decision.content["reasons"]["floor rmse"] == (
            f"{ratio:.3f} x {strongest}'s RMSE; needs <= 0.980: misses by "
            f"{100 * (ratio - 0.98):.1f} points"
        )
        assert decision.content["verdicts"]["safety"]["passed"] is True
    assert registry.current(root) is None
    assert len(list((root / "rejected").iterdir())) == 2


def test_floor_and_safety_verdicts() -> None:
    classical = {
        "advection_boundary": {"rmse": 1.0, "csi_1": 0.6, "csi_5": 0.3},
        "persistence": {"rmse": 1.5, "csi_1": 0.7, "csi_5": math.nan},
    }
    better = {"rmse": 0.97, "csi_1": 0.61, "csi_5": 0.3}
    assert all(v.passed for v in promote.floor(better, classical))
    damped = {"rmse": 0.95, "csi_1": 0.55, "csi_5": 0.2}  # lower RMSE by losing the peaks
    verdicts = {v.score: v for v in promote.floor(damped, classical)}
    assert verdicts["floor rmse"].passed
    assert not verdicts["floor csi_1"].passed
    assert verdicts["floor csi_5"].reason == "-0.1000 against advection_boundary's 0.3000"
    tie = promote.floor({"rmse": 0.99, "csi_1": 0.6, "csi_5": 0.3}, classical)
    assert not tie[0].passed
    assert tie[0].reason.endswith("misses by 1.0 points")
    assert promote.safety({}).passed
    failed = promote.safety({"uniform 100 mm/h": "max 200.0 mm/h > 1.25 x 100.0"})
    assert not failed.passed
    assert "uniform 100 mm/h: max 200.0" in failed.reason
