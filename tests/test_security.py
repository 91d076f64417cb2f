"""Security guarantees of ``radinfill serve``, one section per guarantee.

* Model releases: nothing is unpickled; checksums are verified before use; a registry, release
  directory or file that anyone but its owner (the service user or root) could change is refused.
* Inputs: symbolic links and special files in the incoming directories are never followed or
  read; output names never leave ``outgoing``; header sizes never drive an allocation.
* The metrics endpoint binds to loopback by default and controls nothing.
* Outputs get ``[service] output_mode``; directories the service creates are never
  world-writable, whatever the umask.
* The systemd unit runs the service as an unprivileged user; as root it warns.

Services run for real (observers, HTTP server, ledger) on small synthetic products.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import pickle
import re
import shutil
import stat
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from radinfill import permissions, radolan
from radinfill.cli import main
from radinfill.daemon import live_model, outputs, service_config
from radinfill.daemon.intake import NotRegularFileError, open_input
from radinfill.model import registry, save_checkpoint
from radinfill.model.metadata import CheckpointError
from radinfill.model.registry import RegistryError
from radinfill.radolan import Field, RadolanError
from radinfill.stream import StreamManifest, write_stream
from tests.conftest import REPO
from tests.service_helpers import (
    count,
    deliver,
    handled,
    make_config,
    outcomes,
    running,
    service_document,
    wait_for,
)
from tests.test_checkpoint import META, tiny_model

#: Head scale of release models: inside the safety envelope (see ``tiny_model``).
TAME = 0.05

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
#: Generous bound for one input on a loaded 2-core machine.
SLOW = 30.0


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> StreamManifest:
    """Four complete RY products (no outage: each passes through), 100 x 100."""
    return write_stream(
        tmp_path_factory.mktemp("security-stream"),
        grid=(100, 100),
        steps=4,
        start=START,
        seed=3,
        outages=False,
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published release of a tiny network (read-only; tests work on copies)."""
    root = tmp_path_factory.mktemp("release")
    source = save_checkpoint(tiny_model(head_scale=TAME), root / "checkpoint", META)
    return registry.publish(source, root / "registry", version="v1", export=False)


def _copy(release: Path, target: Path) -> Path:
    """A copy of a release with the usual modes (0755 directory, 0644 files) to tamper with."""
    shutil.copytree(release, target)
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def _rewrite_checksums(directory: Path) -> None:
    """Make ``SHA256SUMS`` match the files again, as an attacker who can write them would."""
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(directory.iterdir())
        if p.name != registry.CHECKSUMS
    ]
    (directory / registry.CHECKSUMS).write_text("".join(lines))


def _incoming(root: Path) -> Path:
    path = root / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _note(quarantine: Path, name: str) -> dict[str, object]:
    return json.loads((quarantine / f"{name}.reason.json").read_text())


# -- model releases: modes and owners ---------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "mode", "shown"),
    [
        ("weights.safetensors", 0o646, "0646"),
        ("metadata.json", 0o666, "0666"),
        (registry.CHECKSUMS, 0o646, "0646"),
        ("golden.npz", 0o646, "0646"),
        (".", 0o757, "0757"),
    ],
)
def test_release_writable_by_others_is_refused(
    release: Path, tmp_path: Path, entry: str, mode: int, shown: str
) -> None:
    copy = _copy(release, tmp_path / "v1")
    registry.verify(copy)  # 0755 / 0644 pass
    target = (copy / entry).resolve()
    target.chmod(mode)
    message = rf"{re.escape(str(target))}: refused, mode {shown} is writable by others"
    with pytest.raises(RegistryError, match=message):
        registry.verify(copy)
    with pytest.raises(RegistryError, match=message):
        live_model.load(str(copy), device="cpu")


def test_registry_and_current_release_writable_by_others_are_refused(
    release: Path, tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    _copy(release, root / registry.RELEASES / "v1")
    registry.activate(root, "v1")
    target = (root / registry.RELEASES / "v1").resolve()
    assert registry.resolve(root) == target
    for directory in (root, root / registry.RELEASES, target):
        before = stat.S_IMODE(directory.stat().st_mode)
        directory.chmod(before | 0o002)
        with pytest.raises(RegistryError, match=rf"{re.escape(str(directory))}: refused"):
            registry.resolve(root)
        with pytest.raises(RegistryError, match="writable by others"):
            live_model.load(str(root), device="cpu")
        directory.chmod(before)
    assert live_model.load(str(root), device="cpu").release == str(target)


def test_a_link_among_the_release_files_is_refused(release: Path, tmp_path: Path) -> None:
    copy = _copy(release, tmp_path / "v1")
    outside = tmp_path / "golden.npz"
    shutil.copy(copy / registry.GOLDEN, outside)
    (copy / registry.GOLDEN).unlink()
    (copy / registry.GOLDEN).symlink_to(outside)  # same bytes: the checksums still match
    with pytest.raises(RegistryError, match=r"golden\.npz: a symbolic link"):
        registry.verify(copy)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_release_file_of_another_user_is_refused(release: Path, tmp_path: Path) -> None:
    copy = _copy(release, tmp_path / "v1")
    os.chown(copy / "weights.safetensors", 12345, -1)
    with pytest.raises(RegistryError, match="owned by uid 12345, neither the running user"):
        registry.verify(copy)


def _status(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_group_write_is_accepted_only_for_the_owners_private_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule of :func:`radinfill.permissions.untrusted` on a made-up account database:
    uid 1000 ``ops`` with private group 1000 ``ops``; group 100 ``users`` is shared."""
    me = os.geteuid()
    users = {me: SimpleNamespace(pw_name="ops", pw_gid=1000)}
    groups = {
        1000: SimpleNamespace(gr_name="ops", gr_mem=[]),
        100: SimpleNamespace(gr_name="users", gr_mem=["ops", "eve"]),
        1001: SimpleNamespace(gr_name="ops", gr_mem=["eve"]),  # named like it, not private
    }
    monkeypatch.setattr(permissions.pwd, "getpwuid", lambda uid: users[uid])
    monkeypatch.setattr(permissions.grp, "getgrgid", lambda gid: groups[gid])
    assert permissions.untrusted(_status(0o644, me, 100)) is None
    assert permissions.untrusted(_status(0o444, 0, 0)) is None  # root's files are trusted
    assert permissions.untrusted(_status(0o664, me, 1000)) is None  # umask 002 checkout
    for gid in (100, 1001, 4242):  # shared, with members, unknown
        problem = permissions.untrusted(_status(0o664, me, gid))
        assert problem == f"mode 0664 is writable by group {gid}, not the owner's private group"
    assert permissions.untrusted(_status(0o646, me, 1000)) == "mode 0646 is writable by others"
    other = permissions.untrusted(_status(0o644, me + 1, 1000))
    assert other is not None
    assert other.startswith(f"owned by uid {me + 1}")


@pytest.mark.timeout(120)
def test_promote_makes_a_registry_the_service_accepts_under_any_umask(tmp_path: Path) -> None:
    """``radinfill promote`` under umask 000: the registry, its releases/ and the release get
    fixed modes (0755, 0755, 0555 with 0444 files), so the service loads the model."""
    # An untrained head: its prior exactly, which clears the persistence floor and the safety
    # cases (the modes are under test here, not the model).
    candidate = save_checkpoint(tiny_model(head_scale=0.0), tmp_path / "candidate", META)
    root = tmp_path / "new" / "registry"
    spec = "synth:mixed:seed=1:grid=64x64:steps=8:duration=3:radius=30"
    previous = os.umask(0)
    try:
        status = main(
            ["promote", str(candidate), "--registry", str(root), "--data", spec, "--floor",
             "persistence"]
        )  # fmt: skip
    finally:
        os.umask(previous)
    assert status == 0
    release = registry.current(root)
    assert release is not None
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert stat.S_IMODE((root / registry.RELEASES).stat().st_mode) == 0o755
    assert stat.S_IMODE(release.stat().st_mode) == 0o555
    assert {stat.S_IMODE(p.stat().st_mode) for p in release.iterdir()} == {0o444}
    assert live_model.load(str(root), device="cpu").release == str(release)


def test_service_with_an_untrusted_model_falls_back_to_the_baseline(
    release: Path, tmp_path: Path
) -> None:
    copy = _copy(release, tmp_path / "v1")
    (copy / "weights.safetensors").chmod(0o666)
    with running(make_config(tmp_path, model=str(copy))) as service:
        assert service.slot is not None
        assert service.slot.current.release == "baseline:advection_boundary"
        assert count(service, "radinfill_model_reloads_total", outcome="failed") == 1


# -- model releases: nothing unpickled, checksums before use ----------------------------------


class _Trap:
    """Unpickling this creates ``marker``: the proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _sprung(marker: Path) -> bool:
    found = marker.exists()
    marker.unlink(missing_ok=True)
    return found


def _torch_pickle(copy: Path, marker: Path) -> None:
    """weights.safetensors becomes a torch.save pickle; metadata and sums updated to match."""
    buffer = io.BytesIO()
    torch.save({"weight": _Trap(marker)}, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert _sprung(marker)  # the trap works when unpickled
    (copy / "weights.safetensors").write_bytes(buffer.getvalue())
    meta = json.loads((copy / "metadata.json").read_text())
    meta["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (copy / "metadata.json").write_text(json.dumps(meta))


def _pickled_metadata(copy: Path, marker: Path) -> None:
    payload = pickle.dumps(_Trap(marker))
    pickle.loads(payload)
    assert _sprung(marker)
    (copy / "metadata.json").write_bytes(payload)


def _object_array_golden(copy: Path, marker: Path) -> None:
    """golden.npz whose ``frames`` is an object array (stored as a pickle inside the .npy)."""
    with np.load(copy / registry.GOLDEN) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["frames"] = np.array([_Trap(marker)], dtype=object)
    np.savez(copy / "golden.npz", **arrays)
    with np.load(copy / registry.GOLDEN, allow_pickle=True) as data:
        assert data["frames"].dtype == object
    assert _sprung(marker)


@pytest.mark.parametrize(
    ("plant", "error", "message"),
    [
        (_torch_pickle, CheckpointError, "weights.safetensors: not a readable safetensors file"),
        (_pickled_metadata, CheckpointError, "metadata.json: metadata is not valid UTF-8 JSON"),
        (_object_array_golden, RegistryError, "golden.npz: unreadable golden input"),
    ],
    ids=["weights-torch-save", "metadata-pickle", "golden-object-array"],
)
def test_pickles_in_a_release_are_refused_without_unpickling(
    release: Path, tmp_path: Path, plant, error: type[Exception], message: str
) -> None:
    """Checksums cannot help here (they are rewritten to match); what protects the service
    is that weights are parsed as safetensors, metadata as JSON and golden.npz without
    pickle support."""
    copy = _copy(release, tmp_path / "v1")
    marker = tmp_path / "unpickled"
    plant(copy, marker)
    _rewrite_checksums(copy)
    registry.verify(copy)  # the release is consistent: only the loaders stand in the way
    with pytest.raises(error, match=re.escape(f"{copy}/") + message):
        live_model.load(str(copy), device="cpu")
    assert not marker.exists()


def test_tampered_weights_are_refused_before_the_engine_is_built(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checksum half; a bare checkpoint's own check is
    tests/test_checkpoint.py::test_tampered_weights_are_refused_before_loading."""
    copy = _copy(release, tmp_path / "v1")
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-3] ^= 0x01
    (copy / "weights.safetensors").write_bytes(bytes(data))
    built: list[object] = []
    from radinfill.model.engine import InfillEngine

    monkeypatch.setattr(InfillEngine, "from_checkpoint", lambda *a, **k: built.append(a))
    with pytest.raises(RegistryError, match=r"weights\.safetensors: sha256 .* differs from"):
        live_model.load(str(copy), device="cpu")
    assert built == []


# -- inputs: links and special files -----------------------------------------------------------


def test_open_input_refuses_links_fifos_and_directories(tmp_path: Path) -> None:
    regular = tmp_path / "product"
    regular.write_bytes(b"data")
    with open_input(regular) as file:
        assert file.read() == b"data"
    link = tmp_path / "link"
    link.symlink_to(regular)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    for path, what in [(link, "a symbolic link"), (fifo, "a FIFO"), (tmp_path, "a directory")]:
        with pytest.raises(NotRegularFileError, match=f"{re.escape(str(path))}: {what}"):
            open_input(path)
    assert time.monotonic() - started < 1.0  # the FIFO did not block waiting for a writer


@pytest.mark.timeout(120)
def test_links_in_incoming_are_never_followed_by_scans_or_events(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """A link to a product outside the incoming directory and a linked subdirectory exist at
    start-up (the scan path); a link is renamed in while running (the event path). None is
    read: no output, no ledger entry; the renamed-in link is quarantined unread."""
    config = make_config(tmp_path, watch="inotify", reconcile_interval_s=0.3)
    outside = tmp_path / "outside"
    outside.mkdir()
    first, second, good = stream.steps[:3]
    for step in (first, second):
        shutil.copy(step.path, outside / step.path.name)
    incoming = _incoming(tmp_path)
    (incoming / first.path.name).symlink_to(outside / first.path.name)
    (incoming / "raa01-linked-directory").symlink_to(outside, target_is_directory=True)
    with running(config) as service:
        hidden = incoming / f".{second.path.name}.tmp"
        hidden.symlink_to(outside / second.path.name)
        os.replace(hidden, incoming / second.path.name)  # a moved event for the link
        wait_for(lambda: handled(service) >= 1, SLOW, "the renamed-in link")
        deliver(good.path, incoming)
        wait_for(lambda: handled(service) >= 2, SLOW, "the good file")
        time.sleep(1.0)  # reconcile scans meanwhile
        assert outcomes(service) == {"quarantined": 1.0, "passthrough": 1.0}
        assert count(service, "radinfill_quarantined_total", reason="unsupported") == 1
        assert service.ledger is not None
        for step in (first, second):
            assert service.ledger.current("RY", step.time) is None
    note = _note(config.quarantine, second.path.name)
    assert (note["kind"], note["copied"]) == ("unsupported", False)
    assert "a symbolic link" in str(note["reason"])
    assert not (config.quarantine / second.path.name).exists()
    assert sorted(p.name for p in config.outgoing.iterdir()) == sorted(
        [good.path.name, f"{good.path.name}.nc", f"{good.path.name}.json", "latest"]
    )


@pytest.mark.timeout(120)
def test_polled_links_and_fifos_are_quarantined_unread(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """Polling sees a new link and a new FIFO like files; neither is followed nor blocks the
    worker, and the next product is processed."""
    config = make_config(tmp_path, watch="polling")
    outside = tmp_path / "outside"
    outside.mkdir()
    first, good = stream.steps[:2]
    shutil.copy(first.path, outside / first.path.name)
    incoming = _incoming(tmp_path)
    with running(config) as service:
        (incoming / first.path.name).symlink_to(outside / first.path.name)
        os.mkfifo(incoming / "raa01-ry_10000-fifo")
        wait_for(lambda: handled(service) >= 2, SLOW, "the link and the FIFO")
        deliver(good.path, incoming)
        wait_for(lambda: handled(service) >= 3, SLOW, "the good file")
        assert outcomes(service) == {"quarantined": 2.0, "passthrough": 1.0}
        assert service.ledger is not None
        assert service.ledger.current("RY", first.time) is None
    assert "a symbolic link" in str(_note(config.quarantine, first.path.name)["reason"])
    assert "a FIFO" in str(_note(config.quarantine, "raa01-ry_10000-fifo")["reason"])


# -- inputs: output names ---------------------------------------------------------------------


def _field(stream: StreamManifest, product: str = "RY") -> Field:
    return radolan.read_one(stream.steps[0].path).replace(product=product)


@pytest.mark.parametrize(
    ("template", "name", "product"),
    [
        ("{product}/{name}", "raa01-x", ".."),
        ("{product}/{name}", "raa01-x", "../../etc"),
        ("{product}{name}", "raa01-x", "/etc/"),
        ("{name}", "..", "RY"),
        ("{name}", "a\0b", "RY"),
        ("{time:..}/{name}", "raa01-x", "RY"),
        ("{time:/etc/%Y}", "raa01-x", "RY"),
        ("/srv/{name}", "raa01-x", "RY"),
        ("{stem}/", "raa01-x", "RY"),
        ("{time:%Y}/../../{name}", "raa01-x", "RY"),
    ],
)
def test_output_paths_never_leave_outgoing(
    stream: StreamManifest, tmp_path: Path, template: str, name: str, product: str
) -> None:
    with pytest.raises(outputs.OutputPathError, match="not a relative path inside"):
        outputs.output_paths(tmp_path / "out", template, name, _field(stream, product))


def test_output_directory_linked_outside_is_refused_and_subdirectories_work(
    stream: StreamManifest, tmp_path: Path
) -> None:
    field = _field(stream)
    out = tmp_path / "out"
    (out / "2025").mkdir(parents=True)
    (out / "2025" / "06").symlink_to(tmp_path, target_is_directory=True)
    paths = outputs.output_paths(out, "{time:%Y}/{product}/{name}", "raa01-x", field)
    assert paths.radolan == out / "2025" / "RY" / "raa01-x"
    with pytest.raises(outputs.OutputPathError, match="resolves outside"):
        outputs.output_paths(out, "{time:%Y/%m}/{name}", "raa01-x", field)


@pytest.mark.parametrize(
    "template", ["{time:..}/{name}", "/srv/{name}", "{name}/../../x", "{time:%Y}//{name}"]
)
def test_config_refuses_an_output_name_that_leaves_outgoing(tmp_path: Path, template: str) -> None:
    with pytest.raises(service_config.ConfigError) as caught:
        make_config(tmp_path, output_name=template)
    assert caught.value.problems == ["service.output_name must stay inside service.outgoing"]


@pytest.mark.timeout(120)
def test_product_whose_output_would_leave_outgoing_is_quarantined(
    stream: StreamManifest, tmp_path: Path
) -> None:
    """A directory of the output tree linked elsewhere: that product is quarantined, nothing
    is written through the link, the next product is processed."""
    config = make_config(tmp_path, output_name="{time:%Y%m%d%H%M}/{name}")
    first, second = stream.steps[:2]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config.outgoing.mkdir()
    (config.outgoing / f"{first.time:%Y%m%d%H%M}").symlink_to(elsewhere)
    with running(config) as service:
        deliver(first.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 1, SLOW, "the first file")
        deliver(second.path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 2, SLOW, "the second file")
        assert outcomes(service) == {"quarantined": 1.0, "passthrough": 1.0}
        assert service.healthy()
    assert list(elsewhere.iterdir()) == []
    assert "resolves outside" in str(_note(config.quarantine, first.path.name)["reason"])
    assert (config.outgoing / f"{second.time:%Y%m%d%H%M}" / second.path.name).is_file()


# -- inputs: header sizes ---------------------------------------------------------------------


def _with_header(data: bytes, token: bytes, value: bytes) -> bytes:
    """``data`` with the value of a fixed-width header token replaced (same width)."""
    match = re.search(re.escape(token) + rb"([ \dx]+)", data[:200])
    assert match is not None
    assert len(match.group(1)) >= len(value)
    start, end = match.span(1)
    return data[:start] + value.rjust(end - start) + data[end:]


@pytest.mark.parametrize(
    ("token", "value", "message"),
    [
        (b"GP", b"9999x9999", "unknown grid size 9999x9999"),
        (b"GP", b"4800x4400", "does not match grid 4800x4400"),  # catalogued: 42 MB claimed
        (b"BY", b"9999999", "truncated"),
    ],
)
def test_header_sizes_never_drive_an_allocation(
    stream: StreamManifest, token: bytes, value: bytes, message: str
) -> None:
    """Sizes from the header are checked against the bytes present (and the grid catalogue)
    before anything of that size is allocated: memory stays far below the claimed size."""
    data = _with_header(stream.steps[0].path.read_bytes(), token, value)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(RadolanError, match=message):
            radolan.loads(data, "hostile")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(data) + 1_000_000  # the 4800x4400 grid alone would be 42 MB
    assert time.perf_counter() - started < 2.0


# -- metrics endpoint -------------------------------------------------------------------------


def test_metrics_bind_to_loopback_by_default(tmp_path: Path) -> None:
    assert service_config.MetricsConfig().address == "127.0.0.1"
    document = service_document(tmp_path)
    del document["metrics"]
    assert service_config.parse(document, base=tmp_path).metrics.address == "127.0.0.1"
    with running(make_config(tmp_path)) as service:
        assert service.server is not None
        host, port = service.server.server.socket.getsockname()[:2]
        assert host == "127.0.0.1"
        listening = _listening(Path("/proc/net/tcp"), port) + _listening(
            Path("/proc/net/tcp6"), port
        )
        assert listening == ["0100007F"]  # 127.0.0.1 only, no IPv6 or wildcard socket


def _listening(table: Path, port: int) -> list[str]:
    """Local addresses (hex, as the kernel lists them) of sockets listening on ``port``."""
    if not table.exists():
        return []
    found = []
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
            found.append(address)
    return found


@pytest.mark.timeout(120)
def test_metrics_endpoint_has_no_control_endpoint(stream: StreamManifest, tmp_path: Path) -> None:
    """Requests that would reload, quit or administer a server elsewhere change nothing: other
    methods get 405, every GET gets the metrics; the service keeps its model and keeps working."""
    config = make_config(tmp_path)
    paths = ["/metrics", "/reload", "/quit", "/-/reload", "/-/quit", "/admin", "/shutdown"]
    with running(config) as service:
        assert service.server is not None
        assert service.slot is not None
        model = service.slot.current
        connection = http.client.HTTPConnection("127.0.0.1", service.server.port, timeout=10)
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in paths:
                connection.request(method, path, body=b"{}")
                response = connection.getresponse()
                assert response.status == 405, (method, path)
                response.read()
        for path in paths:
            connection.request("GET", path)
            response = connection.getresponse()
            assert response.status == 200
            assert b"radinfill_products_total" in response.read()
        connection.close()
        assert not service.stop_event.is_set()
        assert not service.reload_event.is_set()
        assert service.slot.current is model
        assert service.config is config
        assert count(service, "radinfill_model_reloads_total", outcome="ok") == 1
        deliver(stream.steps[0].path, _incoming(tmp_path))
        wait_for(lambda: handled(service) >= 1, SLOW, "a product after the requests")
        assert outcomes(service) == {"passthrough": 1.0}


# -- output and directory modes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"), [("0644", 0o644), ("0640", 0o640), ("600", 0o600), (0o444, 0o444)]
)
def test_output_mode_accepts_octal_strings_and_integers(
    tmp_path: Path, value: object, mode: int
) -> None:
    assert make_config(tmp_path).output_mode == 0o644
    settings = make_config(tmp_path, output_mode=value)
    assert settings.output_mode == mode
    shown = settings.effective()["service"]["output_mode"]
    assert shown == f"{mode:04o}"
    assert make_config(tmp_path, output_mode=shown).output_mode == mode


@pytest.mark.parametrize("value", ["0666", "0755", "0o777", 644, "rw-r--r--", True, "-1"])
def test_output_mode_refuses_executable_world_writable_or_malformed(
    tmp_path: Path, value: object
) -> None:
    with pytest.raises(service_config.ConfigError) as caught:
        make_config(tmp_path, output_mode=value)
    (problem,) = caught.value.problems
    assert problem.startswith("service.output_mode must be an octal file mode")


@pytest.fixture
def umask_000() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.timeout(120)
def test_outputs_get_the_configured_mode_and_no_directory_is_world_writable(
    stream: StreamManifest, tmp_path: Path, umask_000: None
) -> None:
    """Under umask 000 every directory the service creates would be 0777 with plain mkdir."""
    root = tmp_path / "service"
    config = make_config(
        root,
        output_mode="0640",
        output_name="{time:%Y%m%d}/{name}",
        outgoing=str(root / "out" / "infilled"),
        state_dir=str(root / "state" / "radinfill"),
        quarantine=str(root / "state" / "radinfill" / "quarantine"),
    )
    step = stream.steps[0]
    with running(config) as service:
        incoming = config.incoming[0]
        deliver(step.path, incoming)
        (incoming / "raa01-ry_10000-garbage").write_bytes(b"\x00not a product" * 20)
        wait_for(lambda: handled(service) >= 2, SLOW, "both files")
        assert outcomes(service) == {"passthrough": 1.0, "quarantined": 1.0}
    folder = config.outgoing / f"{step.time:%Y%m%d}"
    written = [folder / step.path.name, folder / f"{step.path.name}.nc"]
    written.append(folder / f"{step.path.name}.json")
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o640}

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert [mode(p) for p in (root / "out", config.outgoing, folder, incoming)] == [0o755] * 4
    assert [mode(p) for p in (root / "state", config.state_dir, config.quarantine)] == [0o750] * 3
    for path in root.rglob("*"):
        if path.is_symlink() or path.parent == incoming:  # the test wrote the inputs
            continue
        assert not stat.S_IMODE(path.lstat().st_mode) & stat.S_IWOTH, path


# -- unprivileged user -------------------------------------------------------------------------


def _unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (REPO / "systemd" / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "[")):
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("unit", ["radinfill.service", "radinfill-retrain.service"])
def test_units_run_as_an_unprivileged_user_without_new_privileges(unit: str) -> None:
    """The account itself is made by systemd/radinfill.sysusers (a system user, no login
    shell: tests/test_systemd.py::test_sysusers_creates_the_service_account)."""
    settings = _unit_settings(unit)
    assert settings["User"] == ["radinfill"]
    assert settings["Group"] == ["radinfill"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["AmbientCapabilities"] == [""]
    sysusers = (REPO / "systemd" / "radinfill.sysusers").read_text()
    assert re.search(r"^u\s+radinfill\s+-\s", sysusers, re.MULTILINE)  # not uid 0


@pytest.mark.parametrize(("euid", "warned"), [(0, True), (4242, False)])
def test_serve_as_root_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, warned: bool
) -> None:
    """Root still starts (containers, CI), but says so once in the log."""
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    with capture_logs() as logs, running(make_config(tmp_path)):
        pass
    found = [e for e in logs if e["event"] == "running_as_root"]
    assert [e["log_level"] for e in found] == (["warning"] if warned else [])
