"""Training data of the infill networks: real and synthetic sequences, outage masks, samples.

Three kinds of sequence feed training, all in one representation (:class:`SequenceSource`: a run
of consecutive fields at the product interval, float32 ``(T, H, W)`` in mm per interval, row 0 =
south, NaN = no data):

* RADOLAN files in a directory tree (:func:`radolan_sequences`; any precipitation-amount product
  and grid the codec reads, archives included), grouped by product and grid and split into runs
  where the archive has a gap: a gap ends a run, it is never bridged;
* CF-netCDF files written by radinfill (:func:`netcdf_sequences`), where infilled pixels
  (``infill_mask``) count as no data, so the model never learns from its own output;
* real rain-rate events (:func:`rate_sequences`: FMI in ``shared/data/fmi/``, BoM and MRMS in
  ``shared/data/training/``; converted to mm per interval and flipped to row 0 = south) and
  synthetic sequences generated on demand
  (:func:`synthetic_sequences`, deterministic per preset and seed).

Holes come from a :class:`MaskLibrary`: real no-data patterns mined from an archive
(:func:`radinfill.holes.detect` failure masks, deduplicated) plus radar outages built from the real
site geometry (:func:`radinfill.synth.outage_events`). A sampled mask persists over the last steps
of the window, as an outage does.

:class:`WindowDataset` draws training samples: a source, a window ending at the current frame, a
crop (square, default 128 px, so a 2-core CPU can train) centred on rain more often than not
(holes placed where it rains fixed the transfer from synthetic to real data in the prototype,
``reference/model-prototype-findings.md``), a hole restricted to pixels with truth, and a random
flip/rotation. Samples are deterministic per ``(seed, epoch, index)``, so a ``DistributedSampler``
with ``set_epoch`` works. Only :func:`collate` imports torch.

**Held-out events** (:data:`HELD_OUT`): the YW 2017-08-16 sequence (the only rainy 5-minute
RADOLAN sequence, the deployment domain) and FMI 2017-05-09 (convective, 7 % wet: the harder
case) are kept for evaluation and checkpoint selection; FMI 2016-09-28 (stratiform, 23 % wet,
the most rain pixels to learn from) is used for training. :class:`WindowDataset` drops held-out
sources by default.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radinfill import holes, synth
from radinfill.model import features
from radinfill.radolan import Grid, RadolanError, grid_for, read

if TYPE_CHECKING:
    import torch

__all__ = [
    "HELD_OUT",
    "MaskLibrary",
    "SequenceSource",
    "WindowDataset",
    "collate",
    "netcdf_sequences",
    "radolan_sequences",
    "rate_frames",
    "rate_sequences",
    "split_in_time",
    "synthetic_sequences",
]

#: Events kept out of training (see the module docstring): ``SequenceSource.event`` values.
HELD_OUT: frozenset[str] = frozenset({"YW-20170816", "fmi-20170509"})
#: Rain rate (mm/h) from which a pixel counts as wet when crops are centred on rain.
WET_MMH = 0.1
#: CF standard name of the products that can be trained on (amounts per interval).
_AMOUNT = "lwe_thickness_of_precipitation_amount"
#: Raw no-data value and scale (0.01 mm/h per count) of the rain-rate events, see
#: ``shared/data/fmi/README.md`` and ``shared/data/training/README.md``.
_RATE_NODATA = 65535
_RATE_SCALE = 0.01


@dataclass(frozen=True, eq=False)
class SequenceSource:
    """A run of consecutive fields at the product interval, loaded on first use.

    Attributes
    ----------
    name
        Label for logs (product, grid, first time or file).
    event
        Event id used to hold events out of training (:data:`HELD_OUT`), e.g.
        ``YW-20170816``, ``fmi-20160928``, ``synth-mixed-3``.
    interval_minutes
        Minutes between frames (the accumulation interval of the values).
    length
        Number of frames T.
    loader
        Returns float32 ``(T, H, W)``, mm per interval, row 0 = south, NaN = no data; a
        module-level function or ``partial`` of one, so sources pickle into worker processes.
    """

    name: str
    event: str
    interval_minutes: int
    length: int
    loader: Callable[[], np.ndarray] = field(repr=False)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False, init=False)

    def frames(self) -> np.ndarray:
        """The frames, loaded on first use and kept (read-only float32 ``(T, H, W)``).

        Raises
        ------
        ValueError
            If the loader returns another number of frames than ``length``.
        """
        if "frames" not in self._cache:
            frames = np.asarray(self.loader(), dtype=np.float32)
            if frames.ndim != 3 or len(frames) != self.length:
                raise ValueError(f"{self.name}: expected {self.length} frames, got {frames.shape}")
            frames.flags.writeable = False
            self._cache["frames"] = frames
        return self._cache["frames"]


def radolan_sequences(root: str | os.PathLike[str], *, min_length: int = 2) -> list[SequenceSource]:
    """Runs of consecutive precipitation-amount fields in a tree of RADOLAN files.

    Every file under ``root`` the codec reads (plain, gz, bz2, tar, ODIM-HDF5) is decoded once to
    learn product, grid and time; the values are decoded again when a run is first used, so
    walking a large archive holds one file in memory at a time. Fields are grouped by product and
    grid, sorted by time (duplicates dropped) and split wherever two fields are not one product
    interval apart. Reflectivities, no-data-means-dry products (RE) and nowcasts (``VV`` > 0)
    are skipped; files that cannot be decoded are skipped too (an archive holds other files).

    Parameters
    ----------
    root
        Directory to walk (or a single file).
    min_length
        Shortest run kept (frames).

    Returns
    -------
    list of SequenceSource
        Sorted by product, grid and start time.
    """
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    groups: dict[tuple[str, str], dict[datetime, tuple[Path, int]]] = {}
    intervals: dict[tuple[str, str], timedelta] = {}
    for path in paths:
        try:
            fields = read(path)
        except (RadolanError, OSError, ValueError):
            continue
        for index, f in enumerate(fields):
            if f.info.standard_name != _AMOUNT or f.header.lead_minutes or f.info.nodata_means_dry:
                continue
            key = (f.product, f"{f.grid.name} {f.grid.rows}x{f.grid.cols}")
            groups.setdefault(key, {}).setdefault(f.time, (path, index))
            intervals[key] = f.interval
    sources = []
    for key in sorted(groups):
        members = sorted(groups[key].items())
        for run in _runs(members, intervals[key]):
            if len(run) >= min_length:
                sources.append(_radolan_source(key, run, intervals[key]))
    return sources


def _runs(
    members: list[tuple[datetime, tuple[Path, int]]], interval: timedelta
) -> list[list[tuple[datetime, tuple[Path, int]]]]:
    """Split time-sorted members into runs whose neighbours are exactly ``interval`` apart."""
    runs = [[members[0]]]
    for previous, member in itertools.pairwise(members):
        if member[0] - previous[0] == interval:
            runs[-1].append(member)
        else:
            runs.append([member])
    return runs


def _radolan_source(
    key: tuple[str, str], run: list[tuple[datetime, tuple[Path, int]]], interval: timedelta
) -> SequenceSource:
    product, grid = key
    start = run[0][0]
    return SequenceSource(
        name=f"{product} {grid} {start:%Y-%m-%d %H:%M}",
        event=f"{product}-{start:%Y%m%d}",
        interval_minutes=int(interval.total_seconds() // 60),
        length=len(run),
        loader=partial(_radolan_frames, [location for _, location in run]),
    )


def _radolan_frames(locations: list[tuple[Path, int]]) -> np.ndarray:
    """Stack the values of fields given as (file, index in the file)."""
    return np.stack([read(path)[index].values for path, index in locations])


def netcdf_sequences(
    paths: Iterable[str | os.PathLike[str]], *, min_length: int = 2
) -> list[SequenceSource]:
    """Runs of consecutive fields in CF-netCDF files written by :func:`radinfill.netcdf.write`.

    The data variable is the one named by the global attribute ``product`` (mm per interval,
    dims ``(time, y, x)``); the interval is ``radolan_interval_minutes``. Pixels flagged in
    ``infill_mask`` are set to NaN: they hold a model's output, not truth. Each file is split at
    gaps like :func:`radolan_sequences`.

    Raises
    ------
    ValueError
        Naming the file, if it is not an amount product with a constant interval.
    """
    import xarray as xr

    sources = []
    for path in map(Path, paths):
        with xr.open_dataset(path) as ds:
            product = str(ds.attrs.get("product", ""))
            interval = ds.attrs.get("radolan_interval_minutes")
            if product not in ds or ds[product].attrs.get("standard_name") != _AMOUNT:
                raise ValueError(f"{path}: no precipitation-amount variable named by 'product'")
            if interval is None:
                raise ValueError(f"{path}: no constant 'radolan_interval_minutes' attribute")
            times = list(ds.indexes["time"].to_pydatetime())
        step = timedelta(minutes=int(interval))
        members = [(t, (path, i)) for i, t in enumerate(times)]
        for run in _runs(members, step):
            if len(run) >= min_length:
                indices = [i for _, (_, i) in run]
                sources.append(
                    SequenceSource(
                        name=f"{path.name} {run[0][0]:%Y-%m-%d %H:%M}",
                        event=f"{product}-{run[0][0]:%Y%m%d}",
                        interval_minutes=int(interval),
                        length=len(run),
                        loader=partial(_netcdf_frames, path, product, indices),
                    )
                )
    return sources


def _netcdf_frames(path: Path, product: str, indices: list[int]) -> np.ndarray:
    """The ``product`` values at time ``indices`` of ``path``, NaN where infilled."""
    import xarray as xr

    with xr.open_dataset(path) as ds:
        values = ds[product].isel(time=indices).values.astype(np.float32)
        if "infill_mask" in ds:
            infilled = ds["infill_mask"].values.astype(bool)
            infilled = np.broadcast_to(
                infilled if infilled.ndim == 2 else infilled[indices], values.shape
            )
            values[infilled] = np.nan
    return values


def rate_sequences(directory: str | os.PathLike[str]) -> list[SequenceSource]:
    """Rain-rate events (``*.npz``) as sequences in mm per interval, row 0 = south.

    The layout of ``shared/data/fmi`` and ``shared/data/training`` (FMI, BoM, MRMS): uint16
    rain rate in 0.01 mm/h (65535 = no data), rows north first, and ``interval_minutes``
    (5, 6 or 4). The rate times ``interval / 60`` is the amount per interval, the unit of the
    RADOLAN products, so every source is in the same unit; each frame is one step of motion
    whatever its interval (the networks see rates in mm/h and motion per step). The event id is
    the file's stem (``fmi-20170509``), which :data:`HELD_OUT` matches.
    """
    sources = []
    for path in sorted(Path(directory).glob("*.npz")):
        with np.load(path) as z:
            length, interval = len(z["times"]), int(z["interval_minutes"])
        sources.append(
            SequenceSource(
                name=path.name,
                event=path.stem,
                interval_minutes=interval,
                length=length,
                loader=partial(rate_frames, path),
            )
        )
    return sources


def rate_frames(path: str | os.PathLike[str]) -> np.ndarray:
    """A rain-rate event (``*.npz``) in mm per interval, row 0 = south, NaN = no data."""
    with np.load(path) as z:
        raw, interval = z["rain"], int(z["interval_minutes"])
    scale = np.float32(_RATE_SCALE * interval / 60.0)
    amount = np.where(raw == _RATE_NODATA, np.float32(np.nan), raw * scale)
    return amount[:, ::-1].astype(np.float32)  # north-first rows -> row 0 = south


def split_in_time(
    sources: Iterable[SequenceSource], fraction: float, *, min_length: int
) -> tuple[list[SequenceSource], list[SequenceSource]]:
    """Training and validation parts of real events: the last ``fraction`` of each run of
    frames is validation, the rest training, so that no validation frame was trained on.

    Synthetic sources (event ``synth-*``) are training only. A part shorter than
    ``min_length`` frames is dropped.
    """
    training, validation = [], []
    for source in sources:
        cut = source.length - round(source.length * fraction)
        if fraction <= 0 or source.event.startswith("synth-"):
            training.append(source)
            continue
        for part, (start, stop) in ((training, (0, cut)), (validation, (cut, source.length))):
            if stop - start >= min_length:
                part.append(
                    SequenceSource(
                        name=f"{source.name} [{start}:{stop}]",
                        event=source.event,
                        interval_minutes=source.interval_minutes,
                        length=stop - start,
                        loader=partial(_frames_between, source, start, stop),
                    )
                )
    return training, validation


def _frames_between(source: SequenceSource, start: int, stop: int) -> np.ndarray:
    return source.frames()[start:stop]


def synthetic_sequences(
    presets: Sequence[str],
    seeds: Iterable[int],
    grid: Grid | tuple[int, int] = (256, 256),
    steps: int = 24,
    interval_minutes: int = 5,
) -> list[SequenceSource]:
    """One synthetic sequence per (preset, seed), generated by :func:`radinfill.synth.sequence`
    when first used (same preset and seed, same frames)."""
    grid = grid if isinstance(grid, Grid) else grid_for(*grid)
    return [
        SequenceSource(
            name=f"synthetic {preset} seed {seed} {grid.rows}x{grid.cols}",
            event=f"synth-{preset}-{seed}",
            interval_minutes=interval_minutes,
            length=steps,
            loader=partial(synth.sequence, grid, steps, interval_minutes, preset, seed),
        )
        for preset, seed in itertools.product(presets, list(seeds))
    ]


@dataclass(frozen=True)
class _Pattern:
    """One no-data pattern: a bool mask on its own grid and how long it lasts (steps, or 0
    when unknown), with the flat indices of its pixels for placing crops on it."""

    mask: np.ndarray
    duration: int
    pixels: np.ndarray


class MaskLibrary:
    """Hole patterns to cut into training samples: real ones and synthetic outages.

    Parameters
    ----------
    real
        bool ``(rows, cols)`` masks (any grid), e.g. from :meth:`mine`.
    synthetic
        :class:`radinfill.synth.Outage` events (their mask and duration are used).
    min_pixels
        Patterns with fewer pixels are dropped (tiny static holes teach little).
    """

    def __init__(
        self,
        real: Iterable[np.ndarray] = (),
        synthetic: Iterable[synth.Outage] = (),
        *,
        min_pixels: int = 50,
    ) -> None:
        seen: set[bytes] = set()
        patterns = []
        candidates = [(m, 0) for m in real] + [(e.mask, e.stop - e.start) for e in synthetic]
        for mask, duration in candidates:
            mask = np.asarray(mask, dtype=bool)
            key = repr(mask.shape).encode() + np.packbits(mask).tobytes()
            if mask.sum() < min_pixels or key in seen:
                continue
            seen.add(key)
            patterns.append(_Pattern(mask, duration, np.flatnonzero(mask)))
        if not patterns:
            raise ValueError(f"no hole pattern with at least {min_pixels} pixels")
        self.patterns: tuple[_Pattern, ...] = tuple(patterns)
        self.real_count = sum(1 for p in patterns if p.duration == 0)

    @staticmethod
    def mine(paths: Iterable[str | os.PathLike[str]]) -> list[np.ndarray]:
        """Failure masks (:func:`radinfill.holes.detect`) of every field in ``paths`` that has
        one; files that cannot be decoded are skipped."""
        masks = []
        for path in paths:
            try:
                fields = read(path)
            except (RadolanError, OSError, ValueError):
                continue
            masks += [r.failure for r in map(holes.detect, fields) if r.pixels]
        return masks

    @classmethod
    def build(
        cls,
        archive: Iterable[str | os.PathLike[str]] = (),
        *,
        grid: Grid | tuple[int, int] = (900, 900),
        seeds: Iterable[int] = range(4),
        steps: int = 48,
        min_pixels: int = 50,
    ) -> MaskLibrary:
        """Real masks mined from the ``archive`` files plus the synthetic outages of
        :func:`radinfill.synth.outage_events` over ``steps`` steps for each seed on ``grid``."""
        events = [e for s in seeds for e in synth.outage_events(grid, steps, s, p_fail=0.05)]
        return cls(cls.mine(archive), events, min_pixels=min_pixels)

    def __len__(self) -> int:
        return len(self.patterns)

    def sample(self, rng: np.random.Generator, shape: tuple[int, int], steps: int) -> np.ndarray:
        """A hole persisting over the last steps of a window, cropped to ``shape``.

        A pattern is drawn uniformly; the crop puts one of its pixels (drawn uniformly) in the
        central half of the crop, so the crop always holds part of it. The outage is active from
        a random onset to the last step, at most its duration for a synthetic outage (a real
        pattern's is unknown) and at most ``steps - 1`` steps (when ``steps`` > 1), so the first
        frame is complete and there is something to advect into the hole. Outside the pattern's
        grid the crop is False.

        Returns
        -------
        numpy.ndarray
            bool ``(steps, *shape)``; the last step is never empty.
        """
        pattern = self.patterns[rng.integers(len(self.patterns))]
        rows, cols = pattern.mask.shape
        row, col = divmod(int(pattern.pixels[rng.integers(len(pattern.pixels))]), cols)
        top = row - shape[0] // 4 - int(rng.integers(max(shape[0] // 2, 1)))
        left = col - shape[1] // 4 - int(rng.integers(max(shape[1] // 2, 1)))
        crop = np.zeros(shape, dtype=bool)
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + shape[0], rows), min(left + shape[1], cols)
        crop[r0 - top : r1 - top, c0 - left : c1 - left] = pattern.mask[r0:r1, c0:c1]
        longest = min(pattern.duration or steps, max(steps - 1, 1))
        active = int(rng.integers(1, longest + 1))
        out = np.zeros((steps, *shape), dtype=bool)
        out[steps - active :] = crop
        return out


class WindowDataset:
    """Training samples: a window of frames with a hole cut, and the truth inside it.

    Parameters
    ----------
    sources
        Sequences to draw from; those whose ``event`` is in ``exclude`` are dropped, as are
        those shorter than ``window`` frames.
    masks
        Hole patterns.
    window
        Frames the network sees, the current (last) one included (its window).
    context
        Frames per sample (default ``window``): the prior and the motion use all of them,
        and a hole may persist over all but the first, so outages longer than the window are
        trained on as the service meets them.
    intensity_scale
        ``(low, high)``: every sample is multiplied by a factor drawn log-uniformly from this
        range, so that a constant damping or amplification cannot lower the loss.
    crop
        Side (px) of the square crop.
    seed
        Seed of every draw; a sample is a function of ``(seed, epoch, index)``.
    length
        Samples per epoch (``len(dataset)``).
    rain_bias
        Probability that the crop is centred on a wet pixel of the current frame (else
        anywhere); uniform crops keep dry and edge cases in the mix.
    exclude
        Event ids never used (default :data:`HELD_OUT`).
    tries
        Draws of crop and hole until the hole covers a pixel with truth; after that the sample
        is returned with an empty ``loss_mask`` (weight 0 in the loss).

    Raises
    ------
    ValueError
        If no source is left, or ``window`` or ``crop`` is below 1.
    """

    def __init__(
        self,
        sources: Iterable[SequenceSource],
        masks: MaskLibrary,
        *,
        window: int = features.DEFAULT_WINDOW,
        context: int | None = None,
        intensity_scale: tuple[float, float] = (1.0, 1.0),
        crop: int = 128,
        seed: int = 0,
        length: int = 1024,
        rain_bias: float = 0.8,
        exclude: Iterable[str] = HELD_OUT,
        tries: int = 10,
    ) -> None:
        if window < 1 or crop < 1:
            raise ValueError(f"window and crop must be positive, got {window} and {crop}")
        context = window if context is None else context
        if context < window:
            raise ValueError(f"context {context} must be at least the window {window}")
        excluded = frozenset(exclude)
        self.sources = tuple(s for s in sources if s.event not in excluded and s.length >= context)
        if not self.sources:
            raise ValueError(f"no source of at least {context} frames outside {sorted(excluded)}")
        self.masks, self.window, self.crop, self.seed = masks, window, crop, seed
        self.context, self.intensity_scale = context, tuple(intensity_scale)
        self.length, self.rain_bias, self.tries = length, rain_bias, tries
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: the same index gives a different sample in another epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample: ``inputs`` (:class:`~radinfill.model.features.Inputs`),
        ``target`` float32 ``(H, W)`` mm/h (0 where no truth), ``loss_mask`` bool ``(H, W)``,
        ``source`` (its name)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        source = self.sources[rng.integers(len(self.sources))]
        frames = source.frames()
        start = int(rng.integers(len(frames) - self.context + 1))
        low, high = np.log(self.intensity_scale)
        window = frames[start : start + self.context] * np.float32(np.exp(rng.uniform(low, high)))
        for _ in range(self.tries):
            truth, hole = self._crop(rng, window, source.interval_minutes)
            loss_mask = hole[-1] & np.isfinite(truth[-1])
            if loss_mask.any():
                break
        k = int(rng.integers(4))
        truth, hole = (np.rot90(a, k, axes=(1, 2)) for a in (truth, hole))
        if rng.random() < 0.5:
            truth, hole = truth[:, :, ::-1], hole[:, :, ::-1]
        truth, hole = np.ascontiguousarray(truth), np.ascontiguousarray(hole)
        loss_mask = hole[-1] & np.isfinite(truth[-1])
        observed = np.where(hole, np.float32(np.nan), truth)
        inputs = features.prepare(
            observed,
            loss_mask,
            window=self.window,
            interval_minutes=source.interval_minutes,
        )
        to_rate = np.float32(60.0 / source.interval_minutes)
        return {
            "inputs": inputs,
            "target": np.nan_to_num(truth[-1], nan=0.0) * to_rate,
            "loss_mask": loss_mask,
            "source": source.name,
        }

    def _crop(
        self, rng: np.random.Generator, window: np.ndarray, interval_minutes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A crop of the window (float32 ``(T, c, c)``, NaN-padded beyond the grid) centred on
        rain with probability ``rain_bias``, and a hole (bool, same shape) from the library."""
        steps, rows, cols = window.shape
        wet = np.flatnonzero(window[-1] >= WET_MMH * interval_minutes / 60.0)
        if len(wet) and rng.random() < self.rain_bias:
            row, col = divmod(int(wet[rng.integers(len(wet))]), cols)
        else:
            row, col = int(rng.integers(rows)), int(rng.integers(cols))
        size = self.crop
        top, left = row - size // 2, col - size // 2
        out = np.full((steps, size, size), np.nan, dtype=np.float32)
        r0, c0 = max(top, 0), max(left, 0)
        r1, c1 = min(top + size, rows), min(left + size, cols)
        out[:, r0 - top : r1 - top, c0 - left : c1 - left] = window[:, r0:r1, c0:c1]
        return out, self.masks.sample(rng, (size, size), steps)


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Batch samples of :class:`WindowDataset` into tensors (a ``DataLoader`` ``collate_fn``).

    Returns
    -------
    dict
        ``values``, ``valid`` ``(B, T, 1, H, W)`` and ``aux`` ``(B, A, H, W)`` from
        :func:`radinfill.model.features.to_tensors`; ``target`` float32 ``(B, 1, H, W)`` mm/h
        and ``loss_mask`` bool ``(B, 1, H, W)``.
    """
    import torch

    values, valid, aux = features.to_tensors([s["inputs"] for s in samples])

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([s[name] for s in samples])).unsqueeze(1)

    return {
        "values": values,
        "valid": valid,
        "aux": aux,
        "target": stack("target"),
        "loss_mask": stack("loss_mask"),
    }
