"""One input file through the service: stages from reading it to recording its outputs.

:meth:`Pipeline.process` runs the stages in order (:attr:`Pipeline.stages`); the service's
worker thread, ``radinfill backfill`` and ``radinfill infill`` call it for every input and act
on the :class:`Result`. Everything it touches is injected (ledger, window, model slot, writer,
metrics), so tests drive it directly with real files.

1. **read** the bytes (bounded retries on transient I/O errors) and decode them. A file shorter
   than its header's ``BY`` length may still be being written: it is retried until
   ``settle_timeout_s`` after it was first seen, then quarantined as truncated. Every other
   decoding error quarantines at once. A symbolic link or a special file is quarantined unread
   (``unsupported``; see :func:`~radinfill.daemon.intake.open_input`).
2. **check** the product: products outside ``[service] products`` (by default: anything but a
   precipitation amount) are ignored; quarantined are a grid other than the product's
   (``wrong_grid``: ``[service] grids``, else the ledger's), an archive of several products that
   is not one forecast bundle, a nominal time more than :data:`MAX_AHEAD_S` ahead of the clock
   (``future``) and a DWD file name whose product is not the header's (``mismatch``).
3. **classify** with the ledger: the same (product, nominal time, content) again is a duplicate;
   other content older than the horizon is late; otherwise the output gets the next version.
4. **holes** (:func:`radinfill.holes.detect`); a new field with holes may be held for a late
   radar (``late_radar_wait_s``).
5. **infill** with the window's context; the model decides its own fallback and says which
   method ran (:meth:`~radinfill.daemon.live_model.LoadedModel.run`). No failure hole: nothing
   to do.
6. **encode** the drop-in product in the format it came in (binary, ODIM_H5, a bundle with
   only its infilled members re-encoded; the input's bytes when nothing was infilled).
7. **publish** it: downstream has the gap-free product now, before anything else is made
   (the holes' attribution to causes, the netCDF, the sidecar: none of it delays it).
8. **write** the netCDF and the sidecar (:class:`~radinfill.daemon.outputs.Writer`), then
9. **record** the version in the ledger: a crash anywhere before re-runs the product with the
   same version. An output name that would leave ``outgoing`` quarantines the input.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from radinfill import code_version, holes, radolan
from radinfill.daemon import outputs
from radinfill.daemon.catalog import Catalog
from radinfill.daemon.faults import Faults
from radinfill.daemon.intake import Arrival, NotRegularFileError, open_input
from radinfill.daemon.ledger import Entry, Ledger, Verdict
from radinfill.daemon.live_model import ModelSlot
from radinfill.daemon.service_config import PipelineSettings, ServiceConfig
from radinfill.daemon.telemetry import Metrics
from radinfill.daemon.window import Context, Locate, Window
from radinfill.model import features
from radinfill.names import printable
from radinfill.radolan import Field, RadolanError

__all__ = ["Job", "NotReadyError", "Outcome", "Pipeline", "Quarantine", "Result", "Skip"]

_log = structlog.get_logger("radinfill.service")
#: Largest input file read (bytes): a compressed DE4800 product with room to spare; larger is
#: quarantined as oversized rather than read into memory.
MAX_INPUT_BYTES = 64 * 1024 * 1024
#: How far (s) a nominal time may lie ahead of the host's clock: products are stamped with the
#: end of their interval and delivered after it, so anything later is a wrong header or clock.
MAX_AHEAD_S = 3600.0
#: A DWD file name ``raa01-<product>_<...>``: the product it names.
_DWD_NAME = re.compile(r"raa01-([a-z0-9]{2})_", re.IGNORECASE)
#: Quarantine kind of a field off its product's grid (noted so, and taken again at start).
WRONG_GRID = "wrong_grid"
#: Seconds between retries of a file that is still shorter than its header says.
INCOMPLETE_RETRY_S = 1.0


class Outcome(enum.StrEnum):
    """What happened to an input (the ``outcome`` label of ``radinfill_products_total``)."""

    PROCESSED = "processed"
    PASSTHROUGH = "passthrough"
    DUPLICATE = "duplicate"
    LATE = "late"
    IGNORED = "ignored"
    QUARANTINED = "quarantined"
    FAILED = "failed"


class NotReadyError(Exception):
    """The file cannot be used yet; try again after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Result:
    """The outcome of one input, with what the log line and the metrics need."""

    outcome: Outcome
    product: str = ""
    nominal: datetime | None = None
    version: int = 0
    outputs: tuple[Path, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A stage ends the job without outputs (ignored, duplicate, late): ``result`` says how."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.outcome.value)
        self.result = result


class Quarantine(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A stage found the input unusable: it is moved aside with ``kind`` and the reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass
class Job:
    """One input on its way through the stages; each stage fills in its part."""

    arrival: Arrival
    data: bytes = b""
    stat: os.stat_result | None = None
    fields: list[Field] = field(default_factory=list)
    fld: Field = None  # type: ignore[assignment]  # set by ``check``
    sha256: str = ""
    verdict: Verdict = Verdict.NEW
    report: holes.HoleReport = None  # type: ignore[assignment]  # set by ``holes``
    context: Context = None  # type: ignore[assignment]  # set by ``infill``
    values: np.ndarray | None = None
    #: The infilled fields by ``id`` of the input field they replace (a bundle may have several).
    filled: dict[int, Field] = field(default_factory=dict)
    method: str = "none"
    fallback: str = ""
    current: Entry | None = None
    version: int = 0
    targets: outputs.OutputPaths = None  # type: ignore[assignment]  # set by ``encode``
    product: bytes = b""
    details: dict[str, Any] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    entry: Entry | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def result(self) -> Result:
        """The :class:`Result` of a job that went through every stage."""
        assert self.entry is not None
        outcome = Outcome.PROCESSED if self.filled else Outcome.PASSTHROUGH
        details = self.details | {"verdict": self.verdict.value, "timings_s": self.timings}
        fld, version = self.fld, self.entry.version
        return Result(outcome, fld.product, fld.time, version, tuple(self.written), details)


class Pipeline:
    """The per-file procedure (see the module docstring).

    Parameters
    ----------
    config
        The pipeline's section of the service configuration
        (:meth:`~radinfill.daemon.service_config.ServiceConfig.pipeline`).
    ledger, window, slot, writer, metrics
        The service's state and collaborators.
    catalog
        Where each field's input is (:class:`~radinfill.daemon.catalog.Catalog`): the window
        loads context through it; the pipeline notes every input it decodes.
    clock
        Wall-clock time (injected for tests).
    """

    def __init__(
        self,
        config: PipelineSettings,
        *,
        ledger: Ledger,
        window: Window,
        slot: ModelSlot,
        writer: outputs.Writer,
        metrics: Metrics,
        catalog: Catalog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.ledger, self.window, self.slot = config, ledger, window, slot
        self.writer, self.metrics, self.catalog, self.clock = writer, metrics, catalog, clock
        #: Newest field without failure holes per product, with its context frames: the
        #: input of the shadow quality check.
        self.complete: dict[str, tuple[Field, np.ndarray]] = {}
        self._stop = writer.stop

    @classmethod
    def assemble(
        cls,
        config: ServiceConfig,
        *,
        ledger: Ledger,
        slot: ModelSlot,
        metrics: Metrics,
        catalog: Catalog,
        locate: Locate,
        stop: threading.Event,
    ) -> Pipeline:
        """The pipeline with the window and writer that ``config`` describes.

        The one construction shared by the service and ``radinfill backfill``, so that both
        produce the same outputs from the same inputs. ``stop`` aborts I/O retries on shutdown.
        """
        window = Window(config.window, config.max_context, locate)
        writer = outputs.Writer(
            netcdf=config.netcdf,
            sidecar=config.sidecar,
            stop=stop,
            on_retry=lambda op: metrics.io_retries_total.labels(op).inc(),
            mode=config.output_mode,
            faults=Faults.from_env(),
        )
        return cls(
            config.pipeline(),
            ledger=ledger,
            window=window,
            slot=slot,
            writer=writer,
            metrics=metrics,
            catalog=catalog,
        )

    def process(self, arrival: Arrival) -> Result:
        """Take one settled arrival through every stage (see the module docstring).

        Each stage takes the :class:`Job` and returns it with its part done; a stage that ends
        the job early raises :class:`Skip` (ignored, duplicate, late) or :class:`Quarantine`.
        The loop times every stage (``radinfill_stage_duration_seconds``).

        Raises
        ------
        NotReadyError
            If the file may still be incomplete, or is held for a late radar.
        OSError
            If reading or writing fails beyond the retries (the product failed).
        """
        job = Job(arrival)
        try:
            for stage in self.stages:
                started = time.perf_counter()
                job = stage(job)
                job.timings[stage.__name__] = time.perf_counter() - started
        except Skip as skip:
            self._note(job, skip.result.outcome)
            return skip.result
        except Quarantine as problem:
            return self._quarantine(arrival.path, job.data or None, problem.kind, str(problem))
        for stage_name, seconds in job.timings.items():
            self.metrics.stage_seconds.labels(stage_name).observe(seconds)
        return job.result()

    @property
    def stages(self) -> tuple[Callable[[Job], Job], ...]:
        """The stages in order; each is named after what it does."""
        return (
            self.read,
            self.check,
            self.classify,
            self.holes,
            self.infill,
            self.encode,
            self.publish,
            self.write,
            self.record,
        )

    def read(self, job: Job) -> Job:
        """The file's bytes, decoded (an incomplete file is retried: :meth:`_unreadable`)."""
        path = job.arrival.path
        try:
            job.data, job.stat = self._read(path)
        except _OversizedError as err:
            raise Quarantine("oversized", str(err)) from None
        except NotRegularFileError as err:  # a link or FIFO: never followed, never read
            raise Quarantine("unsupported", str(err)) from None
        try:
            job.fields = radolan.loads(job.data, str(path))
        except RadolanError as err:
            raise self._unreadable(job.arrival, job.data, err) from None
        return job

    def check(self, job: Job) -> Job:
        """One usable product, or one forecast bundle whose analysis is (see :meth:`_check`)."""
        try:
            job.fld = radolan.analysis(job.fields, str(job.arrival.path))
        except RadolanError as err:
            raise Quarantine(err.kind, err.reason) from None
        problem = self._check(job.fld, job.arrival.path.name)
        if isinstance(problem, Result):
            raise Skip(problem)
        if problem is not None:
            raise Quarantine(*problem)
        return job

    def classify(self, job: Job) -> Job:
        """The ledger's verdict on the product's content: duplicates and late ones end here.

        The key of the content is the products, not the file: the same product gzipped or
        under another name is a duplicate, never a second output for one time step. A plain
        product's bytes (binary or ODIM-HDF5) are its encoding already; a compressed file or a
        bundle is keyed by the encodings of its members.
        """
        fld = job.fld
        plain = radolan.sniff(job.data) in ("product", "hdf5")
        products = [job.data] if plain else [radolan.dumps(f) for f in job.fields]
        job.sha256 = hashlib.sha256(b"".join(products)).hexdigest()
        self.catalog.note(fld.product, fld.time, job.arrival.path)
        job.verdict = self.ledger.classify(fld.product, fld.time, job.sha256)
        if job.verdict in (Verdict.DUPLICATE, Verdict.LATE):
            outcome = Outcome.DUPLICATE if job.verdict is Verdict.DUPLICATE else Outcome.LATE
            raise Skip(Result(outcome, fld.product, fld.time))
        self.metrics.last_input_nominal.labels(fld.product).set(fld.time.timestamp())
        return job

    def holes(self, job: Job) -> Job:
        """The failure holes; a new field with holes is held for a late radar first."""
        job.report = holes.detect(job.fld)
        wait = self.config.late_radar_wait_s - (self.clock() - job.arrival.seen)
        if job.report.pixels and job.verdict is Verdict.NEW and wait > 0:
            raise NotReadyError("holding a field with failure holes for a late radar", wait)
        return job

    def infill(self, job: Job) -> Job:
        """The window's context and the infilled field(s): the file's field (of a bundle: the
        analysis) and, with ``forecast_members = "all"``, every forecast member with holes, each
        as the current frame after the analyses before it."""
        fld, report = job.fld, job.report
        job.context = self.window.context(fld, bool(report.pixels))
        job.values, job.method, job.fallback = self._infill(fld, report, job.context.frames)
        if job.values is not None:
            job.filled[id(fld)] = outputs.infilled(fld, report.failure, job.values)
        newest = self.complete.get(fld.product)
        if not report.pixels and (newest is None or newest[0].time <= fld.time):
            self.complete[fld.product] = (fld, job.context.frames)
        if self.config.forecast_members == "all":
            for member in (m for m in job.fields if m is not fld):
                member_report = holes.detect(member)
                frames = np.concatenate([job.context.frames[:-1], member.values[None]])
                values, _, _ = self._infill(member, member_report, frames)
                if values is not None:
                    job.filled[id(member)] = outputs.infilled(member, member_report.failure, values)
        return job

    def encode(self, job: Job) -> Job:
        """The drop-in product in the format it came in (the input's bytes for a field without
        holes; a bundle with only its infilled member re-encoded)."""
        fld, path = job.fld, job.arrival.path
        try:
            job.targets = outputs.output_paths(
                self.config.outgoing, self.config.output_name, path.name, fld
            )
        except outputs.OutputPathError as err:  # never written outside the output tree
            raise Quarantine("unsupported", str(err)) from None
        if not job.filled:
            job.product = job.data
            return job
        if radolan.member_name(fld, str(path)) is None:  # a file of one product
            job.product = radolan.dumps(job.filled[id(fld)], job.targets.radolan.name)
        else:
            members = {
                radolan.member_name(f, str(path)): job.filled[id(f)]
                for f in job.fields
                if id(f) in job.filled
            }
            job.product = radolan.dumps_tar(job.data, members, str(path))
        return job

    def publish(self, job: Job) -> Job:
        """The drop-in product in place as the next version of its time step (the ledger's
        current one plus one), before the rest of the set is made."""
        fld = job.fld
        job.current = self.ledger.current(fld.product, fld.time)
        job.version = 1 if job.current is None else job.current.version + 1
        self.writer.publish(job.targets, job.product, version=job.version)
        return job

    def write(self, job: Job) -> Job:
        """The netCDF and the sidecar of the published product (see
        :class:`~radinfill.daemon.outputs.Writer`). The netCDF holds the field the product
        holds: an infilled product is decoded again (a pass-through: the input's field)."""
        fld, report, path, version = job.fld, job.report, job.arrival.path, job.version
        output = fld
        if job.filled:
            written = radolan.loads(job.product, str(job.targets.radolan))
            output = written[next(i for i, f in enumerate(job.fields) if f is fld)]
        job.details = {
            "hole_pixels": report.pixels,
            "hole_fraction": report.pixels / max(int(report.coverage.sum()), 1),
            "missing_radars": sorted(report.missing_radars),
            "causes": dict(report.causes),
            "method": job.method,
            "fallback": job.fallback,
            "window_frames": len(job.context.present),
            "window_present": sum(job.context.present),
            "window_fill": job.context.fill,
        }
        job.written = self.writer.write(
            job.targets,
            output=output,
            hole=report.failure,
            provenance=self._provenance(path, job.sha256, version, job.details),
            record=self._record(job.arrival, fld, job.sha256, version, job.verdict, job.details),
        )
        return job

    def record(self, job: Job) -> Job:
        """The version in the ledger (after every output: a crash before re-runs it), the
        superseded outputs removed, then the ``latest`` link and the hook."""
        fld = job.fld
        job.entry = self.ledger.record(
            fld.product,
            fld.time,
            job.sha256,
            str(job.arrival.path),
            [str(p) for p in job.written],
            method=job.method,
            hole_pixels=job.report.pixels,
        )
        self._note(job, "done")
        if self.ledger.grid(fld.product) is None:  # a read; the write only for a first field
            self.ledger.remember_grid(fld.product, fld.values.shape)
        if job.current is not None:
            _remove_superseded(job.current.outputs, job.written)
        self._after_write(job.targets, job.written, fld.time)
        return job

    def _note(self, job: Job, outcome: str) -> None:
        """Remember the file as read (size and mtime of the stat taken before reading)."""
        stat = job.stat
        self.ledger.note_file(str(job.arrival.path), stat.st_size, stat.st_mtime_ns, outcome)

    def _read(self, path: Path) -> tuple[bytes, os.stat_result]:
        """The file's bytes and its stat, retried on transient errors; oversized files are
        refused unread.

        The stat is taken before the bytes are read: a file replaced meanwhile (a correction
        renamed in while this one is worked on, its event dropped) then no longer matches what
        the ledger notes for the path, so the reconcile scan queues it again.
        """
        for attempt in outputs.retrying(self._stop, self._count_retry, "read_input"):
            with attempt, open_input(path) as f:
                stat = os.fstat(f.fileno())
                if stat.st_size > MAX_INPUT_BYTES:
                    raise _OversizedError(stat.st_size)
                return f.read(MAX_INPUT_BYTES + 1), stat
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _count_retry(self, op: str) -> None:
        self.metrics.io_retries_total.labels(op).inc()

    def _unreadable(self, arrival: Arrival, data: bytes, err: RadolanError) -> Exception:
        """Retry a possibly incomplete file until its settle deadline; else quarantine.

        An empty file is incomplete too: a writer that creates the file, closes it and opens
        it again to write (``touch`` first) sends a close event before the first byte.
        """
        kind = "truncated" if not data else err.kind
        age = time.monotonic() - arrival.seen_monotonic
        if kind == "truncated" and age < self.config.settle_timeout_s:
            return NotReadyError(str(err), INCOMPLETE_RETRY_S)
        return Quarantine(kind, str(err))

    def _check(self, fld: Field, name: str) -> Result | tuple[str, str] | None:
        """None if the file's field is usable; an ignore Result, or (kind, reason) to
        quarantine."""
        ahead = fld.time.timestamp() - self.clock()
        if ahead > MAX_AHEAD_S:
            return (
                "future",
                f"nominal time {fld.time:%Y-%m-%d %H:%M} UTC is {ahead / 3600:.1f} h ahead of "
                "this host's clock: a wrong header or clock, never published",
            )
        named = _DWD_NAME.match(name)
        if named and named.group(1).upper() != fld.product.upper():
            return "mismatch", f"the name says {named.group(1).upper()}, the header {fld.product}"
        wanted = self.config.products
        encodable = bool(fld.header.raw or fld.original)  # binary or ODIM-HDF5
        usable = fld.unit == "mm" and not fld.info.nodata_means_dry and encodable
        if (wanted and fld.product not in wanted) or (not wanted and not usable):
            return Result(Outcome.IGNORED, fld.product, fld.time)
        if not usable:
            return "unsupported", f"{fld.product} is not a precipitation amount product"
        return self._grid_problem(fld)

    def _grid_problem(self, fld: Field) -> tuple[str, str] | None:
        """``wrong_grid`` for a field off its product's grid: the configured one (``[service]
        grids``), else the one its outputs have been on (the ledger, across restarts); a
        product's first field sets it. Such files are taken again at the next start, so a
        corrected configuration recovers them."""
        configured = self.config.grids.get(fld.product)
        shape = configured or self.ledger.grid(fld.product)
        if shape is None or shape == fld.values.shape:
            return None
        where = "configured" if configured else "its outputs so far are on"
        return (
            WRONG_GRID,
            f"{fld.product} on a {fld.values.shape[0]}x{fld.values.shape[1]} grid, "
            f"{where} {shape[0]}x{shape[1]} (set [service] grids to choose)",
        )

    def _quarantine(self, path: Path, data: bytes | None, kind: str, reason: str) -> Result:
        copy = outputs.quarantine(self.config.quarantine, path, data, reason, kind)
        sha256 = hashlib.sha256(data).hexdigest() if data is not None else ""
        self.ledger.quarantine(str(path), sha256, f"{kind}: {reason}")
        try:
            stat = os.lstat(path)  # a link is noted as itself, its target never looked at
            noted = kind if kind == WRONG_GRID else "quarantined"  # wrong_grid: retried at start
            self.ledger.note_file(str(path), stat.st_size, stat.st_mtime_ns, noted)
        except FileNotFoundError:
            pass
        self.metrics.quarantined_total.labels(kind).inc()
        return Result(
            Outcome.QUARANTINED, details={"kind": kind, "reason": reason, "copy": str(copy)}
        )

    def _infill(
        self, fld: Field, report: holes.HoleReport, frames: np.ndarray
    ) -> tuple[np.ndarray | None, str, str]:
        """(values or None for a pass-through, method name, fallback reason or "")."""
        if not report.pixels:
            return None, "none", ""
        model = self.slot.current
        future = None if model.causal else self.window.future(fld, features.FUTURE_FRAMES)
        ran = model.run(
            frames, report.failure, interval_minutes=fld.interval_minutes, future=future
        )
        if ran.fallback:
            self.metrics.fallbacks_total.labels(fld.product, ran.fallback).inc()
        return ran.values, ran.method, ran.fallback

    def _provenance(
        self, path: Path, sha256: str, version: int, details: Mapping[str, Any]
    ) -> dict[str, str]:
        model = self.slot.current
        provenance = dict(model.engine.provenance) if model.engine is not None else {}
        provenance |= {
            "infill_method": str(details["method"]),
            "infill_model_release": model.release,
            "infill_input_file": printable(path),
            "infill_input_sha256": sha256,
            "infill_output_version": str(version),
            "infill_hole_pixels": str(details["hole_pixels"]),
            "infill_missing_radars": ",".join(details["missing_radars"]),
            "radinfill_version": code_version(),
        }
        return provenance

    def _record(
        self,
        arrival: Arrival,
        fld: Field,
        sha256: str,
        version: int,
        verdict: Verdict,
        details: Mapping[str, Any],
    ) -> dict[str, Any]:
        model = self.slot.current
        return {
            "product": fld.product,
            "nominal_time": fld.time,
            "input": {
                "path": printable(arrival.path),
                "sha256": sha256,
                "seen": _utc(arrival.seen),
            },
            "version": version,
            "verdict": verdict.value,
            "model": {"release": model.release, "variant": model.variant, "sha256": model.sha256},
            "radinfill_version": code_version(),
            **details,
        }

    def _after_write(
        self, targets: outputs.OutputPaths, written: list[Path], nominal: datetime
    ) -> None:
        """The optional ``latest`` symlink and post-write hook (failures logged, not fatal).

        ``latest`` names the output of the newest nominal time, not the last one written: a
        backlog or a late correction of an older time must not move it back.
        """
        link = targets.radolan.parent / "latest"
        if self.config.latest_link and nominal >= _linked_time(link):
            tmp = link.with_name(".latest.tmp")
            try:
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(targets.radolan.name)
                os.replace(tmp, link)
            except OSError as err:
                _log.warning("latest_link_failed", path=str(link), error=str(err))
        if self.config.post_write_hook:
            names = {
                "radolan": targets.radolan,
                "netcdf": targets.netcdf,
                "sidecar": targets.sidecar,
            }
            argv = [
                part.format(**{k: str(v) for k, v in names.items()})
                for part in self.config.post_write_hook
            ]
            _run_hook(argv)


def _remove_superseded(previous: Sequence[str], written: Sequence[Path]) -> None:
    """Remove the outputs of the previous version that the new one did not replace (a
    correction delivered under another name): one output set per time step downstream. The
    sidecar goes first, so no sidecar ever lists a removed file."""
    kept = {printable(p) for p in written}
    stale = [Path(p) for p in previous if p not in kept]
    for path in sorted(stale, key=lambda p: p.suffix != ".json"):
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            _log.warning("superseded_output_not_removed", path=str(path), error=str(err))


def _linked_time(link: Path) -> datetime:
    """Nominal time of the output ``link`` points to, from its sidecar; the earliest possible
    time when there is no link or its sidecar does not say (then any output replaces it)."""
    try:
        target = link.parent / os.readlink(link)
        record = json.loads(
            target.with_name(f"{outputs.netcdf_stem(target.name)}.json").read_text()
        )
        return datetime.fromisoformat(record["nominal_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return datetime.min.replace(tzinfo=UTC)


def _run_hook(argv: list[str]) -> None:
    """Run the post-write hook (bounded to 60 s); its failure is logged, never fatal."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        _log.warning("post_write_hook_failed", argv=argv, error=str(err))
        return
    if done.returncode != 0:
        _log.warning(
            "post_write_hook_failed",
            argv=argv,
            status=done.returncode,
            stderr=done.stderr.decode(errors="replace")[-500:],
        )


class _OversizedError(OSError):
    """An input larger than :data:`MAX_INPUT_BYTES` (not transient: never retried)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes is larger than the {MAX_INPUT_BYTES} bytes accepted")
        self.size = size


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
