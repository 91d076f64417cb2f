"""The ``[train]`` section of the radinfill TOML file: a training run and the data it draws from.

Training and the service share one configuration file, so an operator keeps the model's data,
schedule and output location next to the service that runs it. The section reads::

    [train]
    variant = "lstm_attention"          # radinfill.model.list_variants()
    checkpoint_dir = "/var/lib/radinfill/train/run"
    epochs = 8
    batch_size = 8
    lr = 2e-3                           # other radinfill.train.loop.TrainConfig fields likewise

    [train.hparams]                     # network constructor arguments
    widths = [16, 32, 48, 64, 64]

    [train.data]
    radolan = ["/data/radolan"]         # RADOLAN trees: sequences and real no-data masks
    netcdf = []                         # radinfill CF-netCDF outputs
    rates = ["/data/fmi"]               # rain-rate events (*.npz: FMI, BoM, MRMS layout)
    synthetic_presets = ["stratiform", "mixed", "convective"]
    synthetic_seeds = 8                 # sequences per preset
    window = 6
    crop = 128
    samples_per_epoch = 1024

    [train.metrics]                     # optional: Prometheus metrics of the run (rank 0)
    textfile = "/var/lib/node_exporter/textfile/radinfill_train.prom"
    pushgateway = "pushgateway.example:9091"
    instance = "hpc"                    # grouping key; stable, never a run id

Relative paths are taken relative to the TOML file, so a configuration travels with the
directory it sits in. Unknown keys are errors: a misspelt key must not silently train with a
default. :func:`override` applies ``KEY=VALUE`` command-line overrides (``data.crop=96``) with
TOML value syntax.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radinfill.config import ConfigError, Document, read
from radinfill.model import features

__all__ = [
    "DataConfig",
    "PushConfig",
    "TrainSettings",
    "from_document",
    "load",
    "override",
    "parse",
]

#: TrainConfig fields that are paths (resolved against the configuration file).
_PATH_FIELDS = ("checkpoint_dir", "log_path")
#: Sub-tables of ``[train]`` that are not TrainConfig fields.
_TABLES = ("data", "metrics")


@dataclass(frozen=True)
class DataConfig:
    """Where training samples come from and how they are cut.

    Attributes
    ----------
    radolan, netcdf, rates : tuple of pathlib.Path
        Sources for :func:`~radinfill.train.data.radolan_sequences`,
        :func:`~radinfill.train.data.netcdf_sequences` and
        :func:`~radinfill.train.data.rate_sequences`.
    masks : tuple of pathlib.Path
        Archives mined for real no-data patterns; default: the ``radolan`` trees.
    synthetic_presets : tuple of str
        :data:`radinfill.synth.PRESETS` keys of the synthetic sequences.
    synthetic_seeds : int
        Synthetic sequences per preset (seeds 0 .. n-1).
    synthetic_grid : tuple of int
        Rows and columns of a synthetic sequence.
    synthetic_steps : int
        Frames per synthetic sequence.
    window : int
        Frames the network sees (its window).
    context : int
        Frames per sample (>= window): motion and the advected prior use all of them, so an
        outage may last longer than the window, as in the service.
    intensity_scale : tuple of float
        Range of the random factor every sample is multiplied by (log-uniform); a model then
        cannot learn damping or amplifying as a constant. ``[1, 1]`` disables it.
    validation_fraction : float
        Share of each real event (its last frames) kept out of training for checkpoint
        selection.
    crop : int
        Side of the square training crop (px).
    samples_per_epoch : int
        Samples drawn per epoch.
    rain_bias : float
        Probability that a crop is centred on rain.
    mask_seeds : int
        Seeds of the synthetic radar outages in the mask library.
    """

    radolan: tuple[Path, ...] = ()
    netcdf: tuple[Path, ...] = ()
    rates: tuple[Path, ...] = ()
    masks: tuple[Path, ...] | None = None
    synthetic_presets: tuple[str, ...] = ("stratiform", "mixed", "convective")
    synthetic_seeds: int = 4
    synthetic_grid: tuple[int, int] = (256, 256)
    synthetic_steps: int = 24
    window: int = features.DEFAULT_WINDOW
    context: int = features.DEFAULT_WINDOW
    intensity_scale: tuple[float, float] = (1.0, 1.0)
    validation_fraction: float = 0.0
    crop: int = 128
    samples_per_epoch: int = 1024
    rain_bias: float = 0.8
    mask_seeds: int = 4

    def __post_init__(self) -> None:
        """Normalise lists to tuples and check the numbers before any data is read."""
        for name in ("radolan", "netcdf", "rates", "synthetic_presets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.masks is not None:
            object.__setattr__(self, "masks", tuple(self.masks))
        object.__setattr__(self, "synthetic_grid", tuple(self.synthetic_grid))
        object.__setattr__(self, "intensity_scale", tuple(self.intensity_scale))
        low, high = (*self.intensity_scale, 0.0, 0.0)[:2]
        if len(self.intensity_scale) != 2 or not 0 < low <= high:
            raise ValueError(
                f"train.data.intensity_scale must be [low, high] with 0 < low <= high, got "
                f"{list(self.intensity_scale)}"
            )
        if self.context < self.window:
            raise ValueError(
                f"train.data.context ({self.context}) must be at least the window ({self.window})"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"train.data.validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        for name in ("window", "crop", "samples_per_epoch", "synthetic_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.data.{name} must be >= 1, got {getattr(self, name)}")
        if self.synthetic_seeds < 0 or self.mask_seeds < 0:
            raise ValueError("train.data.synthetic_seeds and mask_seeds must be >= 0")
        if not 0.0 <= self.rain_bias <= 1.0:
            raise ValueError(f"train.data.rain_bias must be in [0, 1], got {self.rain_bias}")
        if len(self.synthetic_grid) != 2 or min(self.synthetic_grid) < self.crop // 2:
            raise ValueError(
                f"train.data.synthetic_grid must be [rows, cols] of at least half the crop, "
                f"got {list(self.synthetic_grid)}"
            )

    @property
    def mask_archives(self) -> tuple[Path, ...]:
        """The archives mined for masks (``masks``, else the RADOLAN trees)."""
        return self.radolan if self.masks is None else self.masks


@dataclass(frozen=True)
class PushConfig:
    """Where rank 0 reports the run's Prometheus metrics (:mod:`radinfill.train.run_metrics`).

    Attributes
    ----------
    textfile : pathlib.Path or None
        ``.prom`` file for node_exporter's textfile collector (a machine that keeps running
        node_exporter; the collector reads only ``*.prom`` files).
    pushgateway : str or None
        Pushgateway address, ``host:port`` or a URL (ephemeral batch nodes, e.g. Slurm).
    instance : str
        ``instance`` label of the Pushgateway grouping key. It must stay the same from run to
        run (a cluster or pipeline name, never a run id): the Pushgateway never forgets a group.
    """

    textfile: Path | None = None
    pushgateway: str | None = None
    instance: str = "default"

    def __post_init__(self) -> None:
        """Check the values before training starts rather than at the first snapshot."""
        if self.textfile is not None:
            object.__setattr__(self, "textfile", Path(self.textfile))
            if self.textfile.suffix != ".prom":
                raise ValueError(
                    f"train.metrics.textfile must end in .prom (node_exporter reads only those), "
                    f"got {str(self.textfile)!r}"
                )
        for name in ("pushgateway", "instance"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"train.metrics.{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class TrainSettings:
    """A parsed ``[train]`` section: the run (keyword arguments of
    :class:`~radinfill.train.loop.TrainConfig`), its data and, if configured, where its
    metrics go."""

    run: Mapping[str, Any]
    data: DataConfig
    metrics: PushConfig | None = None

    def train_config(self) -> Any:
        """The :class:`~radinfill.train.loop.TrainConfig` (imports torch)."""
        from radinfill.train.loop import TrainConfig

        return TrainConfig(**self.run)


def load(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> TrainSettings:
    """Read the ``[train]`` section of a TOML file and apply ``KEY=VALUE`` overrides.

    Raises
    ------
    ConfigError
        Naming the file and the problem: unreadable, no ``[train]`` section, an unknown key, a
        bad value.
    """
    return from_document(read(path), overrides)


def from_document(document: Document, overrides: Iterable[str] = ()) -> TrainSettings:
    """The ``[train]`` section of the configuration file (see :func:`load`)."""
    section = document.table("train")
    if section is None:
        raise ConfigError(document.source, ["no [train] section"])
    try:
        return parse(override(section, overrides), base=document.base)
    except (TypeError, ValueError) as err:
        raise ConfigError(document.source, [str(err)]) from None


def override(section: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``section`` with ``KEY=VALUE`` items set; dots address sub-tables
    (``data.crop=96``, ``hparams.widths=[8, 16]``). A value is read as TOML (``3``, ``2e-3``,
    ``true``, ``[1, 2]``, ``"text"``) and as a plain string if it is not valid TOML."""
    result = _deep_copy(section)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *parents, leaf = key.strip().split(".")
        table = result
        for name in parents:
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                raise ValueError(f"override {item!r}: {name} is not a table")
        table[leaf] = value
    return result


def parse(section: Mapping[str, Any], *, base: Path = Path(".")) -> TrainSettings:
    """Validate a ``[train]`` table (as from :func:`tomllib.loads`) into :class:`TrainSettings`.

    Raises
    ------
    ValueError
        For unknown keys, a missing ``variant`` or ``checkpoint_dir``, or bad values.
    """
    from radinfill.model import list_variants

    run = {k: v for k, v in section.items() if k not in _TABLES}
    data = _table(section, "data")
    metrics = _table(section, "metrics")
    _check_keys("train", run, _train_fields())
    _check_keys("train.data", data, {f.name for f in dataclasses.fields(DataConfig)})
    _check_keys("train.metrics", metrics, {f.name for f in dataclasses.fields(PushConfig)})
    for name in ("variant", "checkpoint_dir"):
        if name not in run:
            raise ValueError(f"train.{name} is required")
    if run["variant"] not in list_variants():
        raise ValueError(f"train.variant {run['variant']!r} is not one of {list_variants()}")
    for name in _PATH_FIELDS:
        if run.get(name) is not None:
            run[name] = _resolve(base, run[name])
    for name in ("radolan", "netcdf", "rates", "masks"):
        if data.get(name) is not None:
            data[name] = tuple(_resolve(base, p) for p in _as_list(name, data[name]))
    settings = DataConfig(**data)
    hparams = dict(run.get("hparams", {}))
    if hparams.setdefault("window", settings.window) != settings.window:
        raise ValueError(
            f"train.hparams.window = {hparams['window']} differs from train.data.window = "
            f"{settings.window}: the network must see the window it is trained on"
        )
    run["hparams"] = hparams
    if metrics.get("textfile") is not None:
        metrics["textfile"] = _resolve(base, metrics["textfile"])
    result = TrainSettings(
        run=run, data=settings, metrics=PushConfig(**metrics) if metrics else None
    )
    result.train_config()  # check the numbers now, so that the error names the file
    return result


def _train_fields() -> set[str]:
    """Names accepted in ``[train]``: the :class:`~radinfill.train.loop.TrainConfig` fields."""
    from radinfill.train.loop import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def _table(section: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A copy of the sub-table ``[train.NAME]`` ({} when absent)."""
    value = section.get(name, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"train.{name} must be a table, got {value!r}")
    return dict(value)


def _check_keys(table: str, values: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in [{table}]: {', '.join(unknown)}")


def _as_list(name: str, value: Any) -> Sequence[Any]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"train.data.{name} must be a path or a list of paths")
    return value


def _resolve(base: Path, value: str | os.PathLike[str]) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _deep_copy(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in table.items()}
