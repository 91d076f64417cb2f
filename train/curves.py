"""Loss curves of a training run: the JSONL training log drawn as a PNG.

Rank 0 redraws ``loss.png`` next to the log at every snapshot (see :mod:`radinfill.train.job`),
so someone watching a long run, or looking at one that was stopped, sees how the loss went
without a notebook. The top panel shows the logged loss per optimiser step, raw and smoothed
(the per-step loss of a random crop is noisy), the bottom one the learning rate of the cosine
schedule; dashed lines mark where the run was resumed from a snapshot.

The figure is drawn on a :class:`matplotlib.figure.Figure` with an explicit Agg canvas (no
pyplot state) and written atomically, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radinfill.atomic import replacing
from radinfill.train import runlog

__all__ = ["Curves", "curves", "plot", "smooth", "write"]

#: Weight of the past in the exponential smoothing (about the last ten records dominate).
SMOOTHING = 0.9


@dataclass(frozen=True)
class Curves:
    """The step records of a run as arrays, one entry per logged step, ascending.

    Attributes
    ----------
    steps : numpy.ndarray
        int64 ``(n,)``, completed optimiser steps.
    loss : numpy.ndarray
        float64 ``(n,)``, mean hole loss over the ranks (dimensionless).
    lr : numpy.ndarray
        float64 ``(n,)``, learning rate of the step.
    resumed : numpy.ndarray
        int64 ``(m,)``, steps a process resumed training from.
    """

    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    resumed: np.ndarray


def curves(records: Sequence[dict[str, Any]]) -> Curves:
    """The loss and learning-rate curves of ``records`` (a :func:`runlog.current_run`).

    A step logged twice (the run crashed after logging it and before its next snapshot, and
    repeated it after the resume) keeps its later record: the run continued from that one.
    """
    latest = {int(r["step"]): r for r in records if r["event"] == "step"}
    steps = np.array(sorted(latest), dtype=np.int64)
    resumed = sorted({int(r["step"]) for r in records if r["event"] == "resume" and r["step"]})
    return Curves(
        steps=steps,
        loss=np.array([latest[s]["loss"] for s in steps], dtype=np.float64),
        lr=np.array([latest[s]["lr"] for s in steps], dtype=np.float64),
        resumed=np.array(resumed, dtype=np.int64),
    )


def smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average of ``values`` with the start-up bias removed.

    ``s[i] = weight * s[i-1] + (1 - weight) * values[i]`` from ``s[-1] = 0``, divided by
    ``1 - weight**(i+1)`` so the first points are not pulled towards zero (the debiasing of
    Adam's moment estimates). A constant series stays constant.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n,)`` series.
    weight : float
        Weight of the past, in ``[0, 1)``; 0 returns ``values`` unchanged.

    Returns
    -------
    numpy.ndarray
        float64 ``(n,)``.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    series = np.asarray(values, dtype=np.float64)
    recursion = itertools.accumulate(
        series, lambda state, value: weight * state + (1.0 - weight) * value, initial=0.0
    )
    average = np.fromiter(recursion, dtype=np.float64, count=series.size + 1)[1:]
    return average / (1.0 - weight ** np.arange(1, series.size + 1))


def plot(data: Curves, path: str | os.PathLike[str], *, title: str = "training") -> Path:
    """Draw ``data`` (loss raw and smoothed, learning rate) into the PNG ``path``, atomically.

    A run without any logged step yet still gets a figure (empty axes and a note), so the file
    always reflects the latest state of the log.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    if len(data.steps):
        loss_ax.plot(data.steps, data.loss, color="tab:blue", alpha=0.35, lw=0.8, label="loss")
        loss_ax.plot(data.steps, smooth(data.loss), color="tab:blue", lw=1.8, label="smoothed")
        lr_ax.plot(data.steps, data.lr, color="tab:orange", lw=1.2)
        if np.all(data.loss > 0):
            loss_ax.set_yscale("log")
        last = f"step {data.steps[-1]}, loss {data.loss[-1]:.4g}"
    else:
        loss_ax.text(0.5, 0.5, "no step logged yet", ha="center", transform=loss_ax.transAxes)
        last = "no step yet"
    for step in data.resumed:
        for ax in (loss_ax, lr_ax):
            ax.axvline(step, color="grey", ls="--", lw=0.8)
    if len(data.resumed):
        loss_ax.plot([], [], color="grey", ls="--", lw=0.8, label="resumed")
    if len(data.steps):
        loss_ax.legend(loc="upper right")
    loss_ax.set_ylabel("hole loss")
    loss_ax.set_title(f"{title}: {last}")
    loss_ax.grid(True, which="both", alpha=0.3)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimiser step")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    lr_ax.grid(True, alpha=0.3)
    target = Path(path)
    with replacing(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="white")
    return target


def write(log_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> Path:
    """Read the training log ``log_path`` and draw the current run's curves into ``png_path``.

    Raises
    ------
    OSError
        If the log cannot be read or the PNG cannot be written.
    """
    records = runlog.current_run(runlog.read(log_path))
    return plot(curves(records), png_path, title=Path(png_path).parent.name or "training")
