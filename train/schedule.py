"""Scheduled retraining without systemd timers: ``radinfill schedule --config FILE``.

Sites whose hosts run systemd start ``radinfill retrain`` from
``systemd/radinfill-retrain.timer``; everywhere else (containers, supervisord, hosts with
another init) this long-running process does the same from the ``[retrain]`` table::

    [retrain]
    schedule = "0 3 * * 0"      # five-field crontab expression, always UTC: Sundays 03:00
    misfire_grace_s = 3600      # a run due while the scheduler could not start it (host
                                # suspended, clock jump) still starts this late, else skipped

Each run is the unchanged ``radinfill retrain --config FILE`` in a child process
(:func:`retrain_command`), so a crash or a memory leak of one run cannot take the scheduler down
and every run starts from a clean interpreter. Runs never overlap: a fire time that comes while a
run is still going is skipped (APScheduler ``max_instances = 1``), and fire times missed together
are run once (``coalesce``). Every start, end (with the exit status and the outcome it means) and
the next fire time is one line on stderr; the metrics of each run are the child's own
(``retrain.prom`` next to ``[train.metrics] textfile``), not repeated here.

SIGTERM or SIGINT stop the scheduler: a running child gets SIGTERM (training saves a snapshot and
exits, see :mod:`radinfill.train.supervise`) and is waited for, then the process exits 0.

:func:`next_runs` is the pure fire-time computation that ``radinfill check-config`` prints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TextIO

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from radinfill.config import ConfigError
from radinfill.train import retrain, supervise

__all__ = ["STOPPED_BY", "RetrainScheduler", "cron_trigger", "next_runs", "retrain_command", "run"]

#: Signals that stop the scheduler (and a running child).
STOPPED_BY = (signal.SIGTERM, signal.SIGINT)
#: Seconds a terminated child gets to exit before it is killed: a snapshot at the next training
#: step, as ``TimeoutStopSec`` of ``systemd/radinfill-retrain.service`` allows.
STOP_TIMEOUT_S = 600.0
_JOB_ID = "retrain"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: cron's day-of-week numbers 0-6 (7 is Sunday again).
_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expression: str) -> BaseTrigger:
    """The APScheduler trigger of a five-field crontab expression, evaluated in UTC.

    Read as cron reads it, which ``CronTrigger.from_crontab`` of APScheduler 3 does not: there
    day-of-week 0 is Monday (cron: Sunday), and a day-of-month and a day-of-week that are both
    restricted must both match (cron: either one).

    Parameters
    ----------
    expression
        ``minute hour day-of-month month day-of-week`` (e.g. ``"0 3 * * 0"``: Sundays 03:00
        UTC). Day-of-week 0 and 7 are Sunday; names (``sun``, ``jan``) work too.

    Raises
    ------
    ValueError
        When ``expression`` is not a string of five valid crontab fields; says why.
    """
    if not isinstance(expression, str):
        raise ValueError(f"must be a crontab string such as '0 3 * * 0', got {expression!r}")
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} is not a crontab expression: {len(fields)} fields, not 5")
    minute, hour, day, month, weekday = fields
    common = {"minute": minute, "hour": hour, "month": month, "timezone": UTC}
    try:
        weekdays = _weekday_names(weekday)
        if day.startswith("*") or weekday.startswith("*"):  # cron: both must match
            trigger: BaseTrigger = CronTrigger(day=day, day_of_week=weekdays, **common)
        else:  # cron: either matches
            trigger = OrTrigger(
                [CronTrigger(day=day, **common), CronTrigger(day_of_week=weekdays, **common)]
            )
    except ValueError as err:
        raise ValueError(f"{expression!r} is not a valid crontab expression: {err}") from None
    # without a year field, an expression that fires at all fires within any leap year
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError(f"{expression!r} never fires (a date no month has, e.g. 30 February)")
    return trigger


def _weekday_names(field: str) -> str:
    """A cron day-of-week field (0 or 7 = Sunday; lists, ranges, steps, names) as the list of
    day names APScheduler reads unambiguously (``"1-5"`` -> ``"mon,tue,wed,thu,fri"``)."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        span, slash, step_text = item.partition("/")
        if slash and not step_text.isdigit():
            raise ValueError(f"day-of-week {item!r}: the step is not a whole number")
        step = int(step_text) if slash else 1
        if span == "*":
            first, last = 0, 7
        else:
            start, dash, end = span.partition("-")
            first = _weekday_number(start)
            last = _weekday_number(end) if dash else (7 if slash else first)
        if step < 1 or first > last:
            raise ValueError(f"day-of-week {item!r}: empty range or step < 1")
        days.update(number % 7 for number in range(first, last + 1, step))
    return ",".join(_CRON_WEEKDAYS[number] for number in sorted(days))


def _weekday_number(text: str) -> int:
    """A cron day of the week, 0-7 or a name, as its number (0 and 7 are Sunday)."""
    if text in _CRON_WEEKDAYS:
        return _CRON_WEEKDAYS.index(text)
    if not (text.isdigit() and 0 <= int(text) <= 7):
        raise ValueError(f"day-of-week {text!r} is neither 0-7 nor a day name (sun-sat)")
    return int(text)


def next_runs(expression: str, after: datetime, n: int) -> list[datetime]:
    """The next ``n`` fire times of a crontab expression strictly after ``after``, in UTC.

    Parameters
    ----------
    expression
        Five-field crontab expression, UTC (see :func:`cron_trigger`).
    after
        Timezone-aware start time; a fire time equal to it is not included.
    n
        Number of fire times.

    Returns
    -------
    list of datetime.datetime
        Ascending, UTC-aware, whole seconds.
    """
    if after.tzinfo is None:
        raise ValueError(f"after must be timezone-aware, got {after.isoformat()}")
    trigger = cron_trigger(expression)
    times: list[datetime] = []
    when = after
    for _ in range(n):
        when = trigger.get_next_fire_time(None, when + timedelta(microseconds=1))
        times.append(when.astimezone(UTC))
    return times


def retrain_command(config: Path) -> list[str]:
    """The argument vector of one scheduled run: ``python -m radinfill retrain --config FILE``."""
    return [sys.executable, "-m", "radinfill", "retrain", "--config", str(config)]


class RetrainScheduler:
    """Runs a command in a child process at a trigger's fire times, never two at once.

    Parameters
    ----------
    command
        The child's argument vector (:func:`retrain_command` in production; tests pass a stub).
    trigger
        When to run (a :func:`cron_trigger` in production).
    misfire_grace_s
        Seconds after its fire time within which a run that could not start on time still
        starts (APScheduler ``misfire_grace_time``).
    run_now
        Also run once as soon as the scheduler starts.
    stop_timeout_s
        Seconds a child gets after SIGTERM before it is killed.
    stderr
        Where the scheduler's lines go (default ``sys.stderr``); the child inherits this
        process's standard streams.
    """

    def __init__(
        self,
        command: Sequence[str],
        trigger: BaseTrigger,
        *,
        misfire_grace_s: int,
        run_now: bool = False,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        stderr: TextIO | None = None,
    ) -> None:
        self.command = list(command)
        self.stop_timeout_s = stop_timeout_s
        self._out = stderr if stderr is not None else sys.stderr
        self._lock = threading.Lock()  # guards _child and _stopping against the job thread
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": misfire_grace_s,
            },
        )
        first = {"next_run_time": datetime.now(UTC)} if run_now else {}
        self._scheduler.add_job(self._run_child, trigger, id=_JOB_ID, **first)
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    def start(self) -> None:
        """Start firing (in background threads) and log the first fire time."""
        self._say(f"starting; command: {' '.join(self.command)}")
        self._scheduler.start()
        self._say_next()

    def stop(self) -> None:
        """Stop firing, terminate a running child (SIGTERM, then wait) and wait for its end.

        Safe to call from any thread except the scheduler's own, and more than once.
        """
        with self._lock:
            self._stopping = True  # a fire time from now on starts nothing
            child = self._child
        if child is not None:
            self._terminate(child)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)  # the job thread logs the child's end first
            self._say("stopped")

    def run(self) -> int:
        """Start, block until SIGTERM or SIGINT, stop; returns exit status 0.

        Must be called from the main thread (signal handlers).
        """
        requested: list[int] = []

        def handle(signum: int, frame: FrameType | None) -> None:
            requested.append(signum)  # no locks here: the main thread may hold one

        previous = {signum: signal.signal(signum, handle) for signum in STOPPED_BY}
        try:
            self.start()
            while not requested:
                time.sleep(0.2)
            self._say(f"{signal.Signals(requested[0]).name} received, stopping")
            self.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def _run_child(self) -> None:
        """The job: one child process from start to end (runs in an executor thread)."""
        with self._lock:
            if self._stopping:
                return
            start = time.monotonic()
            # own session: a terminal's Ctrl-C reaches the child once, through stop()
            child = self._child = subprocess.Popen(self.command, start_new_session=True)
        self._say(f"run started (pid {child.pid})")
        returncode = child.wait()
        with self._lock:
            self._child = None
            stopping = self._stopping
        status = supervise.exit_status(returncode)
        outcome = retrain.RunResult(status).result if returncode >= 0 else "killed"
        self._say(
            f"run ended after {time.monotonic() - start:.1f} s: exit status {status} ({outcome})"
        )
        if not stopping:
            self._say_next()

    def _terminate(self, child: subprocess.Popen[bytes]) -> None:
        """SIGTERM to ``child``; SIGKILL if it has not exited after ``stop_timeout_s``."""
        self._say(f"sending SIGTERM to the running child {child.pid}")
        child.terminate()
        try:
            child.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._say(f"child {child.pid} still running after {self.stop_timeout_s:g} s: SIGKILL")
            child.kill()
            child.wait()

    def _skipped(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        """Listener: a fire time that started nothing (previous run going, or too late)."""
        if isinstance(event, JobSubmissionEvent):  # EVENT_JOB_MAX_INSTANCES
            due = ", ".join(
                f"{t.astimezone(UTC):{_TIME_FORMAT}}" for t in event.scheduled_run_times
            )
            self._say(f"skipped the run due {due}: the previous run is still going")
        else:  # EVENT_JOB_MISSED
            due = f"{event.scheduled_run_time.astimezone(UTC):{_TIME_FORMAT}}"
            self._say(f"skipped the run due {due}: more than misfire_grace_s late")

    def _say_next(self) -> None:
        job = self._scheduler.get_job(_JOB_ID)
        when = job.next_run_time if job is not None else None
        self._say(f"next run {when.astimezone(UTC):{_TIME_FORMAT}}" if when else "no next run")

    def _say(self, message: str) -> None:
        self._out.write(f"radinfill schedule: {message}\n")
        self._out.flush()


def run(
    config: str | os.PathLike[str], *, run_now: bool = False, stderr: TextIO | None = None
) -> int:
    """``radinfill schedule``: run ``radinfill retrain`` on the ``[retrain] schedule``.

    Parameters
    ----------
    config
        The configuration file (``[train]`` and ``[retrain]`` with ``schedule``).
    run_now
        Also run once at start-up.
    stderr
        Where the scheduler's lines go (default ``sys.stderr``).

    Returns
    -------
    int
        0 after SIGTERM or SIGINT.

    Raises
    ------
    radinfill.config.ConfigError
        An invalid ``[retrain]`` table, or one without ``schedule``.
    """
    path = Path(config).absolute()
    settings, _ = retrain.load(path)
    if settings.schedule is None:
        raise ConfigError(str(path), ["retrain.schedule is required by radinfill schedule"])
    scheduler = RetrainScheduler(
        retrain_command(path),
        cron_trigger(settings.schedule),
        misfire_grace_s=settings.misfire_grace_s,
        run_now=run_now,
        stderr=stderr,
    )
    return scheduler.run()
