"""Checkpoints: safetensors + JSON round trip, verification before loading, no pickle."""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors
import torch

from radinfill.model import build, checkpoint, list_variants, metadata
from radinfill.model.checkpoint import load_checkpoint, save_checkpoint
from radinfill.model.metadata import METADATA, WEIGHTS, CheckpointError, read_metadata

#: Metadata every test checkpoint is saved with.
META = {"product": "RY", "interval_minutes": 5, "training": {"cases": 3}, "scores": {"rmse": 1.5}}


def tiny_model(
    variant: str = "lstm_attention", seed: int = 0, head_scale: float = 1.0
) -> torch.nn.Module:
    """A small network whose weights are all random (also the zero-initialised head), so that
    its output differs from the advected field and a wrong weight would show.

    At ``head_scale`` 1 its correction is far outside the engine's safety envelope (the
    engine then returns the prior); ``head_scale=0.05`` scales the head down to a correction
    of about 2 % that the envelope lets through, for releases that must pass a golden check.
    """
    model = build(variant, widths=(4, 8), kernels=(3, 3), attention_reduction=2)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        for parameter in model.head.parameters():
            parameter.mul_(head_scale)
    return model.eval()


def tiny_inputs(seed: int = 0, shape: tuple[int, int] = (40, 56)) -> tuple[torch.Tensor, ...]:
    """Random network inputs (B=2, T=3): rates, validity with gaps, aux with a hole channel."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand((2, 3, 1, *shape), generator=generator) * 5
    valid = (torch.rand((2, 3, 1, *shape), generator=generator) > 0.2).float()
    aux = torch.rand((2, 5, *shape), generator=generator)
    aux[:, 3] = (aux[:, 3] > 0.7).float()
    return values * valid, valid, aux


@pytest.mark.parametrize("variant", list_variants())
def test_round_trip_gives_bit_identical_weights_and_equal_outputs(
    variant: str, tmp_path: Path
) -> None:
    model = tiny_model(variant)
    path = save_checkpoint(model, tmp_path / "release", META)
    loaded, meta = load_checkpoint(path)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)
    inputs = tiny_inputs()
    with torch.inference_mode():
        # Bit-identical weights can still give outputs differing in the last bits: oneDNN picks
        # its kernels by the alignment of the (here memory-mapped) weight buffers.
        torch.testing.assert_close(model(*inputs)[0], loaded(*inputs)[0], rtol=1e-5, atol=1e-6)
    assert not loaded.training
    assert meta["variant"] == variant
    assert meta["hparams"] == model.hparams
    assert meta["product"] == "RY"
    assert meta["interval_minutes"] == 5
    assert meta["training"] == {"cases": 3}
    assert meta["scores"] == {"rmse": 1.5}
    assert meta["window"] == model.hparams["window"]
    assert meta["sha256"] == hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    assert meta["torch_version"] == torch.__version__


def test_layout_is_two_files_with_every_required_key(tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    assert sorted(p.name for p in path.iterdir()) == [METADATA, WEIGHTS]  # no temp files left
    on_disk = json.loads((path / METADATA).read_text())
    assert set(metadata.SCHEMA) <= set(on_disk)
    assert on_disk["transform"] == "log1p"
    assert on_disk["format_version"] == metadata.FORMAT_VERSION
    assert on_disk["created"].endswith("+00:00")


def test_weights_are_safetensors_and_nothing_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    with safetensors.safe_open(path / WEIGHTS, framework="pt") as weights:
        assert set(weights.keys()) == set(tiny_model().state_dict())
    source = inspect.getsource(checkpoint)
    assert not re.search(
        r"(?<!safetensors\.)torch\.load\b|import pickle|pickle\.|weights_only", source
    )

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint load unpickled")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)
    load_checkpoint(path)


def test_metadata_is_readable_without_the_weights(tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    (path / WEIGHTS).unlink()
    assert read_metadata(path)["variant"] == "lstm_attention"
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_checkpoint(path)


def test_tampered_weights_are_refused_before_loading(tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    data = bytearray((path / WEIGHTS).read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch") as caught:
        load_checkpoint(path)
    assert str(path / WEIGHTS) in str(caught.value)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"torch {torch.__version__}" in notes
    assert "running radinfill" in notes


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        meta[key] = value

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        del meta[key]

    return edit


def _hparam(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        meta["hparams"][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("variant", "resnet50"), "unknown variant 'resnet50'"),
        (_set("window", "6"), "'window' must be a JSON integer"),
        (_set("interval_minutes", True), "'interval_minutes' must be a JSON integer"),
        (_set("hparams", [4, 8]), "'hparams' must be a JSON object"),
        (_set("format_version", metadata.FORMAT_VERSION + 1), "newer than this code reads"),
        (_set("transform", "boxcox"), "transform 'boxcox' is not supported"),
        (_set("sha256", "abc"), "64 lower-case hex"),
        (_drop("product"), "lacks required key.*product"),
        (_drop("sha256"), "lacks required key.*sha256"),
        (_hparam("window", 4), "window 6 disagrees with hparams window 4"),
        (_hparam("widths", [4, 16]), "weights do not fit variant"),
        (_hparam("kernels", [4, 4]), "hparams not accepted"),
        (_hparam("dropout", 0.1), "hparams not accepted"),
    ],
)
def test_edited_metadata_is_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    meta = json.loads((path / METADATA).read_text())
    edit(meta)
    (path / METADATA).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b"{not json", "not valid UTF-8 JSON"),
        (b" " * (metadata.MAX_METADATA_BYTES + 1), "larger than"),
    ],
)
def test_malformed_metadata_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    (path / METADATA).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nothing' / METADATA}: cannot read"):
        load_checkpoint(tmp_path / "nothing")


def test_corrupt_weights_with_a_matching_checksum_are_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tiny_model(), tmp_path / "release", META)
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00not a header"
    (path / WEIGHTS).write_bytes(garbage)
    meta = json.loads((path / METADATA).read_text())
    meta["sha256"] = hashlib.sha256(garbage).hexdigest()
    (path / METADATA).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"interval_minutes": 5}, "needs product"),
        ({**META, "variant": "baseline"}, "variant='baseline' contradicts the model"),
        ({**META, "window": 12}, "window=12 contradicts"),
        ({**META, "scores": {"rmse": float("nan")}}, "not strict JSON"),
        ({**META, "interval_minutes": "5"}, "must be a JSON integer"),
    ],
)
def test_save_refuses_bad_metadata(tmp_path: Path, metadata: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        save_checkpoint(tiny_model(), tmp_path / "release", metadata)
    assert not (tmp_path / "release").exists()


def test_metadata_of_a_loaded_checkpoint_can_be_saved_again(tmp_path: Path) -> None:
    model, meta = load_checkpoint(save_checkpoint(tiny_model(), tmp_path / "a", META))
    again = read_metadata(save_checkpoint(model, tmp_path / "b", meta))
    assert again["sha256"] == meta["sha256"]  # same weights, same bytes
    assert {k: v for k, v in again.items() if k != "created"} == {
        k: v for k, v in meta.items() if k != "created"
    }


def test_caller_metadata_is_not_modified(tmp_path: Path) -> None:
    given = {**META, "release": "2025.1"}
    before = json.dumps(given, sort_keys=True)
    path = save_checkpoint(tiny_model(), tmp_path / "release", given)
    assert json.dumps(given, sort_keys=True) == before
    assert read_metadata(path)["release"] == "2025.1"  # extra keys are kept
