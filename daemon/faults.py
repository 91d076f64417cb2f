"""Fault injection: make chosen output operations fail the way a full or failing disk does.

The soak test (``bench/soak.py``) must show that a disk that is full for a moment or returns
EIO loses nothing and publishes nothing partial, with the real ``radinfill serve`` process. The
writer therefore asks a :class:`Faults` before each I/O operation; the service builds it from
the environment, and it is off unless ``RADINFILL_FAULTS`` is set (the unit files never set it)::

    RADINFILL_FAULTS="write_radolan=ENOSPC:0.05,write_netcdf=EIO:0.05,write_sidecar=EIO:0.05"
    RADINFILL_FAULTS="correction:write_netcdf=ENOSPC:0.5"   # a full disk during corrections
    RADINFILL_FAULTS_SEED=7        # optional: reproducible draws

Each rule is ``OPERATION=ERRNO_NAME:PROBABILITY``; operations are the writer's
(``write_radolan``, ``write_netcdf``, ``write_sidecar``). ``correction:OPERATION`` applies only
while a correction replaces a published set (version 2 and later), where a full disk could
leave a sidecar that contradicts the files; it is drawn before the plain rule of the
operation, and the first that hits raises. An injected fault raises
``OSError(errno, "injected fault ...")`` before the operation touches the file and is logged as
``fault_injected``, so a run's log says how many faults it saw.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Mapping

import structlog

__all__ = ["Faults", "parse"]

_log = structlog.get_logger("radinfill.faults")
ENV = "RADINFILL_FAULTS"
SEED_ENV = "RADINFILL_FAULTS_SEED"
#: Prefix of the rules that apply only while a correction replaces a published output set.
CORRECTION = "correction:"


class Faults:
    """Random transient failures of named operations.

    Parameters
    ----------
    rules
        Operation -> (errno, probability per call).
    seed
        Seed of the draws (None: unpredictable).
    """

    def __init__(self, rules: Mapping[str, tuple[int, float]], seed: int | None = None) -> None:
        self.rules = dict(rules)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.injected = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Faults | None:
        """The faults ``RADINFILL_FAULTS`` asks for, or None when it is unset or empty.

        Raises
        ------
        ValueError
            If the variable is malformed (the service then refuses to start).
        """
        text = env.get(ENV, "").strip()
        if not text:
            return None
        seed = env.get(SEED_ENV)
        return cls(parse(text), int(seed) if seed else None)

    def check(self, operation: str, *, correction: bool = False) -> None:
        """Raise the configured ``OSError`` for ``operation`` with its probability; in a
        ``correction`` the ``correction:OPERATION`` rule is drawn first."""
        names = [f"{CORRECTION}{operation}"] if correction else []
        for name in [*names, operation]:
            rule = self.rules.get(name)
            if rule is None:
                continue
            code, probability = rule
            with self._lock:
                hit = self._random.random() < probability
                if hit:
                    self.injected += 1
            if hit:
                _log.warning("fault_injected", op=name, errno=errno.errorcode[code])
                raise OSError(code, f"injected fault in {name}: {os.strerror(code)}")


def parse(text: str) -> dict[str, tuple[int, float]]:
    """``"op=ERRNO:p,..."`` -> {op: (errno, p)}; raises ValueError naming the bad rule."""
    rules = {}
    for rule in filter(None, (part.strip() for part in text.split(","))):
        operation, _, spec = rule.partition("=")
        name, _, probability = spec.partition(":")
        code = getattr(errno, name.strip(), None)
        try:
            chance = float(probability)
        except ValueError:
            chance = -1.0
        if not operation.strip() or not isinstance(code, int) or not 0.0 <= chance <= 1.0:
            raise ValueError(
                f"{ENV}: bad rule {rule!r}; expected OPERATION=ERRNO_NAME:PROBABILITY, "
                "e.g. write_netcdf=EIO:0.05"
            )
        rules[operation.strip()] = (code, chance)
    return rules
