"""Model checkpoints: safetensors weights plus JSON metadata, verified before anything is built.

A checkpoint is a directory::

    PATH/
        weights.safetensors   the state dict, contiguous CPU tensors (no pickle, no code)
        metadata.json         what the weights are and how they were made (UTF-8 JSON object)

The metadata is readable without touching the weights (:func:`read_metadata`), so a service can
refuse an incompatible release before loading it. Required keys and their JSON types:

======================  ========  ================================================================
key                     type      meaning
======================  ========  ================================================================
``format_version``      int       layout of this directory (:data:`FORMAT_VERSION`)
``variant``             str       a name of :func:`radinfill.model.unet.list_variants`
``hparams``             object    constructor arguments of the network (``model.hparams``)
``product``             str       RADOLAN product family trained on, e.g. ``"RY"``
``interval_minutes``    int       product interval; frames are converted to mm/h with it
``window``              int       frames of context the model was trained with
``transform``           str       intensity transform inside the network (``"log1p"``)
``training``            object    summary of the training data (periods, cases, masks)
``scores``              object    evaluation scores of this release
``code_version``        str       radinfill version that wrote the checkpoint
``torch_version``       str       torch version that wrote the checkpoint
``created``             str       UTC time of writing, ISO 8601
``sha256``              str       hex SHA-256 of ``weights.safetensors``
======================  ========  ================================================================

Other keys (e.g. a release name or the training recipe) are kept as given. Loading checks the
JSON size and schema, verifies the SHA-256 of the weight bytes and then parses exactly those
bytes (no second read that could see a different file), builds the network with
``build(variant, **hparams)`` and loads the state dict strictly. Nothing is ever unpickled, and
nothing is allocated from the hyper-parameters alone: the network is first built on the meta
device (shapes, no memory) and must have exactly the tensors of the weights file, so absurd
hparams (a gigantic channel count or kernel) are refused before they cost memory.

Writing replaces each file atomically (temp file, fsync, rename) and writes the metadata last:
a crash between the two leaves old metadata whose checksum does not match the new weights, which
loading reports, rather than a checkpoint that loads the wrong weights. Releases are meant to be
written once into a fresh directory (see the promote job); overwriting is allowed for training
snapshots.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from radinfill import atomic, code_version
from radinfill.model import unet
from radinfill.model.metadata import (
    FORMAT_VERSION,
    METADATA,
    TRANSFORM,
    WEIGHTS,
    CheckpointError,
    check_schema,
    read_metadata,
    versions_note,
)

__all__ = ["load_checkpoint", "save_checkpoint"]

#: Keys that describe the model; a caller may repeat them but not contradict the model.
_MODEL_KEYS = ("variant", "hparams", "window", "transform", "format_version")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, Any]
) -> Path:
    """Write ``model`` and its metadata as a checkpoint directory (see the module docstring).

    Parameters
    ----------
    model
        A network from :func:`radinfill.model.build` (it has ``variant`` and ``hparams``).
    path
        Checkpoint directory; created if missing, its two files replaced if present.
    metadata
        At least ``product`` (str) and ``interval_minutes`` (int); optionally ``training``
        and ``scores`` (objects, default empty) and any other JSON-serialisable keys.
        ``variant``, ``hparams``, ``window``, ``transform`` and ``format_version`` are taken
        from the model and this code; given values must agree. ``code_version``,
        ``torch_version``, ``created`` and ``sha256`` describe this write and replace any
        given value (so the metadata of a loaded checkpoint can be passed back in).
        The mapping is not modified.

    Returns
    -------
    pathlib.Path
        The checkpoint directory.

    Raises
    ------
    ValueError
        If required keys are missing, given values contradict the model, or the metadata is
        not strict JSON (NaN and infinity are not; use null for undefined scores).
    """
    directory = Path(path)
    meta = _merged_metadata(model, metadata, directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in model.state_dict().items()
    }
    data = safetensors.torch.save(state, metadata={"format": "pt"})
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic.write_bytes(directory / WEIGHTS, data)
    atomic.write_bytes(directory / METADATA, text.encode("utf-8"))
    return directory


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint: verify, build, load weights strictly, switch to eval mode.

    Parameters
    ----------
    path
        Checkpoint directory written by :func:`save_checkpoint`.
    map_location
        Device the model is moved to (weights are parsed on the CPU first).

    Returns
    -------
    model, metadata
        The network in eval mode on ``map_location`` and the validated metadata.

    Raises
    ------
    CheckpointError
        For missing files, a checksum mismatch (checked before the weights are parsed), an
        unknown variant, hyper-parameters this code does not accept, incompatible metadata
        (see :func:`read_metadata`) or a state dict that does not match the network.
    """
    directory = Path(path)
    meta = read_metadata(directory)
    try:
        state = _verified_state(directory / WEIGHTS, meta["sha256"])
        model = _built(directory, meta, state)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"{directory / WEIGHTS}: weights do not fit variant {meta['variant']!r} "
                f"with its hparams: {err}"
            ) from None
    except CheckpointError as err:
        err.add_note(versions_note(meta))
        raise
    return model.to(map_location).eval(), meta


def _merged_metadata(
    model: nn.Module, metadata: Mapping[str, Any], directory: Path
) -> dict[str, Any]:
    """The caller's metadata completed with what the model and this code say (sha256 left out)."""
    hparams = dict(model.hparams)
    derived = {
        "variant": model.variant,
        "hparams": hparams,
        "window": hparams.get("window", metadata.get("window")),
        "transform": TRANSFORM,
        "format_version": FORMAT_VERSION,
    }
    for key in _MODEL_KEYS:
        if key in metadata and _as_json(metadata[key]) != _as_json(derived[key]):
            raise ValueError(
                f"{directory}: metadata {key}={metadata[key]!r} contradicts the model "
                f"({derived[key]!r})"
            )
    missing = [key for key in ("product", "interval_minutes") if key not in metadata]
    if derived["window"] is None:
        missing.append("window")
    if missing:
        raise ValueError(f"{directory}: checkpoint metadata needs {', '.join(missing)}")
    meta = {"training": {}, "scores": {}, **metadata, **derived}
    meta |= {
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sha256": "0" * 64,
    }
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory}: checkpoint metadata is not strict JSON: {err}") from None
    try:
        check_schema(meta, directory / METADATA)
    except CheckpointError as err:
        raise ValueError(str(err)) from None
    return meta


def _verified_state(file: Path, expected: str) -> dict[str, torch.Tensor]:
    """Read the weights, check their SHA-256, then parse exactly the bytes that were hashed."""
    try:
        data = file.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read checkpoint weights: {err}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"{file}: sha256 mismatch, metadata says {expected} but the file has {actual} "
            "(corrupt or replaced weights)"
        )
    try:
        return safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{file}: not a readable safetensors file: {err}") from None


def _built(
    directory: Path, meta: Mapping[str, Any], state: Mapping[str, torch.Tensor]
) -> nn.Module:
    """``build(variant, **hparams)`` once the hparams are known to describe ``state``.

    The network is built on the meta device first (shapes only, nothing allocated) and its
    tensor names and shapes compared with the weights; so the real network is exactly as
    large as the verified weights file, and hparams asking for gigantic layers are refused
    without costing memory. More levels than the weights have tensors cannot fit either, which
    bounds the work of the meta build. Refusals are CheckpointError.
    """
    file = directory / METADATA
    variant, hparams = meta["variant"], meta["hparams"]
    variants = unet.list_variants()
    if variant not in variants:
        raise CheckpointError(
            f"{file}: unknown variant {variant!r}; this code knows {', '.join(variants)}"
        )
    widths = hparams.get("widths", ())
    if isinstance(widths, list) and len(widths) > len(state):
        raise CheckpointError(
            f"{file}: hparams ask for {len(widths)} levels, more than the {len(state)} tensors "
            "of the weights could fill"
        )
    try:
        with torch.device("meta"):
            skeleton = unet.build(variant, **hparams).state_dict()
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as err:
        raise CheckpointError(
            f"{file}: hparams not accepted by variant {variant!r}: {err}"
        ) from None
    wanted = {name: tuple(tensor.shape) for name, tensor in skeleton.items()}
    stored = {name: tuple(tensor.shape) for name, tensor in state.items()}
    if wanted != stored:
        misfits = sorted(
            name for name in wanted.keys() | stored.keys() if wanted.get(name) != stored.get(name)
        )
        raise CheckpointError(
            f"{directory / WEIGHTS}: weights do not fit variant {variant!r} with its hparams: "
            f"{len(misfits)} tensor(s) missing, unexpected or of another shape, e.g. "
            + ", ".join(f"{name} {stored.get(name)} vs {wanted.get(name)}" for name in misfits[:3])
        )
    return unet.build(variant, **hparams)


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))
