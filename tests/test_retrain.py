"""``radinfill retrain``: a real train -> snapshot -> promote -> reload run on a tiny config."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from radinfill import cli
from radinfill.model import registry
from radinfill.train import retrain

TINY = """\
[train]
variant = "baseline"
checkpoint_dir = "unused"
epochs = 1
batch_size = 2
lr = 1e-7  # the run stays at its prior, which clears the gate's safety cases
checkpoint_every = 100
log_every = 1

[train.hparams]
widths = [4, 8]
kernels = [3, 3]

[train.data]
radolan = {radolan}
rates = []
synthetic_presets = {presets}
synthetic_seeds = 1
synthetic_grid = [64, 64]
synthetic_steps = 8
window = 3
crop = 32
samples_per_epoch = 4
mask_seeds = 1

[train.metrics]
textfile = "metrics/train.prom"

[retrain]
registry = "{registry}"
checkpoint_root = "runs"
data = ["synth:stratiform:grid=64x64:steps=8:duration=2"]
floor = ["persistence"]
reload = "{reload}"
"""


def write_config(
    directory: Path,
    *,
    reload: str = "none",
    radolan: str = "[]",
    presets: str = '["stratiform"]',
    registry: str = "registry",
) -> Path:
    path = directory / "radinfill.toml"
    text = TINY.format(reload=reload, radolan=radolan, presets=presets, registry=registry)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _one_thread_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training children: one thread, no GPU."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def outcome_metrics(directory: Path) -> dict[str, float]:
    text = (directory / "metrics" / retrain.METRICS_FILE).read_text()
    return {
        s.labels.get("outcome", s.name): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("radinfill_retrain_outcome", "radinfill_retrain_exit_status")
    }


def test_retrain_promotes_then_reloads_or_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["retrain", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    for step in ("config", "train", "snapshot", "promote", "reload"):
        assert f"radinfill retrain: {step}: done in" in err
    current = registry.current(tmp_path / "registry")
    assert current is not None
    assert json.loads((current / "decision.json").read_text())["promoted"] is True
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("run-")
    assert (run / "latest").is_file()
    assert not (tmp_path / "unused").exists()  # the run directory replaced checkpoint_dir
    assert outcome_metrics(tmp_path) == {
        "promoted": 1.0,
        "rejected": 0.0,
        "failed": 0.0,
        "radinfill_retrain_exit_status": 0.0,
    }

    # second run: the service (a child waiting for SIGHUP) is told to reload after a promotion
    ready, mark, pid_file = tmp_path / "ready", tmp_path / "hup", tmp_path / "service.pid"
    code = (
        "import pathlib, signal, time\n"
        f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(mark)!r}).write_text('hup'))\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    service = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline, "service child did not start"
            time.sleep(0.01)
        pid_file.write_text(f"{service.pid}\n")
        config = write_config(tmp_path, reload=f"pid:{pid_file}")
        later = datetime(2030, 1, 1, tzinfo=UTC)
        outcome = retrain.retrain(config, now=later)
        assert outcome.run_dir == tmp_path / "runs" / "run-20300101T000000Z"
        # The same configuration and seed train the same weights: the gate refuses them as
        # the current release's, and the service is not told to reload.
        assert outcome.status == retrain.EXIT_REJECTED
        rejected = tmp_path / "registry" / "rejected" / f"{outcome.version}.json"
        assert "weights" in json.loads(rejected.read_text())["reasons"]
        assert registry.current(tmp_path / "registry") == current
        time.sleep(0.2)
        assert not mark.exists()
        assert outcome_metrics(tmp_path)[outcome.result] == 1.0

        # an empty registry promotes whatever clears the floor (here persistence), so the
        # reload signal is exercised at least once
        mark.unlink(missing_ok=True)
        config = write_config(tmp_path, reload=f"pid:{pid_file}", registry="fresh")
        fresh = retrain.retrain(config, now=datetime(2030, 1, 2, tzinfo=UTC))
        assert fresh.status == retrain.EXIT_PROMOTED
        deadline = time.monotonic() + 10
        while not mark.exists():
            assert time.monotonic() < deadline, "promoted, but the service got no SIGHUP"
            time.sleep(0.01)
        assert mark.read_text() == "hup"
    finally:
        service.kill()
        service.wait()


def test_retrain_failing_training_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No usable source (a missing archive, no synthetic data): the training child fails."""
    config = write_config(tmp_path, radolan='["missing"]', presets="[]")
    assert cli.main(["retrain", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "radinfill retrain: train: FAILED" in err
    assert "outcome: failed (exit status 1)" in err
    assert "promote:" not in err
    assert not (tmp_path / "registry").exists()
    assert outcome_metrics(tmp_path)["failed"] == 1.0


def test_retrain_config_errors_name_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, reload="sometimes")
    with pytest.raises(ValueError, match=rf"{config}.*retrain.reload"):
        retrain.load(config)
    outcome = retrain.retrain(config)
    assert (outcome.status, outcome.failed_step) == (retrain.EXIT_FAILED, "config")


def test_train_commands(tmp_path: Path) -> None:
    config, run = tmp_path / "c.toml", tmp_path / "runs" / "run-x"
    local = retrain.RetrainSettings(registry=tmp_path, checkpoint_root=tmp_path)
    assert retrain.train_command(local, config, run) == [
        sys.executable,
        *("-m", "radinfill", "train", "--config", str(config), "--checkpoint-dir", str(run)),
    ]
    ddp = retrain.RetrainSettings(registry=tmp_path, checkpoint_root=tmp_path, nproc=4)
    argv = retrain.train_command(ddp, config, run, ["epochs=2"])
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert argv[-2:] == ["--set", "epochs=2"]
    script = tmp_path / "train-single-node.sbatch"
    slurm = retrain.RetrainSettings(
        registry=tmp_path, checkpoint_root=tmp_path, launcher="slurm", sbatch_script=script
    )
    assert retrain.train_command(slurm, config, run) == [
        "sbatch",
        "--wait",
        f"--export=ALL,CONFIG={config},CHECKPOINT_DIR={run}",
        str(script),
    ]
