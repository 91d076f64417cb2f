"""Model registry: immutable checksummed releases, atomic ``current`` swap, golden check."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from radinfill import synth
from radinfill.model import registry, save_checkpoint
from radinfill.model.engine import InfillEngine
from radinfill.model.registry import RegistryError
from tests.test_checkpoint import META, tiny_model

#: Head scale of release models: inside the safety envelope (see ``tiny_model``).
TAME = 0.05


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(tiny_model(head_scale=TAME), tmp_path / "checkpoint", META)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release ``v1`` of the tiny model with an extra ``decision.json`` (do not modify)."""
    root = tmp_path_factory.mktemp("registry")
    source = save_checkpoint(tiny_model(head_scale=TAME), root / "checkpoint", META)
    return registry.publish(
        source, root / "reg", version="v1", extra_files={"decision.json": b"{}"}
    )


def writable_copy(release: Path, target: Path) -> Path:
    """A copy of a (read-only) release whose files can be tampered with."""
    shutil.copytree(release, target)
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def test_publish_writes_a_complete_read_only_release(checkpoint: Path, tmp_path: Path) -> None:
    release = registry.publish(
        checkpoint,
        tmp_path / "reg",
        version="v1",
        extra_files={"decision.json": b"{}"},
        export=False,
    )
    assert release == tmp_path / "reg" / "releases" / "v1"
    names = {"weights.safetensors", "metadata.json", "golden.npz", "decision.json", "SHA256SUMS"}
    assert {p.name for p in release.iterdir()} == names
    assert os.listdir(release.parent) == ["v1"]  # no partial directory left behind
    for name in ("weights.safetensors", "metadata.json"):
        assert (release / name).read_bytes() == (checkpoint / name).read_bytes()
    digests = registry.verify(release)
    weights = hashlib.sha256((checkpoint / "weights.safetensors").read_bytes()).hexdigest()
    assert digests["weights.safetensors"] == weights
    assert set(digests) == names - {"SHA256SUMS"}
    for path in [release, *release.iterdir()]:
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if shutil.which("sha256sum"):  # the standard tool agrees with the file format
        subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=release, check=True)


def test_default_version_and_refusals(checkpoint: Path, tmp_path: Path) -> None:
    when = datetime(2025, 6, 1, 12, 30, 5, tzinfo=UTC)
    assert registry.default_version("ab" * 32, when) == "20250601T123005Z-abababab"
    release = registry.publish(checkpoint, tmp_path / "reg", export=False)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", release.name)
    with pytest.raises(RegistryError, match="exists"):
        registry.publish(checkpoint, tmp_path / "reg", version=release.name, export=False)
    for version, extra in [
        ("../up", {}),
        ("v2", {"SHA256SUMS": b""}),
        ("v3", {"a/b": b""}),
        ("v4", {"model.onnx": b""}),
    ]:
        with pytest.raises(RegistryError, match=r"not allowed|must be"):
            registry.publish(checkpoint, tmp_path / "reg", version=version, extra_files=extra)
    assert [p.name for p in (tmp_path / "reg" / "releases").iterdir()] == [release.name]


def test_publish_refuses_weights_that_do_not_match_the_metadata(
    checkpoint: Path, tmp_path: Path
) -> None:
    other = save_checkpoint(tiny_model(seed=1), tmp_path / "other", META)
    shutil.copy(other / "weights.safetensors", checkpoint / "weights.safetensors")
    with pytest.raises(RegistryError, match="does not match the metadata"):
        registry.publish(checkpoint, tmp_path / "reg", version="v1")
    assert not (tmp_path / "reg" / "releases" / "v1").exists()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda r: (r / "golden.npz").write_bytes(b"other"), "golden.npz: sha256"),
        (lambda r: (r / "decision.json").unlink(), "decision.json: listed .* but missing"),
        (lambda r: (r / "notes.txt").write_text("x"), "notes.txt: not listed"),
        (lambda r: (r / "SHA256SUMS").write_text("garbage\n"), "SHA256SUMS:1: not a"),
        (lambda r: (r / "SHA256SUMS").unlink(), "SHA256SUMS: cannot read"),
    ],
    ids=["changed", "missing", "extra", "malformed", "no-sums"],
)
def test_verify_names_the_tampered_file(
    published: Path, tmp_path: Path, tamper, message: str
) -> None:
    copy = writable_copy(published, tmp_path / "copy")
    registry.verify(copy)
    tamper(copy)
    with pytest.raises(RegistryError, match=message):
        registry.verify(copy)


def test_activate_swaps_current_and_resolve_follows_it_once(
    published: Path, tmp_path: Path
) -> None:
    root = tmp_path / "reg"
    first, second = (root / "releases" / v for v in ("v1", "v2"))
    for release in (first, second):
        shutil.copytree(published, release)
    assert registry.current(root) is None
    with pytest.raises(RegistryError, match="no current release"):
        registry.resolve(root)

    assert registry.activate(root, "v1") == first
    assert os.readlink(root / "current") == "releases/v1"  # relative: the registry can move
    resolved = registry.resolve(root)
    assert resolved == first.resolve()
    (root / "current.tmp").symlink_to("releases/missing")  # left by a crash
    registry.activate(root, "v2")
    assert registry.current(root) == second.resolve()
    assert not (root / "current.tmp").exists()
    assert not (root / "current.tmp").is_symlink()
    assert resolved == first.resolve()  # an earlier answer does not follow the swap

    # a release that fails verification is not activated; current stays where it was
    writable_copy(first, root / "releases" / "v3")
    (root / "releases" / "v3" / "metadata.json").write_text("{}")
    with pytest.raises(RegistryError, match=r"metadata\.json: sha256"):
        registry.activate(root, "v3")
    with pytest.raises(RegistryError, match="no such release"):
        registry.activate(root, "v9")
    assert os.readlink(root / "current") == "releases/v2"


def test_resolve_plain_directories(published: Path, checkpoint: Path, tmp_path: Path) -> None:
    release = published
    link = tmp_path / "link"
    link.symlink_to(checkpoint)
    assert registry.resolve(release) == release.resolve()
    assert registry.resolve(checkpoint) == checkpoint.resolve()
    assert registry.resolve(link) == checkpoint.resolve()
    assert registry.is_release(release)
    assert not registry.is_release(checkpoint)
    with pytest.raises(RegistryError, match="not a checkpoint"):
        registry.resolve(tmp_path / "nothing")


def test_golden_input_has_a_wet_outage() -> None:
    frames, hole = registry.golden_input(window=6, interval_minutes=5)
    assert frames.shape == (6, *registry.GOLDEN_SHAPE)
    assert frames.dtype == np.float32
    assert 1000 < hole.sum() < 2500  # a disc of 24 px radius, inside the grid
    assert np.isnan(frames[-2:, hole]).all()
    assert np.isfinite(frames[:-2]).all()
    assert np.isfinite(frames[-2:, ~hole]).all()
    assert (frames[-3][hole] > 0).mean() > 0.3  # rain in the hole just before the outage


def test_golden_check_passes_for_the_model_and_fails_for_other_weights(published: Path) -> None:
    release = published
    with np.load(release / "golden.npz", allow_pickle=False) as golden:
        hole, expected = golden["hole"], golden["expected"]
    assert expected[hole].max() > 0

    engine = InfillEngine.from_checkpoint(release, "cpu")
    assert registry.golden_check(engine, release) <= 1e-6

    # Its untrained twin returns the prior: about 2 % away from the release's output.
    other = InfillEngine(tiny_model(head_scale=0.0), window=6, interval_minutes=5, device="cpu")
    with pytest.raises(RegistryError, match="differs from the expected"):
        registry.golden_check(other, release)


def test_golden_check_refuses_a_model_that_fails(
    published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = published
    engine = InfillEngine.from_checkpoint(release, "cpu", fallback="advection")

    def broken(*args: object) -> None:
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(engine, "_forward", broken)
    with pytest.raises(RegistryError, match="failed on the golden input: kernel failed"):
        registry.golden_check(engine, release)


def test_golden_check_refuses_negative_or_nan_output(
    published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = published
    engine = InfillEngine.from_checkpoint(release, "cpu")
    for bad, message in [(-1.0, "negative"), (np.nan, "NaN or infinite")]:
        monkeypatch.setattr(
            engine, "predict", lambda frames, hole, v=bad: np.where(hole, v, frames[-1])
        )
        with pytest.raises(RegistryError, match=message):
            registry.golden_check(engine, release)


def test_golden_check_compares_with_the_synthetic_truth(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that reproduces its own stored output is still refused when that output is
    worse than the classical prior against the truth the golden input was cut from."""
    release = writable_copy(published, tmp_path / "release")
    with np.load(release / "golden.npz", allow_pickle=False) as golden:
        frames, hole = golden["frames"], golden["hole"]
    truth = synth.sequence(
        registry.GOLDEN_SHAPE, len(frames), 5, registry.GOLDEN_PRESET, registry.GOLDEN_SEED
    )[-1]
    damped = np.where(hole, 0.2 * truth, frames[-1]).astype(np.float32)  # a fifth of the rain
    np.savez(release / "golden.npz", frames=frames, hole=hole, expected=damped)
    engine = InfillEngine.from_checkpoint(published, "cpu")
    for served in ("predict", "infill"):  # what it predicts is what it publishes
        monkeypatch.setattr(engine, served, lambda f, h: damped.copy())
    with pytest.raises(RegistryError, match="worse than advection_boundary"):
        registry.golden_check(engine, release)
    # Another input than the synthetic golden one is refused as such.
    frames[0] += 1.0
    np.savez(release / "golden.npz", frames=frames, hole=hole, expected=damped)
    with pytest.raises(RegistryError, match="not the synthetic golden input"):
        registry.golden_check(engine, release)
