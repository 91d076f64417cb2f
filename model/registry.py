"""Model registry: immutable, checksummed releases and an atomically switched ``current`` link.

The service loads its model from a registry directory, the promote job writes into it::

    REGISTRY/
        releases/
            <version>/                  one release, never changed after it appears
                weights.safetensors     copied from the checkpoint
                metadata.json           copied from the checkpoint (its sha256 names the weights)
                golden.npz              golden input and the output expected from this model
                model.onnx              the network exported for onnxruntime (optional)
                decision.json, ...      extra files of the publisher (the promotion decision)
                SHA256SUMS              ``sha256sum`` lines over every other file
        current -> releases/<version>   the release the service runs
        rejected/<version>.json         decisions of candidates that were not promoted

A release is assembled in a hidden ``releases/.<version>.part-*`` directory, every file written
and fsynced, and then renamed into place: a release directory that exists is complete, and a
crash leaves at most a hidden partial directory. Files are made read-only and the directory
too once it is in place. ``current`` is swapped by creating the symlink ``current.tmp`` and
renaming it over ``current`` (``rename(2)`` replaces a symlink atomically, ``ln -sfn`` does
not); its target is relative, so the registry can be moved or mounted elsewhere.

A reloading service resolves the link once (:func:`resolve`), checks that nobody but the
owner can have changed the registry, the release or its files (:func:`check_permissions`),
checks the files against ``SHA256SUMS`` (:func:`verify`), loads the engine from that directory
and runs the golden input through it (:func:`golden_check`) before it swaps models. The
golden input is a small synthetic sequence (:data:`GOLDEN_SHAPE`, so the check costs
milliseconds) with a wet disc outage; the expected output is the network's own prediction
(before the engine's safety envelope) on the CPU when it was published, made by torch from the
weights, so that it also holds the exported graph (``model.onnx``, which the service runs on
the CPU, :mod:`radinfill.model.graph`) to the weights; and the output the service would
publish is compared with the synthetic truth. Releases are never unpickled:
weights are safetensors, metadata JSON, and ``golden.npz`` is read with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from radinfill import atomic, cuts, permissions, synth
from radinfill.model import baselines, envelope, graph
from radinfill.model.engine import InfillEngine
from radinfill.model.metadata import METADATA, WEIGHTS, read_metadata

RELEASES = "releases"
CURRENT = "current"
REJECTED = "rejected"
CHECKSUMS = "SHA256SUMS"
GOLDEN = "golden.npz"
#: Files every release holds besides the publisher's extra files.
RELEASE_FILES = (WEIGHTS, METADATA, GOLDEN)
#: Rows and columns of the golden input (1 km pixels), its rain preset and seed.
GOLDEN_SHAPE = (128, 128)
GOLDEN_PRESET = "stratiform"
GOLDEN_SEED = 7
#: Radius (pixels) of the golden outage disc and the frames at the end it persists over.
GOLDEN_RADIUS = 24
GOLDEN_OUTAGE_FRAMES = 2
#: Tolerance (mm per interval, relative) of :func:`golden_check` by the engine's precision:
#: float32 on another device or thread count differs by far less than the float32 values, a
#: half-precision autocast (CUDA only) by its 8 or 11 mantissa bits; another model differs by
#: far more (its untrained twin is about 2 % away). The one tolerance of every golden check.
GOLDEN_TOLERANCE = {"fp32": (1e-3, 1e-2), "bf16": (0.05, 2e-2), "fp16": (0.02, 1e-2)}
#: File mode of release files and directories (read-only for everyone).
_READ_ONLY_FILE = 0o444
_READ_ONLY_DIR = 0o555
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RegistryError(ValueError):
    """A registry or release that cannot be used; the message names the path and the reason."""


def default_version(sha256: str, now: datetime | None = None) -> str:
    """Release name ``YYYYmmddTHHMMSSZ-<first 8 hex digits of the weights' sha256>``.

    Sorts by publication time, and tells two releases of one second apart by their weights.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{stamp:%Y%m%dT%H%M%SZ}-{sha256[:8]}"


def publish(
    checkpoint_dir: str | os.PathLike[str],
    registry: str | os.PathLike[str],
    *,
    version: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    export: bool = True,
) -> Path:
    """Copy a checkpoint into ``REGISTRY/releases/<version>`` as a complete, immutable release.

    Parameters
    ----------
    checkpoint_dir
        A checkpoint directory (``weights.safetensors`` + ``metadata.json``; other files of a
        training snapshot, like the optimizer state, are not copied).
    registry
        The registry directory; created if missing.
    version
        Release name (letters, digits, ``.``, ``_``, ``-``); default :func:`default_version`.
    extra_files
        File name -> contents of further files (e.g. ``decision.json``), written before the
        release appears; the names of the release's own files are refused.
    export
        Export the network as an ONNX graph (:data:`radinfill.model.graph.GRAPH`), checked
        against the golden output before the release appears: the service then runs it on
        the CPU without importing torch (:mod:`radinfill.model.graph`). False leaves it out
        (the release then runs with torch everywhere) and saves the export's 15-30 s.

    Returns
    -------
    pathlib.Path
        The release directory.

    Raises
    ------
    RegistryError
        If the version exists or is not a valid name, an extra file name is not a plain name
        or clashes with a release file, or the checkpoint's weights do not match its metadata.
    CheckpointError
        If the checkpoint cannot be read or loaded.
    """
    source = Path(checkpoint_dir)
    meta = read_metadata(source)
    weights = _read(source / WEIGHTS)
    if (actual := hashlib.sha256(weights).hexdigest()) != meta["sha256"]:
        raise RegistryError(
            f"{source / WEIGHTS}: sha256 {actual} does not match the metadata ({meta['sha256']})"
        )
    version = version or default_version(meta["sha256"])
    extra = dict(extra_files or {})
    _check_names(version, extra, source)
    releases = permissions.make_dirs(Path(registry) / RELEASES)
    final = releases / version
    if final.exists():
        raise RegistryError(f"{final}: release {version!r} exists; releases are never replaced")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.part-", dir=releases))
    try:
        _write(tmp / WEIGHTS, weights)
        _write(tmp / METADATA, _read(source / METADATA))
        # The expected output comes from exactly the bytes that were copied.
        reference = InfillEngine.from_checkpoint(tmp, "cpu", fallback=None)  # torch
        write_golden(reference, tmp / GOLDEN)
        if export:
            _write(tmp / graph.GRAPH, graph.export(reference.model, weights_sha256=meta["sha256"]))
            _check_prediction(InfillEngine.from_checkpoint(tmp, "cpu", fallback=None), tmp)
        for name, data in extra.items():
            _write(tmp / name, data)
        _write(tmp / CHECKSUMS, _checksum_lines(_digests(tmp)).encode())
        atomic.fsync_directory(tmp)
        try:
            os.rename(tmp, final)  # refuses a non-empty target that appeared meanwhile
        except OSError as err:
            raise RegistryError(f"{final}: cannot put the release in place: {err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final.chmod(_READ_ONLY_DIR)
    atomic.fsync_directory(releases)
    return final


def verify(release: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file of ``release`` against its ``SHA256SUMS``.

    Returns
    -------
    dict
        File name -> hex SHA-256, for every file listed (``SHA256SUMS`` itself excluded).

    Raises
    ------
    RegistryError
        Naming the file: the release directory or a file in it fails
        :func:`check_permissions`, ``SHA256SUMS`` missing or malformed, a listed file missing
        or with another checksum, a file (or directory) that is not listed, or a release file
        (:data:`RELEASE_FILES`) that is not there.
    """
    directory = Path(release)
    check_permissions(directory)
    listed = _parse_checksums(directory / CHECKSUMS)
    for name in RELEASE_FILES:
        if name not in listed:
            raise RegistryError(f"{directory / name}: release file not listed in {CHECKSUMS}")
    present = {p.name for p in directory.iterdir()} - {CHECKSUMS}
    if extra := sorted(present - set(listed)):
        raise RegistryError(f"{directory / extra[0]}: not listed in {CHECKSUMS} (added later?)")
    for name, expected in listed.items():
        if name not in present:
            raise RegistryError(f"{directory / name}: listed in {CHECKSUMS} but missing")
        if (actual := _sha256(directory / name)) != expected:
            raise RegistryError(
                f"{directory / name}: sha256 {actual} differs from {CHECKSUMS} ({expected})"
            )
    return listed


def check_permissions(
    directory: str | os.PathLike[str], names: Iterable[str] | None = None
) -> None:
    """Refuse a model directory that someone other than its owner could have changed.

    A checksum proves nothing about a file that an attacker could replace together with
    ``SHA256SUMS`` (or the metadata that names the weights' SHA-256), so the directory and its
    files must be writable by their owner only, the owner being the running user or root
    (:func:`radinfill.permissions.untrusted` has the rule and why a user private group may
    write). Files are checked without following links, and a symbolic link is refused: a
    release holds regular files only, and a link's target could be anywhere.

    Parameters
    ----------
    directory
        A release or checkpoint directory (or a registry directory, with ``names=()``).
    names
        Entries of ``directory`` to check; default every entry. Missing ones are skipped
        (loading reports them).

    Raises
    ------
    RegistryError
        Naming the path and its owner or mode (e.g. ``mode 0666 is writable by others``).
    """
    root = Path(directory)
    try:
        entries = sorted(os.listdir(root)) if names is None else list(names)
        status = [(root, os.stat(root))]
        for name in entries:
            try:
                status.append((root / name, os.lstat(root / name)))
            except FileNotFoundError:
                continue
    except OSError as err:
        raise RegistryError(f"{root}: cannot check permissions: {err}") from None
    for path, st in status:
        if path != root and stat.S_ISLNK(st.st_mode):
            raise RegistryError(f"{path}: a symbolic link; model files must be regular files")
        if problem := permissions.untrusted(st):
            raise RegistryError(f"{path}: refused, {problem} (chown/chmod go-w to fix)")


def is_release(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a release directory (it has ``SHA256SUMS``), not a bare checkpoint.

    A service may also run a bare checkpoint directory (e.g. during development); only a
    release can be verified and golden-checked.
    """
    return (Path(path) / CHECKSUMS).is_file()


def resolve(path: str | os.PathLike[str]) -> Path:
    """The model directory ``path`` stands for, with symbolic links resolved once.

    A registry directory (one with ``releases/`` or ``current``) stands for its current
    release; a release or plain checkpoint directory stands for itself. The answer is an
    absolute path without links, so a later swap of ``current`` does not change it.

    Raises
    ------
    RegistryError
        If ``path`` is not a directory, or is a registry without a current release, or a
        registry whose directory, ``releases/`` or current release directory fails
        :func:`check_permissions` (whoever can write them can swap the release).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise RegistryError(f"{directory}: not a checkpoint, release or registry directory")
    if (directory / RELEASES).is_dir() or (directory / CURRENT).is_symlink():
        check_permissions(directory, ())
        if (directory / RELEASES).is_dir():
            check_permissions(directory / RELEASES, ())
        release = current(directory)
        if release is None:
            raise RegistryError(f"{directory}: registry has no current release")
        check_permissions(release, ())
        return release
    return directory.resolve(strict=True)


def current(registry: str | os.PathLike[str]) -> Path | None:
    """The release ``REGISTRY/current`` points at (absolute, resolved), or None without one.

    Raises
    ------
    RegistryError
        If ``current`` exists but is not a symbolic link, or points at nothing.
    """
    link = Path(registry) / CURRENT
    if not link.is_symlink():
        if link.exists():
            raise RegistryError(f"{link}: not a symbolic link")
        return None
    try:
        return link.resolve(strict=True)
    except OSError as err:
        raise RegistryError(f"{link}: dangling link to {os.readlink(link)}: {err}") from None


def activate(registry: str | os.PathLike[str], version: str) -> Path:
    """Point ``REGISTRY/current`` at release ``version`` atomically, after verifying it.

    Returns
    -------
    pathlib.Path
        The release directory now current.

    Raises
    ------
    RegistryError
        If the release does not exist or fails :func:`verify`.
    """
    root = Path(registry)
    release = root / RELEASES / version
    if not _VERSION.fullmatch(version) or not release.is_dir():
        raise RegistryError(f"{release}: no such release")
    verify(release)
    tmp = root / f"{CURRENT}.tmp"
    tmp.unlink(missing_ok=True)  # left by a crash before the rename
    tmp.symlink_to(Path(RELEASES) / version, target_is_directory=True)
    os.replace(tmp, root / CURRENT)
    atomic.fsync_directory(root)
    return release.resolve()


def golden_input(window: int, interval_minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """The golden input: ``window`` synthetic frames with a wet disc outage at the end.

    Returns
    -------
    frames, hole
        float32 ``(window, rows, cols)`` in mm per interval, NaN in the outage over the last
        :data:`GOLDEN_OUTAGE_FRAMES` frames; bool ``(rows, cols)`` outage of the last frame:
        the disc of :data:`GOLDEN_RADIUS` pixels that is wettest before and during it
        (:func:`radinfill.cuts.wettest`, the rule of every case with known truth).
    """
    steps = max(window, GOLDEN_OUTAGE_FRAMES + 1)  # one frame before the outage at least
    frames = synth.sequence(GOLDEN_SHAPE, steps, interval_minutes, GOLDEN_PRESET, GOLDEN_SEED)
    start = steps - GOLDEN_OUTAGE_FRAMES
    discs = cuts.lattice_discs(GOLDEN_SHAPE, GOLDEN_RADIUS)
    hole, _ = cuts.wettest(frames, discs, start=start, duration=GOLDEN_OUTAGE_FRAMES)
    assert hole is not None  # a synthetic sequence has data everywhere
    outage = cuts.outage_mask(frames.shape, hole, start, GOLDEN_OUTAGE_FRAMES)
    return cuts.cut(frames, outage)[-window:], hole


def write_golden(engine: InfillEngine, path: str | os.PathLike[str]) -> Path:
    """Store the golden input (:func:`golden_input`) and ``engine``'s own prediction for it
    (:meth:`~radinfill.model.engine.InfillEngine.predict`) as ``.npz``.

    Arrays: ``frames`` float32 (T, rows, cols) mm per interval with NaN in the outage,
    ``hole`` bool (rows, cols), ``expected`` float32 (rows, cols). Written atomically and
    read-only; readable with ``numpy.load(path, allow_pickle=False)``.
    """
    frames, hole = golden_input(engine.window, engine.interval_minutes)
    expected = engine.predict(frames, hole)
    target = Path(path)
    with atomic.replacing(target, _READ_ONLY_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, frames=frames, hole=hole, expected=expected)
    return target


def golden_check(engine: InfillEngine, release: str | os.PathLike[str]) -> float:
    """Run the release's golden input through ``engine``: its prediction must be the stored
    one, and what it would publish must be no worse than its prior against the truth.

    Parameters
    ----------
    engine
        The engine about to serve (loaded from ``release``, on its own device and precision).
    release
        Release directory holding ``golden.npz``.

    The prediction may differ from the stored one inside the hole by ``atol + rtol *
    |expected|`` (mm per interval), :data:`GOLDEN_TOLERANCE` of the engine's precision.

    Returns
    -------
    float
        Largest absolute difference inside the hole (mm per interval).

    Raises
    ------
    RegistryError
        If ``golden.npz`` is missing or malformed or not the synthetic golden input, the
        network fails on it, the hole holds NaN, infinite or negative values,
        pixels outside the hole changed, the output differs from the expected one beyond the
        tolerance, or it is further from the synthetic truth than
        :data:`radinfill.model.envelope.PRIOR_RMSE_FACTOR` times the classical prior.
    """
    file = Path(release) / GOLDEN
    frames, hole, difference = _check_prediction(engine, release)
    served = engine.infill(frames, hole)[hole]
    _check_against_truth(file, frames, hole, served, engine.interval_minutes)
    return difference


def _check_prediction(
    engine: InfillEngine, release: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """The first half of :func:`golden_check`: ``engine``'s prediction for the golden input is
    the stored one. Returns the golden frames and hole and the largest difference."""
    file = Path(release) / GOLDEN
    frames, hole, expected = _read_golden(file)
    try:
        output = engine.predict(frames, hole)
    except (RuntimeError, MemoryError) as err:
        raise RegistryError(f"{file}: the model failed on the golden input: {err}") from None
    filled, wanted = output[hole], expected[hole]
    if not np.isfinite(filled).all():
        raise RegistryError(f"{file}: golden output has NaN or infinite values in the hole")
    if (filled < 0).any():
        raise RegistryError(f"{file}: golden output has negative values (min {filled.min()})")
    if not np.array_equal(output[~hole], expected[~hole], equal_nan=True):
        raise RegistryError(f"{file}: golden output changed pixels outside the hole")
    atol, rtol = GOLDEN_TOLERANCE[engine.precision]
    difference = np.abs(filled - wanted)
    if (excess := difference - (atol + rtol * np.abs(wanted))).max(initial=0.0) > 0:
        worst = int(np.argmax(excess))
        raise RegistryError(
            f"{file}: golden output differs from the expected one by up to "
            f"{difference.max():.3g} mm (at {wanted[worst]:.3g} mm expected; atol {atol:g}, "
            f"rtol {rtol:g}): another model, or a broken device"
        )
    return frames, hole, float(difference.max(initial=0.0))


def _check_against_truth(
    file: Path, frames: np.ndarray, hole: np.ndarray, filled: np.ndarray, interval: int
) -> None:
    """Compare the golden output inside the hole with the synthetic truth it was cut from."""
    truth = synth.sequence(GOLDEN_SHAPE, len(frames), interval, GOLDEN_PRESET, GOLDEN_SEED)
    if not np.array_equal(np.where(np.isnan(frames), truth, frames), truth, equal_nan=True):
        raise RegistryError(f"{file}: the golden frames are not the synthetic golden input")
    prior = baselines.get_method("advection_boundary")(frames, hole)[hole]
    error, prior_error = (
        float(np.sqrt(np.mean((v - truth[-1][hole]) ** 2))) for v in (filled, prior)
    )
    if error > envelope.PRIOR_RMSE_FACTOR * prior_error:
        raise RegistryError(
            f"{file}: golden output is {error:.4g} mm from the synthetic truth in the hole "
            f"(RMSE), its classical prior {prior_error:.4g} mm: the model is worse than "
            "advection_boundary"
        )


def _read_golden(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as data:
            frames, hole, expected = data["frames"], data["hole"], data["expected"]
    except (OSError, KeyError, ValueError) as err:
        raise RegistryError(f"{file}: unreadable golden input: {err}") from None
    if frames.ndim != 3 or hole.dtype != bool or hole.shape != frames.shape[1:]:
        raise RegistryError(f"{file}: golden arrays have shapes {frames.shape}, {hole.shape}")
    if expected.shape != hole.shape:
        raise RegistryError(f"{file}: golden expected output has shape {expected.shape}")
    return frames, hole, expected


def _check_names(version: str, extra: Mapping[str, bytes], source: Path) -> None:
    """Refuse a bad version or extra file name before anything is written."""
    if not _VERSION.fullmatch(version):
        raise RegistryError(
            f"{source}: release version {version!r} must be letters, digits, '.', '_', '-'"
        )
    for name in extra:
        if not _VERSION.fullmatch(name) or name in (*RELEASE_FILES, graph.GRAPH, CHECKSUMS):
            raise RegistryError(f"{source}: extra release file name {name!r} is not allowed")


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as err:
        raise RegistryError(f"{file}: cannot read: {err}") from None


def _write(file: Path, data: bytes) -> None:
    atomic.write_bytes(file, data, _READ_ONLY_FILE)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as err:
        raise RegistryError(f"{file}: cannot read: {err}") from None
    return digest.hexdigest()


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(directory.iterdir()) if p.name != CHECKSUMS}


def _checksum_lines(digests: Mapping[str, str]) -> str:
    """``sha256sum`` format (``<hex>  <name>``), so ``sha256sum -c SHA256SUMS`` works too."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))


def _parse_checksums(file: Path) -> dict[str, str]:
    listed: dict[str, str] = {}
    for number, line in enumerate(_read(file).decode("utf-8", "replace").splitlines(), 1):
        digest, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not _VERSION.fullmatch(name):
            raise RegistryError(f"{file}:{number}: not a '<sha256>  <name>' line: {line!r:.80}")
        listed[name] = digest
    return listed
