"""One training job: from a ``[train]`` section to a finished (or resumed) run.

Kept apart from :mod:`radinfill.train.loop` (which knows nothing of files and sources) and from
the command line, so a Slurm job, the CLI and the tests start training the same way. Here the
loop's snapshot hook is given its reports: at every snapshot (the last one included, and the
one written when a signal stopped the run) rank 0 redraws ``loss.png`` next to the training log
(:mod:`radinfill.train.curves`) and, if ``[train.metrics]`` is configured, reports the run's
Prometheus metrics (:mod:`radinfill.train.run_metrics`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radinfill.train import data
from radinfill.train.train_config import DataConfig, PushConfig, TrainSettings

if TYPE_CHECKING:
    import torch

__all__ = ["CURVES", "best_snapshot", "datasets", "report", "run", "validation_scores"]

#: File name of the loss curves, next to the training log.
CURVES = "loss.png"
#: Validation samples scored at every snapshot, and how many go through the network at once.
VALIDATION_SAMPLES = 96
VALIDATION_BATCH = 8


def datasets(
    config: DataConfig, *, seed: int
) -> tuple[data.WindowDataset, data.WindowDataset | None]:
    """The training samples of ``config`` and the validation samples (None without any).

    Training: every configured source minus the held-out events and the validation part of
    each real event, with holes from real masks mined from the archives plus synthetic radar
    outages. Validation: :data:`VALIDATION_SAMPLES` samples from the last
    ``validation_fraction`` of each real event, drawn like training samples but without
    intensity scaling.

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
    for root in config.rates:
        sources += data.rate_sequences(root)
    sources += data.synthetic_sequences(
        config.synthetic_presets,
        range(config.synthetic_seeds),
        grid=config.synthetic_grid,
        steps=config.synthetic_steps,
    )
    training, held = data.split_in_time(
        sources, config.validation_fraction, min_length=config.context
    )
    masks = data.MaskLibrary.build(
        [p for root in config.mask_archives for p in sorted(_files(root))],
        seeds=range(config.mask_seeds),
    )
    common = {"window": config.window, "context": config.context, "crop": config.crop}
    train_set = data.WindowDataset(
        training,
        masks,
        seed=seed,
        length=config.samples_per_epoch,
        rain_bias=config.rain_bias,
        intensity_scale=config.intensity_scale,
        **common,
    )
    usable = [s for s in held if s.event not in data.HELD_OUT]
    if not usable:
        return train_set, None
    check = data.WindowDataset(
        usable, masks, seed=seed + 1, length=VALIDATION_SAMPLES, rain_bias=1.0, **common
    )
    return train_set, check


def validation_scores(samples: data.WindowDataset, model: torch.nn.Module) -> dict[str, float]:
    """Hole scores of ``model`` and of its classical prior on the validation samples (mm/h).

    ``val_rmse`` and ``val_prior_rmse`` over all hole pixels of all samples, their ratio
    ``val_rmse_ratio`` (below 1: the network improves on ``advection_boundary``; the number
    that selects a checkpoint), and ``val_bias`` (hole-mean prediction minus truth, mm/h).
    """
    import torch

    from radinfill.model.features import AUX_ADVECTED

    squared = prior_squared = bias = count = 0.0
    for start in range(0, len(samples), VALIDATION_BATCH):
        batch = data.collate(
            [samples[i] for i in range(start, min(start + VALIDATION_BATCH, len(samples)))]
        )
        with torch.no_grad():
            prediction = model(batch["values"], batch["valid"], batch["aux"])[0]
        mask = batch["loss_mask"]
        target = batch["target"][mask]
        prior = batch["aux"][:, AUX_ADVECTED : AUX_ADVECTED + 1][mask]
        squared += float((prediction[mask] - target).square().sum())
        prior_squared += float((prior - target).square().sum())
        bias += float((prediction[mask] - target).sum())
        count += int(mask.sum())
    count = max(count, 1.0)
    rmse, prior_rmse = (float(np.sqrt(v / count)) for v in (squared, prior_squared))
    return {
        "val_rmse": rmse,
        "val_prior_rmse": prior_rmse,
        "val_rmse_ratio": rmse / prior_rmse if prior_rmse > 0 else float("nan"),
        "val_bias": bias / count,
    }


def run(settings: TrainSettings) -> Path:
    """Train (or resume) the run of ``settings``; returns the last snapshot directory.

    Every snapshot carries the validation scores (:func:`validation_scores`) when the
    configuration keeps a validation part of the real events.
    """
    from radinfill.train.loop import train

    config = settings.train_config()
    train_set, check = datasets(settings.data, seed=config.seed)
    return train(
        config,
        train_set,
        collate=data.collate,
        eval_fn=None if check is None else lambda model, _step: validation_scores(check, model),
        on_snapshot=partial(report, log_path=config.log_file, metrics=settings.metrics),
    )


def best_snapshot(checkpoint_dir: Path) -> tuple[Path, float] | None:
    """The kept snapshot with the lowest ``val_rmse_ratio`` among those that pass the safety
    cases (:func:`radinfill.train.evaluate.safety_check`), and that ratio; None when no
    snapshot carries validation scores or none is safe.

    Checkpoints are selected on held-out frames against the classical prior, never on training
    loss, and a snapshot that invents rain on the safety cases is never selected however well
    it validates (the promotion gate would refuse it anyway).
    """
    from radinfill.model.engine import InfillEngine
    from radinfill.model.metadata import read_metadata
    from radinfill.train import evaluate

    scored = []
    for snapshot in sorted(Path(checkpoint_dir).glob("step-*")):
        ratio = read_metadata(snapshot).get("scores", {}).get("val_rmse_ratio")
        if ratio is not None and np.isfinite(ratio):
            scored.append((float(ratio), snapshot))
    for ratio, snapshot in sorted(scored):
        engine = InfillEngine.from_checkpoint(snapshot, "cpu", fallback=None)
        if not evaluate.safety_check(engine.infill):
            return snapshot, ratio
    return None


def report(snapshot: Path, *, log_path: Path, metrics: PushConfig | None) -> None:
    """Rank 0's reports after ``snapshot``: the loss curves and, if configured, the metrics."""
    from radinfill.train import curves, run_metrics

    curves.write(log_path, log_path.parent / CURVES)
    if metrics is not None:
        run_metrics.report(metrics, snapshot, log_path)


def _files(root: Path) -> list[Path]:
    return [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
