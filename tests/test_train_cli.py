"""``radinfill train`` end to end: a real run, torchrun, restarts after a crash, Slurm scripts."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from radinfill.cli import main
from radinfill.train import supervise

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "deploy" / "slurm"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Child processes: one thread each, no GPU (two workers on one GPU would not work).
ENV = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}

TINY = """\
[train]
variant = "baseline"
checkpoint_dir = "run"
epochs = {epochs}
batch_size = 2
checkpoint_every = {checkpoint_every}
log_every = {log_every}
keep_last = 2

[train.hparams]
widths = [4, 8]
kernels = [3, 3]

[train.data]
radolan = []
rates = []
synthetic_presets = ["stratiform"]
synthetic_seeds = 1
synthetic_grid = [64, 64]
synthetic_steps = 8
window = 3
crop = 32
samples_per_epoch = {samples}
mask_seeds = 1

[train.metrics]
textfile = "metrics/train.prom"
"""


def tiny_config(
    directory: Path,
    *,
    epochs: int = 2,
    samples: int = 8,
    checkpoint_every: int = 2,
    log_every: int = 1,
) -> Path:
    """A configuration of the smallest network on one small synthetic sequence."""
    path = directory / "tiny.toml"
    text = TINY.format(
        epochs=epochs, samples=samples, checkpoint_every=checkpoint_every, log_every=log_every
    )
    path.write_text(text)
    return path


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def state(run: Path) -> dict:
    """``state.json`` of the snapshot that ``latest`` names."""
    return json.loads((run / (run / "latest").read_text().strip() / "state.json").read_text())


def metrics(prom: Path) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }


def wait_for(condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- a real run ---------------------------------------------------------------------------------


def test_train_scores_snapshots_on_held_back_real_frames_and_names_the_best_safe_one(
    tmp_path: Path, samples: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``validation_fraction`` the last frames of each real event are kept out; every
    snapshot carries its scores against the classical prior, and the run ends by naming the
    best snapshot that passes the safety cases (an untrained head: exactly the prior)."""
    fmi = samples.parent / "fmi"
    text = TINY.format(epochs=1, samples=4, checkpoint_every=1, log_every=1)
    text = text.replace("rates = []", f'rates = ["{fmi}"]\nvalidation_fraction = 0.3')
    text = text.replace("batch_size = 2", "batch_size = 2\nlr = 0.0")
    (tmp_path / "val.toml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "val.toml")]) == 0
    out = capsys.readouterr().out.splitlines()
    snapshots = sorted((tmp_path / "run").glob("step-*"))
    assert len(snapshots) == 2
    for snapshot in snapshots:
        scores = json.loads((snapshot / "metadata.json").read_text())["scores"]
        assert scores["val_rmse"] == pytest.approx(scores["val_prior_rmse"])  # lr 0: the prior
        assert scores["val_rmse_ratio"] == pytest.approx(1.0)
        assert scores["val_prior_rmse"] > 0.1  # it rains in the validation holes
    assert out[-1].startswith(f"best on validation: {tmp_path / 'run' / 'step-0000000'}")
    assert out[-1].endswith("x advection_boundary; passes the safety cases)")


def test_train_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path, checkpoint_every=4)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run = work / "elsewhere"  # a relative --checkpoint-dir is taken from the working directory
    before = time.time()
    status = main(
        ["train", "--config", str(config), "--checkpoint-dir", "elsewhere", "--epochs", "3"]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.strip() == f"last snapshot: {run / 'step-00000012'}"  # 8 samples / 2 x 3 epochs
    assert not (tmp_path / "run").exists()  # --checkpoint-dir replaced the configured one
    final = state(run)
    assert (final["step"], final["finished"], final["world_size"]) == (12, True, 1)
    log = records(run / "train.jsonl")
    assert log[0]["event"] == "start"
    steps = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert [r["step"] for r in log if r["event"] == "snapshot"] == [4, 8, 12]
    # the progress line: loss, throughput and ETA, one per logged step
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(progress) == 12
    assert re.fullmatch(
        r"step 12/12 epoch 2 loss \d+\.\d{4} lr \S+ \d+\.\d samples/s eta 0:00:00", progress[-1]
    )
    assert f"loss {steps[-1]['loss']:.4f}" in progress[-1]
    # the loss curves and the metrics, rank 0's reports at every snapshot
    assert (run / "loss.png").read_bytes()[:8] == PNG_MAGIC
    values = metrics(tmp_path / "metrics" / "train.prom")
    assert values["radinfill_train_steps"] == 12
    assert values["radinfill_train_loss"] == steps[-1]["loss"]
    assert values["radinfill_train_samples_per_second"] == steps[-1]["samples_per_s"]
    assert before < values["radinfill_train_last_success_timestamp_seconds"] < time.time()
    assert 0 < values["radinfill_train_duration_seconds"] < time.time() - before


def test_train_refuses_a_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(tmp_path)
    assert main(["train", "--config", str(config), "--set", "data.crops=3"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"radinfill train: error: {config}: unknown key(s) in [train.data]: crops"
    assert not (tmp_path / "run").exists()


def test_max_restarts_is_refused_under_a_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = tiny_config(tmp_path)
    assert main(["train", "--config", str(config), "--max-restarts", "2"]) == 1
    assert "torchrun --max-restarts" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- the supervisor on its own ------------------------------------------------------------------

#: A child that fails until it has been started ``sys.argv[2]`` times (counted in a file).
FLAKY = """
import sys
from pathlib import Path
count = Path(sys.argv[1])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
sys.exit(0 if n >= int(sys.argv[2]) else 3)
"""


class Lines:
    """A text stream that keeps what is written to it."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_supervise_restarts_until_the_child_succeeds(tmp_path: Path) -> None:
    count, out = tmp_path / "count", Lines()
    command = [sys.executable, "-c", FLAKY, str(count), "3"]
    assert supervise.supervise(command, 2, stderr=out) == 0
    assert count.read_text() == "3"
    assert "exited with status 3; restart 1/2" in out.text
    assert "exited with status 3; restart 2/2" in out.text
    assert out.text.count("started training process") == 3


def test_supervise_gives_up_after_max_restarts(tmp_path: Path) -> None:
    count, out = tmp_path / "count", Lines()
    command = [sys.executable, "-c", FLAKY, str(count), "5"]
    assert supervise.supervise(command, 1, stderr=out) == 3
    assert count.read_text() == "2"
    assert "exited with status 3; no restart left" in out.text


def test_supervise_reports_death_by_signal_as_a_shell_does(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    out = Lines()
    assert supervise.supervise(command, 0, stderr=out) == 128 + signal.SIGKILL
    assert "was killed by SIGKILL; no restart left" in out.text


#: A child that waits for SIGTERM and exits with status 5 when it comes.
STOPPABLE = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(5))
Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""


def test_supervise_forwards_sigterm_and_does_not_restart(tmp_path: Path) -> None:
    ready, out = tmp_path / "ready", Lines()

    def stop_when_ready() -> None:
        wait_for(ready.exists, "the child to install its handler", 30)
        os.kill(os.getpid(), signal.SIGTERM)  # to this process: the supervisor's handler

    previous = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=stop_when_ready)
    sender.start()
    status = supervise.supervise([sys.executable, "-c", STOPPABLE, str(ready)], 3, stderr=out)
    sender.join()
    assert status == 5  # the child's own status, although non-zero: no restart
    assert out.text.count("started training process") == 1
    assert signal.getsignal(signal.SIGTERM) is previous


# --- restarts of a real run ---------------------------------------------------------------------


def child_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"started training process (\d+)", log.read_text())]


def resumes(run: Path) -> list[dict]:
    return [r for r in records(run / "train.jsonl") if r["event"] == "resume"]


def latest_step(run: Path) -> int:
    pointer = run / "latest"
    return int(pointer.read_text().split("-")[1]) if pointer.exists() else 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_max_restarts_resumes_after_a_kill_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, epochs=1, samples=80, checkpoint_every=8, log_every=4)
    run, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "radinfill", "train", "--config", str(config)]
    with stderr.open("w") as handle:
        parent = subprocess.Popen(
            [*command, "--max-restarts", "2"], cwd=tmp_path, env=ENV, stderr=handle
        )
    try:
        # the first child is killed (like the OOM killer would) once it wrote a snapshot
        wait_for(lambda: latest_step(run) > 0, "the first snapshot")
        [first] = child_pids(stderr)
        os.kill(first, signal.SIGKILL)
        # the second one resumes; SIGTERM to the supervisor is a requested stop
        wait_for(lambda: resumes(run), "the restart")
        [resumed_from] = resumes(run)
        wait_for(lambda: latest_step(run) > resumed_from["step"], "a snapshot after the restart")
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=120) == 0, stderr.read_text()[-3000:]
    finally:
        if parent.poll() is None:
            parent.kill()
    report = stderr.read_text()
    assert "training process was killed by SIGKILL; restart 1/2 from the latest snapshot" in report
    assert len(child_pids(stderr)) == 2  # no restart after the requested stop
    stopped = state(run)
    assert stopped["finished"] is False
    assert resumed_from["step"] < stopped["step"] < 40
    log = records(run / "train.jsonl")
    assert [r["event"] for r in log if r["event"] in ("start", "resume")] == ["start", "resume"]
    assert log[-1] == {**log[-1], "event": "stopped", "step": stopped["step"]}
    assert (run / "loss.png").read_bytes()[:8] == PNG_MAGIC  # drawn at the stop's snapshot
    values = metrics(tmp_path / "metrics" / "train.prom")
    assert values["radinfill_train_steps"] == stopped["step"]
    assert "radinfill_train_last_success_timestamp_seconds" not in values
    # started again, the run goes on from the stop to the end
    assert main(["train", "--config", str(config)]) == 0
    assert state(run)["finished"] is True
    assert state(run)["step"] == 40
    log = records(run / "train.jsonl")
    assert [r["event"] for r in log].count("resume") == 2
    assert [r["step"] for r in log if r["event"] == "step"][-1] == 40
    assert "radinfill_train_last_success_timestamp_seconds" in metrics(
        tmp_path / "metrics" / "train.prom"
    )


# --- Slurm --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train-single-node.sbatch", "train-multi-node.sbatch"])
def test_sbatch_scripts_are_valid_bash_with_the_launcher_lines(name: str) -> None:
    script = SLURM / name
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    text = script.read_text()
    for directive in ("--signal=USR1@300", "--requeue", "--ntasks-per-node=1"):
        assert f"#SBATCH {directive}" in text
    assert "--signals-to-handle=SIGTERM,SIGINT,SIGUSR1" in text
    assert '-m radinfill train --config "$CONFIG" --checkpoint-dir "$CHECKPOINT_DIR"' in text
    if name == "train-single-node.sbatch":
        assert "srun --kill-on-bad-exit=1 torchrun --standalone" in text
    else:
        assert "srun --kill-on-bad-exit=1 --wait=60 torchrun" in text
        assert '--rdzv-backend=c10d --rdzv-endpoint="$head_node:$RDZV_PORT"' in text
        assert 'nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")' in text


def slurm_stubs(tmp_path: Path, torchrun: str | None = None) -> tuple[dict[str, str], Path]:
    """A fake Slurm (``srun`` runs its command, ``scontrol`` logs) and a fake ``VENV`` whose
    ``activate`` puts the stubs and this interpreter first on PATH. Returns the environment
    for the script and the file every stub appends its arguments to."""
    bin_dir, calls = tmp_path / "stubs" / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir(parents=True)
    stubs = {
        "srun": 'echo "srun $*" >> "$CALLS"\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"',
        "scontrol": 'echo "scontrol $*" >> "$CALLS"\n'
        '[[ $1 == show ]] && printf "node-a\\nnode-b\\n"\nexit 0',
        "python": f'exec "{sys.executable}" "$@"',
        "torchrun": torchrun or f'exec "{sys.executable}" -m torch.distributed.run "$@"',
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = ENV | {
        "CALLS": str(calls),
        "VENV": str(bin_dir.parent),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "node-[a-b]",
        "SLURM_NNODES": "2",
        "SLURM_CPUS_PER_TASK": "2",
        "GPUS_PER_NODE": "2",
        "MAX_RESTARTS": "0",
    }
    return env, calls


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_single_node_script_trains_with_two_torchrun_workers(tmp_path: Path) -> None:
    env, calls = slurm_stubs(tmp_path)
    run = tmp_path / "ckpt"
    env |= {"CONFIG": str(tiny_config(tmp_path)), "CHECKPOINT_DIR": str(run)}
    script = SLURM / "train-single-node.sbatch"
    done = subprocess.run(
        ["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=170
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # two workers of 4 samples each: 2 steps per epoch, 2 epochs
    final = state(run)
    assert (final["step"], final["finished"], final["world_size"]) == (4, True, 2)
    log = records(run / "train.jsonl")
    assert [r["event"] for r in log].count("start") == 1  # rank 0 alone writes the log
    assert log[0]["world_size"] == 2
    assert (run / "loss.png").read_bytes()[:8] == PNG_MAGIC
    assert metrics(tmp_path / "metrics" / "train.prom")["radinfill_train_steps"] == 4
    assert calls.read_text().splitlines() == [
        "srun --kill-on-bad-exit=1 torchrun --standalone --nproc-per-node=2 --max-restarts=0 "
        "--signals-to-handle=SIGTERM,SIGINT,SIGUSR1 --shutdown-timeout=240 -m radinfill train "
        f"--config {env['CONFIG']} --checkpoint-dir {run}"
    ]  # and no requeue of a finished run


@pytest.mark.parametrize(
    ("snapshot", "restarts", "torchrun_status", "requeued", "status"),
    [
        ("unfinished", "0", 1, True, 0),  # stopped at the time limit: torchrun reports 1
        ("unfinished", "20", 1, False, 1),  # requeued often enough
        ("finished", "0", 0, False, 0),
        (None, "0", 1, False, 1),  # failed before any snapshot: requeueing would not help
    ],
)
def test_multi_node_script_rendezvous_and_requeue(
    tmp_path: Path,
    snapshot: str | None,
    restarts: str,
    torchrun_status: int,
    requeued: bool,
    status: int,
) -> None:
    env, calls = slurm_stubs(
        tmp_path, torchrun=f'echo "torchrun $*" >> "$CALLS"\nexit {torchrun_status}'
    )
    run = tmp_path / "ckpt"
    if snapshot is not None:
        (run / "step-00000008").mkdir(parents=True)
        (run / "latest").write_text("step-00000008\n")
        finished = {"step": 8, "finished": snapshot == "finished"}
        (run / "step-00000008" / "state.json").write_text(json.dumps(finished))
    env |= {"CONFIG": "/conf/run.toml", "CHECKPOINT_DIR": str(run), "SLURM_RESTART_COUNT": restarts}
    script = SLURM / "train-multi-node.sbatch"
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == status, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[:3] == [
        "scontrol show hostnames node-[a-b]",
        "srun --kill-on-bad-exit=1 --wait=60 torchrun --nnodes=2 --nproc-per-node=2 "
        "--rdzv-backend=c10d --rdzv-endpoint=node-a:29500 --rdzv-id=4242 --max-restarts=0 "
        "--signals-to-handle=SIGTERM,SIGINT,SIGUSR1 --shutdown-timeout=240 -m radinfill train "
        f"--config /conf/run.toml --checkpoint-dir {run}",
        "torchrun --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=node-a:29500 "
        "--rdzv-id=4242 --max-restarts=0 --signals-to-handle=SIGTERM,SIGINT,SIGUSR1 "
        f"--shutdown-timeout=240 -m radinfill train --config /conf/run.toml --checkpoint-dir {run}",
    ]
    assert lines[3:] == (["scontrol requeue 4242"] if requeued else [])
