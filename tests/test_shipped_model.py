"""The shipped default model: a complete, verified release the service can load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radinfill import demo
from radinfill.daemon import models
from radinfill.model import registry

ASSET = Path(__file__).resolve().parents[1] / "assets" / "model"


def test_demo_defaults_to_the_shipped_release() -> None:
    assert demo.default_model() == str(ASSET)
    assert registry.resolve(ASSET) == ASSET.resolve()


def test_shipped_release_verifies_and_reproduces_its_golden_output() -> None:
    sums = registry.verify(ASSET)
    assert {"weights.safetensors", "metadata.json", "golden.npz"} <= set(sums)
    loaded = models.load(str(ASSET), device="cpu")  # checksums, golden check, warm-up
    assert loaded.variant == "lstm_attention"
    assert loaded.interval_minutes == 5
    assert loaded.sha256 == registry.verify(ASSET)["weights.safetensors"]


def test_shipped_model_fills_a_hole_without_touching_the_rest() -> None:
    loaded = models.load(str(ASSET), device="cpu")
    yy, xx = np.mgrid[:96, :96]
    rain = (2.0 * np.exp(-((xx - 48) ** 2 + (yy - 48) ** 2) / 400.0)).astype(np.float32)
    frames = np.stack([np.roll(rain, k - 4, axis=1) for k in range(5)])
    hole = np.zeros(rain.shape, dtype=bool)
    hole[30:60, 40:70] = True
    frames[-1][hole] = np.nan
    out = loaded.method(frames, hole)
    assert np.isfinite(out[hole]).all()
    assert (out[hole] >= 0).all()
    assert out[hole].max() > 0.1  # rain moved into the hole is not erased
    np.testing.assert_array_equal(out[~hole], frames[-1][~hole])
