"""The training loop: single process or DistributedDataParallel under ``torchrun``, resumable.

:func:`train` runs in a plain process or in every worker that ``torchrun`` (or ``srun`` with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` set) starts. Under a
launcher it joins the process group (gloo on CPU, NCCL on CUDA), wraps the network in
:class:`~torch.nn.parallel.DistributedDataParallel` and shards the data with a
:class:`~torch.utils.data.DistributedSampler` (``set_epoch`` every epoch, so every epoch has
its own order). Each process takes ``batch_size`` samples per step, so the global batch is
``batch_size * world_size``.

Rank 0 alone writes: the JSONL training log, a progress line on stderr and the checkpoints.
The checkpoint directory holds::

    CHECKPOINT_DIR/
        step-00000040/                  one resumable training state (written atomically)
            weights.safetensors         network weights  } radinfill.model.checkpoint, so a
            metadata.json               metadata         } snapshot loads like a release
            optimizer.safetensors       optimizer state tensors (Adam moments, step counts)
            state.json                  step, epoch, config, optimizer param groups, RNG states
        latest                          name of the newest complete step directory
        train.jsonl                     training log (default log path)

A snapshot is assembled in a hidden temporary directory and renamed into place, then
``latest`` is replaced atomically; the oldest snapshots beyond ``keep_last`` are removed.
Nothing is pickled: tensors go to safetensors, everything else to JSON.

Restarting :func:`train` with the same configuration resumes from ``latest`` (after a crash,
a preemption or a ``torchrun --max-restarts`` restart): weights, optimizer moments, the
position in the learning-rate schedule and in the epoch's sample order are restored, so the
run continues as if it had not stopped (on the CPU, bit for bit, as long as the dataset draws
its randomness from the sample index or the restored global RNGs). SIGTERM and SIGUSR1 (Slurm's
``--signal=USR1@300``) ask every rank to stop at the next step boundary; rank 0 then writes a
snapshot and :func:`train` returns normally.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from radinfill import atomic
from radinfill.model import build, load_checkpoint, save_checkpoint
from radinfill.progress import clock_time
from radinfill.train.losses import MSE_WEIGHT, hole_loss

#: ``eval_fn(model, step) -> scores``: called on every rank at every snapshot with the bare
#: network in eval mode and gradients off, so that it can score a shard of the validation data
#: and ``all_reduce`` the sums; rank 0's scores (numbers) are logged and stored in the snapshot
#: metadata. A scorer that runs on rank 0 alone returns ``{}`` on the other ranks.
EvalFn = Callable[[nn.Module, int], Mapping[str, float]]
#: ``collate(samples) -> batch``: the DataLoader's ``collate_fn`` (see :func:`train`).
Collate = Callable[[list[Any]], Mapping[str, torch.Tensor]]
#: ``on_snapshot(snapshot_dir)``: called on rank 0 after each snapshot is written and logged
#: (the last one included, also after a stop on a signal), e.g. to draw the loss curves or
#: report metrics; the other ranks go on meanwhile and wait at the next collective.
SnapshotHook = Callable[[Path], None]
#: Signals that request a clean stop at the next step boundary.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
LATEST = "latest"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
#: Configuration fields that shape the trajectory; a resume must agree on them.
_TRAJECTORY_FIELDS = (
    "variant",
    "hparams",
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "seed",
    "grad_clip",
    "mse_weight",
    "bias_weight",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes
    ----------
    variant : str
        Network variant for :func:`radinfill.model.build`.
    checkpoint_dir : pathlib.Path
        Directory of the resumable snapshots (see the module docstring).
    product : str
        RADOLAN product family the data come from (checkpoint metadata).
    interval_minutes : int
        Product interval in minutes (checkpoint metadata).
    hparams : Mapping[str, Any]
        Constructor arguments of the network (JSON values).
    epochs : int
        Passes over the dataset.
    batch_size : int
        Samples per step and process.
    lr : float
        Adam learning rate at the start of the cosine schedule.
    min_lr : float
        Learning rate the cosine decay ends at (after the last step).
    seed : int
        Seeds the network initialisation, the sample order and the global RNGs.
    grad_clip : float or None
        Largest global gradient norm; None disables clipping.
    mse_weight, bias_weight : float
        Weights of the squared-error and hole-mean bias terms of
        :func:`radinfill.train.losses.hole_loss`.
    checkpoint_every : int
        Steps between snapshots (a last one is always written at the end).
    keep_last : int
        Snapshots kept on disk; older ones are deleted.
    log_every : int
        Steps between log records and progress lines.
    log_path : pathlib.Path or None
        JSONL training log; default ``checkpoint_dir / "train.jsonl"``.
    num_workers : int
        DataLoader worker processes per rank.
    dist_timeout_s : float
        Timeout of collective operations, seconds (a hung rank fails instead of blocking).
    """

    variant: str
    checkpoint_dir: Path
    product: str = "RY"
    interval_minutes: int = 5
    hparams: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 8
    lr: float = 2e-3
    min_lr: float = 0.0
    seed: int = 0
    grad_clip: float | None = 1.0
    mse_weight: float = MSE_WEIGHT
    bias_weight: float = 0.0
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    log_path: Path | None = None
    num_workers: int = 0
    dist_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        """Validate the numbers, so a bad run fails before any process group is joined."""
        object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))
        if self.log_path is not None:
            object.__setattr__(self, "log_path", Path(self.log_path))
        positive = ("epochs", "batch_size", "checkpoint_every", "keep_last", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig needs 0 <= min_lr <= lr, got {self.min_lr}, {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")

    @property
    def log_file(self) -> Path:
        """The JSONL training log path."""
        return self.log_path if self.log_path is not None else self.checkpoint_dir / "train.jsonl"

    def trajectory(self) -> dict[str, Any]:
        """The JSON form of the fields a resumed run must share with the interrupted one."""
        values = {name: getattr(self, name) for name in _TRAJECTORY_FIELDS}
        return json.loads(json.dumps(values))


def cosine_lr(step: int, total_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps`` on a cosine decay.

    Goes from ``lr`` at step 0 to ``min_lr`` after the last step: the learning rate anneals
    smoothly, which the prototype found better than a fixed rate for the residual network.
    """
    progress = min(step / max(total_steps, 1), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class _Context:
    """Where this process runs: rank, world size and device; ``owns_group`` if we joined it."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def leader(self) -> bool:
        return self.rank == 0


class _StopFlag:
    """Records SIGTERM/SIGUSR1 while installed; restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: only set the flag, the loop acts at the next step boundary."""
        self.requested = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is not threading.main_thread():
            return self  # handlers can only be installed from the main thread
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def train(
    config: TrainConfig,
    dataset: Dataset,
    *,
    collate: Collate | None = None,
    eval_fn: EvalFn | None = None,
    on_snapshot: SnapshotHook | None = None,
) -> Path:
    """Train (or resume training) a network on ``dataset`` and return the last snapshot.

    Parameters
    ----------
    config
        The run (see :class:`TrainConfig`).
    dataset
        Map-style dataset. If it has ``set_epoch(epoch)`` (as
        :class:`radinfill.train.data.WindowDataset`), it is called before every epoch, so
        sample draws can depend on the epoch.
    collate
        Turns a list of samples into a batch: a dict with ``values``/``valid``
        ``(B, T, 1, H, W)``, ``aux`` ``(B, A, H, W)``, ``target`` ``(B, 1, H, W)`` in mm/h and
        ``loss_mask`` ``(B, 1, H, W)`` bool (e.g. :func:`radinfill.train.data.collate`);
        default PyTorch's ``default_collate``.
    eval_fn
        Optional scorer called on every rank at each snapshot (see :data:`EvalFn`).
    on_snapshot
        Optional rank-0 callback after each snapshot (see :data:`SnapshotHook`).

    Returns
    -------
    pathlib.Path
        The snapshot directory written last (its ``state.json`` says whether training
        ``finished`` or stopped on a signal). Every rank returns the same path.

    Raises
    ------
    FloatingPointError
        If the mean loss becomes NaN or infinite (before a snapshot could store such weights).
    ValueError
        If the dataset is too small for one step per epoch or ``latest`` in the checkpoint
        directory belongs to a run with another configuration or world size.

    Notes
    -----
    Under a launcher, :func:`train` joins the default process group and leaves it at the end:
    call it once per process (gloo may fail to reconnect when the same process joins again).
    A caller that trains several times in one process joins the group itself; :func:`train`
    then uses that group and leaves it alone.
    """
    context = _join(timedelta(seconds=config.dist_timeout_s))
    try:
        with _StopFlag() as stop:
            last = _run(config, _Data(dataset, collate), eval_fn, on_snapshot, context, stop)
    except BaseException:
        _leave(context, clean=False)
        raise
    _leave(context, clean=True)
    return last


def _join(timeout: timedelta) -> _Context:
    """Join the process group when a launcher set ``RANK``/``WORLD_SIZE``; pick the device."""
    env = os.environ
    launched = "RANK" in env and "WORLD_SIZE" in env
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns_group = False
    if launched and not dist.is_initialized() and int(env["WORLD_SIZE"]) > 1:
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device, timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        owns_group = True
    if dist.is_initialized():
        return _Context(dist.get_rank(), dist.get_world_size(), device, owns_group)
    return _Context(0, 1, device, owns_group)


def _leave(context: _Context, *, clean: bool) -> None:
    """Leave the group we joined; after a clean run, barrier first (else gloo may abort at exit).

    After an error the other ranks may be waiting in another collective, so a barrier could only
    time out; the launcher stops them. The group is destroyed only with its last reference, and
    the DDP wrapper's reference cycles hold one: they are collected first, so that gloo's threads
    do not end during the interpreter's finalization, where they abort the process (SIGABRT,
    "terminate called without an active exception", after a run that completed).
    """
    if context.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()


def _run(
    config: TrainConfig,
    data: _Data,
    eval_fn: EvalFn | None,
    on_snapshot: SnapshotHook | None,
    context: _Context,
    stop: _StopFlag,
) -> Path:
    """The loop proper, once the process group (if any) is joined."""
    sampler = DistributedSampler(
        data.dataset,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=True,
        seed=config.seed,
        drop_last=True,
    )
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"{config.checkpoint_dir}: {len(sampler)} samples per process are too few for a "
            f"batch of {config.batch_size} ({context.world_size} process(es))"
        )
    total_steps = steps_per_epoch * config.epochs
    torch.manual_seed(config.seed)
    model = build(config.variant, **config.hparams).to(context.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    step, last = _resume(config, model, optimizer, context)
    _seed_globals(config.seed, context.rank, step)
    wrapped: nn.Module = model
    if context.distributed:
        ids = [context.device.index] if context.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    log = _Log(config.log_file if context.leader else None, step, total_steps)
    log.event("resume" if step else "start", step=step, world_size=context.world_size)
    try:
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            for batch in data.loader(epoch, list(sampler)[skip * config.batch_size :], config):
                lr = cosine_lr(step, total_steps, config.lr, config.min_lr)
                loss = _step(wrapped, optimizer, batch, lr, config, context.device)
                step += 1
                stopped = _any_rank(stop.requested, context)
                position = _Position(step, epoch, step == total_steps, stopped)
                if position.logs(config) or position.saves(config):
                    loss_value = _checked_mean(loss, context, step)
                    if position.logs(config):
                        log.step(
                            step, epoch, loss_value, lr, config.batch_size * context.world_size
                        )
                if position.saves(config):
                    scores = _scores(model, step, eval_fn)
                    last = _snapshot(config, model, optimizer, position, context, scores)
                    log.event("snapshot", step=step, path=str(last), scores=scores)
                    if on_snapshot is not None and context.leader:
                        on_snapshot(last)
                if stopped:
                    log.event("stopped", step=step)
                    return last
    finally:
        log.close()
    if last is None:  # pragma: no cover - total_steps >= 1, so the loop wrote a snapshot
        raise RuntimeError(f"{config.checkpoint_dir}: training ended without a snapshot")
    return last


@dataclass(frozen=True)
class _Position:
    """Where the loop stands after an optimiser step (``step`` counts completed steps)."""

    step: int
    epoch: int
    finished: bool
    stopped: bool

    def logs(self, config: TrainConfig) -> bool:
        """Whether a log record is due (every ``log_every`` steps and at the end)."""
        return self.step % config.log_every == 0 or self.finished or self.stopped

    def saves(self, config: TrainConfig) -> bool:
        """Whether a snapshot is due (every ``checkpoint_every`` steps and at the end)."""
        return self.step % config.checkpoint_every == 0 or self.finished or self.stopped


@dataclass(frozen=True)
class _Data:
    """The dataset and how its samples become batches."""

    dataset: Dataset
    collate: Collate | None

    def loader(self, epoch: int, indices: list[int], config: TrainConfig) -> DataLoader:
        """Batches of epoch ``epoch`` in the order ``indices`` (this rank's shard, from the
        resumed position on); the dataset is told the epoch first (workers copy it after)."""
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        return DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=indices,
            drop_last=True,
            collate_fn=self.collate,
            num_workers=config.num_workers,
            pin_memory=torch.cuda.is_available(),
        )


def _step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    lr: float,
    config: TrainConfig,
    device: torch.device,
) -> torch.Tensor:
    """One optimiser step on ``batch``; returns the (detached) loss of this rank."""
    moved = {key: batch[key].to(device, non_blocking=True) for key in _BATCH_KEYS}
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    pred, _ = model(moved["values"], moved["valid"], moved["aux"])
    loss = hole_loss(
        pred,
        moved["target"],
        moved["loss_mask"],
        mse_weight=config.mse_weight,
        bias_weight=config.bias_weight,
    )
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach()


#: Batch entries the loop uses.
_BATCH_KEYS = ("values", "valid", "aux", "target", "loss_mask")


def _any_rank(flag: bool, context: _Context) -> bool:
    """True on every rank if ``flag`` is set on any rank (so all ranks stop at the same step)."""
    if not context.distributed:
        return flag
    value = torch.tensor([int(flag)], device=_collective_device(context))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _checked_mean(loss: torch.Tensor, context: _Context, step: int) -> float:
    """Mean of the per-rank losses (every rank takes part); a diverged run raises on all ranks.

    Raises
    ------
    FloatingPointError
        If the mean loss is NaN or infinite (checked before a snapshot could store such weights).
    """
    value = loss.reshape(1).to(torch.float64)
    if context.distributed:
        value = value.to(_collective_device(context))
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    mean = float(value.item()) / context.world_size
    if not math.isfinite(mean):
        raise FloatingPointError(f"training diverged: mean loss {mean} at step {step}")
    return mean


def _collective_device(context: _Context) -> torch.device:
    """NCCL reduces CUDA tensors, gloo CPU ones."""
    return context.device if dist.get_backend() == "nccl" else torch.device("cpu")


def _seed_globals(seed: int, rank: int, step: int) -> None:
    """Seed torch, numpy and random from (seed, rank, step): distinct per rank, reproducible.

    A resumed run reseeds at its start step; randomness a dataset draws from these global
    generators therefore differs from the uninterrupted run after a resume (a dataset that
    derives it from the sample index is unaffected).
    """
    entropy = np.random.SeedSequence([seed, rank, step]).generate_state(2)
    torch.manual_seed(int(entropy[0]))
    np.random.seed(int(entropy[1]))
    random.seed(int(entropy[1]))


def _scores(model: nn.Module, step: int, eval_fn: EvalFn | None) -> dict[str, float]:
    """``eval_fn`` with the network in eval mode and without gradients ({} without one)."""
    if eval_fn is None:
        return {}
    model.eval()
    try:
        with torch.no_grad():
            return {key: float(value) for key, value in eval_fn(model, step).items()}
    finally:
        model.train()


def _snapshot(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    position: _Position,
    context: _Context,
    scores: Mapping[str, float],
) -> Path:
    """Rank 0 writes the snapshot at ``position``; all ranks wait for it."""
    step, epoch, finished = position.step, position.epoch, position.finished
    directory = config.checkpoint_dir
    name = f"step-{step:08d}"
    if context.leader:
        meta = {
            "product": config.product,
            "interval_minutes": config.interval_minutes,
            "training": {"step": step, "epoch": epoch, "world_size": context.world_size},
            "scores": dict(scores),
        }
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        state = {
            "step": step,
            "epoch": epoch,
            "finished": finished,
            "world_size": context.world_size,
            "config": config.trajectory(),
            "optimizer": groups,
        }
        _write_snapshot(directory, name, model, meta, tensors, state)
        _prune(directory, config.keep_last)
    if context.distributed:
        dist.barrier()
    return directory / name


def _write_snapshot(
    directory: Path,
    name: str,
    model: nn.Module,
    meta: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    state: Mapping[str, Any],
) -> None:
    """Assemble the snapshot in a hidden directory, rename it into place, then move ``latest``."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.part-", dir=directory))
    final = directory / name
    try:
        save_checkpoint(model, tmp, meta)
        atomic.write_bytes(tmp / OPTIMIZER, safetensors.torch.save(dict(tensors)))
        text = json.dumps(state, indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic.write_bytes(tmp / STATE, text.encode("utf-8"))
        tmp.chmod(0o755)
        if final.exists():  # left by a crash between the rename and the pointer update
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.fsync_directory(directory)
    atomic.write_bytes(directory / LATEST, f"{name}\n".encode())


def _prune(directory: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` snapshots and partial ones left by a crash."""
    snapshots = sorted(path for path in directory.glob("step-*") if path.is_dir())
    for old in [*snapshots[:-keep_last], *directory.glob(".step-*.part-*")]:
        shutil.rmtree(old, ignore_errors=True)


def _flatten_optimizer(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into named tensors and a JSON part (no pickle needed).

    Tensors of parameter ``i`` become ``"i.name"``; other per-parameter values and the
    parameter groups go to the JSON part.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(
    tensors: Mapping[str, torch.Tensor], json_part: Mapping[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`_flatten_optimizer` (JSON lists of group options back to tuples)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *json_part["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and key != "params" else value
            for key, value in group.items()
        }
        for group in json_part["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _resume(
    config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, context: _Context
) -> tuple[int, Path | None]:
    """Load the ``latest`` snapshot into ``model`` and ``optimizer``; return (step, path).

    Returns (0, None) when the checkpoint directory has no ``latest`` pointer (a fresh run).
    """
    pointer = config.checkpoint_dir / LATEST
    if not pointer.exists():
        return 0, None
    directory = config.checkpoint_dir / pointer.read_text(encoding="utf-8").strip()
    state_file = directory / STATE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{state_file}: cannot read training state: {err}") from None
    expected = {"config": config.trajectory(), "world_size": context.world_size}
    differing = sorted(key for key, value in expected.items() if state.get(key) != value)
    if differing:
        details = "; ".join(f"{key}: {state.get(key)!r} != {expected[key]!r}" for key in differing)
        raise ValueError(
            f"{state_file}: snapshot belongs to another run ({details}); use a fresh "
            "checkpoint directory or the same configuration"
        )
    loaded, _ = load_checkpoint(directory)
    model.load_state_dict(loaded.state_dict())
    tensors = safetensors.torch.load_file(directory / OPTIMIZER)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    return int(state["step"]), directory


class _Log:
    """Rank 0's JSONL training log and stderr progress line; silent without a path (rank > 0)."""

    def __init__(self, path: Path | None, start_step: int, total_steps: int) -> None:
        self._handle: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._total = total_steps
        self._since = self._began = time.perf_counter()
        self._since_step: int | None = None
        self._start_step = start_step

    def event(self, kind: str, **fields: Any) -> None:
        """Append one record ``{"event": kind, "time": ..., **fields}`` and flush it."""
        if self._handle is None:
            return
        record = {"event": kind, "time": time.time(), **fields}
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
        self._handle.flush()

    def step(self, step: int, epoch: int, loss: float, lr: float, global_batch: int) -> None:
        """Log a training step with the throughput since the previous step record.

        The progress line's ETA uses the mean pace since this process started (snapshots and
        reports included), steadier than the throughput of the last few steps.
        """
        if self._handle is None:
            return
        now = time.perf_counter()
        steps = step - (self._since_step if self._since_step is not None else step - 1)
        rate = steps * global_batch / max(now - self._since, 1e-9)
        self._since, self._since_step = now, step
        self.event("step", step=step, epoch=epoch, loss=loss, lr=lr, samples_per_s=rate)
        eta = (self._total - step) * (now - self._began) / max(step - self._start_step, 1)
        sys.stderr.write(
            f"step {step}/{self._total} epoch {epoch} loss {loss:.4f} lr {lr:.2e} "
            f"{rate:.1f} samples/s eta {clock_time(eta)}\n"
        )
        sys.stderr.flush()

    def close(self) -> None:
        """Close the log file."""
        if self._handle is not None:
            self._handle.close()
