"""``radinfill backfill SRC OUT`` and ``radinfill infill IN... -o OUT``: infill files the way
the service would have.

This is how the seed infilled the RADOLAN record, with the service's own parts: the same
:class:`~radinfill.daemon.pipeline.Pipeline` (built by :meth:`Pipeline.assemble`), so the same
engine, window semantics (with the frames before a long outage), fallback, quarantine and
outputs (same-format product, netCDF, sidecar) as ``radinfill serve``; only the arrival of the
files differs. ``backfill`` walks an archive tree (:func:`plan`); ``infill`` takes the files it
is given (:func:`plan_files`). Everything below holds for both.

1. **Plan** (rank 0): every file under ``SRC`` (recursive, symlinks not followed) that matches the
   patterns, dated by its header (:func:`~radinfill.daemon.intake.sniff_key`, else decoded),
   within ``[--from, --to]``, sorted by nominal time (several files of one time: oldest
   modification first, so a re-delivery becomes the current version as in the service).
2. **Shard** (:func:`shard`): under ``torchrun`` each rank takes a contiguous stretch of time
   with about the same number of files; all files of one nominal time go to one rank, so no
   two ranks ever write the same output. A rank's first fields take their context from the
   inputs before its stretch, read from ``SRC`` like the service rebuilds its window from
   disk: outputs do not depend on the number of ranks.
3. **Resume**: each rank keeps its ledger in ``OUT/.backfill/ledger-RRR.sqlite``; a file that
   any ledger there has handled (same path, size and modification time) is skipped, so a
   re-run, also with another number of ranks, continues where the last one stopped. Failed
   files are not recorded and are tried again.
4. **Process** with a progress line per rank on stderr; SIGTERM/SIGINT stops after the file in
   hand (exit 130, resumable). Bad inputs go to ``OUT/.backfill/quarantine``.

Ranks coordinate at the start only, through a gloo process group: rank 0 plans (one pass
over the archive's headers, not one per rank) and sends the plan to the others, removes
temporary files a killed run left in ``OUT``, and every rank reads the ledgers before any rank
writes.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import structlog

from radinfill import atomic, radolan
from radinfill.daemon import live_model, outputs
from radinfill.daemon.catalog import Catalog
from radinfill.daemon.intake import Arrival, sniff_key
from radinfill.daemon.ledger import Ledger
from radinfill.daemon.live_model import ModelSlot
from radinfill.daemon.pipeline import Outcome, Pipeline
from radinfill.daemon.service_config import ServiceConfig
from radinfill.daemon.telemetry import Metrics, configure_logging
from radinfill.daemon.watcher import matches
from radinfill.names import printable
from radinfill.progress import Progress
from radinfill.radolan import RadolanError

__all__ = ["Item", "Summary", "backfill", "plan", "plan_files", "settings", "shard"]

_log = structlog.get_logger("radinfill.backfill")
#: Hidden directory in ``OUT`` with the ledgers, the quarantine and the per-rank summaries.
STATE_DIR = ".backfill"
#: Corrections in an archive are never too late to reprocess (the service's horizon exists
#: because downstream users of a live feed have moved on).
ARCHIVE_HORIZON = timedelta(days=365 * 200)
#: Exit status of an interrupted run (resume by running it again).
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Item:
    """One input file of the archive: its nominal time and product, None if undated."""

    path: Path
    product: str | None
    time: datetime | None
    mtime_ns: int


@dataclass
class Summary:
    """What one rank did: outcomes counted, files skipped as done, seconds spent."""

    rank: int
    world: int
    planned: int
    skipped: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    seconds: float = 0.0
    interrupted: bool = False
    #: One line per input that was not processed or passed through (quarantined, ignored,
    #: failed), for the command's report.
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def handled(self) -> int:
        """Files taken through the pipeline in this run."""
        return sum(self.outcomes.values())

    @property
    def fields_per_s(self) -> float:
        """Files handled per second of this run."""
        return self.handled / self.seconds if self.seconds > 0 else 0.0

    @property
    def status(self) -> int:
        """0 when everything was handled; 130 interrupted; 1 when a file failed."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 1 if self.outcomes[Outcome.FAILED.value] else 0

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``summary-RRR.json`` and the last log line."""
        return {
            "rank": self.rank,
            "world": self.world,
            "planned": self.planned,
            "skipped": self.skipped,
            "outcomes": dict(sorted(self.outcomes.items())),
            "seconds": round(self.seconds, 3),
            "fields_per_s": round(self.fields_per_s, 4),
            "interrupted": self.interrupted,
        }


def settings(
    sources: Sequence[Path], out: Path, base: ServiceConfig | None = None, **changes: Any
) -> ServiceConfig:
    """The service configuration of a backfill from ``sources`` (archive directories, or the
    input files of ``radinfill infill``) into ``out``.

    ``base`` (a service configuration file's ``[service]`` section) gives the model, window,
    products, naming and outputs; ``changes`` override them (e.g. ``model``, ``device``).
    State and quarantine live in ``out/.backfill``. Files are complete (no settle wait), no
    field is held for a late radar, no ``latest`` link or post-write hook runs: an archive
    is not a live feed.

    Raises
    ------
    ValueError
        If ``out`` is a source or one contains the other (outputs would become inputs).
    """
    out = out.resolve()
    sources = tuple(dict.fromkeys(source.resolve() for source in sources))
    for source in sources:
        if out == source or out.is_relative_to(source) or source.is_relative_to(out):
            raise ValueError(f"{out}: the output tree must lie outside the inputs' {source}")
    state = out / STATE_DIR
    fixed = {
        "incoming": sources,
        "outgoing": out,
        "state_dir": state,
        "quarantine": state / "quarantine",
        "late_radar_wait_s": 0.0,
        "settle_timeout_s": 0.0,
        "latest_link": False,
        "post_write_hook": (),
        "shadow_interval_s": 0.0,
    }
    if base is None:
        return ServiceConfig(**fixed | changes)
    return dataclasses.replace(base, **fixed | changes)


def plan(
    source: Path,
    patterns: Sequence[str],
    products: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Item]:
    """The archive's input files in processing order (see the module docstring).

    Undated files (no readable header) are planned only without a time range: the pipeline
    then quarantines them. With ``products``, other products are left out unread.
    """
    items = []
    for path in _walk(source, patterns):
        key = _key(path)
        if key is None:
            if start is None and end is None:
                items.append(Item(path, None, None, path.stat().st_mtime_ns))
            continue
        product, nominal = key
        if products and product not in products:
            continue
        if (start is not None and nominal < start) or (end is not None and nominal > end):
            continue
        items.append(Item(path, product, nominal, path.stat().st_mtime_ns))
    return sorted(items, key=_order)


def plan_files(paths: Sequence[Path]) -> list[Item]:
    """Items for the given input files in processing order (each file once).

    Raises
    ------
    FileNotFoundError
        If an input does not exist.
    """
    items = {}
    for path in paths:
        resolved = path.resolve(strict=True)
        key = _key(resolved)
        product, nominal = key if key is not None else (None, None)
        items[resolved] = Item(resolved, product, nominal, resolved.stat().st_mtime_ns)
    return sorted(items.values(), key=_order)


def shard(items: Sequence[Item], world: int) -> list[list[Item]]:
    """Split planned ``items`` into ``world`` contiguous stretches of time.

    Each rank gets about ``len(items) / world`` files; the files of one nominal time stay
    together (no two ranks write one output). Undated files go to rank 0.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    shards: list[list[Item]] = [[] for _ in range(world)]
    dated = sorted((i for i in items if i.time is not None), key=_order)
    shards[0].extend(i for i in items if i.time is None)
    before = 0
    for _, same_time in itertools.groupby(dated, key=lambda item: item.time):
        group = list(same_time)
        shards[before * world // len(dated)].extend(group)
        before += len(group)
    return shards


def backfill(
    config: ServiceConfig,
    items: Sequence[Item],
    *,
    rank: int = 0,
    world: int = 1,
    barrier: Any = None,
    stop: threading.Event | None = None,
    stream: TextIO | None = None,
) -> Summary:
    """Run this rank's shard of ``items`` through the service pipeline.

    Parameters
    ----------
    config
        From :func:`settings`.
    items
        The whole plan (every rank passes the same).
    rank, world
        This process's rank and the number of ranks.
    barrier
        Called once every rank has read the ledgers and rank 0 has cleaned the output tree;
        None for a single process.
    stop
        Set to stop after the file in hand.
    stream
        Where the progress lines go (stderr).
    """
    stop = stop if stop is not None else threading.Event()
    mine = shard(items, world)[rank]
    # the model first: a bad model spec fails before anything is written
    model = live_model.load(
        config.model,
        device=config.device,
        fallback=config.fallback,
        offline=True,
        engine=config.engine_options(),
    )
    state = config.state_dir
    for directory in (config.outgoing, state, config.quarantine):
        directory.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        for path in outputs.remove_partial(config.outgoing):
            _log.info("removed_partial_output", path=str(path))
    todo = _not_done(mine, state)
    if barrier is not None:
        barrier()
    summary = Summary(rank, world, planned=len(mine), skipped=len(mine) - len(todo))
    metrics = Metrics()
    catalog = _catalog(items)  # the pipeline adds each file it processes
    began = time.perf_counter()
    progress = Progress(
        len(todo), prefix=f"backfill rank {rank}/{world}", unit="fields", stream=stream
    )
    with Ledger(state / f"ledger-{rank:03d}.sqlite", horizon=ARCHIVE_HORIZON) as ledger:
        pipeline = Pipeline.assemble(
            config,
            ledger=ledger,
            slot=ModelSlot(model),
            metrics=metrics,
            catalog=catalog,
            locate=catalog.get,
            stop=stop,
        )
        for item in todo:
            if stop.is_set():
                summary.interrupted = True
                break
            outcome, problem = _process(pipeline, item)
            summary.outcomes[outcome] += 1
            if problem:
                summary.problems.append(f"{printable(item.path)}: {problem}")
            stamp = f"{item.product} {item.time:%Y-%m-%dT%H:%MZ}" if item.time else item.path.name
            progress.advance(stamp)
    summary.seconds = time.perf_counter() - began
    text = json.dumps(summary.as_dict(), indent=2) + "\n"
    atomic.write_bytes(state / f"summary-{rank:03d}.json", text.encode())
    return summary


def run(
    config: ServiceConfig,
    planner: Callable[[ServiceConfig], list[Item]],
    *,
    stream: TextIO | None = None,
) -> Summary:
    """The whole command for this process: join the ranks under ``torchrun``, plan (rank 0
    calls ``planner``, e.g. :func:`plan` or :func:`plan_files`), backfill.

    SIGTERM and SIGINT stop the run after the file in hand.
    """
    configure_logging(fmt=config.log_format, level=config.log_level)
    rank, world, local_rank, barrier = _join()
    if config.device == "auto" and world > 1:
        import torch

        if torch.cuda.is_available():
            config = dataclasses.replace(config, device=f"cuda:{local_rank}")
    items = planner(config) if rank == 0 else []
    if barrier is not None:  # one rank reads every header; the others get its plan
        items = _shared(items)
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda s, f: _stop(stop, s, f))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        summary = backfill(
            config, items, rank=rank, world=world, barrier=barrier, stop=stop, stream=stream
        )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _leave()
    _log.info("backfill_done", **summary.as_dict())
    return summary


def _stop(stop: threading.Event, signum: int, frame: FrameType | None) -> None:
    _log.warning("backfill_stopping", signal=signal.Signals(signum).name)
    stop.set()


def _process(pipeline: Pipeline, item: Item) -> tuple[str, str]:
    """Run one file: (its outcome, a one-line problem or ""). Failures are logged and counted,
    not recorded (the next run tries them again)."""
    try:
        result = pipeline.process(Arrival.now(item.path, "backfill"))
    except FileNotFoundError:
        _log.warning("input_vanished", path=str(item.path))
        return Outcome.FAILED.value, "vanished before it was read"
    except Exception as err:  # one file's failure: counted, tried again by the next run
        _log.exception("product_failed", path=str(item.path), error=str(err))
        return Outcome.FAILED.value, f"failed: {err}"
    if result.outcome is Outcome.QUARANTINED:
        _log.warning("quarantined", path=str(item.path), **result.details)
        details = result.details
        return result.outcome.value, f"quarantined ({details['kind']}: {details['reason']})"
    if result.outcome is Outcome.IGNORED:
        return result.outcome.value, f"ignored ({result.product} is not a product to infill)"
    return result.outcome.value, ""


def _walk(source: Path, patterns: Sequence[str]) -> Iterator[Path]:
    """Input files under ``source`` (recursive; hidden entries and symlinks skipped)."""
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if matches(name, patterns) and not path.is_symlink():
                yield path


def _key(path: Path) -> tuple[str, datetime] | None:
    """(product, nominal time) from the header, else from decoding (ODIM_H5, tar bundles)."""
    key = sniff_key(path)
    if key is not None:
        return key
    try:
        field = radolan.analysis(radolan.read(path), str(path))  # a bundle: its analysis
    except (RadolanError, OSError):
        return None
    return field.product, field.time


def _order(item: Item) -> tuple[Any, ...]:
    return (item.time is not None, item.time or datetime.min, item.mtime_ns, str(item.path))


def _catalog(items: Sequence[Item]) -> Catalog:
    """(product, time) -> the newest file of that time: the window's context from disk (the
    whole plan: an archive needs every field it holds)."""
    catalog = Catalog(keep=None)
    for item in items:  # in plan order: a later file of the same time wins
        if item.product is not None and item.time is not None:
            catalog.note(item.product, item.time, item.path)
    return catalog


def _not_done(items: Sequence[Item], state: Path) -> list[Item]:
    """``items`` minus those any ledger in ``state`` has handled with the same size and mtime."""
    ledgers = [Ledger(p) for p in sorted(state.glob("ledger-*.sqlite"))]
    try:
        todo = []
        for item in items:
            try:
                size = item.path.stat().st_size
            except FileNotFoundError:
                continue
            if not any(
                ledger.known_file(str(item.path), size, item.mtime_ns) for ledger in ledgers
            ):
                todo.append(item)
        return todo
    finally:
        for ledger in ledgers:
            ledger.close()


def _join() -> tuple[int, int, int, Any]:
    """(rank, world, local rank, barrier) from the ``torchrun`` environment; one process
    without it. The gloo group only shares the plan and synchronises the start, so CPU ranks
    need nothing else."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return 0, 1, 0, None
    import torch.distributed as dist

    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    if world == 1:
        return 0, 1, 0, None
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return rank, world, int(env.get("LOCAL_RANK", "0")), dist.barrier


def _shared(items: list[Item]) -> list[Item]:
    """Rank 0's ``items`` on every rank (gloo broadcast of the pickled list)."""
    import torch.distributed as dist

    box: list[Any] = [items]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
