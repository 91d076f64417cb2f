"""Fault-injection soak of the real ``radinfill serve`` process.

Usage: ``python bench/soak.py [--products 1000] [--kills 20] [--terms 3] [--burst 200]
[--grid 160x160] [--model SPEC] [--faults RULES] [--seed 1] [--json FILE] [--keep DIR]``

A synthetic RY stream (``--products`` valid products on a small grid) is delivered to a
``radinfill serve`` process the way a messy upstream does: renamed in from a temporary name,
moved in from another directory, copied, written slowly in pieces, out of order, late (held
back to the end), duplicated (same name and other names), corrected (same name, new content),
in a burst of ``--burst`` files at once, with missing time steps and with truncated and garbled
files among them. Some valid products arrive under odd names (bytes that are not UTF-8, or
spaces, umlauts and shell characters), and one valid RY product on another grid (the 1100x900
extended national grid among the small crops) arrives late in the run, where the service must
quarantine it (``wrong_grid``). Meanwhile:

* the service is SIGKILLed ``--kills`` times and SIGTERMed ``--terms`` times at random points
  (a random delay after it reported READY) and restarted each time;
* output writes fail transiently through the writer's fault point (``RADINFILL_FAULTS``,
  :mod:`radinfill.daemon.faults`; default EIO in the RADOLAN and sidecar writes, retried
  in place, and ENOSPC in the netCDF write, which fails the product until a later retry);
  the disk is full in half the netCDF writes of corrections (``correction:write_netcdf``),
  where the replaced set must lose its sidecar and come back complete on a later retry;
* once the kills are over, a second ``radinfill serve`` is started on the same state
  directory: it must exit with status 2 at once, leaving the lock (and everything else) to
  the running one;
* a reader thread polls the output tree for the whole run and decodes every file it sees under
  an output name (RADOLAN, netCDF, JSON sidecar);
* the service's resident set size is sampled; the last part of the run (after the last kill,
  with the burst and the late files) is one process lifetime, where growth would show.

At the end (after a clean SIGTERM) it checks and prints:

* every valid input key (product, nominal time) has exactly one output set whose input is the
  last content delivered for it; the RADOLAN file decodes, equals the input on valid pixels and
  has every failure-hole pixel filled (pass-throughs are byte-identical); missing time steps
  have no output;
* no file the reader saw under an output name failed to decode (``partial seen``);
* the second instance exited with status 2, naming the running one, which kept its lock;
* every bad input, and nothing else, is in quarantine with a reason;
* the ledger agrees with the output tree (one entry per output set, same version and input);
* RSS does not grow over the steady part (median of its last third vs. its middle third).

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_FAULTS = (
    "write_radolan=EIO:0.04,write_netcdf=ENOSPC:0.01,write_sidecar=EIO:0.04,"
    "correction:write_netcdf=ENOSPC:0.5"
)
#: The grid of the one valid product that does not belong (rows, cols): DWD's extended
#: national grid, where the stream uses small crops of the national one.
ODD_GRID = (1100, 900)
#: Exit status of ``radinfill serve`` when it cannot start (another instance holds the lock).
EXIT_STARTUP = 2
START = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)


@dataclass
class Delivery:
    """One file to put into the incoming directory."""

    name: str
    data: bytes
    how: str  # rename | move | copy | slow
    key: tuple[str, str] | None  # (product, nominal ISO) of a valid input; None for bad input
    kind: str = "valid"  # valid | duplicate | correction | odd_name | truncated | garbled | late
    # | odd_grid
    at: float = 0.0  # position in the stream (step index; extras fall between steps)


@dataclass
class Feed:
    """The deliveries of the run, split where the kills stop (phase 1 | phase 2)."""

    chaos: list[Delivery]
    steady: list[Delivery]
    missing: set[tuple[str, str]]
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def bad(self) -> set[str]:
        return {d.name for d in self.chaos + self.steady if d.key is None}

    def final(self) -> dict[tuple[str, str], bytes]:
        """Key -> the content delivered last for it (what its output must come from)."""
        last: dict[tuple[str, str], bytes] = {}
        for delivery in self.chaos + self.steady:
            if delivery.key is not None:
                last[delivery.key] = delivery.data
        return last


def make_feed(root: Path, products: int, grid: tuple[int, int], burst: int, seed: int) -> Feed:
    """Generate the stream and plan its messy delivery."""
    from radinfill import radolan, stream

    rng = random.Random(seed)
    manifest = stream.write_stream(root, grid=grid, steps=products, start=START, seed=seed)
    steps = [(s.path.name, s.path.read_bytes(), s.time) for s in manifest.steps]
    for s in manifest.steps:
        s.path.unlink()
    key = {name: ("RY", moment.isoformat()) for name, _, moment in steps}
    count = len(steps)
    picks = rng.sample(range(2, count), k=min(count - 2, max(14, count // 8)))
    share = max(1, len(picks) // 7)
    missing = set(picks[:2])
    late = set(picks[2 : 2 + share])
    corrected = set(picks[2 + share : 2 + 3 * share])
    duplicated = set(picks[2 + 3 * share : 2 + 4 * share])
    renamed = picks[2 + 4 * share : 2 + 5 * share]
    spoiled = picks[2 + 5 * share :]
    odd = {i: odd_name(steps[i][0], n) for n, i in enumerate(renamed)}

    ordered: list[Delivery] = []
    held: list[Delivery] = []
    for i, (name, data, _) in enumerate(steps):
        if i in missing:
            continue
        how = rng.choice(["rename", "rename", "move", "copy", "slow"])
        if i in odd:
            ordered.append(Delivery(odd[i], data, how, key[name], "odd_name", at=i))
            continue
        if i in late:
            held.append(Delivery(name, data, how, key[name], "late"))
            continue
        ordered.append(Delivery(name, data, how, key[name], at=i))
        if i in corrected:
            fld = radolan.loads(data, name)[0]
            values = fld.values.copy()
            valid = np.flatnonzero(~np.isnan(values))
            values.flat[valid[:: max(1, valid.size // 50)]] += 0.5
            fixed = radolan.dumps(fld.replace(values=values), name)
            at = i + rng.randint(8, 30) + 0.5  # after the original's shuffle block
            ordered.append(Delivery(name, fixed, "rename", key[name], "correction", at))
        if i in duplicated:
            other = name if rng.random() < 0.5 else f"{name}-again"
            at = i + rng.randint(8, 20) + 0.5
            ordered.append(Delivery(other, data, "copy", key[name], "duplicate", at))
    for n, i in enumerate(spoiled):
        name, data, _ = steps[i]
        bad_name = f"raa01-ry_10000-bad{n:04d}-dwd---bin"
        if n % 2:
            bad = Delivery(bad_name, data[: len(data) // 2], "copy", None, "truncated", i + 0.5)
        else:
            junk = bytes(rng.randrange(256) for _ in range(48))
            bad = Delivery(bad_name, junk + data[48:], "rename", None, "garbled", i + 0.5)
        ordered.append(bad)
    ordered.sort(key=lambda d: d.at)
    for block in range(0, len(ordered), 6):  # out of order within blocks
        chunk = ordered[block : block + 6]
        rng.shuffle(chunk)
        ordered[block : block + 6] = chunk
    split = int(len(ordered) * 0.6)
    chaos, steady = ordered[:split], ordered[split:]
    for delivery in steady[:burst]:
        delivery.how = "rename" if delivery.how == "slow" else delivery.how
    middle = max(burst, len(steady) // 2)  # after the burst, in one process lifetime
    steady = [*steady[:middle], odd_grid(root, seed), *steady[middle:], *held]  # late: last
    feed = Feed(chaos, steady, {key[steps[i][0]] for i in missing})
    feed.counts.update(d.kind for d in chaos + steady)
    feed.counts["burst"] = min(burst, len(steady))
    feed.counts["missing"] = len(missing)
    return feed


def odd_name(name: str, n: int) -> str:
    """``name`` made awkward: bytes that are not UTF-8 (a ``str`` with surrogate escapes, as
    Python lists such a name), or spaces, an umlaut and shell characters; every other one."""
    if n % 2 == 0:
        return os.fsdecode(os.fsencode(name) + b"\xff\xfe")
    return f"{name} \u00fc#%&'(1)"


def odd_grid(root: Path, seed: int) -> Delivery:
    """A valid RY product on :data:`ODD_GRID`: it must be quarantined (``wrong_grid``), not
    published, and must not disturb the products on the stream's grid."""
    from radinfill import stream

    step = stream.write_stream(
        root / "odd-grid", grid=ODD_GRID, steps=1, start=START, seed=seed + 1
    ).steps[0]
    name = f"raa01-ry_10000-oddgrid-{ODD_GRID[0]}x{ODD_GRID[1]}-dwd---bin"
    return Delivery(name, step.path.read_bytes(), "rename", None, "odd_grid")


def deliver(delivery: Delivery, incoming: Path, staging: Path) -> None:
    """Put one file into ``incoming`` the way its ``how`` says."""
    target = incoming / delivery.name
    if delivery.how == "rename":
        tmp = incoming / f".{delivery.name}.tmp"
        tmp.write_bytes(delivery.data)
        os.replace(tmp, target)
    elif delivery.how == "move":
        tmp = staging / delivery.name
        tmp.write_bytes(delivery.data)
        os.replace(tmp, target)
    elif delivery.how == "copy":
        target.write_bytes(delivery.data)
    else:  # slow: in pieces under the final name
        pieces = np.array_split(np.frombuffer(delivery.data, dtype=np.uint8), 6)
        with open(target, "wb") as f:
            for piece in pieces:
                f.write(piece.tobytes())
                f.flush()
                time.sleep(0.08)


class Serve:
    """``radinfill serve`` as a child process, restarted after each kill; its logs are
    ``NAME-NNN.log`` in ``logs``, one per start."""

    def __init__(self, config: Path, logs: Path, env: dict[str, str], name: str = "serve") -> None:
        self.config, self.logs, self.env, self.name = config, logs, env, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log: Path | None = None

    def start(self) -> None:
        self.starts += 1
        self.log = self.logs / f"{self.name}-{self.starts:03d}.log"
        command = [sys.executable, "-m", "radinfill", "serve", "--config", str(self.config)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        assert self.log is not None
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.events("service_ready"):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve not ready in {timeout} s: {self.tail()}")
            time.sleep(0.1)

    def signal(self, signum: int, timeout: float = 90.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        return self.proc.wait(timeout)

    def rss_mb(self) -> float | None:
        """The service's resident set (MB), counted page by page (``smaps_rollup``): ``VmRSS``
        reads per-CPU counters that lag by up to tens of MB on a machine with many CPUs."""
        assert self.proc is not None
        try:
            text = Path(f"/proc/{self.proc.pid}/smaps_rollup").read_text()
        except OSError:
            return None
        line = next((x for x in text.splitlines() if x.startswith("Rss:")), None)
        return int(line.split()[1]) / 1024 if line else None

    def tail(self) -> str:
        assert self.log is not None
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


class Reader(threading.Thread):
    """Polls the output tree and decodes every file under an output name it has not seen."""

    def __init__(self, outgoing: Path) -> None:
        super().__init__(daemon=True)
        self.outgoing = outgoing
        self.stop = threading.Event()
        self.seen: set[tuple[str, int, int]] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        import netCDF4

        from radinfill import radolan

        while not self.stop.is_set():
            for entry in list(os.scandir(self.outgoing)) if self.outgoing.exists() else []:
                if entry.name.startswith(".") or entry.name == "latest":
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                    ident = (entry.name, stat.st_size, stat.st_mtime_ns)
                    if ident in self.seen:
                        continue
                    path = Path(entry.path)
                    if entry.name.endswith(".json"):
                        json.loads(path.read_bytes())
                    elif entry.name.endswith(".nc"):
                        # From memory: netCDF-C opens UTF-8 names only, downstream has any.
                        with netCDF4.Dataset("soak-reader", memory=path.read_bytes()) as ds:
                            for variable in ds.variables.values():
                                variable[:]
                    else:
                        radolan.read_one(path)
                    self.seen.add(ident)
                except FileNotFoundError:
                    continue
                except Exception as err:
                    self.errors.append(f"{entry.name}: {err!r}")
            time.sleep(0.05)


def check(root: Path, feed: Feed) -> dict[str, Any]:
    """The end-of-run checks (see the module docstring)."""
    from radinfill.daemon.ledger import Ledger

    outgoing = root / "outgoing"
    sets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sidecar in outgoing.glob("*.json"):
        record = json.loads(sidecar.read_text())
        record["_name"] = sidecar.name.removesuffix(".json")
        sets.setdefault((record["product"], record["nominal_time"]), []).append(record)
    problems: list[str] = []
    final = feed.final()
    lost = 0
    with Ledger(root / "state" / "ledger.sqlite") as ledger:
        for key, data in sorted(final.items()):
            missing, found = _check_key(key, data, sets.get(key, []), outgoing, ledger)
            lost += missing
            problems += found
        quarantined = {Path(p).name for p, _, _ in ledger.quarantined()}
    problems += [f"{key}: output for a step never delivered" for key in feed.missing & set(sets)]
    if set(sets) - set(final):
        problems.append(f"output sets without a valid input: {sorted(set(sets) - set(final))}")
    with sqlite3.connect(root / "state" / "ledger.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM inputs").fetchone()[0]
    if stored != len(sets):
        problems.append(f"ledger has {stored} inputs, output tree {len(sets)} sets")
    quarantine = root / "quarantine"
    copies = {p.name for p in quarantine.iterdir() if not p.name.endswith(".reason.json")}
    reasons = {p.name.removesuffix(".reason.json") for p in quarantine.glob("*.reason.json")}
    for what, names in (("copies", copies), ("reasons", reasons), ("ledger", quarantined)):
        if names != feed.bad:
            problems.append(f"quarantine {what} differ from the bad inputs: {names ^ feed.bad}")
    temporary = [p.name for p in outgoing.iterdir() if p.name.startswith(".")]
    if temporary:
        problems.append(f"temporary files left: {temporary}")
    return {"outputs_checked": len(final) - lost, "lost": lost, "problems": problems}


def _check_key(
    key: tuple[str, str], data: bytes, records: list[dict[str, Any]], outgoing: Path, ledger: Any
) -> tuple[bool, list[str]]:
    """(lost, problems) of one valid input key's output set."""
    from radinfill import holes, radolan

    if len(records) != 1:
        return True, [f"{key}: {len(records)} output sets"]
    record = records[0]
    if record["input"]["sha256"] != hashlib.sha256(data).hexdigest():
        return True, [f"{key}: output from an older content"]
    problems = [
        f"{key}: checksum of {file}"
        for file, digest in record["outputs"].items()
        if hashlib.sha256((outgoing / file).read_bytes()).hexdigest() != digest
    ]
    source = radolan.loads(data, record["_name"])[0]
    written = outgoing / record["_name"]
    output = radolan.read_one(written)
    failure = holes.detect(source).failure
    valid = ~np.isnan(source.values)
    if not np.array_equal(output.values[valid], source.values[valid]):
        problems.append(f"{key}: valid pixels changed")
    if np.isnan(output.values[failure]).any():
        problems.append(f"{key}: hole pixels left unfilled")
    if not failure.any() and written.read_bytes() != data:
        problems.append(f"{key}: pass-through not byte-identical")
    entry = ledger.current(key[0], datetime.fromisoformat(key[1]))
    if entry is None or (entry.version, entry.sha256) != (
        record["version"],
        record["input"]["sha256"],
    ):
        problems.append(f"{key}: ledger disagrees ({entry})")
    return False, problems


class Sampler(threading.Thread):
    """Samples the service's RSS every 0.25 s, tagged with the phase of the run."""

    def __init__(self, serve: Serve) -> None:
        super().__init__(daemon=True)
        self.serve, self.phase = serve, "chaos"
        self.samples: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            rss = self.serve.rss_mb()
            if rss is not None:
                self.samples.append((self.phase, rss))

    def steady(self) -> tuple[float, float]:
        """Median RSS of the middle and the last third of the steady phase (MB)."""
        values = [rss for phase, rss in self.samples if phase == "steady"]
        third = max(1, len(values) // 3)
        middle = values[third : 2 * third] or values or [0.0]
        return statistics.median(middle), statistics.median(values[2 * third :] or middle)


def write_config(root: Path, model: str) -> Path:
    """The service configuration of the soak: fast settling, frequent scans, JSON logs."""
    service = {
        "incoming": [str(root / "incoming")],
        "patterns": ["raa01-*"],
        "outgoing": str(root / "outgoing"),
        "state_dir": str(root / "state"),
        "quarantine": str(root / "quarantine"),
        "model": model,
        "device": "cpu",
        "settle_s": 0.3,
        "settle_timeout_s": 8.0,
        "reconcile_interval_s": 2.0,
        "retry_backoff_s": 2.0,
        "horizon_s": 1e9,
        "shadow_interval_s": 0.0,
    }
    lines = ["[service]", *(f"{k} = {json.dumps(v)}" for k, v in service.items())]
    lines += ["[metrics]", "port = 0", "[logging]", 'format = "json"', ""]
    config = root / "radinfill.toml"
    config.write_text("\n".join(lines))
    return config


def interrupt(serve: Serve, signals: list[str], rng: random.Random, max_uptime: float) -> list[int]:
    """Send each signal a random time after the service is ready, restart it; returns the
    exit statuses after SIGTERM."""
    statuses = []
    for n, name in enumerate(signals, 1):
        delay = rng.uniform(0.05, max_uptime)
        time.sleep(delay)
        status = serve.signal(signal.SIGKILL if name == "KILL" else signal.SIGTERM)
        if name == "TERM":
            statuses.append(status)
        print(f"{name} {n}/{len(signals)} after {delay:.2f} s", file=sys.stderr, flush=True)
        serve.start()
        serve.wait_ready()
    return statuses


def second_instance(serve: Serve, state: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Start another ``radinfill serve`` on ``serve``'s configuration (same state directory)
    while ``serve`` runs; what it did: its exit status (None: still running after
    ``timeout``, then killed), whether it named the running instance, whether the running one
    still holds the lock (its pid in the lock file) and is alive."""
    from radinfill.daemon.service import LOCK_FILE

    assert serve.proc is not None
    second = Serve(serve.config, serve.logs, serve.env, name="second")
    second.start()
    assert second.proc is not None
    assert second.log is not None
    try:
        status: int | None = second.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        second.proc.kill()
        second.proc.wait()
        status = None
    holder = (state / LOCK_FILE).read_text().strip()
    return {
        "exit_status": status,
        "named_the_running_one": f"pid {serve.proc.pid}" in second.log.read_text(errors="replace"),
        "lock_kept": holder == str(serve.proc.pid),
        "running_one_alive": serve.proc.poll() is None,
    }


def drain(root: Path, feed: Feed, timeout: float) -> bool:
    """Wait until every valid key has outputs and every bad input is quarantined."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(list((root / "outgoing").glob("*.json")))
        quarantined = len(list((root / "quarantine").glob("*.reason.json")))
        if done >= len(feed.final()) and quarantined >= len(feed.bad):
            time.sleep(5.0)  # two more reconcile scans: nothing left over
            return True
        time.sleep(0.5)
    return False


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from radinfill.radolan.grids import parse_size

    rng = random.Random(args.seed)
    incoming, staging, logs = root / "incoming", root / "staging", root / "logs"
    for directory in (incoming, staging, logs):
        directory.mkdir(parents=True)
    print("generating the stream ...", file=sys.stderr, flush=True)
    grid = parse_size(args.grid)
    feed = make_feed(root / "generated", args.products, grid, args.burst, args.seed)
    env = {**os.environ, "RADINFILL_FAULTS": args.faults, "RADINFILL_FAULTS_SEED": str(args.seed)}
    serve = Serve(write_config(root, args.model), logs, env)
    reader, sampler = Reader(root / "outgoing"), Sampler(serve)
    chaos_done = threading.Event()
    fed: Counter[str] = Counter()

    def feeder() -> None:
        for delivery in feed.chaos:
            deliver(delivery, incoming, staging)
            fed[delivery.kind] += 1
            time.sleep(args.interval)
        chaos_done.wait()
        for n, delivery in enumerate(feed.steady):
            deliver(delivery, incoming, staging)
            fed[delivery.kind] += 1
            time.sleep(args.interval if n >= args.burst else 0.0)

    began = time.monotonic()
    serve.start()
    serve.wait_ready()
    reader.start()
    sampler.start()
    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()
    signals = ["KILL"] * args.kills + ["TERM"] * args.terms
    rng.shuffle(signals)
    statuses = interrupt(serve, signals, rng, args.max_uptime)
    sampler.phase = "steady"
    chaos_done.set()
    second = second_instance(serve, root / "state")
    thread.join()
    drained = drain(root, feed, args.drain_timeout)
    statuses.append(serve.signal(signal.SIGTERM))
    sampler.stop.set()
    reader.stop.set()
    reader.join()
    sampler.join()
    elapsed = time.monotonic() - began
    results = check(root, feed)
    middle, last = sampler.steady()
    results |= {
        "products": args.products,
        "valid_keys": len(feed.final()),
        "deliveries": dict(fed),
        "bad_inputs": len(feed.bad),
        "kills": args.kills,
        "terms": args.terms,
        "term_exit_status": statuses,
        "starts": serve.starts,
        "faults_injected": sum(len(_events(log, "fault_injected")) for log in logs.iterdir()),
        "correction_faults": sum(
            '"correction:' in line
            for log in logs.iterdir()
            for line in _events(log, "fault_injected")
        ),
        "second_instance": second,
        "product_failures": sum(len(_events(log, "product_failed")) for log in logs.iterdir()),
        "files_seen_by_reader": len(reader.seen),
        "partial_seen": len(reader.errors),
        "reader_errors": reader.errors[:10],
        "peak_rss_mb": round(max((rss for _, rss in sampler.samples), default=0.0), 1),
        "steady_rss_mb": [round(middle, 1), round(last, 1)],
        "seconds": round(elapsed, 1),
    }
    problems = results["problems"]
    if not drained:
        problems.append(f"not every input handled within {args.drain_timeout} s")
    if second != {
        "exit_status": EXIT_STARTUP,
        "named_the_running_one": True,
        "lock_kept": True,
        "running_one_alive": True,
    }:
        problems.append(f"a second instance on the same state directory: {second}")
    if any(status != 0 for status in statuses):
        problems.append(f"SIGTERM exit statuses {statuses}")
    if reader.errors:
        problems.append(f"{len(reader.errors)} partial or undecodable outputs seen")
    if last - middle > max(25.0, 0.05 * middle):
        problems.append(f"RSS grew {last - middle:.0f} MB over the steady part")
    return results


def _events(log: Path, name: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if f'"{name}"' in line]


def main() -> int:
    from radinfill.defaults import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terms", type=int, default=3)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--grid", default="160x160")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="RADINFILL_FAULTS rules")
    parser.add_argument("--interval", type=float, default=0.1, help="s between deliveries")
    parser.add_argument("--max-uptime", type=float, default=6.0, help="s before a kill, at most")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--keep", help="work in this directory (kept) instead of a temporary one")
    args = parser.parse_args()
    args.model = args.model or DEFAULT_MODEL
    if args.keep:
        root = Path(args.keep)
        shutil.rmtree(root, ignore_errors=True)
        results = run(args, root)
    else:
        with tempfile.TemporaryDirectory(prefix="radinfill-soak-") as tmp:
            results = run(args, Path(tmp))
    rows = [
        ("valid products delivered (keys)", results["valid_keys"]),
        ("deliveries by kind", results["deliveries"]),
        ("bad inputs", results["bad_inputs"]),
        ("SIGKILLs / SIGTERMs / starts", f"{args.kills} / {args.terms} / {results['starts']}"),
        ("faults injected (writes)", results["faults_injected"]),
        ("  of them full disk in corrections", results["correction_faults"]),
        ("second instance exit status", results["second_instance"]["exit_status"]),
        ("product failures (retried)", results["product_failures"]),
        ("files decoded by the reader", results["files_seen_by_reader"]),
        ("outputs checked", results["outputs_checked"]),
        ("lost", results["lost"]),
        ("partial seen", results["partial_seen"]),
        ("peak RSS (MB)", results["peak_rss_mb"]),
        ("steady RSS middle -> last third (MB)", results["steady_rss_mb"]),
        ("run time (s)", results["seconds"]),
    ]
    for label, value in rows:
        print(f"{label:<38} {value}")
    for problem in results["problems"]:
        print(f"PROBLEM: {problem}")
    print("PASS" if not results["problems"] else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0 if not results["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
