"""Prometheus metrics of a training run, reported by rank 0 at every snapshot.

A training run is a batch job, not a server to scrape, so its metrics go out in the two ways
Prometheus offers batch jobs (``[train.metrics]``,
:class:`~radinfill.train.train_config.PushConfig`):

* a ``.prom`` file for node_exporter's textfile collector, on a host that runs node_exporter
  (written atomically by :func:`prometheus_client.write_to_textfile`);
* the Pushgateway, for ephemeral nodes such as Slurm's, with ``pushadd_to_gateway`` (POST), so
  the push of an unfinished or failed run replaces the progress metrics but leaves the last
  success of an earlier run in place. The grouping key is ``job="radinfill_train"`` plus the
  configured ``instance``: stable, never per run, because the Pushgateway never forgets a group.

Metrics (gauges, base units):

================================================== ==============================================
``radinfill_train_loss``                           mean hole loss of the last logged step
``radinfill_train_samples_per_second``             throughput of the last logged step (all ranks)
``radinfill_train_duration_seconds``               wall time spent training, over all restarts
``radinfill_train_steps``                          optimiser steps completed
``radinfill_train_last_success_timestamp_seconds`` when a run last finished (Unix s)
``radinfill_train_score{score}``                   scores in the snapshot metadata, if any
================================================== ==============================================

The values come from the JSONL training log and the snapshot (:func:`summarize` is pure), so
they agree with the log and the loss curves. A failed push is retried a few times (bounded, so
a dead Pushgateway delays a snapshot by at most about 20 s), then logged; it never fails the
run. Every report uses a fresh :class:`~prometheus_client.CollectorRegistry`, never the global
one, so nothing leaks between reports or into other code in the process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from radinfill.model.metadata import read_metadata
from radinfill.train import runlog
from radinfill.train.loop import STATE
from radinfill.train.train_config import PushConfig

__all__ = ["JOB", "RunMetrics", "registry", "report", "summarize"]

LOG = logging.getLogger(__name__)
#: Pushgateway job label.
JOB = "radinfill_train"
PREFIX = "radinfill_train_"
SUCCESS = f"{PREFIX}last_success_timestamp_seconds"
#: Push attempts, the time after which no new attempt starts (s) and the HTTP timeout (s).
PUSH_ATTEMPTS = 3
PUSH_DEADLINE_S = 15.0
PUSH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RunMetrics:
    """What a report says about a run.

    Attributes
    ----------
    steps : int
        Optimiser steps completed.
    finished : bool
        Whether the snapshot is the run's last (all epochs done).
    duration_seconds : float
        Wall time of the run's training segments (first to last record of each process).
    loss : float or None
        Mean hole loss of the last logged step; None before the first.
    samples_per_second : float or None
        Throughput (all ranks) of the last logged step; None before the first.
    scores : Mapping[str, float]
        Scores stored in the snapshot metadata (undefined ones, stored as null, left out).
    """

    steps: int
    finished: bool
    duration_seconds: float
    loss: float | None = None
    samples_per_second: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)


def summarize(
    records: Sequence[dict[str, Any]], state: Mapping[str, Any], scores: Mapping[str, float]
) -> RunMetrics:
    """The metrics of a run from its log ``records``, a snapshot's ``state.json`` and scores.

    Only the current run's records count (from the last ``start``); the duration adds up the
    segments of every process that trained it, so time spent dead between a crash and the
    restart is not counted.
    """
    run = runlog.current_run(records)
    steps = [r for r in run if r["event"] == "step"]
    duration = sum(part[-1]["time"] - part[0]["time"] for part in runlog.segments(run))
    return RunMetrics(
        steps=int(state["step"]),
        finished=bool(state["finished"]),
        duration_seconds=float(duration),
        loss=float(steps[-1]["loss"]) if steps else None,
        samples_per_second=float(steps[-1]["samples_per_s"]) if steps else None,
        scores={str(k): float(v) for k, v in scores.items() if v is not None},
    )


def registry(metrics: RunMetrics, *, success_time: float | None) -> CollectorRegistry:
    """A fresh registry holding ``metrics``; the success gauge only with a ``success_time``.

    Gauges without a value are left out rather than exported as 0, which would read as a
    real loss, throughput or success at 1970-01-01.
    """
    reg = CollectorRegistry()
    values = {
        "loss": ("Mean hole loss of the last logged training step.", metrics.loss),
        "samples_per_second": (
            "Training samples per second over all ranks at the last logged step.",
            metrics.samples_per_second,
        ),
        "duration_seconds": (
            "Wall time spent training the run, over all restarts.",
            metrics.duration_seconds,
        ),
        "steps": ("Optimiser steps completed by the run.", metrics.steps),
        "last_success_timestamp_seconds": (
            "Unix time at which a training run last finished.",
            success_time,
        ),
    }
    for name, (documentation, value) in values.items():
        if value is not None:
            Gauge(f"{PREFIX}{name}", documentation, registry=reg).set(value)
    if metrics.scores:
        score = Gauge(
            f"{PREFIX}score",
            "Scores in the metadata of the latest snapshot.",
            ["score"],
            registry=reg,
        )
        for key, value in metrics.scores.items():
            score.labels(score=key).set(value)
    return reg


def report(
    config: PushConfig,
    snapshot: Path,
    log_path: Path,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    push: Callable[..., None] = pushadd_to_gateway,
) -> RunMetrics:
    """Report the run as of ``snapshot`` to the textfile and/or Pushgateway of ``config``.

    Parameters
    ----------
    config
        Where the metrics go; a target that is not configured is skipped.
    snapshot
        Snapshot directory just written (``state.json`` and ``metadata.json``).
    log_path
        The run's JSONL training log.
    clock, sleep, push
        Time source (Unix seconds), the wait between push attempts and the push function
        (injected, so tests can drive time and faults).

    Returns
    -------
    RunMetrics
        What was reported.

    Raises
    ------
    OSError
        If the snapshot or log cannot be read or the textfile cannot be written (a failed push
        is only logged).
    """
    state = json.loads((snapshot / STATE).read_text(encoding="utf-8"))
    metrics = summarize(runlog.read(log_path), state, read_metadata(snapshot).get("scores", {}))
    success = clock() if metrics.finished else None
    if config.textfile is not None:
        kept = success if success is not None else _previous_success(config.textfile)
        config.textfile.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(config.textfile), registry(metrics, success_time=kept))
    if config.pushgateway is not None:
        _push(config, registry(metrics, success_time=success), sleep, push)
    return metrics


def _previous_success(textfile: Path) -> float | None:
    """The success timestamp in an earlier ``textfile`` (kept while a new run is unfinished, so
    a staleness alert keeps its reference); None if there is none or the file is unreadable."""
    try:
        text = textfile.read_text(encoding="utf-8")
        families = list(text_string_to_metric_families(text))
    except (OSError, ValueError):
        return None
    samples = [s for f in families for s in f.samples if s.name == SUCCESS]
    return samples[0].value if samples else None


def _push(
    config: PushConfig,
    reg: CollectorRegistry,
    sleep: Callable[[float], None],
    push: Callable[..., None],
) -> None:
    """``pushadd`` ``reg`` with bounded retries on I/O errors; a final failure is logged."""
    retrying = Retrying(
        stop=stop_after_attempt(PUSH_ATTEMPTS) | stop_after_delay(PUSH_DEADLINE_S),
        wait=wait_exponential_jitter(multiplier=0.5, max=5.0, jitter=0.5),
        retry=retry_if_exception_type(OSError),
        sleep=sleep,
        before_sleep=before_sleep_log(LOG, logging.INFO),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                push(
                    config.pushgateway,
                    job=JOB,
                    registry=reg,
                    grouping_key={"instance": config.instance},
                    timeout=PUSH_TIMEOUT_S,
                )
    except OSError as err:
        LOG.warning(
            "push of training metrics to Pushgateway %s failed after %d attempt(s): %s",
            config.pushgateway,
            retrying.statistics.get("attempt_number", 1),
            err,
        )
