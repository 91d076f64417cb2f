"""The service's parts one at a time, with real files and real watchdog observers: the work
queue and settling, watching and scanning, the rolling window, output paths and quarantine,
the shadow quality check and the decoding-error labels."""

from __future__ import annotations

import gc
import json
import os
import tarfile
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from radinfill import holes, radolan
from radinfill.daemon import outputs, shadow
from radinfill.daemon.intake import Arrival, WorkQueue, settled
from radinfill.daemon.watcher import Watcher, choose_mode, matches, scan
from radinfill.daemon.window import Context, Window
from radinfill.radolan import Field, RadolanError, grid_for
from radinfill.radolan.sites import OPERATIONAL, RADIUS_KM
from radinfill.stream import StreamManifest, write_stream
from tests.service_helpers import slow_write, wait_for

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> StreamManifest:
    """Eight small complete RY products, 5 minutes apart."""
    directory = tmp_path_factory.mktemp("units-stream")
    return write_stream(directory, grid=(64, 64), steps=8, start=START, seed=1, outages=False)


@pytest.fixture(scope="module")
def fields(stream: StreamManifest) -> list[Field]:
    """The stream's fields with values ``k`` everywhere at step ``k`` (frames identify
    themselves)."""
    out = []
    for k, path in enumerate(stream.files):
        field = radolan.read_one(path)
        out.append(field.replace(values=np.full(field.values.shape, k, dtype=np.float32)))
    return out


def _file(path: Path, mtime: float, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


# -- work queue ------------------------------------------------------------------------------


def test_queue_takes_live_files_first_then_backlog_newest_first(tmp_path: Path) -> None:
    now = time.time()
    old_live = _file(tmp_path / "old-live", now - 300)
    new_live = _file(tmp_path / "new-live", now - 100)
    old_scan = _file(tmp_path / "old-scan", now - 200)
    new_scan = _file(tmp_path / "new-scan", now - 10)  # newest of all, but backlog
    queue = WorkQueue()
    for path, via in [
        (old_scan, "scan"),
        (old_live, "closed"),
        (new_scan, "scan"),
        (new_live, "moved"),
    ]:
        assert queue.put(Arrival.now(path, via))
    order = []
    while (arrival := queue.get(timeout=0.01)) is not None:
        order.append(arrival.path)
        queue.done(arrival)
    assert order == [new_live, old_live, new_scan, old_scan]
    assert len(queue) == 0


def test_queue_holds_a_path_once_and_a_complete_sighting_upgrades_a_partial_one(
    tmp_path: Path,
) -> None:
    path = _file(tmp_path / "a", time.time())
    queue = WorkQueue()
    first = Arrival.now(path, "polled")
    assert queue.put(first)
    assert not queue.put(Arrival.now(path, "polled"))
    assert not queue.put(Arrival.now(path, "closed"))  # upgrade, still one entry
    assert len(queue) == 1
    taken = queue.get(timeout=0.01)
    assert taken is not None
    assert taken.via == "closed"
    assert taken.seen == first.seen  # latency counts from the first sighting
    assert queue.get(timeout=0.01) is None  # no stale second entry
    assert not queue.put(Arrival.now(path, "polled"))  # being worked on: not queued again
    queue.done(taken)
    assert len(queue) == 0
    assert queue.put(Arrival.now(path, "closed"))  # done: a new delivery is queued
    again = queue.get(timeout=0.01)
    assert again is not None
    # a complete sighting while the path is worked on (a correction renamed in) is kept and
    # queued once the path is released
    assert not queue.put(Arrival.now(path, "moved"))
    queue.done(again)
    redelivered = queue.get(timeout=0.01)
    assert redelivered is not None
    assert redelivered.via == "moved"


def test_deferred_arrival_waits_without_blocking_others(tmp_path: Path) -> None:
    slow = _file(tmp_path / "slow", time.time())
    other = _file(tmp_path / "other", time.time() - 60)
    queue = WorkQueue()
    queue.put(Arrival.now(slow, "polled"))
    taken = queue.get(timeout=0.01)
    assert taken is not None
    queue.defer(taken, 0.4)
    assert queue.get(timeout=0.05) is None
    queue.put(Arrival.now(other, "closed"))
    got = queue.get(timeout=0.05)
    assert got is not None
    assert got.path == other
    queue.done(got)
    started = time.monotonic()
    again = queue.get(timeout=2.0)
    assert again is not None
    assert again.path == slow
    assert again.attempts == 1
    assert time.monotonic() - started >= 0.25
    assert queue.oldest_age() >= 0.4


def test_complete_sighting_releases_a_deferred_arrival_at_once(tmp_path: Path) -> None:
    path = _file(tmp_path / "a", time.time())
    queue = WorkQueue()
    queue.put(Arrival.now(path, "polled"))
    taken = queue.get(timeout=0.01)
    assert taken is not None
    queue.defer(taken, 60.0)
    queue.put(Arrival.now(path, "closed"))
    again = queue.get(timeout=0.5)
    assert again is not None
    assert again.via == "closed"


def test_get_wakes_for_a_put_from_another_thread(tmp_path: Path) -> None:
    path = _file(tmp_path / "a", time.time())
    queue = WorkQueue()
    timer = threading.Timer(0.2, lambda: queue.put(Arrival.now(path, "closed")))
    timer.start()
    started = time.monotonic()
    arrival = queue.get(timeout=5.0)
    timer.join()
    assert arrival is not None
    assert arrival.path == path
    assert time.monotonic() - started < 2.0


# -- settling ----------------------------------------------------------------------------------


def test_event_arrivals_are_settled_at_once(tmp_path: Path) -> None:
    for via in ("closed", "moved"):
        ok, _ = settled(Arrival.now(tmp_path / "not-even-there", via), settle_s=60)
        assert ok


def test_polled_file_settles_after_two_quiet_identical_looks(tmp_path: Path) -> None:
    path = _file(tmp_path / "a", time.time(), b"12345")
    arrival = Arrival.now(path, "polled")
    ok, arrival = settled(arrival, settle_s=0.2)
    assert not ok
    assert arrival.stat is not None
    assert arrival.stat[0] == 5
    ok, arrival = settled(arrival, settle_s=0.2)
    assert not ok  # same size, but written less than settle_s ago
    time.sleep(0.25)
    ok, arrival = settled(arrival, settle_s=0.2)
    assert ok


def test_growing_file_does_not_settle(tmp_path: Path) -> None:
    path = _file(tmp_path / "a", time.time() - 60, b"12345")
    ok, arrival = settled(Arrival.now(path, "scan"), settle_s=0.2)
    assert not ok  # first look: nothing to compare with
    with open(path, "ab") as f:
        f.write(b"678")
    os.utime(path, (time.time() - 60, time.time() - 60))  # even with an old mtime
    ok, arrival = settled(arrival, settle_s=0.2)
    assert not ok
    assert arrival.stat is not None
    assert arrival.stat[0] == 8
    ok, _ = settled(arrival, settle_s=0.2)
    assert ok


def test_vanished_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        settled(Arrival.now(tmp_path / "gone", "polled"), settle_s=0.2)


# -- watching and scanning ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("raa01-ry_10000-2506011200-dwd---bin", True),
        ("raa01-ry_10000-2506011200-dwd---bin.gz", True),
        (".raa01-ry_10000-2506011200-dwd---bin.part-x1", False),  # our own atomic writes
        ("raa01-ry_10000-2506011200-dwd---bin.tmp", False),
        ("raa01-ry_10000-2506011200-dwd---bin.part", False),
        ("raa01-ry_10000-2506011200-dwd---bin~", False),
        ("ry.swp", False),
        ("README.txt", False),
    ],
)
def test_matches_takes_pattern_names_but_no_hidden_or_temporary_ones(
    name: str, wanted: bool
) -> None:
    assert matches(name, ["raa01-*", "ry*"]) is wanted


def test_scan_lists_matching_files_newest_first_not_recursively(tmp_path: Path) -> None:
    now = time.time()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    old = _file(a / "raa01-old", now - 100)
    new = _file(b / "raa01-new", now - 10)
    mid = _file(a / "raa01-mid", now - 50)
    _file(a / ".raa01-hidden", now)
    _file(a / "other", now)
    (a / "raa01-dir").mkdir()
    (a / "sub").mkdir()
    _file(a / "sub" / "raa01-deep", now)
    (a / "raa01-link").symlink_to(old)
    assert scan([a, b, tmp_path / "missing"], ["raa01-*"]) == [new, mid, old]


def _mounts(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "mounts"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("directory", "mode"),
    [
        ("/srv/radar/in", "polling"),  # nfs4 at /srv/radar
        ("/srv/radar-local/in", "inotify"),  # not under /srv/radar: a prefix of the name only
        ("/srv/radar/local/in", "inotify"),  # a longer, local mount inside the NFS one
        ("/mnt/my share/in", "polling"),  # cifs, blank escaped as \040
        ("/data/in", "polling"),  # fuse.sshfs
        ("/var/in", "inotify"),  # the root file system
    ],
)
def test_auto_mode_polls_on_network_file_systems(tmp_path: Path, directory: str, mode: str) -> None:
    mounts = _mounts(
        tmp_path,
        "/dev/sda1 / ext4 rw,relatime 0 0",
        "server:/export /srv/radar nfs4 rw 0 0",
        "/dev/sdb1 /srv/radar/local xfs rw 0 0",
        "//nas/share /mnt/my\\040share cifs rw 0 0",
        "user@host:/d /data fuse.sshfs rw 0 0",
        "garbage",
    )
    assert choose_mode(Path(directory), "auto", mounts) == mode


def test_explicit_mode_wins_and_unreadable_mounts_mean_inotify(tmp_path: Path) -> None:
    mounts = _mounts(tmp_path, "server:/export / nfs rw 0 0")
    assert choose_mode(tmp_path, "auto", mounts) == "polling"
    assert choose_mode(tmp_path, "inotify", mounts) == "inotify"
    assert choose_mode(tmp_path, "polling", tmp_path / "missing") == "polling"
    assert choose_mode(tmp_path, "auto", tmp_path / "missing") == "inotify"


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, list[Arrival]]]:
    """An inotify watcher on ``tmp_path / "in"`` collecting its arrivals."""
    arrivals: list[Arrival] = []
    directory = tmp_path / "in"
    watcher = Watcher(
        [directory], ["raa01-*"], mode="inotify", poll_interval_s=1, enqueue=arrivals.append
    )
    watcher.start()
    try:
        yield directory, arrivals
    finally:
        watcher.stop()
        assert not watcher.alive()


def test_inotify_reports_a_slow_write_once_when_closed(
    watched: tuple[Path, list[Arrival]],
) -> None:
    directory, arrivals = watched
    target = directory / "raa01-slow"
    sizes = slow_write(target, b"x" * 4000, chunks=4, pause_s=0.15)
    assert sizes[0] < 4000  # the partial file was visible
    wait_for(lambda: arrivals, 5, "the close event")
    time.sleep(0.3)
    assert [(a.path, a.via) for a in arrivals] == [(target, "closed")]


def test_inotify_reports_rename_in_by_its_final_name_only(
    watched: tuple[Path, list[Arrival]], tmp_path: Path
) -> None:
    directory, arrivals = watched
    (directory / ".raa01-a.tmp").write_bytes(b"a")
    os.replace(directory / ".raa01-a.tmp", directory / "raa01-a")
    elsewhere = tmp_path / "raa01-b"
    elsewhere.write_bytes(b"b")
    os.replace(elsewhere, directory / "raa01-b")  # moved in from another directory
    wait_for(lambda: len(arrivals) >= 2, 5, "two move events")
    time.sleep(0.3)
    seen = sorted((a.path.name, a.via) for a in arrivals)
    assert seen == [("raa01-a", "moved"), ("raa01-b", "moved")]


def test_polling_observer_reports_sightings_that_must_settle(tmp_path: Path) -> None:
    arrivals: list[Arrival] = []
    directory = tmp_path / "in"
    watcher = Watcher(
        [directory], ["raa01-*"], mode="polling", poll_interval_s=0.1, enqueue=arrivals.append
    )
    assert watcher.modes == {directory: "polling"}
    watcher.start()
    try:
        (directory / "raa01-a").write_bytes(b"a")
        wait_for(lambda: arrivals, 5, "a polled sighting")
    finally:
        watcher.stop()
    assert {(a.path.name, a.via) for a in arrivals} == {("raa01-a", "polled")}
    ok, _ = settled(arrivals[0], settle_s=0.1)
    assert not ok  # a sighting is never complete by itself


# -- rolling window ----------------------------------------------------------------------------


def test_window_gives_the_latest_frames_oldest_first(fields: list[Field]) -> None:
    window = Window(window=4, max_context=8)
    for field in fields[:5]:
        window.put(field, outage=False)
    context = window.context(fields[5], outage=True)
    assert context.frames.dtype == np.float32
    assert [float(f[0, 0]) for f in context.frames] == [2, 3, 4, 5]
    assert context.present == (True,) * 4
    assert context.fill == 1.0


def test_window_gap_is_an_all_nan_frame_never_bridged(fields: list[Field]) -> None:
    window = Window(window=4, max_context=8)
    for k in (0, 1, 3):
        window.put(fields[k], outage=False)
    context = window.context(fields[4], outage=False)
    assert context.present == (True, False, True, True)
    assert np.isnan(context.frames[1]).all()
    assert [float(context.frames[k][0, 0]) for k in (0, 2, 3)] == [1, 3, 4]
    assert context.fill == 0.75


def test_window_of_the_first_field_is_the_field_alone(fields: list[Field]) -> None:
    context = Window(window=4, max_context=8).context(fields[3], outage=True)
    assert context.frames.shape == (1, 64, 64)
    assert context.present == (True,)


def test_long_outage_reaches_back_to_complete_frames_up_to_max_context(
    fields: list[Field],
) -> None:
    """Steps 3-6 had holes: the window of 3 would hold only holed frames, so the context
    reaches back to 3 complete frames before the outage began (steps 0-2), capped at
    max_context."""
    for max_context, first in ((10, 0), (6, 2)):
        window = Window(window=3, max_context=max_context)
        for k in range(7):
            window.put(fields[k], outage=k >= 3)
        context = window.context(fields[7], outage=True)
        assert [float(f[0, 0]) for f in context.frames] == list(range(first, 8))
    short = Window(window=3, max_context=10)
    for k in range(7):
        short.put(fields[k], outage=k == 6)  # an outage of one step before the field
    assert len(short.context(fields[7], outage=True).frames) == 5  # 1 + 1 + 3 complete


def test_window_holds_each_frame_once_the_read_only_context(fields: list[Field]) -> None:
    """After a context the window keeps its frames as views of the context's stack: the
    decoded arrays go, and nobody can write into frames the next context reads."""
    decoded = [field.values.copy() for field in fields[:4]]
    alive = [weakref.ref(values) for values in decoded]
    own = [field.replace(values=values) for field, values in zip(fields, decoded, strict=False)]
    del decoded
    window = Window(window=4, max_context=8)
    for k in range(3):
        window.put(own[k], outage=True)
    context = window.context(own[3], outage=True)
    del own
    gc.collect()
    assert [ref() is None for ref in alive] == [True] * 4
    with pytest.raises(ValueError, match="read-only"):
        context.frames[0, 0, 0] = 99.0
    later = window.context(fields[4], outage=True)
    assert [float(frame[0, 0]) for frame in later.frames] == [0, 1, 2, 3, 4]


def test_window_worked_newest_first_keeps_no_earlier_stack_alive(fields: list[Field]) -> None:
    """A frame that leaves the context gets its own copy: a backlog worked newest first would
    otherwise keep every context's stack alive for one of its frames."""
    window = Window(window=3, max_context=8)
    for k in range(8):
        window.put(fields[k], outage=False)
    stacks = [
        weakref.ref(window.context(fields[k], outage=False).frames.base) for k in (7, 6, 5, 4)
    ]
    gc.collect()
    assert len({id(ref()) for ref in stacks if ref() is not None}) == 1  # the last one's views
    assert [float(f[0, 0]) for f in window.context(fields[7], outage=False).frames] == [4, 5, 6, 7]


@pytest.mark.parametrize(
    ("before", "order"),
    [
        pytest.param([0, 1, 2], [3, 4, 5, 6, 7], id="live"),
        pytest.param(list(range(8)), [7, 6, 5, 4, 3], id="newest-first"),
        pytest.param([0, 1, 2], [4, 5, 5, 7, 3, 6], id="gaps-late-and-a-correction"),
    ],
)
def test_window_rewrites_its_stack_in_place_with_the_right_frames(
    fields: list[Field], before: list[int], order: list[int]
) -> None:
    """A context of as many frames as the last, which nobody holds any more, is written into
    the last one's stack; every context holds the fields of its times (truth: each field's
    own values) and NaN for a step that was not there."""
    window = Window(window=4, max_context=8)
    for k in before:
        window.put(fields[k], outage=False)
    seen = set(before)
    stacks = set()
    for k in order:
        seen.add(k)
        stacks.add(_check_context(window.context(fields[k], outage=False), fields, k, seen))
    assert len(stacks) == 1


def test_window_grows_one_stack_over_an_outage(fields: list[Field]) -> None:
    """Over an outage the context grows by a frame per field, in one array twice as long as the
    context before it (here max_context); when the outage is over, the context of a field
    without one gets a small one again."""
    window = Window(window=3, max_context=8)
    for k in range(3):
        window.put(fields[k], outage=False)
    plain = len(window.context(fields[3], outage=True).frames)  # the outage's first field
    stacks = set()
    for k in (4, 5):  # the context reaches back to the frames before the outage
        context = window.context(fields[k], outage=True)
        assert [float(frame[0, 0]) for frame in context.frames] == list(range(k + 1))
        stacks.add(id(context.frames.base))
        assert context.frames.base.shape[0] == 8
        del context
    assert len(stacks) == 1
    window.put(fields[6], outage=False)
    after = window.context(fields[7], outage=False)
    assert after.frames.base.shape[0] == len(after.frames) == plain
    assert [float(frame[0, 0]) for frame in after.frames] == list(range(8 - plain, 8))


def _check_context(context: Context, fields: list[Field], k: int, seen: set[int]) -> int:
    """Assert that ``context`` holds the fields of its times, NaN for those not ``seen``;
    the id of the array behind it (a function: no view of it outlives the check)."""
    steps = range(k - len(context.present) + 1, k + 1)
    for frame, step, present in zip(context.frames, steps, context.present, strict=True):
        assert present == (step in seen)
        expected = fields[step].values if present else np.full_like(frame, np.nan)
        np.testing.assert_array_equal(frame, expected)
    assert len(context.present) == 4
    return id(context.frames.base)


def test_window_never_rewrites_a_context_still_in_use(fields: list[Field]) -> None:
    """A context held outside the window (the product in hand, the shadow check's frames)
    keeps its frames while the next contexts are built."""
    window = Window(window=3, max_context=3)
    for k in range(3):
        window.put(fields[k], outage=False)
    held = window.context(fields[3], outage=False)
    copy = held.frames.copy()
    later = [window.context(fields[k], outage=False) for k in (4, 5, 6)]
    np.testing.assert_array_equal(held.frames, copy)
    assert [float(c.frames[-1, 0, 0]) for c in later] == [4, 5, 6]
    assert len({id(c.frames.base) for c in [held, *later]}) == 4


def test_window_forgets_frames_older_than_max_context(fields: list[Field]) -> None:
    window = Window(window=2, max_context=2)
    window.put(fields[0], outage=False)
    window.put(fields[5], outage=False)  # step 0 is now out of reach
    context = window.context(fields[1], outage=False)
    assert context.present == (True,)  # no frame before step 1 is known any more


def test_window_loads_missing_frames_from_the_located_files(
    stream: StreamManifest, tmp_path: Path
) -> None:
    asked: list[tuple[str, datetime]] = []
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not radolan")
    files = {step.time: step.path for step in stream.steps}
    files[stream.steps[3].time] = garbage  # unreadable: a gap
    files[stream.steps[2].time] = stream.steps[6].path  # another time's file: a gap

    def locate(product: str, nominal: datetime) -> Path | None:
        asked.append((product, nominal))
        return files.get(nominal)

    window = Window(window=5, max_context=5, locate=locate)
    current = radolan.read_one(stream.steps[5].path)
    context = window.context(current, outage=False)
    assert context.present == (True, False, False, True, True)
    np.testing.assert_array_equal(context.frames[0], radolan.read_one(stream.files[1]).values)
    np.testing.assert_array_equal(context.frames[3], radolan.read_one(stream.files[4]).values)
    assert {p for p, _ in asked} == {"RY"}
    assert {t for _, t in asked} == {stream.steps[k].time for k in range(1, 5)}
    asked.clear()
    window.context(current, outage=False)
    assert {t for _, t in asked} == {stream.steps[k].time for k in (2, 3)}  # loaded ones kept


def test_window_worked_newest_first_loads_each_older_frame_once(stream: StreamManifest) -> None:
    """Newest first with the files at hand: the newer frames a context leaves behind are let
    go, so the window stays at the field worked and each field loads just the one frame that
    came into reach (truth: the files decoded on their own)."""
    asked: list[int] = []
    times = [step.time for step in stream.steps]

    def locate(product: str, nominal: datetime) -> Path | None:
        step = times.index(nominal) if nominal in times else -1
        asked.append(step)
        return stream.steps[step].path if step >= 0 else None

    window = Window(window=3, max_context=5, locate=locate)
    loads = {}
    for k in range(7, 2, -1):
        asked.clear()
        context = window.context(radolan.read_one(stream.files[k]), outage=False)
        loads[k] = sorted(asked)
        first = k - len(context.frames) + 1
        for step, frame in zip(range(first, k + 1), context.frames, strict=True):
            np.testing.assert_array_equal(frame, radolan.read_one(stream.files[step]).values)
        del context
    assert loads == {7: [3, 4, 5, 6], 6: [2], 5: [1], 4: [0], 3: [-1]}  # -1: before the stream


def test_window_keeps_products_and_grids_apart(fields: list[Field]) -> None:
    window = Window(window=3, max_context=3)
    window.put(fields[0], outage=False)
    other = fields[1].replace(product="RW")
    assert window.context(other, outage=False).present == (True,)
    assert set(window.products()) == {("RY", (64, 64)), ("RW", (64, 64))}


def test_window_rejects_a_window_larger_than_its_memory() -> None:
    with pytest.raises(ValueError, match="window <= max_context"):
        Window(window=5, max_context=4)


# -- outputs -----------------------------------------------------------------------------------


def test_output_paths_follow_the_template_with_netcdf_and_sidecar_beside(
    fields: list[Field], tmp_path: Path
) -> None:
    field = fields[0]
    name = "raa01-ry_10000-2506011200-dwd---bin"
    paths = outputs.output_paths(tmp_path, "{name}", name, field)
    assert paths.all() == [tmp_path / name, tmp_path / f"{name}.nc", tmp_path / f"{name}.json"]
    packed = outputs.output_paths(tmp_path, "{name}", f"{name}.gz", field)
    assert (packed.radolan.name, packed.netcdf.name) == (f"{name}.gz", f"{name}.nc")
    dated = outputs.output_paths(
        tmp_path, "{product}/{time:%Y%m%d%H%M}-{stem}", f"{name}.bz2", field
    )
    assert dated.radolan == tmp_path / "RY" / f"202506011200-{name}"
    assert dated.sidecar == tmp_path / "RY" / f"202506011200-{name}.json"


def test_quarantine_copies_with_a_reason_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "in" / "raa01-bad"
    source.parent.mkdir()
    source.write_bytes(b"first")
    box = tmp_path / "quarantine"
    box.mkdir()
    copy = outputs.quarantine(box, source, b"first", "garbled header", "corrupt")
    assert copy == box / "raa01-bad"
    assert copy.read_bytes() == b"first"
    note = json.loads((box / "raa01-bad.reason.json").read_text())
    assert note["source"] == str(source)
    assert note["copied"] is True
    assert (note["kind"], note["reason"]) == ("corrupt", "garbled header")
    assert note["sha256"] == __import__("hashlib").sha256(b"first").hexdigest()
    again = outputs.quarantine(box, source, b"first", "garbled header", "corrupt")
    assert again == copy  # the same content is the same quarantined file
    other = outputs.quarantine(box, source, b"second", "truncated: 6 bytes", "truncated")
    assert other is not None
    assert other != copy
    assert other.name.startswith("raa01-bad.")
    assert (copy.read_bytes(), other.read_bytes()) == (b"first", b"second")
    assert json.loads(Path(f"{other}.reason.json").read_text())["kind"] == "truncated"
    unread = outputs.quarantine(box, tmp_path / "in" / "huge", None, "too big", "oversized")
    assert unread is None
    assert not (box / "huge").exists()
    assert json.loads((box / "huge.reason.json").read_text())["copied"] is False


# -- shadow quality check ----------------------------------------------------------------------


def _rain_frames(grid_shape: tuple[int, int], at: tuple[int, int], steps: int = 4) -> np.ndarray:
    frames = np.zeros((steps, *grid_shape), dtype=np.float32)
    row, col = at
    frames[:, row - 5 : row + 5, col - 5 : col + 5] = 1.0  # 12 mm/h at 5 minutes
    return frames


def test_cut_outage_takes_the_wettest_disc_where_data_is_complete() -> None:
    grid = grid_for(200, 200)
    frames = _rain_frames(grid.shape, (20, 30))
    frames[-1, :, 150:] = np.nan  # no data there in the last frame
    outage = shadow.cut_outage(frames, grid)
    disc = outage[-1]
    assert (outage[-shadow.OUTAGE_STEPS :] == disc).all()  # the last steps, one disc
    assert not outage[: -shadow.OUTAGE_STEPS].any()
    assert disc[20, 30]
    assert not disc[:, 150:].any()
    wet = [s for s in OPERATIONAL if holes.coverage(grid, [s], RADIUS_KM)[20, 30]]
    covers = [holes.coverage(grid, [s], RADIUS_KM) & np.isfinite(frames).all(axis=0) for s in wet]
    assert any(np.array_equal(disc, c) for c in covers)


def test_cut_outage_without_data_raises() -> None:
    grid = grid_for(64, 64)
    with pytest.raises(ValueError, match="no radar disc"):
        shadow.cut_outage(np.full((3, 64, 64), np.nan, dtype=np.float32), grid)


def test_shadow_check_scores_the_method_on_the_removed_values() -> None:
    grid = grid_for(200, 200)
    frames = _rain_frames(grid.shape, (100, 100), steps=5)
    seen: list[np.ndarray] = []

    def oracle(given: np.ndarray, hole: np.ndarray, future: object = None) -> np.ndarray:
        seen.append(given.copy())
        return frames[-1].copy()  # the rain stands still: every step's truth

    def dry(given: np.ndarray, hole: np.ndarray, future: object = None) -> np.ndarray:
        return np.where(hole, 0.0, frames[-1]).astype(np.float32)

    perfect = shadow.check(frames, grid, 5, oracle)
    assert perfect["rmse"] == 0.0
    assert perfect["csi_1"] == 1.0
    hole = shadow.cut_outage(frames, grid)[-1]
    assert perfect["hole_pixels"] == hole.sum() > 0
    assert len(seen) == shadow.OUTAGE_STEPS  # infilled at each step of the outage, as live
    given = seen[-1]
    assert np.isnan(given[-shadow.OUTAGE_STEPS :][:, hole]).all()  # the outage, 3 steps long
    assert np.isfinite(given[: -shadow.OUTAGE_STEPS]).all()  # earlier frames untouched
    assert np.isfinite(frames).all()  # the caller's frames are not modified
    poor = shadow.check(frames, grid, 5, dry)
    assert poor["rmse"] > 0
    assert poor["csi_1"] == 0.0


# -- decoding-error labels -----------------------------------------------------------------------


def _error(data: bytes) -> RadolanError:
    with pytest.raises(RadolanError) as caught:
        radolan.loads(data, "test")
    return caught.value


def test_decoding_errors_get_bounded_reason_labels(stream: StreamManifest, tmp_path: Path) -> None:
    good = stream.files[0].read_bytes()
    assert _error(good[: len(good) // 2]).kind == "truncated"
    assert _error(good + b"\0\0").kind == "oversized"
    assert _error(b"\x00garbage" * 20).kind == "corrupt"
    assert _error(b"").kind == "corrupt"
    assert _error(b"PG" + good[2:]).kind == "unsupported"  # run-length picture
    with pytest.raises(RadolanError) as unknown_grid:
        grid_for(1000, 1000)
    assert unknown_grid.value.kind == "wrong_grid"
    two = tmp_path / "two.tar"
    with tarfile.open(two, "w") as archive:
        for name in ("a", "b"):
            archive.add(stream.files[0], arcname=name)
    with pytest.raises(RadolanError) as not_one:
        radolan.read_one(two)
    assert not_one.value.kind == "unsupported"
