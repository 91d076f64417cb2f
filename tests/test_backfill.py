"""``radinfill backfill``: planning, sharding, resuming, torchrun ranks, sameness with the service.

Real files in temp directories, the real pipeline and ledger, real ``radinfill backfill`` and
``torchrun`` processes (gloo, CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from radinfill import holes, radolan, stream
from radinfill.daemon import backfill, outputs
from radinfill.daemon.backfill import Item
from radinfill.defaults import SHIPPED_MODEL
from radinfill.model import baselines, features
from tests.conftest import REPO
from tests.service_helpers import (
    check_outputs,
    make_config,
    output_sets,
    running,
    service_document,
    wait_for,
    write_toml,
)

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
STEPS = 10
GRID = (160, 160)
#: Bound (s) for a backfill process to start (torch, the shipped model's checks) and write a
#: field, on a 2-core machine that other jobs may load heavily.
LOADED = 300.0


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dated archive tree (two day directories) with radar outages, plus junk."""
    root = tmp_path_factory.mktemp("archive")
    staging = root / "staging"
    manifest = stream.write_stream(staging, grid=GRID, steps=STEPS, start=START, seed=7)
    for step in manifest.steps:
        day = root / "src" / f"{step.time:%Y%m%d}" / f"{step.time:%H}"
        day.mkdir(parents=True, exist_ok=True)
        shutil.copy2(step.path, day / step.path.name)
    shutil.rmtree(staging)
    return root / "src"


def inputs(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("raa01-*") if p.is_file())


def fill(src: Path, out: Path, *args: str, env: dict[str, str] | None = None):
    command = [sys.executable, "-m", "radinfill", "backfill", str(src), str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def summary(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f".backfill/summary-{rank:03d}.json").read_text())


def handled(out: Path, rank: int = 0) -> int:
    """Files the last run of ``rank`` took through the pipeline."""
    return sum(summary(out, rank)["outcomes"].values())


def radolan_outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.glob("raa01-*-bin")}


# -- planning and sharding (pure) ------------------------------------------------------------


def item(minute: int | None, name: str = "f", mtime: int = 0) -> Item:
    moment = None if minute is None else START + timedelta(minutes=minute)
    return Item(Path(f"{name}{minute}"), None if minute is None else "RY", moment, mtime)


@given(
    st.lists(st.integers(0, 40), max_size=60).map(lambda ms: [item(m * 5) for m in ms]),
    st.integers(1, 6),
)
def test_shards_are_contiguous_balanced_and_never_split_a_time(items, world):
    shards = backfill.shard(items, world)
    assert len(shards) == world
    assert sorted(map(str, (i.path for s in shards for i in s))) == sorted(
        str(i.path) for i in items
    )
    times = [{i.time for i in s} for s in shards]
    for a in range(world):
        for b in range(a + 1, world):
            assert not times[a] & times[b]  # one nominal time -> one rank -> one writer
            if times[a] and times[b]:
                assert max(times[a]) < min(times[b])  # contiguous stretches in rank order
    distinct = len({i.time for i in items})
    if distinct >= world * 3 and len(items) == distinct:
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1  # one file per time: balanced to one file


def test_undated_files_go_to_rank_zero_and_corrections_keep_their_order():
    items = [item(5, "b", mtime=2), item(None, "junk"), item(5, "a", mtime=1), item(0)]
    shards = backfill.shard(items, 2)
    assert next(i.path.name for i in shards[0]) == "junkNone"
    flat = [i for s in shards for i in s if i.time is not None]
    same = [i.path.name for i in flat if i.time == START + timedelta(minutes=5)]
    assert same == ["a5", "b5"]  # older delivery first, the re-delivery becomes current


def test_plan_walks_the_tree_filters_time_and_skips_hidden_and_symlinks(archive, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(archive, src)
    files = inputs(src)
    (src / ".hidden").mkdir()
    shutil.copy(files[0], src / ".hidden" / files[0].name)
    os.symlink(files[1], src / "raa01-link")
    (src / "raa01-junk").write_bytes(b"not a product")

    everything = backfill.plan(src, ["raa01-*"])
    assert [i.path for i in everything] == [src / "raa01-junk", *files]  # undated first
    assert [i.time for i in everything[1:]] == [START + k * timedelta(minutes=5) for k in range(10)]

    ranged = backfill.plan(
        src, ["raa01-*"], start=START + timedelta(minutes=10), end=START + timedelta(minutes=20)
    )
    assert [i.path for i in ranged] == files[2:5]  # undated files need the whole range
    assert backfill.plan(src, ["raa01-*"], products=["RW"]) == [everything[0]]


def test_the_output_tree_must_lie_outside_the_archive(tmp_path):
    for out in (tmp_path, tmp_path / "out", tmp_path.parent):
        with pytest.raises(ValueError, match="must lie outside the inputs"):
            backfill.settings([tmp_path], out, model="baseline:advection")


# -- whole runs ------------------------------------------------------------------------------


def test_backfill_writes_what_the_service_writes(archive, tmp_path):
    """Same inputs, same outputs: the service (backlog in its watched directory) and a
    backfill of the same files write byte-identical RADOLAN products."""
    config = make_config(tmp_path / "svc")
    config.incoming[0].mkdir(parents=True)
    for path in inputs(archive):
        shutil.copy2(path, config.incoming[0] / path.name)
    with running(config) as service:
        wait_for(lambda: service.processed >= STEPS, 120, "the service to handle the backlog")

    out = tmp_path / "fill"
    done = fill(archive, out, "--model", "baseline:advection", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "10 planned, 0 already done" in done.stdout
    outcomes = summary(out)["outcomes"]
    assert outcomes["processed"] >= 1  # some steps have holes, the others pass through
    assert outcomes["processed"] + outcomes["passthrough"] == service.processed == STEPS
    served, filled = radolan_outputs(config.outgoing), radolan_outputs(out)
    assert len(filled) == STEPS
    assert served.keys() == filled.keys()
    assert served == filled
    checked = check_outputs(out, backfill.STATE_DIR)  # complete, consistent sets
    assert len(checked) == STEPS
    assert sum(c["hole_pixels"] for c in checked.values()) > 0
    for path in inputs(archive):
        given, written = radolan.read_one(path), radolan.read_one(out / path.name)
        hole = holes.detect(given).failure
        valid = np.isfinite(given.values)
        assert np.array_equal(written.values[valid], given.values[valid])  # untouched
        assert np.isfinite(written.values[hole]).all()  # filled


def test_by_default_an_archive_is_filled_with_the_frames_after_each_outage(archive, tmp_path):
    """The default of a backfill is bidirectional_boundary: each infilled field equals that
    method run on the archive's own frames before and after it (an archive is not real
    time); --causal keeps to the past, as the service does."""
    out = tmp_path / "offline"
    done = fill(archive, out, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    paths = sorted(inputs(archive), key=lambda p: p.name)  # the names sort by time
    fields = [radolan.read_one(path) for path in paths]
    raw = np.stack([f.values for f in fields])
    failures = [holes.detect(f).failure for f in fields]
    method = baselines.get_method("bidirectional_boundary")
    compared = with_future = 0
    for t, (path, field, hole) in enumerate(zip(paths, fields, failures, strict=True)):
        if not hole.any():
            continue
        outage = [bool(h.any()) for h in failures[: t + 1]]
        length = features.context_length(outage, features.DEFAULT_WINDOW)
        future = raw[t + 1 : t + 1 + features.FUTURE_FRAMES]
        expected = method(raw[t + 1 - length : t + 1], hole, future if len(future) else None)
        written = radolan.read_one(out / path.name).values
        precision = field.header.precision
        assert np.abs(written[hole] - expected[hole]).max() <= precision / 2 + 1e-6
        sidecar = out / f"{outputs.netcdf_stem(path.name)}.json"
        assert "bidirectional_boundary" in sidecar.read_text()
        compared += 1
        with_future += len(future) > 0
    assert compared >= 2
    assert with_future >= 1

    causal = tmp_path / "causal"
    done = fill(archive, causal, "--causal", "--model", "baseline:advection_boundary")
    assert done.returncode == 0, done.stderr
    differs = [
        name for name, data in radolan_outputs(causal).items() if data != (out / name).read_bytes()
    ]
    assert len(differs) >= with_future  # the future changed every field that had one


def test_a_second_run_resumes_and_a_range_run_does_only_its_range(archive, tmp_path):
    out = tmp_path / "out"
    half = (START + timedelta(minutes=20)).isoformat()
    first = fill(archive, out, "--to", half, "--model", "baseline:advection")
    assert first.returncode == 0, first.stderr
    assert len(radolan_outputs(out)) == 5
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("raa01-*")}

    second = fill(archive, out, "--model", "baseline:advection")
    assert second.returncode == 0, second.stderr
    assert "10 planned, 5 already done" in second.stdout
    assert handled(out) == 5
    assert len(radolan_outputs(out)) == STEPS
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items())
    third = fill(archive, out, "--model", "baseline:advection")
    assert "10 planned, 10 already done, nothing" in third.stdout


def test_bad_inputs_are_quarantined_and_a_redelivery_becomes_version_two(archive, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(archive, src)
    files = inputs(src)
    data = files[3].read_bytes()
    (src / "raa01-truncated").write_bytes(data[: len(data) // 2])
    corrected = radolan.read_one(files[3])
    values = corrected.values.copy()
    row, col = np.argwhere(~np.isnan(values))[0]
    values[row, col] += 1.0  # a valid pixel changed upstream
    later = src / "zz" / files[3].name
    later.parent.mkdir()
    radolan.write(corrected.replace(values=values), later)
    os.utime(later, ns=(files[3].stat().st_mtime_ns + 10**9,) * 2)

    out = tmp_path / "out"
    done = fill(src, out, "--model", "baseline:advection")
    assert done.returncode == 0, done.stderr
    assert summary(out)["outcomes"]["quarantined"] == 1
    assert handled(out) == 12
    reason = json.loads((out / ".backfill/quarantine/raa01-truncated.reason.json").read_text())
    assert reason["kind"] == "truncated"
    sidecar = json.loads((out / f"{files[3].name}.json").read_text())
    assert sidecar["version"] == 2
    assert sidecar["input"]["path"] == str(later)
    assert radolan.read_one(out / files[3].name).values[row, col] == values[row, col]


def test_sigterm_stops_after_the_file_in_hand_and_sigkill_leaves_nothing_partial(archive, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "radinfill", "backfill", str(archive), str(out)]
    slow = [*command, "--model", str(SHIPPED_MODEL), "--device", "cpu"]
    log = (tmp_path / "stderr.log").open("w")  # a file, never a pipe nobody reads
    proc = subprocess.Popen(slow, stdout=subprocess.PIPE, stderr=log, text=True)
    wait_for(lambda: len(radolan_outputs(out)) >= 1, LOADED, "a first output")
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in stdout
    stopped_at = len(radolan_outputs(out))
    assert 1 <= stopped_at < STEPS

    proc = subprocess.Popen(slow, stdout=subprocess.PIPE, stderr=log, text=True)
    wait_for(lambda: len(radolan_outputs(out)) > stopped_at, LOADED, "another output")
    proc.kill()
    proc.wait(timeout=30)
    log.close()
    leftover = out / ".raa01-ry_10000-2506011245-dwd---bin.part-killed"
    leftover.write_bytes(b"half a product")  # what a kill inside a write leaves behind

    done = subprocess.run(slow, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()
    assert len(check_outputs(out, backfill.STATE_DIR)) == STEPS
    assert not [p for p in out.rglob(".*.part-*")]
    versions = {
        s[2].name: json.loads(s[2].read_text())["version"] for s in output_sets(out).values()
    }
    assert set(versions.values()) == {1}  # a file handled before the kill is not redone


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ranks_split_the_archive_and_write_what_one_process_writes(archive, tmp_path):
    model = ["--model", str(SHIPPED_MODEL), "--device", "cpu"]
    single = fill(archive, tmp_path / "one", *model)
    assert single.returncode == 0, single.stderr

    out = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command = [
        *torchrun,
        "--master-port",
        str(free_port()),
        "-m",
        "radinfill",
        "backfill",
        str(archive),
        str(out),
        *model,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert radolan_outputs(out) == radolan_outputs(tmp_path / "one")

    written: list[set[str]] = []
    for rank in (0, 1):
        assert summary(out, rank)["world"] == 2
        assert handled(out, rank) == 5
        db = sqlite3.connect(out / f".backfill/ledger-{rank:03d}.sqlite")
        written.append({row[0] for row in db.execute("SELECT path FROM files")})
        db.close()
    assert not written[0] & written[1]
    assert len(written[0] | written[1]) == STEPS
    assert "backfill rank 1/2" in done.stderr  # each rank reports its own progress


def test_slurm_script_runs_a_rendezvous_of_two_ranks_and_requeues_when_interrupted(
    archive, tmp_path
):
    """``deploy/slurm/backfill.sbatch`` with a stand-in ``srun``/``scontrol`` (the host is the
    only node) and the real torchrun: two ranks fill the archive; then a job whose ranks were
    stopped requeues itself."""
    stubs = tmp_path / "venv" / "bin"
    stubs.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    bodies = {
        "srun": 'echo "srun $*" >> "$CALLS"\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"',
        "scontrol": 'echo "scontrol $*" >> "$CALLS"\n[[ $1 == show ]] && echo 127.0.0.1\nexit 0',
        "python": f'exec "{sys.executable}" "$@"',
        "torchrun": f'exec "{sys.executable}" -m torch.distributed.run "$@"',
    }
    for name, body in bodies.items():
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    (stubs / "activate").write_text(f'export PATH="{stubs}:$PATH"\n')
    out = tmp_path / "out"
    env = {
        **os.environ,
        "VENV": str(stubs.parent),
        "CALLS": str(calls),
        "SRC": str(archive),
        "OUT": str(out),
        "RANKS_PER_NODE": "2",
        "RDZV_PORT": str(free_port()),
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_NNODES": "1",
        "SLURM_CPUS_PER_TASK": "2",
    }
    script = REPO / "deploy" / "slurm" / "backfill.sbatch"
    config = write_toml(tmp_path / "svc.toml", service_document(tmp_path))
    done = subprocess.run(
        ["bash", str(script)],
        env=env | {"CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(radolan_outputs(out)) == STEPS
    assert [summary(out, r)["world"] for r in (0, 1)] == [2, 2]
    assert "scontrol requeue" not in calls.read_text()

    def job(stopped: bool) -> subprocess.CompletedProcess[str]:
        """The script again, with torchrun standing in for ranks stopped or failed."""
        flag = "true" if stopped else "false"
        body = f'echo \'{{"interrupted": {flag}}}\' > "$OUT/.backfill/summary-000.json"\nexit 1'
        (stubs / "torchrun").write_text(f"#!/bin/bash\n{body}\n")
        return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)

    failed = job(stopped=False)
    assert failed.returncode == 1  # failed files: no requeue, the operator looks first
    assert "scontrol requeue" not in calls.read_text()
    stopped = job(stopped=True)
    assert stopped.returncode == 0, stopped.stderr
    assert calls.read_text().splitlines()[-1] == "scontrol requeue 77"


def test_infill_backfill_and_serve_write_the_same_outputs_over_a_long_outage(tmp_path):
    """One pipeline: a 10-step outage (longer than the 6-frame window) in a 16-step sequence
    gives byte-identical products from the service, ``backfill --causal`` and ``infill``, and
    every field of the outage is filled from the frames before it."""
    src = tmp_path / "src"
    manifest = stream.write_stream(src, grid=GRID, steps=16, start=START, seed=3, outages=False)
    files = [step.path for step in manifest.steps]
    yy, xx = np.mgrid[: GRID[0], : GRID[1]]
    disc = (yy - 80) ** 2 + (xx - 70) ** 2 < 35**2
    for path in files[3:13]:
        clean = radolan.read_one(path)
        values = np.where(disc, np.float32(np.nan), clean.values)
        radolan.write(clean.replace(values=values, nodata=clean.nodata | disc), path)
    model = "baseline:advection"

    config = make_config(tmp_path / "svc", model=model)
    config.incoming[0].mkdir(parents=True)
    with running(config) as service:
        for number, path in enumerate(files, 1):  # delivered one by one, as a feed does
            shutil.copy2(path, config.incoming[0] / path.name)
            wait_for(lambda n=number: service.processed >= n, 60, f"product {number}")
    filled, infilled = tmp_path / "fill", tmp_path / "infill"
    done = fill(src, filled, "--causal", "--model", model, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    command = [sys.executable, "-m", "radinfill", "infill", "--model", model, "-o", str(infilled)]
    done = subprocess.run([*command, *map(str, files)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    served = radolan_outputs(config.outgoing)
    assert len(served) == 16
    assert radolan_outputs(filled) == served
    assert radolan_outputs(infilled) == served
    for step, path in enumerate(files[3:13]):
        written = radolan.read_one(infilled / path.name).values
        assert np.isfinite(written[disc]).all()
        record = json.loads((infilled / f"{path.name}.json").read_text())
        assert record["hole_pixels"] == int(disc.sum())
        # the window reaches back to the last complete frame before the outage
        assert record["window_frames"] >= step + 2
