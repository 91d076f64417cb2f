"""Reading back the JSONL training log that :func:`radinfill.train.loop.train` appends to.

Every line is one JSON object ``{"event": KIND, "time": UNIX_SECONDS, ...}``; the kinds are

* ``start`` / ``resume`` (``step``, ``world_size``): a process began training from scratch or
  from a snapshot;
* ``step`` (``step``, ``epoch``, ``loss``, ``lr``, ``samples_per_s``): every ``log_every``
  optimiser steps, the mean loss over the ranks and the throughput since the previous record;
* ``snapshot`` (``step``, ``path``, ``scores``) and ``stopped`` (``step``).

The log is only ever appended to, so a checkpoint directory that was reused for a new run still
holds the old run's records: :func:`current_run` keeps those since the last ``start``. The
curves (:mod:`radinfill.train.curves`) and the metrics (:mod:`radinfill.train.run_metrics`) are
both computed from these records, so they agree with each other and with the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["current_run", "read", "segments"]

#: Events that open a training segment (one process's share of the run).
OPENING = ("start", "resume")


def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of the log at ``path``, in file order.

    A line that is not a JSON object (one cut short by a crash or a full disk) is skipped: the
    log is a record of what happened, and the lines around a torn one are still valid.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "event" in record:
            records.append(record)
    return records


def current_run(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records from the last ``start`` on (all of them if there is none)."""
    starts = [i for i, record in enumerate(records) if record["event"] == "start"]
    return list(records[starts[-1] if starts else 0 :])


def segments(records: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``records`` split before every ``start``/``resume``: one list per training process.

    Records before the first opening event form a segment of their own.
    """
    result: list[list[dict[str, Any]]] = []
    for record in records:
        if record["event"] in OPENING or not result:
            result.append([])
        result[-1].append(record)
    return result
