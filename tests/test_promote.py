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
    """A tiny network checkpoint. Its head starts at zero, so with ``bias`` 0 it returns the
    smoothed advection infill; a positive ``bias`` adds rain everywhere in the hole
    (``(1 + advected) * expm1(bias)`` mm/h more), which makes every error score worse."""
    model = build("baseline", widths=(4, 8), kernels=(3, 3))
    with torch.no_grad():
        model.head.block.conv.bias.fill_(bias)
    return save_checkpoint(model, path, META)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny(tmp_path_factory.mktemp("good") / "checkpoint")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny(tmp_path_factory.mktemp("bad") / "checkpoint", bias=1.5)


def promote_cli(candidate: Path, root: Path, *options: str) -> int:
    return main(["promote", str(candidate), "--registry", str(root), "--data", SPEC, *options])


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
    assert set(decision["reasons"]) == set(promote.DEFAULT_SCORES)
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
    assert decision["gate"] == {"scores": ["rmse", "csi_1"], "tolerance": 0.0}
    scores = decision["scores"]
    assert scores["candidate"]["rmse"] > scores["champion"]["rmse"]
    assert decision["verdicts"]["rmse"]["passed"] is False
    assert decision["reasons"]["rmse"].startswith("worse")
    assert "REJECTED" in capsys.readouterr().out


def test_a_better_candidate_replaces_the_champion_and_force_overrides(
    good: Path, bad: Path, tmp_path: Path
) -> None:
    root = tmp_path / "reg"
    first = promote.promote(bad, root, specs=[SPEC], gate=["rmse"])
    assert first.promoted
    assert first.verdicts[0].reason == "no champion yet"
    second = promote.promote(good, root, specs=[SPEC], gate=["rmse"])
    assert second.promoted
    assert registry.current(root) == root.resolve() / "releases" / second.version
    assert second.content["champion"]["version"] == first.version
    assert second.verdicts[0].candidate < second.verdicts[0].champion

    forced = promote.promote(bad, root, specs=[SPEC], gate=["rmse"], force=True)
    assert forced.promoted
    assert not forced.verdicts[0].passed
    assert forced.content["forced"] is True
    assert registry.current(root).name == forced.version


def test_the_current_weights_again_are_rejected_without_scoring(good: Path, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    assert promote.promote(good, root, specs=[SPEC]).promoted
    again = promote.promote(good, root, specs=[SPEC])
    assert not again.promoted
    assert again.report is None
    assert "weights of the current release" in again.content["reasons"]["weights"]
    assert "weights of the current release" in again.table()


def test_refusals(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "reg"
    assert promote_cli(good, root, "--score", "rmse_typo") == 1
    assert "unknown gate score" in capsys.readouterr().err
    assert promote_cli(good, root, "--tolerance", "-1") == 1
    root.mkdir(exist_ok=True)
    with open(root / ".promote.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(RegistryError, match="another promotion"):
            promote.promote(good, root, specs=[SPEC])
    assert registry.current(root) is None
