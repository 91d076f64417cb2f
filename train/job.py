"""One training job: from a ``[train]`` section to a finished (or resumed) run.

Kept apart from :mod:`radinfill.train.loop` (which knows nothing of files and sources) and from
the command line, so a Slurm job, the CLI and the tests start training the same way. Here the
loop's snapshot hook is given its reports: at every snapshot (the last one included, and the
one written when a signal stopped the run) rank 0 redraws ``loss.png`` next to the training log
(:mod:`radinfill.train.curves`) and, if ``[train.metrics]`` is configured, reports the run's
Prometheus metrics (:mod:`radinfill.train.telemetry`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from radinfill.train import data
from radinfill.train.config import DataConfig, MetricsConfig, TrainSettings

__all__ = ["CURVES", "dataset", "report", "run"]

#: File name of the loss curves, next to the training log.
CURVES = "loss.png"


def dataset(config: DataConfig, *, seed: int) -> data.WindowDataset:
    """The training samples of ``config``: every configured source minus the held-out events,
    with holes from real masks mined from the archives plus synthetic radar outages.

    Raises
    ------
    ValueError
        If no usable source or no hole pattern is left.
    """
    sources: list[data.SequenceSource] = []
    for root in config.radolan:
        sources += data.radolan_sequences(root, min_length=config.window)
    for root in config.netcdf:
        sources += data.netcdf_sequences(root)
    for root in config.fmi:
        sources += data.fmi_sequences(root)
    sources += data.synthetic_sequences(
        config.synthetic_presets,
        range(config.synthetic_seeds),
        grid=config.synthetic_grid,
        steps=config.synthetic_steps,
    )
    masks = data.MaskLibrary.build(
        [p for root in config.mask_archives for p in sorted(_files(root))],
        seeds=range(config.mask_seeds),
    )
    return data.WindowDataset(
        sources,
        masks,
        window=config.window,
        crop=config.crop,
        seed=seed,
        length=config.samples_per_epoch,
        rain_bias=config.rain_bias,
    )


def run(settings: TrainSettings) -> Path:
    """Train (or resume) the run of ``settings``; returns the last snapshot directory."""
    from radinfill.train.loop import train

    config = settings.train_config()
    return train(
        config,
        dataset(settings.data, seed=config.seed),
        collate=data.collate,
        on_snapshot=partial(report, log_path=config.log_file, metrics=settings.metrics),
    )


def report(snapshot: Path, *, log_path: Path, metrics: MetricsConfig | None) -> None:
    """Rank 0's reports after ``snapshot``: the loss curves and, if configured, the metrics."""
    from radinfill.train import curves, telemetry

    curves.write(log_path, log_path.parent / CURVES)
    if metrics is not None:
        telemetry.report(metrics, snapshot, log_path)


def _files(root: Path) -> list[Path]:
    return [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
