"""One scheduled retraining run: ``radinfill retrain --config FILE``.

The timer unit (``systemd/radinfill-retrain.service``) starts this once per period. It trains a
fresh run from the ``[train]`` section of the service configuration, puts the run's last
snapshot through the champion/challenger gate of :mod:`radinfill.train.promote`, and, when the
candidate is promoted, tells the running service to load it. The ``[retrain]`` table says how::

    [retrain]
    registry = "/var/lib/radinfill/models"        # model registry (required)
    checkpoint_root = "/var/lib/radinfill/train"  # each run trains into run-<UTC time>/ here
    launcher = "local"                            # local | slurm
    nproc = 1                                     # local: > 1 runs torchrun with N workers
    sbatch_script = "deploy/slurm/train-single-node.sbatch"  # slurm: sbatch --wait SCRIPT
    archive_days = 14                             # optional: also train on [service] incoming
    reload = "none"                               # none | systemctl | pid:PATH
    data = []                                     # evaluation specs (default: held-out set)
    floor = []                                    # classical floor (default: every causal one)
    floor_margin = 0.02                           # RMSE at least 2 % below the floor's
    schedule = "0 3 * * 0"                        # radinfill schedule: crontab, UTC (optional)
    misfire_grace_s = 3600                        # radinfill schedule: a late run still starts

Steps, each logged as one line on stderr with its duration: ``train`` (a child process:
``python -m radinfill train``, ``torchrun`` or ``sbatch --wait``; the run directory overrides
``train.checkpoint_dir``), ``snapshot`` (once the run finished, the snapshot with the lowest
``val_rmse_ratio`` when the run keeps validation data, else the last one),
``promote`` and, after a promotion, ``reload``. The exit status is 0 when the candidate was
promoted, 3 when the gate rejected it and 1 when a step failed (the message names the step).

``archive_days`` adds the RADOLAN files of the service's incoming directories (read from the
``[service]`` table of the same file, not through :mod:`radinfill.daemon`) that are at most
that many days old, by modification time: they are linked into ``RUN/archive/`` and that
directory is added to ``train.data.radolan``. Only the local launcher can pass it on (the
sbatch scripts take nothing but ``CONFIG`` and ``CHECKPOINT_DIR``).

With ``[train.metrics] textfile`` configured, the outcome goes to ``retrain.prom`` next to that
file (node_exporter reads every ``*.prom`` there); not into the training textfile itself, which
the training job rewrites at every snapshot.

``schedule`` and ``misfire_grace_s`` are read only by ``radinfill schedule``
(:mod:`radinfill.train.schedule`), the scheduler for hosts without systemd timers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from radinfill.config import ConfigError, Document, check, read
from radinfill.model import baselines
from radinfill.train import supervise, train_config

__all__ = [
    "EXIT_FAILED",
    "EXIT_PROMOTED",
    "EXIT_REJECTED",
    "ConfigError",
    "RetrainSettings",
    "RunResult",
    "StepError",
    "load",
    "retrain",
    "train_command",
]

EXIT_PROMOTED, EXIT_FAILED, EXIT_REJECTED = 0, 1, 3
#: File name of the outcome metrics, next to the ``[train.metrics]`` textfile.
METRICS_FILE = "retrain.prom"
PREFIX = "radinfill_retrain_"
_LAUNCHERS = ("local", "slurm")
#: Keys without a default.
_REQUIRED = ("registry", "checkpoint_root")


@dataclass(frozen=True)
class RetrainSettings:
    """A parsed ``[retrain]`` table (paths resolved against the configuration file).

    Attributes
    ----------
    registry : pathlib.Path
        Model registry the gate publishes to.
    checkpoint_root : pathlib.Path
        Parent of the run directories ``run-<UTC time>``.
    launcher : str
        ``local`` (a child process on this machine) or ``slurm`` (``sbatch --wait``).
    nproc : int
        Local workers; more than one runs ``torchrun --standalone``.
    sbatch_script : pathlib.Path or None
        Batch script of the slurm launcher (``deploy/slurm/*.sbatch``).
    archive_days : float or None
        Age limit (days) of the incoming files added to the training data; None: none added.
    reload : str
        ``none``, ``systemctl`` or ``pid:PATH`` (SIGHUP to the pid in PATH).
    data : tuple of str
        Evaluation specs of the gate; empty: :func:`radinfill.train.evaluate.held_out_specs`.
    floor : tuple of str
        Classical causal methods whose strongest the candidate must beat; empty: every causal
        baseline (:func:`radinfill.train.promote.floor`).
    floor_margin : float
        How much lower than the floor's the candidate's RMSE must be (a fraction).
    schedule : str or None
        Five-field crontab expression in UTC for ``radinfill schedule``; None: not scheduled.
    misfire_grace_s : int
        Seconds after its due time within which ``radinfill schedule`` still starts a run the
        scheduler could not start on time (host suspended, clock jump); later, it is skipped.
    """

    registry: Path
    checkpoint_root: Path
    launcher: str = "local"
    nproc: int = 1
    sbatch_script: Path | None = None
    archive_days: float | None = None
    reload: str = "none"
    data: tuple[str, ...] = ()
    floor: tuple[str, ...] = ()
    floor_margin: float = 0.02
    schedule: str | None = None
    misfire_grace_s: int = 3600

    def _floor_problems(self) -> list[str]:
        problems = [
            f"retrain.floor: {name!r} is not a causal baseline"
            for name in self.floor
            if name not in baselines.list_methods() or not baselines.is_causal(name)
        ]
        if not 0.0 <= self.floor_margin < 1.0:
            problems.append(f"retrain.floor_margin must be in [0, 1), got {self.floor_margin}")
        return problems

    def __post_init__(self) -> None:
        """Check the combination before anything runs.

        Raises
        ------
        ConfigError
            Listing every problem found (source ``[retrain]``; :func:`load` names the file).
        """
        problems: list[str] = []
        if self.launcher not in _LAUNCHERS:
            problems.append(f"retrain.launcher must be one of {_LAUNCHERS}, got {self.launcher!r}")
        if self.nproc < 1:
            problems.append(f"retrain.nproc must be >= 1, got {self.nproc}")
        if self.launcher == "slurm" and self.sbatch_script is None:
            problems.append("retrain.sbatch_script is required with launcher = 'slurm'")
        if self.launcher == "slurm" and self.archive_days is not None:
            problems.append(
                "retrain.archive_days needs launcher = 'local': the sbatch scripts take only "
                "CONFIG and CHECKPOINT_DIR"
            )
        if self.archive_days is not None and self.archive_days <= 0:
            problems.append(f"retrain.archive_days must be > 0, got {self.archive_days}")
        if not (self.reload in ("none", "systemctl") or self.reload.startswith("pid:")):
            problems.append(
                f"retrain.reload must be 'none', 'systemctl' or 'pid:PATH', got {self.reload!r}"
            )
        if self.schedule is not None:
            from radinfill.train.schedule import cron_trigger  # (schedule imports this module)

            try:
                cron_trigger(self.schedule)
            except ValueError as err:
                problems.append(f"retrain.schedule: {err}")
        if isinstance(self.misfire_grace_s, bool) or not isinstance(self.misfire_grace_s, int):
            problems.append(
                f"retrain.misfire_grace_s must be whole seconds, got {self.misfire_grace_s!r}"
            )
        elif self.misfire_grace_s < 1:
            problems.append(f"retrain.misfire_grace_s must be >= 1, got {self.misfire_grace_s}")
        problems += self._floor_problems()
        if problems:
            raise ConfigError("[retrain]", problems)
        object.__setattr__(self, "data", tuple(self.data))
        object.__setattr__(self, "floor", tuple(self.floor))


@dataclass(frozen=True)
class RunResult:
    """What a retraining run did.

    Attributes
    ----------
    status : int
        Exit status: :data:`EXIT_PROMOTED`, :data:`EXIT_REJECTED` or :data:`EXIT_FAILED`.
    run_dir : pathlib.Path or None
        The run's checkpoint directory (None when the run failed before it was chosen).
    failed_step : str or None
        Name of the step that failed.
    version : str or None
        The candidate's release version (promoted or rejected).
    durations : Mapping[str, float]
        Seconds per step that ran.
    """

    status: int
    run_dir: Path | None = None
    failed_step: str | None = None
    version: str | None = None
    durations: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def result(self) -> str:
        """``promoted``, ``rejected`` or ``failed``."""
        return {EXIT_PROMOTED: "promoted", EXIT_REJECTED: "rejected"}.get(self.status, "failed")


class StepError(Exception):
    """A step of the run failed; the message says why."""


def load(path: str | os.PathLike[str]) -> tuple[RetrainSettings, train_config.TrainSettings]:
    """Read the ``[retrain]`` and ``[train]`` sections of a configuration file.

    Raises
    ------
    ConfigError
        Naming the file and every problem of the ``[retrain]`` and ``[train]`` tables (unknown
        or missing keys, bad values).
    """
    document = read(path)
    parsers = {"retrain": from_document, "train": train_config.from_document}
    parsed = check(document, parsers, required=parsers)
    return parsed["retrain"], parsed["train"]


def from_document(document: Document) -> RetrainSettings:
    """The ``[retrain]`` section of the configuration file (see :func:`load`)."""
    table = dict(document.table("retrain") or {})
    path = Path(document.source)
    base = document.base
    allowed = {f.name for f in dataclasses.fields(RetrainSettings)}
    problems = [f"unknown key retrain.{name}" for name in sorted(set(table) - allowed)]
    problems += [f"retrain.{name} is required" for name in _REQUIRED if name not in table]
    for name in ("registry", "checkpoint_root", "sbatch_script"):
        if table.get(name) is not None:
            table[name] = _resolve(base, table[name])
    # stand-ins for missing required keys, so the other values are checked too
    known = {name: base for name in _REQUIRED}
    known.update((name, value) for name, value in table.items() if name in allowed)
    try:
        retrain_settings = RetrainSettings(**known)
    except ConfigError as err:
        raise ConfigError(str(path), problems + err.problems) from None
    except TypeError as err:  # a value of the wrong type, e.g. nproc = "2"
        raise ConfigError(str(path), [*problems, str(err)]) from None
    if problems:
        raise ConfigError(str(path), problems)
    return retrain_settings


def train_command(
    settings: RetrainSettings, config: Path, run_dir: Path, overrides: Sequence[str] = ()
) -> list[str]:
    """The argument vector of the training step (see the module docstring)."""
    if settings.launcher == "slurm":
        if "," in f"{config}{run_dir}":
            raise ValueError(f"sbatch --export cannot pass paths with commas: {config}, {run_dir}")
        export = f"--export=ALL,CONFIG={config},CHECKPOINT_DIR={run_dir}"
        return ["sbatch", "--wait", export, str(settings.sbatch_script)]
    launcher = [sys.executable]
    if settings.nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc-per-node={settings.nproc}"]
    sets = [part for item in overrides for part in ("--set", item)]
    train = ["-m", "radinfill", "train", "--config", str(config), "--checkpoint-dir", str(run_dir)]
    return [*launcher, *train, *sets]


def retrain(
    path: str | os.PathLike[str], *, now: datetime | None = None, stderr: TextIO | None = None
) -> RunResult:
    """Run one retraining: train, find the snapshot, promote, reload.

    Parameters
    ----------
    path
        The configuration file (``[train]`` and ``[retrain]``, optionally ``[service]``).
    now
        Time that names the run directory (default: the current UTC time).
    stderr
        Where the step lines go (default ``sys.stderr``).

    Returns
    -------
    RunResult
        Its ``status`` is the exit status of the command.
    """
    out = stderr if stderr is not None else sys.stderr
    path = Path(path).absolute()
    durations: dict[str, float] = {}
    run_dir: Path | None = None
    metrics: train_config.PushConfig | None = None
    try:
        with _step("config", durations, out):
            settings, training = load(path)
            metrics = training.metrics
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        run_dir = settings.checkpoint_root / f"run-{stamp}"
        with _step("train", durations, out):
            run_dir.mkdir(parents=True)
            overrides = _archive_overrides(path, settings, training, run_dir)
            command = train_command(settings, path, run_dir, overrides)
            status = supervise.supervise(command, 0, stderr=out)
            if status != 0:
                raise StepError(f"{command[0]} ... exited with status {status}")
        with _step("snapshot", durations, out):
            snapshot = _finished_snapshot(run_dir)
        with _step("promote", durations, out):
            decision = _promote(snapshot, settings)
            out.write(decision.table() + "\n")
        if decision.promoted:
            with _step("reload", durations, out):
                _reload(settings.reload, out)
        status = EXIT_PROMOTED if decision.promoted else EXIT_REJECTED
        outcome = RunResult(status, run_dir, None, decision.version, durations)
    except StepError as err:
        outcome = RunResult(EXIT_FAILED, run_dir, err.args[0], None, durations)
    _say(out, f"outcome: {outcome.result} (exit status {outcome.status})")
    if metrics is not None and metrics.textfile is not None:
        _write_metrics(metrics.textfile.with_name(METRICS_FILE), outcome, time.time())
    return outcome


@contextmanager
def _step(name: str, durations: dict[str, float], out: TextIO) -> Iterator[None]:
    """Time one step, log it as one line, and turn any error into a :class:`StepError`."""
    start = time.monotonic()
    try:
        yield
    except Exception as err:  # a scheduled job reports which step failed, never a traceback
        durations[name] = time.monotonic() - start
        reason = str(err) if isinstance(err, StepError) else f"{type(err).__name__}: {err}"
        _say(out, f"{name}: FAILED after {durations[name]:.1f} s: {reason}")
        raise StepError(name) from err
    durations[name] = time.monotonic() - start
    _say(out, f"{name}: done in {durations[name]:.1f} s")


def _archive_overrides(
    path: Path, settings: RetrainSettings, training: train_config.TrainSettings, run_dir: Path
) -> list[str]:
    """``--set`` items adding the recent incoming files (linked into ``RUN/archive``) to the
    RADOLAN sources; none without ``archive_days`` or a ``[service] incoming`` list."""
    if settings.archive_days is None:
        return []
    service = read(path).table("service") or {}
    incoming = service.get("incoming", [])
    if not incoming:
        return []
    archive = run_dir / "archive"
    cutoff = time.time() - settings.archive_days * 86400.0
    for index, directory in enumerate(_resolve(path.parent, d) for d in incoming):
        target = archive / str(index)
        target.mkdir(parents=True)
        for source in sorted(directory.iterdir()):  # the service does not recurse either
            if source.is_file() and source.stat().st_mtime >= cutoff:
                (target / source.name).symlink_to(source.absolute())
    radolan = [str(p) for p in (*training.data.radolan, archive)]
    return [f"data.radolan={json.dumps(radolan)}"]


def _finished_snapshot(run_dir: Path) -> Path:
    """The candidate of a finished run: the snapshot selected on validation
    (:func:`radinfill.train.job.best_snapshot`), else the last one that ``RUN/latest`` names."""
    from radinfill.train.job import best_snapshot
    from radinfill.train.loop import LATEST, STATE

    pointer = run_dir / LATEST
    if not pointer.is_file():
        raise StepError(f"{pointer}: no snapshot pointer; the training run wrote no snapshot")
    snapshot = run_dir / pointer.read_text(encoding="utf-8").strip()
    state = json.loads((snapshot / STATE).read_text(encoding="utf-8"))
    if not state.get("finished"):
        raise StepError(f"{snapshot}: the run stopped before its last step (not finished)")
    best = best_snapshot(run_dir)
    return snapshot if best is None else best[0]


def _promote(snapshot: Path, settings: RetrainSettings) -> Any:
    """The gate's :class:`~radinfill.train.promote.Decision` on ``snapshot``."""
    from radinfill import defaults
    from radinfill.train import evaluate, promote

    specs = settings.data or evaluate.held_out_specs(defaults.sample_data_dir())
    return promote.promote(
        snapshot,
        settings.registry,
        specs=specs,
        floor_methods=settings.floor or None,
        floor_margin=settings.floor_margin,
    )


def _reload(how: str, out: TextIO) -> None:
    """Tell the service to load the new release (``systemctl reload`` or SIGHUP to a pid)."""
    if how == "systemctl":
        subprocess.run(["systemctl", "reload", "radinfill"], check=True)
        _say(out, "reload: systemctl reload radinfill")
    elif how.startswith("pid:"):
        pid_file = Path(how.removeprefix("pid:"))
        pid = int(pid_file.read_text(encoding="utf-8").strip())
        os.kill(pid, signal.SIGHUP)
        _say(out, f"reload: sent SIGHUP to {pid} ({pid_file})")


def _write_metrics(textfile: Path, outcome: RunResult, finished: float) -> None:
    """The outcome as Prometheus gauges in ``textfile`` (node_exporter's textfile collector)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    Gauge(f"{PREFIX}exit_status", "Exit status of the last retraining run.", registry=reg).set(
        outcome.status
    )
    Gauge(
        f"{PREFIX}last_run_timestamp_seconds",
        "Unix time at which the last retraining run ended.",
        registry=reg,
    ).set(finished)
    result = Gauge(
        f"{PREFIX}outcome",
        "1 for the outcome of the last retraining run (promoted, rejected, failed), else 0.",
        ["outcome"],
        registry=reg,
    )
    for name in ("promoted", "rejected", "failed"):
        result.labels(outcome=name).set(float(name == outcome.result))
    duration = Gauge(
        f"{PREFIX}step_duration_seconds",
        "Wall time of each step of the last retraining run.",
        ["step"],
        registry=reg,
    )
    for step, seconds in outcome.durations.items():
        duration.labels(step=step).set(seconds)
    textfile.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(textfile), reg)


def _say(out: TextIO, message: str) -> None:
    out.write(f"radinfill retrain: {message}\n")
    out.flush()


def _resolve(base: Path, value: str | os.PathLike[str]) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
