"""Tests of the hole loss and the (distributed, resumable) training loop on a tiny network."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch.utils.data import Dataset, default_collate

from radinfill.model import load_checkpoint
from radinfill.model.metadata import read_metadata
from radinfill.train.loop import TrainConfig, cosine_lr, train
from radinfill.train.losses import hole_loss

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 2
SIZE = 16


class RainSet(Dataset):
    """Random rain windows with a square hole whose truth is twice the advected field.

    The truth is a simple function of the inputs, so a network can learn it; every sample has
    the same number of hole pixels, so per-rank and whole-batch means agree (see the DDP test).
    """

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.rain = torch.rand(n, WINDOW, 1, SIZE, SIZE, generator=generator) * 4.0
        self.hole = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        self.hole[4:12, 4:12] = True
        self.seen: list[int] = []  # sample indices in the order they were loaded
        self.epochs: list[int] = []  # epochs announced by the loop

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.rain)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.seen.append(int(index))
        values = self.rain[index].clone()
        valid = torch.ones_like(values)
        values[-1, 0][self.hole] = 0.0
        valid[-1, 0][self.hole] = 0.0
        advected = torch.where(self.hole, self.rain[index, -2, 0], values[-1, 0])
        hole = self.hole.float()
        aux = torch.stack([advected, torch.zeros_like(hole), torch.zeros_like(hole), hole, hole])
        return {
            "values": values,
            "valid": valid,
            "aux": aux,
            "target": (2.0 * advected)[None],
            "loss_mask": self.hole[None].clone(),
        }


def tiny_config(checkpoint_dir: Path, **changes: object) -> TrainConfig:
    """A run of the smallest network over :class:`RainSet`."""
    options: dict[str, object] = {
        "variant": "baseline",
        "checkpoint_dir": checkpoint_dir,
        "hparams": {"widths": [4, 8], "kernels": [3, 3], "window": WINDOW},
        "epochs": 2,
        "batch_size": 4,
        "lr": 1e-2,
        "seed": 3,
        "checkpoint_every": 2,
        "log_every": 1,
    }
    return TrainConfig(**(options | changes))  # type: ignore[arg-type]


def weights(snapshot: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(snapshot / "weights.safetensors")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- losses -----------------------------------------------------------------------------------


def test_hole_loss_by_hand() -> None:
    pred = torch.tensor([[0.0, 1.0], [3.0, 7.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 100.0]])
    mask = torch.tensor([[True, True], [True, False]])
    # masked pixels: |log1p 0 - log1p 1| = ln 2, 0, |ln 4 - ln 1| = ln 4; squares 1, 0, 9
    expected = (math.log(2) + math.log(4)) / 3 + 0.5 * (1 + 0 + 9) / 3
    loss = hole_loss(pred, target, mask, mse_weight=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert hole_loss(pred, target, mask, mse_weight=0.0).item() == pytest.approx(
        (math.log(2) + math.log(4)) / 3, rel=1e-6
    )


def test_hole_loss_ignores_unmasked_pixels_even_nan() -> None:
    pred = torch.tensor([1.0, 2.0, 5.0], requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 0.0])
    mask = torch.tensor([True, False, False])
    loss = hole_loss(pred, target, mask)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pred.grad, torch.zeros(3))


def test_hole_loss_normalised_by_masked_pixels_not_all() -> None:
    small = torch.zeros(4, 4, dtype=torch.bool)
    small[0, 0] = True
    pred, target = torch.full((4, 4), 2.0), torch.zeros(4, 4)
    # one masked pixel or all 16: the mean per masked pixel is the same
    assert hole_loss(pred, target, small).item() == pytest.approx(
        hole_loss(pred, target, torch.ones(4, 4, dtype=torch.bool)).item()
    )


def test_hole_loss_empty_mask_is_zero_with_finite_gradient() -> None:
    pred = torch.rand(2, 1, 3, 3, requires_grad=True)
    loss = hole_loss(pred, torch.rand(2, 1, 3, 3), torch.zeros(2, 1, 3, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all()


def test_hole_loss_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        hole_loss(torch.zeros(2, 2), torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool))


def test_cosine_lr_goes_from_lr_to_min_lr() -> None:
    assert cosine_lr(0, 10, 2e-3, 1e-4) == pytest.approx(2e-3)
    assert cosine_lr(5, 10, 2e-3, 1e-4) == pytest.approx((2e-3 + 1e-4) / 2)
    assert cosine_lr(10, 10, 2e-3, 1e-4) == pytest.approx(1e-4)


# --- single process ---------------------------------------------------------------------------


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    dataset = RainSet(n=4)
    batch = default_collate([dataset[i] for i in range(len(dataset))])
    config = tiny_config(tmp_path / "run", epochs=20, checkpoint_every=100)
    losses: list[float] = []

    def evaluate(model: torch.nn.Module, step: int) -> dict[str, float]:
        pred, _ = model(batch["values"], batch["valid"], batch["aux"])
        losses.append(hole_loss(pred, batch["target"], batch["loss_mask"]).item())
        return {"loss": losses[-1]}

    snapshot = train(config, dataset, collate=default_collate, eval_fn=evaluate)
    assert dataset.epochs == list(range(20))
    # the untrained residual network returns the advected field (aux channel 0) unchanged
    untrained = hole_loss(batch["aux"][:, :1], batch["target"], batch["loss_mask"]).item()
    assert len(losses) == 1  # one snapshot, the last: eval_fn ran once, on every rank
    assert losses[0] < 0.7 * untrained
    assert read_metadata(snapshot)["scores"] == {"loss": pytest.approx(losses[0])}
    log = records(config.log_file)
    steps = [r for r in log if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert all(r["samples_per_s"] > 0 and r["lr"] > 0 for r in steps)
    assert steps[0]["lr"] > steps[-1]["lr"]
    _, meta = load_checkpoint(snapshot)
    assert meta["scores"]["loss"] == pytest.approx(losses[-1])
    assert meta["training"]["step"] == 20
    assert meta["product"] == "RY"
    assert json.loads((snapshot / "state.json").read_text())["finished"] is True


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    class Crashing(RainSet):
        """Raises once its budget of samples is used up, like a process dying mid-run."""

        budget = 2 * 4  # two steps, then the third batch fails while it is being loaded

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            self.budget -= 1
            if self.budget < 0:
                raise RuntimeError("simulated crash")
            return super().__getitem__(index)

    whole = train(tiny_config(tmp_path / "whole"), RainSet())
    config = tiny_config(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, Crashing())
    assert (config.checkpoint_dir / "latest").read_text().strip() == "step-00000002"
    partial = config.checkpoint_dir / ".step-00000004.part-crashed"  # a write the crash cut short
    partial.mkdir()
    resumed = train(config, RainSet())
    assert resumed.name == whole.name == "step-00000008"
    for name, tensor in weights(whole).items():
        assert torch.equal(tensor, weights(resumed)[name]), name
    expected_optimizer = safetensors.torch.load_file(whole / "optimizer.safetensors")
    actual_optimizer = safetensors.torch.load_file(resumed / "optimizer.safetensors")
    assert expected_optimizer.keys() == actual_optimizer.keys()
    for name, tensor in expected_optimizer.items():
        assert torch.equal(tensor, actual_optimizer[name]), name
    log = records(config.log_file)
    assert [r["event"] for r in log if r["event"] in ("start", "resume")] == ["start", "resume"]
    resume_at = next(i for i, r in enumerate(log) if r["event"] == "resume")
    assert log[resume_at]["step"] == 2
    assert next(r for r in log[resume_at:] if r["event"] == "step")["step"] == 3
    assert len(list(config.checkpoint_dir.glob("step-*"))) == config.keep_last
    assert not partial.exists()


def test_diverging_run_fails_before_writing_a_snapshot(tmp_path: Path) -> None:
    class Poisoned(RainSet):
        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            sample = super().__getitem__(index)
            sample["target"][0, 5, 5] = float("nan")  # inside the hole: counted by the loss
            return sample

    config = tiny_config(tmp_path)
    with pytest.raises(FloatingPointError, match="step 1"):
        train(config, Poisoned())
    assert not list(tmp_path.glob("step-*"))


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, epochs=1), RainSet())
    with pytest.raises(ValueError, match=r"another run.*lr"):
        train(tiny_config(tmp_path, epochs=1, lr=5e-3), RainSet())


def test_finished_run_returns_its_last_snapshot_without_training(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, epochs=1)
    first = train(config, RainSet())
    before = config.log_file.read_text()
    assert train(config, RainSet()) == first
    assert [r["event"] for r in records(config.log_file)][len(before.splitlines()) :] == ["resume"]


def test_sigterm_saves_at_the_next_step_and_returns(tmp_path: Path) -> None:
    received: list[int] = []

    def fallback(signum: int, frame: object) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, fallback)

    class Terminated(RainSet):
        """Sends SIGTERM to this process while the sixth sample is loaded (step 2)."""

        loaded = 0

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            self.loaded += 1
            if self.loaded == 6:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__getitem__(index)

    config = tiny_config(tmp_path, checkpoint_every=100)
    try:
        snapshot = train(config, Terminated())
        assert signal.getsignal(signal.SIGTERM) is fallback  # handler restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == []  # the loop's handler took it
    assert snapshot.name == "step-00000002"
    state = json.loads((snapshot / "state.json").read_text())
    assert state["step"] == 2
    assert state["finished"] is False
    assert records(config.log_file)[-1]["event"] == "stopped"
    load_checkpoint(snapshot)


# --- distributed ------------------------------------------------------------------------------

TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
SCRIPT = """
import json
import os
import sys
from pathlib import Path

import safetensors.torch
import torch
import torch.distributed as dist

from radinfill.train.loop import train
from tests.test_train_loop import RainSet, tiny_config

torch.set_num_threads(1)
out = Path(sys.argv[1])


def dump(model, step):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, out / f"rank{dist.get_rank()}-step{step}.safetensors")
    return {"rank": dist.get_rank()}


config = tiny_config(out / "ddp", batch_size=2, dist_timeout_s=60.0)
dataset = RainSet()
path = train(config, dataset, eval_fn=dump)
rank = int(os.environ["RANK"])
(out / f"seen{rank}.json").write_text(json.dumps(dataset.seen))
(out / f"returned{rank}-{dist.is_initialized()}").write_text(str(path))
"""


def torchrun(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (Python source) in two CPU processes under ``torch.distributed.run``."""
    path = tmp_path / "ddp_script.py"
    path.write_text(textwrap.dedent(script))
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [*TORCHRUN, str(path), str(tmp_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ddp_two_processes_train_in_lockstep(tmp_path: Path) -> None:
    run = torchrun(SCRIPT, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # both ranks hold the same weights at every snapshot
    for step in (2, 4, 6, 8):
        rank0 = safetensors.torch.load_file(tmp_path / f"rank0-step{step}.safetensors")
        rank1 = safetensors.torch.load_file(tmp_path / f"rank1-step{step}.safetensors")
        for name, tensor in rank0.items():
            assert torch.equal(tensor, rank1[name]), (step, name)
    # rank 0 alone wrote the log (one start record) and the snapshots
    log = records(tmp_path / "ddp" / "train.jsonl")
    assert [r["event"] for r in log].count("start") == 1
    assert log[0]["world_size"] == 2
    assert {r["samples_per_s"] > 0 for r in log if r["event"] == "step"} == {True}
    final = tmp_path / "ddp" / "step-00000008"
    _, meta = load_checkpoint(final)
    assert meta["scores"] == {"rank": 0.0}
    assert meta["training"]["world_size"] == 2
    # the process group was left after training, and every rank returned the same path
    assert (tmp_path / "returned0-False").read_text() == str(final)
    assert (tmp_path / "returned1-False").read_text() == str(final)
    # each epoch the two shards are disjoint and cover the data; the order changes per epoch
    seen = [json.loads((tmp_path / f"seen{rank}.json").read_text()) for rank in (0, 1)]
    epochs = [[shard[:8], shard[8:]] for shard in seen]
    for epoch in (0, 1):
        assert sorted(epochs[0][epoch] + epochs[1][epoch]) == list(range(16))
    assert epochs[0][0] != epochs[0][1]
    # two ranks of 2 samples take the same steps as one process with 4: same weights
    single = train(tiny_config(tmp_path / "single", batch_size=4), RainSet())
    assert single.name == final.name
    for name, tensor in weights(single).items():
        torch.testing.assert_close(weights(final)[name], tensor, rtol=1e-5, atol=1e-6)


RESUME_SCRIPT = """
import sys
from pathlib import Path

import torch

from radinfill.train.loop import train
from tests.test_train_loop import RainSet, tiny_config

torch.set_num_threads(1)
out, run, crash_after = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])


class Crashing(RainSet):
    \"\"\"Raises once ``crash_after`` samples are loaded (0: never), like a dying node.\"\"\"

    loaded = 0

    def __getitem__(self, index):
        self.loaded += 1
        if crash_after and self.loaded > crash_after:
            raise RuntimeError("simulated crash")
        return super().__getitem__(index)


train(tiny_config(out / run, batch_size=2, dist_timeout_s=60.0), Crashing())
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ddp_two_processes_resume_after_a_crash_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    """Two gloo ranks die while loading the third step's batch (after the step-2 snapshot);
    the relaunch resumes there and ends with the weights and optimizer state of a two-rank run
    that never stopped."""
    whole = torchrun(RESUME_SCRIPT, tmp_path, "whole", "0")
    assert whole.returncode == 0, whole.stderr[-3000:]
    crashed = torchrun(RESUME_SCRIPT, tmp_path, "crash", "4")  # 2 steps of 2 samples per rank
    assert crashed.returncode != 0
    assert "simulated crash" in crashed.stderr
    checkpoints = tmp_path / "crash"
    assert (checkpoints / "latest").read_text().strip() == "step-00000002"
    resumed = torchrun(RESUME_SCRIPT, tmp_path, "crash", "0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, actual = tmp_path / "whole" / "step-00000008", checkpoints / "step-00000008"
    for name, tensor in weights(expected).items():
        torch.testing.assert_close(weights(actual)[name], tensor, rtol=0, atol=0)
    expected_optimizer = safetensors.torch.load_file(expected / "optimizer.safetensors")
    actual_optimizer = safetensors.torch.load_file(actual / "optimizer.safetensors")
    assert expected_optimizer.keys() == actual_optimizer.keys()
    for name, tensor in expected_optimizer.items():
        torch.testing.assert_close(actual_optimizer[name], tensor, rtol=0, atol=0)
    log = records(checkpoints / "train.jsonl")
    assert [r["event"] for r in log if r["event"] in ("start", "resume")] == ["start", "resume"]
    resume = next(r for r in log if r["event"] == "resume")
    assert resume["step"] == 2
    assert {r["world_size"] for r in log if "world_size" in r} == {2}
