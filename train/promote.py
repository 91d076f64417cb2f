"""Champion/challenger gate with a classical floor: a checkpoint becomes the current release
only if it beats the strongest classical method, is safe, and is no worse than the champion.

``radinfill promote CANDIDATE --registry DIR`` scores the candidate checkpoint, the current
release (the champion) and the classical causal methods on the same held-out cases
(:func:`radinfill.train.evaluate.held_out_specs` unless data specs are given), with the same
protocol as ``radinfill evaluate``, and compares mean scores over the cases:

* **the classical floor** (:func:`floor`), also into an empty registry: the strongest
  classical method is the one with the lowest mean RMSE; the candidate's RMSE must be at
  least ``floor_margin`` (2 %) lower than its RMSE, and its CSI at 1 and 5 mm/h not lower. A
  learned model that only ties a classical method (or falls back to it, as a biased one does
  through the engine's safety envelope) adds risk and nothing else;
* **safety** (:func:`radinfill.train.evaluate.safety_check`): no invented rain on the safety
  cases;
* **the champion**: the candidate passes a gate score when its distance to the score's ideal
  value (:data:`radinfill.scores.IDEAL`: 0 for errors, 1 for correlations, CSI, FSS and the
  blur ratio) is at most the champion's plus ``tolerance`` (absolute, in the score's units),
  or when there is no champion yet.

It is promoted when it passes all of them, or when forced (recorded in the decision).

A promoted candidate becomes release ``<UTC time>-<sha256 prefix>`` with ``decision.json`` and
``scores.json`` inside (written before the release directory appears, see
:mod:`radinfill.model.registry`), and ``current`` is switched to it. A rejected candidate is
not published: its decision goes to ``REGISTRY/rejected/<version>.json``, and the weights stay
where they were. Either way the evaluation report (``report.html``, ``scores.md``, ...) is
written to ``REGISTRY/reports/<version>/`` unless another directory is given.

``decision.json`` holds: ``promoted``, ``forced``, ``version``, ``time``, ``code_version``;
``candidate`` and ``champion`` (path, release version, variant, sha256, training summary; the
candidate's version is the one it gets or would have got; champion null without one);
``data`` (the specs); ``gate`` (score names, tolerance, floor methods and margin);
``reasons`` (check -> why it passed or failed; floor checks are named ``floor <score>``, the
safety check ``safety``); ``verdicts`` (check -> candidate and reference values and the
outcome); ``scores`` (candidate, champion and each classical method -> every mean score);
``report`` (the report directory). Undefined scores are null.

One promotion runs at a time per registry (a lock file), so two jobs cannot both compare
against the same champion and switch ``current`` one after the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radinfill import atomic, code_version, permissions, scores
from radinfill.model import baselines, registry
from radinfill.model.engine import InfillEngine
from radinfill.model.metadata import read_metadata
from radinfill.train import evaluate

#: Scores the gate compares by default: the seed work's four and CSI at 1 mm/h.
DEFAULT_SCORES = ("rmse", "ame", "temporal_corr", "spatial_corr", "csi_1")
#: How much lower than the strongest classical method's the candidate's RMSE must be.
FLOOR_MARGIN = 0.02
#: Scores on which the candidate must not fall below the strongest classical method.
FLOOR_SCORES = ("csi_1", "csi_5")
DECISION = "decision.json"
SCORES = "scores.json"
REPORTS = "reports"
#: Names of the two models in the evaluation report.
CANDIDATE, CHAMPION = "candidate", "champion"
_LOCK = ".promote.lock"


@dataclass(frozen=True)
class Check:
    """The gate's outcome on one check (mean scores over the cases).

    ``reference`` is the champion's value, the strongest classical method's for a floor
    check, or None (no champion yet; the safety check).
    """

    score: str
    candidate: float
    reference: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """What :func:`promote` decided and where it wrote it.

    Attributes
    ----------
    promoted
        Whether the candidate is now the current release.
    version
        The candidate's release version (also the name of a rejected decision file).
    record
        ``decision.json`` of the new release, or ``rejected/<version>.json``.
    report
        Directory of the evaluation report (None when refused before scoring).
    verdicts
        One per gate score (empty when the candidate was refused before scoring).
    content
        The decision as written (see the module docstring).
    """

    promoted: bool
    version: str
    record: Path
    report: Path | None
    verdicts: tuple[Check, ...]
    content: Mapping[str, Any]

    def table(self) -> str:
        """Fixed-width comparison: score, candidate, champion, ideal, verdict and reason."""
        lines = [f"{'check':16}{'candidate':>12}{'reference':>12}  verdict"]
        for v in self.verdicts:
            reference = "-" if v.reference is None else f"{v.reference:.4f}"
            outcome = "pass" if v.passed else "FAIL"
            lines.append(f"{v.score:16}{v.candidate:12.4f}{reference:>12}  {outcome}: {v.reason}")
        if not self.verdicts:
            lines += [f"{key}: {reason}" for key, reason in self.content["reasons"].items()]
        state = "PROMOTED" if self.promoted else "REJECTED"
        forced = " (forced)" if self.content["forced"] and self.promoted else ""
        lines.append(f"{state}{forced}: {self.version} ({self.record})")
        return "\n".join(lines)


def compare(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    names: Sequence[str],
    tolerance: float,
) -> tuple[Check, ...]:
    """Judge the candidate's scores against the champion's, score by score (pure).

    A score passes when the candidate's distance to the ideal value is at most the
    champion's plus ``tolerance``, when there is no champion, or when the score is undefined
    (NaN) for the champion; it fails when it is undefined for the candidate only.
    """
    verdicts = []
    for name in names:
        value = candidate[name]
        if champion is None:
            verdicts.append(Check(name, value, None, True, "no champion yet"))
            continue
        other = champion[name]
        mine, theirs = (scores.distance_to_ideal(name, v) for v in (value, other))
        if math.isnan(theirs):
            passed = True
            reason = "undefined for both" if math.isnan(mine) else "undefined for the champion"
        elif math.isnan(mine):
            passed, reason = False, "undefined for the candidate"
        else:
            passed = mine <= theirs + tolerance
            reason = (
                f"{'no worse' if passed else 'worse'}: off the ideal by {mine:.4g}, champion "
                f"by {theirs:.4g}, tolerance {tolerance:g}"
            )
        verdicts.append(Check(name, value, other, passed, reason))
    return tuple(verdicts)


def floor(
    candidate: Mapping[str, float],
    classical: Mapping[str, Mapping[str, float]],
    margin: float = FLOOR_MARGIN,
) -> tuple[Check, ...]:
    """Judge the candidate against the strongest classical method (pure).

    The strongest is the method with the lowest mean RMSE. The candidate's RMSE must be at
    most ``1 - margin`` times its RMSE, and each of :data:`FLOOR_SCORES` at least its value
    (undefined for the method: passes; undefined for the candidate only: fails). Each reason
    says by how much the candidate passed or missed.
    """
    name = min(classical, key=lambda method: classical[method]["rmse"])
    best = classical[name]
    ratio = candidate["rmse"] / best["rmse"] if best["rmse"] > 0 else math.inf
    needed = 1.0 - margin
    verdict = "passes" if ratio <= needed else f"misses by {100 * (ratio - needed):.1f} points"
    verdicts = [
        Check(
            "floor rmse",
            candidate["rmse"],
            best["rmse"],
            ratio <= needed,
            f"{ratio:.3f} x {name}'s RMSE; needs <= {needed:.3f}: {verdict}",
        )
    ]
    for score in FLOOR_SCORES:
        mine, theirs = candidate[score], best[score]
        if math.isnan(theirs):
            passed, reason = True, f"undefined for {name}"
        elif math.isnan(mine):
            passed, reason = False, "undefined for the candidate"
        else:
            passed = mine >= theirs
            reason = f"{mine - theirs:+.4f} against {name}'s {theirs:.4f}"
        verdicts.append(Check(f"floor {score}", mine, theirs, passed, reason))
    return tuple(verdicts)


def safety(problems: Mapping[str, str]) -> Check:
    """The safety check's verdict from :func:`radinfill.train.evaluate.safety_check`."""
    failed = len(problems)
    reason = (
        "no invented rain on the safety cases"
        if not failed
        else "; ".join(f"{case}: {problem}" for case, problem in problems.items())
    )
    return Check("safety", float(failed), None, not failed, reason)


def promote(
    candidate: str | os.PathLike[str],
    registry_dir: str | os.PathLike[str],
    *,
    specs: Sequence[str],
    gate: Sequence[str] = DEFAULT_SCORES,
    tolerance: float = 0.0,
    floor_methods: Sequence[str] | None = None,
    floor_margin: float = FLOOR_MARGIN,
    force: bool = False,
    out: Path | None = None,
    device: str = "auto",
    export: bool = True,
) -> Decision:
    """Evaluate ``candidate`` against the classical floor, the safety cases and the current
    release; publish and activate it if it passes all three.

    Parameters
    ----------
    candidate
        Checkpoint (or release) directory of the challenger.
    registry_dir
        The registry (created if missing); see :mod:`radinfill.model.registry`.
    specs
        Data specs of the evaluation cases (:func:`radinfill.train.evaluate.load_case`).
    gate
        Names of the scores that must not get worse (:func:`radinfill.scores.score_names`).
    tolerance
        How much further from the ideal than the champion a score may be (>= 0, absolute).
    floor_methods
        Classical methods whose strongest is the floor (default: every causal baseline).
    floor_margin
        How much lower (a fraction, in [0, 1)) the candidate's RMSE must be than the floor's.
    force
        Promote even if the gate fails (recorded in the decision).
    out
        Directory of the evaluation report; default ``REGISTRY/reports/<version>``.
    device
        Device of the two engines (``"auto"``: CUDA when available).
    export
        Publish the network's ONNX graph too (:func:`radinfill.model.registry.publish`).

    Returns
    -------
    Decision

    Raises
    ------
    ValueError
        For an unknown gate score or floor method, a negative tolerance, a margin outside
        [0, 1) or no data specs.
    RegistryError
        If the current release fails verification, another promotion holds the registry,
        or publishing fails.
    CheckpointError
        If the candidate or the champion cannot be loaded.
    """
    _check_gate(gate, tolerance, specs)
    classical = _floor_methods(floor_methods, floor_margin)
    root = permissions.make_dirs(registry_dir)  # 0755 whatever the umask: the service checks
    with _locked(root):
        source = registry.resolve(candidate)
        meta = read_metadata(source)
        champion_dir = registry.current(root)
        if champion_dir is not None:
            registry.verify(champion_dir)
        version = registry.default_version(meta["sha256"])
        content: dict[str, Any] = {
            "promoted": False,
            "forced": force,
            "version": version,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "code_version": code_version(),
            "candidate": _identity(source, meta, version),
            "champion": None
            if champion_dir is None
            else _identity(champion_dir, read_metadata(champion_dir), champion_dir.name),
            "data": list(specs),
            "gate": {
                "scores": list(gate),
                "tolerance": tolerance,
                "floor": {"methods": list(classical), "margin": floor_margin},
            },
        }
        if content["champion"] and content["champion"]["sha256"] == meta["sha256"]:
            reasons = {"weights": "the candidate has the weights of the current release"}
            record = _reject(root, version, content | {"reasons": reasons})
            return Decision(False, version, record, None, (), _read_json(record))
        report = out or root / REPORTS / version
        engine = InfillEngine.from_checkpoint(source, device, fallback=None)
        result = _evaluate(engine, source, champion_dir, specs, classical, report, device)
        mine = result.mean[CANDIDATE]
        theirs = result.mean.get(CHAMPION)
        verdicts = (
            *floor(mine, {name: result.mean[name] for name in classical}, floor_margin),
            safety(evaluate.safety_check(engine.infill)),
            *compare(mine, theirs, gate, tolerance),
        )
        promoted = force or all(v.passed for v in verdicts)
        content |= {
            "promoted": promoted,
            "reasons": {v.score: v.reason for v in verdicts},
            "verdicts": {
                v.score: {"candidate": v.candidate, "reference": v.reference, "passed": v.passed}
                for v in verdicts
            },
            "scores": {
                CANDIDATE: dict(mine),
                CHAMPION: None if theirs is None else dict(theirs),
                **{name: dict(result.mean[name]) for name in classical},
            },
            "report": str(report),
        }
        if not promoted:
            record = _reject(root, version, content)
            return Decision(False, version, record, report, verdicts, _read_json(record))
        own = {
            "data": list(specs),
            "mean": dict(mine),
            "cases": {case: dict(results[CANDIDATE]) for case, results in result.cases.items()},
        }
        files = {DECISION: _json_bytes(content), SCORES: _json_bytes(own)}
        release = registry.publish(source, root, version=version, extra_files=files, export=export)
        registry.activate(root, version)
        record = release / DECISION
        return Decision(True, version, record, report, verdicts, _read_json(record))


def _evaluate(
    engine: InfillEngine,
    source: Path,
    champion: Path | None,
    specs: Sequence[str],
    classical: Sequence[str],
    out: Path,
    device: str,
) -> evaluate.Evaluation:
    """Score the candidate, the champion and the classical methods on ``specs`` with the
    evaluation protocol."""
    models = [evaluate.ModelMethod(CANDIDATE, source, engine)]
    if champion is not None:
        champion_engine = InfillEngine.from_checkpoint(champion, device, fallback=None)
        models.insert(0, evaluate.ModelMethod(CHAMPION, champion, champion_engine))
    methods = {name: baselines.get_method(name) for name in classical}
    return evaluate.run(specs, methods, out, models=models)


def _floor_methods(names: Sequence[str] | None, margin: float) -> tuple[str, ...]:
    """The floor's classical methods (default: every causal baseline), checked."""
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"floor margin must be in [0, 1), got {margin}")
    if names is None:
        return tuple(name for name in baselines.list_methods() if baselines.is_causal(name))
    if not names:
        raise ValueError("the classical floor needs at least one method")
    for name in names:
        if not baselines.is_causal(name):  # also raises ValueError for an unknown name
            raise ValueError(f"floor method {name!r} is not causal: the service cannot run it")
    return tuple(name.lower() for name in names)


def _check_gate(gate: Sequence[str], tolerance: float, specs: Sequence[str]) -> None:
    known = scores.score_names()
    if unknown := [name for name in gate if name not in known]:
        raise ValueError(f"unknown gate score(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if not gate:
        raise ValueError("the gate needs at least one score")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not specs:
        raise ValueError("no evaluation data specs")


def _identity(path: Path, meta: Mapping[str, Any], version: str | None) -> dict[str, Any]:
    """How a decision names a model: path, release version, variant, sha256, training."""
    return {
        "path": str(path),
        "version": version,
        "variant": meta["variant"],
        "sha256": meta["sha256"],
        "training": meta["training"],
    }


def _reject(root: Path, version: str, content: Mapping[str, Any]) -> Path:
    """Write a rejected candidate's decision to ``REGISTRY/rejected/<version>.json``."""
    directory = root / registry.REJECTED
    directory.mkdir(exist_ok=True)
    record = directory / f"{version}.json"
    atomic.write_bytes(record, _json_bytes(content))
    return record


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the registry's promotion lock (released by the kernel if the process dies)."""
    with open(root / _LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise registry.RegistryError(
                f"{root / _LOCK}: another promotion is running on this registry"
            ) from None
        yield


def _json_bytes(value: Any) -> bytes:
    """Strict JSON (NaN and infinities as null), indented, UTF-8."""
    return (json.dumps(_finite(value), indent=2, allow_nan=False) + "\n").encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
