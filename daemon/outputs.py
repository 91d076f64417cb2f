"""What the service writes per input: the gap-free RADOLAN file, CF-netCDF, a JSON sidecar;
and the quarantine of inputs it cannot use.

Every file is written temp -> fsync -> rename in its target directory, so a reader (a downstream
watcher on the output tree) only ever sees complete files, each appearing as one rename. The
order is RADOLAN, netCDF, sidecar, in two calls: :meth:`Writer.publish` puts the drop-in product
in place as soon as it is encoded (what the warning chain waits for), :meth:`Writer.write` then
adds the netCDF and the sidecar. The sidecar, listing the other files with their checksums,
appears last, so its presence means the set is complete; a set being replaced (a correction)
loses its sidecar before its new product appears, and a failed netCDF write removes the
previous version's netCDF, so no sidecar ever vouches for a mix of versions. A re-run of the
same input (after a crash between writing and recording) rewrites the same files with the
same content.

Writes are retried (tenacity, bounded, never past a shutdown) on transient OS errors only:
a full disk or a permission error is not transient and fails the product at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tenacity

from radinfill import atomic, netcdf, permissions
from radinfill.daemon.faults import Faults
from radinfill.dataset import to_dataset
from radinfill.radolan import Field

__all__ = ["OutputPathError", "OutputPaths", "Writer", "quarantine", "remove_partial", "retrying"]

#: errno values worth a retry: a network file system blip or a busy resource.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.ESTALE, errno.EINTR, errno.ENOLCK})


@dataclass(frozen=True)
class OutputPaths:
    """Where the outputs of one input go."""

    radolan: Path
    netcdf: Path
    sidecar: Path

    def all(self) -> list[Path]:
        """The three paths, in writing order."""
        return [self.radolan, self.netcdf, self.sidecar]


class OutputPathError(ValueError):
    """An output name that would leave the output directory; the message says how."""


def infilled(field: Field, hole: np.ndarray, values: np.ndarray) -> Field:
    """``field`` with ``values`` (the method's output) in place: the hole pixels get data, so
    they lose the no-data flag; the secondary bit is not set on them (downstream masks it)."""
    return field.replace(
        values=values, nodata=field.nodata & ~hole, secondary=field.secondary & ~hole
    )


def netcdf_stem(name: str) -> str:
    """The netCDF output's stem for a product file name (compression suffixes dropped)."""
    return name.removesuffix(".gz").removesuffix(".bz2")


def output_name(template: str, *, name: str, stem: str, product: str, time: datetime) -> str:
    """``template`` filled in, checked to be a relative path that stays below the output root.

    The fields come from outside (the input's file name, the product id of its header) and a
    ``{time:...}`` format can produce any text, so the result is checked, not the template:
    no NUL, not absolute, no empty, ``.`` or ``..`` component.

    Raises
    ------
    OutputPathError
        Naming the result and the template.
    """
    text = template.format(name=name, stem=stem, product=product, time=time)
    parts = text.split("/")
    if "\0" in text or text.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise OutputPathError(
            f"output name {text!r} (from output_name {template!r}) is not a relative path "
            "inside the output directory"
        )
    return text


def output_paths(outgoing: Path, template: str, input_name: str, field: Field) -> OutputPaths:
    """Output paths for an input file name: the RADOLAN file named by ``template`` (default the
    input's name, so downstream sees the same names as upstream), the netCDF and the sidecar
    next to it.

    Raises
    ------
    OutputPathError
        If the name is not a relative path (:func:`output_name`), or its directory resolves
        outside ``outgoing`` (a symbolic link below it): nothing is ever written outside.
    """
    stem = netcdf_stem(input_name)
    name = output_name(template, name=input_name, stem=stem, product=field.product, time=field.time)
    target = outgoing / name
    if not target.parent.resolve().is_relative_to(outgoing.resolve()):
        raise OutputPathError(f"{target}: its directory resolves outside {outgoing}")
    base = netcdf_stem(target.name)
    return OutputPaths(target, target.with_name(f"{base}.nc"), target.with_name(f"{base}.json"))


def retrying(stop: threading.Event, on_retry: Callable[[str], None], op: str) -> tenacity.Retrying:
    """A bounded retry policy for one idempotent I/O operation ``op``.

    At most 5 attempts within 30 s, exponential backoff with jitter, aborted as soon as
    ``stop`` is set (a shutdown never waits out a backoff); ``on_retry(op)`` counts each retry.
    """
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_transient),
        stop=(
            tenacity.stop_after_attempt(5)
            | tenacity.stop_after_delay(30)
            | tenacity.stop_when_event_set(stop)
        ),
        wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=5),
        before_sleep=lambda state: on_retry(op),
        reraise=True,
    )


def _transient(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in TRANSIENT_ERRNOS


class Writer:
    """Writes the outputs of a product (see the module docstring).

    Parameters
    ----------
    netcdf, sidecar
        Whether to write the CF-netCDF file and the JSON sidecar.
    stop
        Set on shutdown; aborts retries.
    on_retry
        Called with the operation name before each retry (a metric).
    mode
        File mode of every output (``[service] output_mode``); directories a dated
        ``output_name`` needs are created 0755, whatever the umask.
    faults
        Injected I/O failures (:mod:`radinfill.daemon.faults`; reliability tests only).
    """

    def __init__(
        self,
        *,
        netcdf: bool = True,
        sidecar: bool = True,
        stop: threading.Event | None = None,
        on_retry: Callable[[str], None] = lambda op: None,
        mode: int = atomic.DEFAULT_MODE,
        faults: Faults | None = None,
    ) -> None:
        self.netcdf, self.sidecar, self.mode = netcdf, sidecar, mode
        self.faults = faults
        self.stop = stop if stop is not None else threading.Event()
        self.on_retry = on_retry

    def publish(self, paths: OutputPaths, product: bytes, *, version: int) -> Path:
        """Put the drop-in product in place: the first output of a set, written before the
        netCDF and the sidecar are built (:meth:`write`) so that downstream never waits for them.

        ``product`` is the product's bytes in the format of the input (the input's own bytes
        when nothing was infilled: downstream still sees every time step); ``version`` > 1 marks
        a correction, which withdraws the published set's sidecar first. Returns the path.
        """
        permissions.make_dirs(paths.radolan.parent)  # a dated output_name
        # A set being replaced (a correction) loses its claim first: until the new sidecar is
        # in place no sidecar vouches for files that may be half old, half new.
        paths.sidecar.unlink(missing_ok=True)
        correction = version > 1
        self._io("write_radolan", correction, atomic.write_bytes, paths.radolan, product, self.mode)
        return paths.radolan

    def write(
        self,
        paths: OutputPaths,
        *,
        output: Field,
        hole: np.ndarray,
        provenance: Mapping[str, str],
        record: Mapping[str, Any],
    ) -> list[Path]:
        """Complete the set :meth:`publish` began: the netCDF, then the sidecar. Returns every
        path of the set, the product's included.

        Parameters
        ----------
        paths
            Targets (:func:`output_paths`); ``paths.radolan`` is published.
        output
            The field the published product holds (of a bundle: the infilled member).
        hole
            bool ``(rows, cols)``: infilled pixels (the netCDF ``infill_mask``).
        provenance
            netCDF global attributes (strings).
        record
            The sidecar's content (JSON values); the output checksums are added.
        """
        correction = record.get("version", 1) > 1
        written = [paths.radolan]
        if self.netcdf:
            dataset = to_dataset([output])
            try:
                self._io(
                    "write_netcdf",
                    correction,
                    netcdf.write,
                    dataset,
                    paths.netcdf,
                    infill_mask=hole,
                    provenance=provenance,
                    mode=self.mode,
                )
            except OSError:  # (netcdf.write reports every failure as one)
                # The previous version's netCDF must not stand beside the new RADOLAN file.
                paths.netcdf.unlink(missing_ok=True)
                raise
            written.append(paths.netcdf)
        if self.sidecar:
            sums = {p.name: _sha256(p) for p in written}
            content = {**record, "outputs": sums}
            text = json.dumps(content, indent=2, sort_keys=True, default=_json_default) + "\n"
            self._io(
                "write_sidecar",
                correction,
                atomic.write_bytes,
                paths.sidecar,
                text.encode(),
                self.mode,
            )
            written.append(paths.sidecar)
        return written

    def _io(
        self, op: str, correction: bool, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """``function(*args, **kwargs)`` under :func:`retrying`, behind the fault point
        (``correction``: the write replaces a published set)."""
        for attempt in retrying(self.stop, self.on_retry, op):
            with attempt:
                if self.faults is not None:
                    self.faults.check(op, correction=correction)
                return function(*args, **kwargs)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


def quarantine(
    directory: Path, source: Path, data: bytes | None, reason: str, kind: str
) -> Path | None:
    """Copy a rejected input into ``directory`` with a ``.reason.json`` beside it.

    The input is copied, not moved: the incoming tree belongs to the upstream feed. A name
    already taken (another file of that name quarantined earlier) gets a content-hash suffix,
    so nothing in quarantine is overwritten. ``data`` None (an oversized file, never read)
    writes the reason file only. Returns the quarantined copy's path (None if not copied).
    """
    digest = hashlib.sha256(data).hexdigest() if data is not None else ""
    target = directory / source.name
    if data is not None and target.exists() and _sha256(target) != digest:
        target = directory / f"{source.name}.{digest[:12]}"
    if data is not None:
        atomic.write_bytes(target, data)
    note = {
        "source": str(source),
        "sha256": digest or None,
        "copied": data is not None,
        "kind": kind,
        "reason": reason,
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(note, indent=2) + "\n"
    atomic.write_bytes(target.with_name(target.name + ".reason.json"), text.encode())
    return target if data is not None else None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def remove_partial(outgoing: Path) -> list[Path]:
    """Delete the temporary files a killed process left in the output tree (``.NAME.part-*``
    of :func:`radinfill.atomic.replacing`); complete outputs are never touched. Returns the
    paths removed."""
    removed = []
    for path in outgoing.rglob(".*.part-*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
