"""Checkpoint metadata: the names of a checkpoint's files and its validated ``metadata.json``.

Readable without torch: a service refuses an incompatible release, and runs a release's
exported graph (:mod:`radinfill.model.graph`), without importing it. The schema is documented
in :mod:`radinfill.model.checkpoint`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from importlib import metadata as distributions
from pathlib import Path
from typing import Any

from radinfill import code_version

#: Layout version written by :func:`radinfill.model.checkpoint.save_checkpoint`; loading
#: refuses newer ones.
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
METADATA = "metadata.json"
#: The only intensity transform the networks of this code version use.
TRANSFORM = "log1p"
#: Largest metadata file accepted (bytes): metadata is a summary, not a data store.
MAX_METADATA_BYTES = 1024 * 1024

#: Required metadata keys and their JSON types (bool is not accepted where int is asked).
SCHEMA: Mapping[str, type] = {
    "format_version": int,
    "variant": str,
    "hparams": dict,
    "product": str,
    "interval_minutes": int,
    "window": int,
    "transform": str,
    "training": dict,
    "scores": dict,
    "code_version": str,
    "torch_version": str,
    "created": str,
    "sha256": str,
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing files, bad checksum, incompatible metadata.

    The message names the file and the problem. When loading fails after the metadata was
    read, a note lists the radinfill and torch versions recorded in the checkpoint next to the
    running ones.
    """


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the metadata of the checkpoint at ``path`` without loading weights.

    Raises
    ------
    CheckpointError
        If ``metadata.json`` is missing, too large, not a JSON object, lacks a required key,
        has a key of the wrong type, a ``format_version`` newer than :data:`FORMAT_VERSION`,
        another ``transform`` than :data:`TRANSFORM`, or ``window`` disagreeing with
        ``hparams``.
    """
    file = Path(path) / METADATA
    try:
        with open(file, "rb") as handle:
            raw = handle.read(MAX_METADATA_BYTES + 1)
    except OSError as err:
        raise CheckpointError(f"{file}: cannot read checkpoint metadata: {err}") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise CheckpointError(f"{file}: metadata larger than {MAX_METADATA_BYTES} bytes")
    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, a number too long, NaN,
        # or nesting deeper than the interpreter's recursion limit
        raise CheckpointError(f"{file}: metadata is not valid UTF-8 JSON: {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: metadata must be a JSON object, got {type(meta).__name__}")
    try:
        check_schema(meta, file)
    except CheckpointError as err:
        err.add_note(versions_note(meta))
        raise
    return meta


def check_schema(meta: Mapping[str, Any], file: Path) -> None:
    """Raise CheckpointError unless ``meta`` has every key of :data:`SCHEMA`, typed and sane."""
    missing = [key for key in SCHEMA if key not in meta]
    if missing:
        raise CheckpointError(f"{file}: metadata lacks required key(s) {', '.join(missing)}")
    for key, kind in SCHEMA.items():
        value = meta[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(
                f"{file}: metadata {key!r} must be a JSON {_json_type(kind)}, "
                f"got {type(value).__name__} {value!r:.60}"
            )
    if meta["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: format_version {meta['format_version']} is newer than this code reads "
            f"({FORMAT_VERSION}); upgrade radinfill"
        )
    if meta["format_version"] < 1:
        raise CheckpointError(f"{file}: format_version {meta['format_version']} is not valid")
    if meta["transform"] != TRANSFORM:
        raise CheckpointError(
            f"{file}: transform {meta['transform']!r} is not supported (only {TRANSFORM!r})"
        )
    for key in ("window", "interval_minutes"):
        if meta[key] < 1:
            raise CheckpointError(f"{file}: {key} must be >= 1, got {meta[key]}")
    if meta["hparams"].get("window", meta["window"]) != meta["window"]:
        raise CheckpointError(
            f"{file}: window {meta['window']} disagrees with hparams window "
            f"{meta['hparams']['window']}"
        )
    if not _SHA256.fullmatch(meta["sha256"]):
        raise CheckpointError(f"{file}: sha256 must be 64 lower-case hex digits")


def versions_note(meta: Mapping[str, Any]) -> str:
    """Which radinfill and torch wrote the checkpoint, and which are running."""
    return (
        f"checkpoint written by radinfill {meta.get('code_version', 'unknown')} with torch "
        f"{meta.get('torch_version', 'unknown')}; running radinfill {code_version()} with "
        f"torch {_installed('torch')}"
    )


def _no_constant(name: str) -> None:
    """Refuse ``NaN`` and ``Infinity`` when parsing: metadata is strict JSON (as written)."""
    raise ValueError(f"{name} is not strict JSON")


def _json_type(kind: type) -> str:
    return {int: "integer", str: "string", dict: "object"}[kind]


def _installed(distribution: str) -> str:
    """The installed version of ``distribution`` (read from its metadata, not imported)."""
    try:
        return distributions.version(distribution)
    except distributions.PackageNotFoundError:
        return "not installed"
