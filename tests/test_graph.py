"""The network exported as an ONNX graph: same values as torch, refused when it is not the
checkpoint's, and served on the CPU without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from radinfill.model import graph, list_variants, load_checkpoint, registry, save_checkpoint
from radinfill.model.engine import InfillEngine
from radinfill.model.metadata import CheckpointError
from tests.test_checkpoint import META, tiny_model
from tests.test_engine import rain_case
from tests.test_registry import TAME, writable_copy

ASSET = Path(__file__).resolve().parents[1] / "assets" / "model"
#: Largest difference between the graph's and torch's prediction, relative to the largest
#: value: the same float32 operations, in another order (measured: below 1e-6).
TOLERANCE = 1e-5


def inputs(batch: int, rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random network inputs: rain up to 20 mm/h, a tenth of the pixels without data."""
    rng = np.random.default_rng(seed)
    valid = (rng.random((batch, 6, 1, rows, cols)) > 0.1).astype(np.float32)
    values = (rng.random((batch, 6, 1, rows, cols)) * 20).astype(np.float32) * valid
    aux = rng.random((batch, 5, rows, cols)).astype(np.float32)
    return values, valid, aux


def with_graph(model: torch.nn.Module, directory: Path) -> Path:
    """A checkpoint of ``model`` with its exported graph beside the weights."""
    path = save_checkpoint(model, directory, META)
    sha256 = json.loads((path / "metadata.json").read_text())["sha256"]
    (path / graph.GRAPH).write_bytes(graph.export(model, weights_sha256=sha256))
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release published with its graph (read-only)."""
    root = tmp_path_factory.mktemp("graph")
    source = save_checkpoint(tiny_model(head_scale=TAME), root / "checkpoint", META)
    return registry.publish(source, root / "registry", version="v1")


@pytest.mark.parametrize("variant", list_variants())
def test_the_graph_computes_what_the_network_computes(variant: str, tmp_path: Path) -> None:
    """Every variant, a batch of two, aligned and unaligned shapes (the graph pads these)."""
    model = tiny_model(variant)
    path = with_graph(model, tmp_path / "checkpoint")
    served = graph.Graph(path / graph.GRAPH, json.loads((path / "metadata.json").read_text()))
    assert (served.variant, served.multiple) == (variant, model.multiple)
    for shape in [(32, 48), (30, 45), (64, 20)]:
        arrays = inputs(2, *shape)
        with torch.inference_mode():
            expected = model(*(torch.from_numpy(a) for a in arrays))[0][:, 0].numpy()
        got = served(*arrays)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()
        assert np.abs(expected).max() > 0.1  # a field worth comparing


def test_a_published_release_serves_its_graph_as_torch_serves_its_weights(release: Path) -> None:
    digests = registry.verify(release)
    assert graph.GRAPH in digests  # listed, so a changed graph fails verification
    served = InfillEngine.from_checkpoint(release, "cpu")
    model, _ = load_checkpoint(release)
    torch_engine = InfillEngine(model, window=6, interval_minutes=5, device="cpu")
    assert (served.runtime, torch_engine.runtime) == ("onnxruntime", "torch")
    assert "runtime=onnxruntime" in repr(served)
    registry.golden_check(served, release)
    frames, hole = rain_case()
    expected, got = torch_engine.predict(frames, hole), served.predict(frames, hole)
    assert np.abs(got - expected)[hole].max() <= TOLERANCE * np.abs(expected[hole]).max()
    np.testing.assert_allclose(
        served.infill(frames, hole), torch_engine.infill(frames, hole), rtol=1e-5, atol=1e-6
    )
    assert served.fallbacks == torch_engine.fallbacks


def test_a_graph_of_other_weights_is_refused(release: Path, tmp_path: Path) -> None:
    """The recorded checksum names the weights; a graph whose record was forged to match is
    caught by the golden output that torch made at publication."""
    meta = json.loads((release / "metadata.json").read_text())
    with pytest.raises(CheckpointError, match="graph exported from weights"):
        graph.Graph(release / graph.GRAPH, {**meta, "sha256": "0" * 64})
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="not a loadable ONNX graph"):
        graph.Graph(garbage, meta)

    other = with_graph(tiny_model(seed=1, head_scale=TAME), tmp_path / "other")
    forged = onnx.load_from_string((other / graph.GRAPH).read_bytes())
    for entry in forged.metadata_props:
        if entry.key == "weights_sha256":
            entry.value = meta["sha256"]
    copy = writable_copy(release, tmp_path / "copy")
    (copy / graph.GRAPH).write_bytes(forged.SerializeToString())
    engine = InfillEngine.from_checkpoint(copy, "cpu")
    assert engine.runtime == "onnxruntime"
    with pytest.raises(registry.RegistryError, match="differs from the expected"):
        registry.golden_check(engine, copy)


def test_a_graph_runs_on_the_cpu_only(release: Path) -> None:
    meta = json.loads((release / "metadata.json").read_text())
    served = graph.Graph(release / graph.GRAPH, meta)
    with pytest.raises(ValueError, match="CPU only"):
        InfillEngine(served, window=6, interval_minutes=5, device="cuda")


def test_the_shipped_release_infills_on_the_cpu_without_torch(tmp_path: Path) -> None:
    """The service's load path (checksums, golden check, warm-up) and an infill in a fresh
    process that never imports torch; its output is torch's, computed here."""
    assert (ASSET / graph.GRAPH).exists()
    frames, hole = rain_case((160, 176))
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "hole.npy", hole)
    script = f"""
import sys, numpy as np
from radinfill.daemon import live_model
loaded = live_model.load({str(ASSET)!r}, device="cpu")
frames, hole = np.load({str(tmp_path / "frames.npy")!r}), np.load({str(tmp_path / "hole.npy")!r})
np.save({str(tmp_path / "out.npy")!r}, loaded.run(frames, hole, interval_minutes=5).values)
print(loaded.runtime, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnxruntime", "False"]
    model, meta = load_checkpoint(ASSET)
    engine = InfillEngine(model, window=meta["window"], interval_minutes=5, device="cpu")
    expected = engine.run(frames, hole, interval_minutes=5).values
    got = np.load(tmp_path / "out.npy")
    assert np.array_equal(got[~hole], frames[-1][~hole], equal_nan=True)
    np.testing.assert_allclose(got[hole], expected[hole], rtol=1e-4, atol=1e-5)


def test_without_its_graph_a_release_runs_with_torch(release: Path, tmp_path: Path) -> None:
    copy = writable_copy(release, tmp_path / "copy")
    (copy / graph.GRAPH).unlink()
    assert InfillEngine.from_checkpoint(copy, "cpu").runtime == "torch"


@pytest.mark.parametrize(
    ("given", "environment", "expected"),
    [(None, "1", 1), (None, None, 0), (None, "many", 0), (3, "1", 3)],
)
def test_the_graph_takes_its_threads_as_torch_does(
    release: Path,
    monkeypatch: pytest.MonkeyPatch,
    given: int | None,
    environment: str | None,
    expected: int,
) -> None:
    """``threads``, else ``OMP_NUM_THREADS`` (torchrun's 1 per rank), else one per core (0)."""
    if environment is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", environment)
    meta = json.loads((release / "metadata.json").read_text())
    served = graph.Graph(release / graph.GRAPH, meta, threads=given)
    assert served._session.get_session_options().intra_op_num_threads == expected
