"""Restart a single-process training job after a crash: ``radinfill train --max-restarts N``.

A long run on one machine can die of causes that a restart cures: the kernel's OOM killer, a
segfault in a native library, a transient I/O error. :func:`supervise` runs the training
command as a child process and starts it again after a non-zero exit, at most ``max_restarts``
times; the child resumes from the latest snapshot by itself (see :mod:`radinfill.train.loop`),
so a restart loses at most the steps since the last snapshot.

A stop that was asked for is not a crash: SIGTERM, SIGINT and SIGUSR1 sent to the supervisor
are forwarded to the child (which saves a snapshot and exits for SIGTERM and SIGUSR1) and no
restart follows. The child runs in its own session, so a terminal's Ctrl-C reaches it once,
through the supervisor, rather than twice. (A supervisor killed with SIGKILL cannot forward
anything; systemd and Slurm stop the whole process tree of a job anyway.)

Under ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``) this module is not
used: ``torchrun --max-restarts`` restarts all workers together, which one worker's supervisor
could not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TextIO

__all__ = ["FORWARDED", "exit_status", "supervise", "under_launcher"]

#: Signals passed on to the child; each one also rules out further restarts.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def under_launcher(env: Mapping[str, str] = os.environ) -> bool:
    """Whether a launcher (torchrun, srun with the variables exported) started this process:
    it sets ``RANK`` and ``WORLD_SIZE``, as :func:`radinfill.train.loop.train` checks too."""
    return "RANK" in env and "WORLD_SIZE" in env


def exit_status(returncode: int) -> int:
    """A child's :attr:`subprocess.Popen.returncode` as a shell exit status (``-N`` for death
    by signal N becomes ``128 + N``, as a shell reports it)."""
    return 128 - returncode if returncode < 0 else returncode


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


class _Forwarder:
    """Passes the :data:`FORWARDED` signals to the running child and remembers the request."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: record the stop request and forward the signal."""
        self.requested = signum
        if self.child is not None:
            self.child.send_signal(signum)  # no-op once the child has been reaped

    def __enter__(self) -> _Forwarder:
        if threading.current_thread() is threading.main_thread():
            for signum in FORWARDED:
                self._previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]


def supervise(
    command: Sequence[str],
    max_restarts: int,
    *,
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``command`` and rerun it after each failure, at most ``max_restarts`` times.

    Parameters
    ----------
    command
        The child's argument vector (e.g. ``[sys.executable, "-m", "radinfill", "train", ...,
        "--max-restarts", "0"]``).
    max_restarts
        Restarts allowed after non-zero exits (0: run once).
    env
        The child's environment (default: this process's).
    stderr
        Where the supervisor reports starts and restarts (default ``sys.stderr``).

    Returns
    -------
    int
        0 when the child finished with status 0; otherwise the child's last status as a shell
        reports it (``128 + N`` for death by signal N), after a requested stop or when the
        restarts are used up.
    """
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
    out = stderr if stderr is not None else sys.stderr
    restarts = 0
    with _Forwarder() as forwarder:
        while True:
            if forwarder.requested is not None:  # asked to stop before a (re)start
                return 128 + forwarder.requested
            forwarder.child = subprocess.Popen(command, env=env, start_new_session=True)
            _say(out, f"started training process {forwarder.child.pid}")
            if forwarder.requested is not None:  # asked while the child was being started
                forwarder.child.send_signal(forwarder.requested)
            returncode = forwarder.child.wait()
            if returncode == 0 or forwarder.requested is not None:
                return exit_status(returncode)
            if restarts == max_restarts:
                _say(out, f"training process {_describe(returncode)}; no restart left")
                return exit_status(returncode)
            restarts += 1
            _say(
                out,
                f"training process {_describe(returncode)}; restart {restarts}/{max_restarts} "
                "from the latest snapshot",
            )


def _say(out: TextIO, message: str) -> None:
    out.write(f"radinfill train: {message}\n")
    out.flush()
