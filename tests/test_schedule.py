"""``radinfill schedule``: crontab fire times, [retrain] validation, runs that never overlap,
and a clean stop on SIGTERM."""

from __future__ import annotations

import io
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from radinfill import cli
from radinfill.train import retrain, schedule

SERVICE = """\
[service]
incoming = ["in"]
outgoing = "out"
state_dir = "state"
quarantine = "quarantine"
model = "baseline:advection"
"""

TRAIN = """\
[train]
variant = "baseline"
checkpoint_dir = "unused"
"""


def write_config(directory: Path, retrain_table: str, *, service: bool = False) -> Path:
    path = directory / "radinfill.toml"
    head = SERVICE + "\n" if service else ""
    path.write_text(f"{head}{TRAIN}\n[retrain]\n{textwrap.dedent(retrain_table)}")
    return path


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Answers read off a calendar: 2024-01-01 was a Monday, 2024 and 2028 are leap years.
@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # cron's day-of-week 0, 7 and "sun" are Sunday (APScheduler 3's own from_crontab: Monday)
        ("0 3 * * 0", utc(2024, 1, 1), [utc(2024, 1, 7, 3), utc(2024, 1, 14, 3)]),
        ("0 3 * * 7", utc(2024, 1, 1), [utc(2024, 1, 7, 3), utc(2024, 1, 14, 3)]),
        ("0 3 * * sun", utc(2024, 1, 1), [utc(2024, 1, 7, 3), utc(2024, 1, 14, 3)]),
        # a fire time equal to `after` is not "next"
        ("0 3 * * 0", utc(2024, 1, 7, 3), [utc(2024, 1, 14, 3), utc(2024, 1, 21, 3)]),
        (
            "*/15 * * * *",
            utc(2024, 1, 1, 10, 7, 30),
            [utc(2024, 1, 1, 10, 15), utc(2024, 1, 1, 10, 30), utc(2024, 1, 1, 10, 45)],
        ),
        # weekdays from a Friday morning: Monday, Tuesday
        ("30 2 * * 1-5", utc(2024, 1, 5, 3), [utc(2024, 1, 8, 2, 30), utc(2024, 1, 9, 2, 30)]),
        # cron: */2 over 0-7 is Sunday, Tuesday, Thursday, Saturday
        (
            "0 0 * * */2",
            utc(2024, 1, 1),
            [utc(2024, 1, 2), utc(2024, 1, 4), utc(2024, 1, 6), utc(2024, 1, 7)],
        ),
        # day-of-month and day-of-week both restricted: either one (the 1st, or Mondays)
        (
            "0 3 1 * 1",
            utc(2024, 1, 29, 4),
            [utc(2024, 2, 1, 3), utc(2024, 2, 5, 3), utc(2024, 2, 12, 3)],
        ),
        ("0 0 29 2 *", utc(2024, 3, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
    ],
)
def test_next_runs_match_crontab(
    expression: str, after: datetime, expected: list[datetime]
) -> None:
    runs = schedule.next_runs(expression, after, len(expected))
    assert runs == expected
    assert all(run.utcoffset() == timedelta(0) for run in runs)


def test_next_runs_are_utc_whatever_the_zone_of_after() -> None:
    # 04:30 at UTC+1 is 03:30 UTC: the next 04:00 UTC is half an hour later (read in the zone
    # of `after`, 04:00 would have passed)
    cet = datetime(2024, 1, 7, 4, 30, tzinfo=timezone(timedelta(hours=1)))
    assert schedule.next_runs("0 4 * * *", cet, 1) == [utc(2024, 1, 7, 4)]
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_runs("0 4 * * *", datetime(2024, 1, 1), 1)


@pytest.mark.parametrize(
    "expression",
    ["0 3 * *", "0 3 * * * *", "61 3 * * 0", "0 24 * * *", "0 3 * * 8", "0 3 * * 5-2",
     "0 3 * * monday", "0 3 * * */0", "0 3 30 2 *", "every sunday"],
)  # fmt: skip
def test_invalid_schedule_is_a_config_error_naming_the_key(tmp_path: Path, expression: str) -> None:
    config = write_config(
        tmp_path, f'registry = "r"\ncheckpoint_root = "c"\nschedule = "{expression}"\n'
    )
    with pytest.raises(retrain.ConfigError) as caught:
        retrain.load(config)
    assert caught.value.source == str(config)
    (problem,) = caught.value.problems
    assert problem.startswith("retrain.schedule: ")
    assert repr(expression) in problem


def test_every_retrain_problem_is_reported(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        'registry = "r"\nlauncher = "cron"\nmisfire_grace_s = 0\nschedule = 5\ncolour = 1\n',
    )
    with pytest.raises(retrain.ConfigError) as caught:
        retrain.load(config)
    problems = caught.value.problems
    assert "unknown key retrain.colour" in problems
    assert "retrain.checkpoint_root is required" in problems
    assert any(p.startswith("retrain.launcher must be one of") for p in problems)
    assert any(p.startswith("retrain.schedule: must be a crontab string") for p in problems)
    assert "retrain.misfire_grace_s must be >= 1, got 0" in problems
    assert len(problems) == 5
    grace = write_config(tmp_path, 'registry = "r"\ncheckpoint_root = "c"\nmisfire_grace_s = 1.5\n')
    with pytest.raises(retrain.ConfigError, match="misfire_grace_s must be whole seconds"):
        retrain.load(grace)


def test_schedule_keys_parse_with_defaults(tmp_path: Path) -> None:
    config = write_config(tmp_path, 'registry = "r"\ncheckpoint_root = "c"\n')
    settings, _ = retrain.load(config)
    assert (settings.schedule, settings.misfire_grace_s) == (None, 3600)
    config = write_config(
        tmp_path,
        'registry = "r"\ncheckpoint_root = "c"\nschedule = "0 3 * * 0"\nmisfire_grace_s = 60\n',
    )
    settings, _ = retrain.load(config)
    assert (settings.schedule, settings.misfire_grace_s) == ("0 3 * * 0", 60)


def test_check_config_prints_the_next_three_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, 'registry = "r"\ncheckpoint_root = "c"\nschedule = "0 3 * * 0"\n', service=True
    )
    before = datetime.now(UTC)
    assert cli.main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "[retrain] section valid" in out
    start = out.index("next runs of schedule '0 3 * * 0' (UTC):")
    runs = [datetime.strptime(line.strip(), "%Y-%m-%dT%H:%M:%SZ") for line in out[start + 1 :]]
    runs = [run.replace(tzinfo=UTC) for run in runs]
    assert len(runs) == 3
    assert before < runs[0] <= before + timedelta(days=7)  # the coming Sunday 03:00
    for run in runs:
        assert (run.weekday(), run.hour, run.minute) == (6, 3, 0)  # Sunday
    assert [b - a for a, b in itertools.pairwise(runs)] == [timedelta(days=7)] * 2


def test_check_config_exits_2_listing_every_retrain_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, 'registry = "r"\nschedule = "0 3 * * 9"\nnproc = 0\n', service=True
    )
    assert cli.main(["check-config", str(config)]) == 2
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert f"{config}: retrain.checkpoint_root is required" in err
    assert f"{config}: retrain.nproc must be >= 1, got 0" in err
    assert any(line.startswith(f"{config}: retrain.schedule: '0 3 * * 9'") for line in err)
    assert "[retrain] section valid" not in captured.out


def test_schedule_with_an_unusable_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'registry = "r"\ncheckpoint_root = "c"\n')
    assert cli.main(["schedule", "--config", str(config)]) == 2
    assert f"{config}: retrain.schedule is required" in capsys.readouterr().err
    config.write_text('[retrain]\nregistry = "r"\ncheckpoint_root = "c"\nschedule = "0 3 * * 0"\n')
    assert cli.main(["schedule", "--config", str(config)]) == 2
    assert f"{config}: no [train] section" in capsys.readouterr().err


# A stand-in for `radinfill retrain`: logs its start and end with wall-clock times.
STUB = """\
import os, sys, time
def note(what):
    with open(sys.argv[1], "a") as f:
        f.write(f"{what} {os.getpid()} {time.time()}\\n")
note("start")
time.sleep(float(sys.argv[2]))
note("end")
"""


def read_runs(log: Path) -> list[tuple[str, int, float]]:
    if not log.exists():
        return []
    return [
        (w, int(p), float(t)) for w, p, t in (line.split() for line in log.read_text().splitlines())
    ]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_runs_never_overlap_and_stop_terminates_the_running_child(tmp_path: Path) -> None:
    log, stub, out = tmp_path / "runs.log", tmp_path / "stub.py", io.StringIO()
    stub.write_text(STUB)
    scheduler = schedule.RetrainScheduler(
        [sys.executable, str(stub), str(log), "2.5"],
        IntervalTrigger(seconds=1, timezone=UTC),  # fires faster than a run lasts
        misfire_grace_s=30,
        run_now=True,
        stderr=out,
    )
    scheduler.start()
    try:
        wait_for(lambda: sum(w == "start" for w, _, _ in read_runs(log)) == 2)
        time.sleep(0.3)
    finally:
        stopping = time.monotonic()
        scheduler.stop()
        stopped_after = time.monotonic() - stopping
    runs = read_runs(log)
    starts = [(p, t) for w, p, t in runs if w == "start"]
    ends = {p: t for w, p, t in runs if w == "end"}
    assert len(starts) == 2  # nothing started during or after stop
    (first, first_start), (second, second_start) = starts
    assert first in ends
    assert second not in ends  # cut short by SIGTERM
    assert first_start < ends[first] <= second_start  # one at a time
    assert stopped_after < 2.0  # it did not wait for the stub's 2.5 s sleep
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    text = out.getvalue()
    assert "skipped the run due" in text
    assert "the previous run is still going" in text
    assert text.count("radinfill schedule: run started") == 2
    assert "exit status 0 (promoted)" in text  # 0 is what `radinfill retrain` means by promoted
    assert f"sending SIGTERM to the running child {second}" in text
    assert "exit status 143 (killed)" in text
    assert text.count("radinfill schedule: next run ") >= 2  # at start-up and after run 1
    assert text.rstrip().endswith("radinfill schedule: stopped")


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ready, out = tmp_path / "ready", io.StringIO()
    code = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    scheduler = schedule.RetrainScheduler(
        [sys.executable, "-c", code],
        IntervalTrigger(hours=1, timezone=UTC),
        misfire_grace_s=30,
        run_now=True,
        stop_timeout_s=0.5,
        stderr=out,
    )
    scheduler.start()
    wait_for(ready.exists)
    stopping = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - stopping < 5.0
    text = out.getvalue()
    assert "still running after 0.5 s: SIGKILL" in text
    assert "exit status 137 (killed)" in text


def test_schedule_command_runs_now_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    """The real command: --run-now starts `radinfill retrain` at once; it fails fast (its
    checkpoint_root lies under a plain file), the scheduler logs that, and SIGTERM ends it."""
    (tmp_path / "blocker").write_text("not a directory")
    config = write_config(
        tmp_path,
        'registry = "registry"\ncheckpoint_root = "blocker/runs"\nschedule = "0 3 * * 0"\n',
    )
    log = tmp_path / "schedule.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "radinfill", "schedule", "--config", str(config), "--run-now"]
    with log.open("w") as err:
        process = subprocess.Popen(command, stderr=err, env=env)
    try:
        wait_for(lambda: "run ended" in log.read_text(), timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()
    text = log.read_text()
    assert "radinfill schedule: run started (pid" in text
    assert "radinfill retrain: train: FAILED" in text  # the child's own log, same stream
    assert "radinfill schedule: run ended after" in text
    assert "exit status 1 (failed)" in text
    assert "radinfill schedule: next run 20" in text
    assert "T03:00:00Z" in text
    assert "SIGTERM received, stopping" in text
    assert text.rstrip().endswith("radinfill schedule: stopped")
    assert not (tmp_path / "registry").exists()
