"""Inference engine: a trained network behind the baseline call contract, with fallbacks.

:class:`InfillEngine` wraps a network (usually loaded with :meth:`InfillEngine.from_checkpoint`)
so that ``engine.infill(frames, hole, future=None)`` behaves exactly like a method of
:mod:`radinfill.model.baselines` (read the contract there): frames ``(T, rows, cols)`` in the
product unit (mm per interval), oldest first, the current one last; pixels outside ``hole``
come back bit-identical (NaN included), hole pixels finite and >= 0. The network is causal, so
``future`` is accepted for the contract and ignored.

Per call the engine builds the inputs with :func:`radinfill.model.features.prepare` (the
checkpoint's ``window`` and ``interval_minutes``; frames become mm/h), runs one forward pass,
keeps the prediction inside the safety envelope of :mod:`radinfill.model.envelope` (bounded
correction of the ``advection_boundary`` prior, capped by the evidence of the window; the prior
itself, counted as an ``envelope`` fallback, when the prediction departs from it too far) and
converts the rate back to mm per interval. The envelope holds for every checkpoint.

Devices and failures
--------------------
``device="auto"`` picks CUDA when available, else the CPU. ``precision`` ``"bf16"``/``"fp16"``
runs the forward pass under autocast on CUDA only; the CPU always computes in float32. On the
CPU a forward pass is deterministic for a fixed thread count (``threads``): the convolutions
involved have no non-deterministic CPU kernels, so the engine does not flip the process-wide
``torch.use_deterministic_algorithms`` switch, which would also affect other models and
training in the same process. A CUDA error or out-of-memory retries the batch on a CPU copy of
the model; if the model fails there too (or fails on the CPU in the first place) the baseline
named by ``fallback`` fills the hole. Each fallback is logged and counted in
:attr:`InfillEngine.fallbacks`; the service keeps producing.

On the CPU, a checkpoint that carries its exported graph (every published release) is run by
onnxruntime instead of torch (:mod:`radinfill.model.graph`): same values to float rounding,
and the service never imports torch, which alone costs 177 MB of resident memory. The engine
itself works on NumPy arrays; only the torch forward pass converts them.

Work in proportion to the hole
------------------------------
A field without hole pixels costs no motion estimate and no forward pass. Otherwise the motion
is estimated once on the whole grid (each frame pair's optical flow is cached by content, see
:mod:`radinfill.model.motion`), and the features, the forward pass and the envelope run on the
neighbourhood of each hole component (:func:`radinfill.model.crops.regions`, aligned to the
network's down-sampling factor so a crop sees the same pooling grid as the whole field). The
margin, :data:`CROP_MARGIN`, is the larger of :data:`NETWORK_MARGIN` (the network's context)
and :data:`radinfill.model.envelope.EVIDENCE_RADIUS` (the evidence cap's neighbourhood). The
inputs are built on a crop reaching as far as the advected prior does
(:func:`radinfill.model.features.crop_margin`, from the motion and the window: it grows by
the speed of the rain and the blur for every frame a long outage adds to the window, to the
whole grid after some 20 steps) and cut down to the network's crop, so the inputs there
equal the whole grid's exactly and the network's cost stays in proportion to the hole. The
crop edge acts like the no-data border of the field for the network, and channel attention
pools over the crop, so predictions agree with the whole-grid ones to a tolerance, not bit
for bit (``tests/test_engine.py`` holds every variant and the shipped model to it). On
1100 x 900 with one 150 km outage the crop is about a quarter of the grid (see
``bench/inference.py``).

Streaming
---------
The engine is stateless: every call recomputes the whole window, ConvLSTM included, instead of
carrying the recurrent state from the previous call. The window is short (6 frames), and state
would tie the engine to one product stream and to exactly consecutive calls: a late or
corrected product, a restart, a backfill job or a second product served by the same engine
would silently use a state computed from other inputs. Recomputing makes every output a
function of its inputs alone; only the optical flow of frame pairs already seen is reused, and
it is keyed by their content.

Tiling
------
Crops too large for the device memory are processed in tiles of ``tile = (rows, cols)`` pixels
that overlap by ``overlap`` pixels; inside an overlap each tile's prediction is weighted by a
linear ramp that falls to (almost) 0 at the tile's inner edge, so seams are smooth, and the
weighted sum is normalised. Tile origins are multiples of the network's total down-sampling
factor, so every tile sees the same pooling grid as the whole field. A tile edge acts like the
no-data border of the field, which changes predictions within the network's receptive field of
the edge; the ramp gives those pixels little weight. Tiled and untiled outputs therefore agree
to within a small tolerance, not bit for bit (see ``tests/test_engine.py`` for the bound).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radinfill.model import baselines, crops, envelope, features, motion
from radinfill.model.graph import GRAPH, Graph
from radinfill.model.metadata import read_metadata

if TYPE_CHECKING:
    import torch
    from torch import nn

LOG = logging.getLogger(__name__)

#: Autocast dtypes (torch's names) of the ``precision`` option (None: plain float32).
PRECISIONS: Mapping[str, str | None] = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}
#: Fallback reasons (see :class:`~radinfill.model.baselines.Ran`, :attr:`InfillEngine.fallbacks`).
CUDA_TO_CPU = "cuda_to_cpu"
MODEL_TO_BASELINE = "model_to_baseline"
ENVELOPE = "envelope"
#: The model was trained for another product interval (e.g. 5-minute fields, hourly RW given).
INTERVAL = "interval"

#: Context in pixels the network gets around each hole component (a multiple of 16, its
#: down-sampling factor). Its theoretical receptive field is wider (the ConvLSTM adds one 16 px
#: cell per frame at the deepest level), but what it effectively reads falls off fast. Shipped
#: model, real 150 km outage (YW 2017-08-16, 4 fields), prediction inside the hole against the
#: whole grid, in mm per 5 min: with the ~50 px the advected prior needs anyway, mean 2-5e-4 and
#: largest 1e-2; with 96 px, mean 0.7-2e-4 and largest 3-5e-3; with 144 px hardly less (the
#: channel attention pools over the crop: that sets the floor) at a third more pixels.
NETWORK_MARGIN = 96
#: Context of the network's crops around each hole component: the network's, and the
#: neighbourhood of the envelope's evidence cap (computed on the same crops).
CROP_MARGIN = max(NETWORK_MARGIN, envelope.EVIDENCE_RADIUS)
#: Hole components of at most this many pixels (8 x 8 km on the 1 km grids) are filled by the
#: fallback baseline, the network's own prior, not by the network. Real composites carry such
#: specks every time step (the YW sample of 2017-08-16: 23 components of 1-2 px beside one of
#: 8,274); each would cost the network a crop of about 200 x 200 px, and together they merged
#: into one crop of almost the whole grid (1.4 s instead of 0.6 s per field), to correct the
#: prior on a few pixels that boundary-matched advection already pins to their neighbours.
SMALL_HOLE_PIXELS = 64

Item = tuple[np.ndarray, np.ndarray]
#: A forward pass on NumPy arrays: the network's inputs -> float32 ``(B, rows, cols)`` mm/h.
Run = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


#: The inputs of one crop of a field: its region of the grid and the network inputs there.
Crop = tuple[crops.Region, features.Inputs]


class InfillEngine:
    """A network that fills radar-failure holes under the baseline call contract.

    Parameters
    ----------
    model
        A network from :func:`radinfill.model.build` (``forward(values, valid, aux)``), or
        its exported :class:`~radinfill.model.graph.Graph` (CPU only).
    window
        Frames of context the model was trained with.
    interval_minutes
        Product interval: frames (mm per interval) are multiplied by ``60 / interval_minutes``
        to get the model's mm/h and the prediction divided by it.
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"``; the half precisions apply on CUDA only.
    fallback
        Baseline (:func:`radinfill.model.baselines.get_method` name) that fills the hole when
        the model fails on every device; None re-raises the model's error instead.
    tile
        ``(rows, cols)`` of a tile, or None for whole fields (see the module notes).
    overlap
        Pixels by which neighbouring tiles overlap (the blending ramp's width).
    threads
        CPU threads for torch (process-wide ``torch.set_num_threads``), or None to leave
        torch's setting. CPU results are reproducible for a fixed thread count. A graph
        has its own (:class:`~radinfill.model.graph.Graph`; :meth:`from_checkpoint` passes
        them on).
    metadata
        The checkpoint metadata, kept for provenance (empty for an in-memory model).
    source
        The checkpoint directory, kept for provenance.

    Attributes
    ----------
    fallbacks
        Count of fallbacks by reason: ``"cuda_to_cpu"`` (a CUDA failure, the CPU took over)
        and ``"model_to_baseline"`` (the model failed, the baseline filled the hole), counted
        once per forward pass, i.e. per batch; ``"envelope"`` (a field's prediction left the
        safety envelope and its prior was used), counted per field.

    Raises
    ------
    ValueError
        For an unknown precision or fallback, a bad tile/overlap, a CUDA device on a machine
        without CUDA or for a graph, or a model that needs auxiliary channels (NWP) the
        engine cannot supply.
    """

    def __init__(
        self,
        model: nn.Module | Graph,
        *,
        window: int,
        interval_minutes: int,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        fallback: str | None = "advection_boundary",
        tile: tuple[int, int] | None = None,
        overlap: int = 64,
        threads: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: Path | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if window < 1 or interval_minutes <= 0:
            raise ValueError(
                f"need window >= 1 and interval_minutes > 0, got {window}, {interval_minutes}"
            )
        aux = model.hparams.get("aux_channels", features.AUX_CHANNELS)
        if aux != features.AUX_CHANNELS:
            raise ValueError(
                f"model takes {aux} auxiliary channels; the engine supplies the "
                f"{features.AUX_CHANNELS} radar-derived ones only (no NWP input yet)"
            )
        self.window = int(window)
        self.interval_minutes = int(interval_minutes)
        self.precision = precision
        self.tile = _checked_tile(tile, overlap)
        self.overlap = int(overlap)
        self.fallback = fallback
        self._baseline = baselines.get_method(fallback) if fallback is not None else None
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.source = source
        self.fallbacks: Counter[str] = Counter()
        self._align = _downsampling(model)
        if isinstance(model, Graph):
            if str(device) not in ("auto", "cpu"):
                raise ValueError(f"an exported graph runs on the CPU only, got device {device!r}")
            self.device: str | torch.device = "cpu"
            self.model: nn.Module | Graph = model
            self._cpu_model = model
            return
        import torch

        self.device = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(threads)
        # Weights in channels-last layout: the network's inputs carry that layout (oneDNN's
        # fast one on the CPU), but a one-channel input cannot, and a convolution takes its
        # output layout from its input or its weights. With the weights plain, everything
        # after the radar encoder ran in the slow layout (the full-resolution head alone took
        # 33 of 230 ms on a 512 x 528 crop, 9 ms channels-last). Values are unchanged.
        model = model.eval().to(memory_format=torch.channels_last)
        # A CPU copy made now, while memory is plentiful, for the CUDA-failure path.
        self._cpu_model = model if self.device.type == "cpu" else copy.deepcopy(model).cpu()
        self.model = model.to(self.device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        *,
        precision: str = "fp32",
        fallback: str | None = "advection_boundary",
        tile: tuple[int, int] | None = None,
        overlap: int = 64,
        threads: int | None = None,
    ) -> InfillEngine:
        """Load a checkpoint (verified, see :mod:`radinfill.model.checkpoint`) into an engine.

        On the CPU, a checkpoint that carries its exported graph (:data:`GRAPH`, as every
        published release does) runs it with onnxruntime and never imports torch (see
        :mod:`radinfill.model.graph` for why); otherwise torch runs the weights.

        Raises
        ------
        CheckpointError
            If the checkpoint or its graph cannot be used.
        ValueError
            For bad engine options (see :class:`InfillEngine`).
        """
        model: nn.Module | Graph
        if (Path(path) / GRAPH).exists() and _runs_on_the_cpu(device):
            meta = read_metadata(path)
            model, threads = Graph(Path(path) / GRAPH, meta, threads=threads), None
        else:
            from radinfill.model.checkpoint import load_checkpoint

            model, meta = load_checkpoint(path, map_location="cpu")
        return cls(
            model,
            window=meta["window"],
            interval_minutes=meta["interval_minutes"],
            device=device,
            precision=precision,
            fallback=fallback,
            tile=tile,
            overlap=overlap,
            threads=threads,
            metadata=meta,
            source=Path(path),
        )

    def __repr__(self) -> str:
        variant = getattr(self.model, "variant", type(self.model).__name__)
        return (
            f"InfillEngine({variant}, window={self.window}, interval={self.interval_minutes} min, "
            f"device={self.device}, runtime={self.runtime}, precision={self.precision}, "
            f"fallback={self.fallback})"
        )

    @property
    def runtime(self) -> str:
        """What runs the network: ``onnxruntime`` (its exported graph) or ``torch``."""
        return "onnxruntime" if isinstance(self.model, Graph) else "torch"

    @property
    def provenance(self) -> dict[str, str]:
        """netCDF global attributes naming the model release (``infill_*``, all strings)."""
        attrs = {"infill_method": f"model {getattr(self.model, 'variant', 'unknown')}"}
        if self.source is not None:
            attrs["infill_checkpoint"] = str(self.source)
        for key in ("sha256", "created", "product"):
            if key in self.metadata:
                attrs[f"infill_checkpoint_{key}"] = str(self.metadata[key])
        return attrs

    @property
    def variant(self) -> str:
        """The network's variant (``baseline``, ``lstm``, ``attention``, ``lstm_attention``)."""
        return str(getattr(self.model, "variant", "network"))

    def run(
        self, frames: np.ndarray, hole: np.ndarray, *, interval_minutes: int | None = None
    ) -> baselines.Ran:
        """Fill ``hole`` as :meth:`infill` does and say which method made the values (a
        :class:`~radinfill.model.baselines.Ran`): the one
        place where the network hands over to a baseline.

        ``interval_minutes`` is the product's interval; a model trained for another one is not
        run and the fallback baseline fills the hole (:data:`INTERVAL`).

        Raises
        ------
        ValueError
            For another interval without a fallback baseline.
        """
        if interval_minutes is not None and interval_minutes != self.interval_minutes:
            if self._baseline is None:
                raise ValueError(
                    f"the model was trained on {self.interval_minutes}-min fields, "
                    f"got {interval_minutes} min and no fallback"
                )
            self.fallbacks[INTERVAL] += 1
            return baselines.Ran(self._baseline(frames, hole), str(self.fallback), INTERVAL)
        try:
            return self.run_batch([(frames, hole)])[0]
        except Exception as err:  # anything else on the network's path: the baseline stands in
            if self._baseline is None:
                raise
            self._count(MODEL_TO_BASELINE, self.device, err, f"baseline {self.fallback!r}")
            return baselines.Ran(
                self._baseline(frames, hole), str(self.fallback), MODEL_TO_BASELINE
            )

    def infill(
        self, frames: np.ndarray, hole: np.ndarray, future: np.ndarray | None = None
    ) -> np.ndarray:
        """Fill ``hole`` in the current (last) frame; the baseline call contract.

        Parameters
        ----------
        frames
            ``(T, rows, cols)``, T >= 1, product unit (mm per interval), oldest first, NaN =
            no-data anywhere; fewer than ``window`` frames at start-up are zero-padded.
        hole
            bool ``(rows, cols)``: the pixels to fill.
        future
            Ignored (the network is causal); accepted so the engine can stand in for any
            method.

        Returns
        -------
        numpy.ndarray
            float32 ``(rows, cols)``: the current frame with the hole filled (finite, >= 0)
            and every other pixel bit-identical.
        """
        return self.run_batch([(frames, hole)])[0].values

    def predict(self, frames: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """The network's own prediction for ``hole`` (no envelope, no fallback): what a release
        check compares, since it identifies the weights even where :meth:`infill` would hand
        back the prior. Computed on the crops around the hole, as :meth:`infill` does.

        Returns
        -------
        numpy.ndarray
            float32 ``(rows, cols)`` in the product unit: the prediction inside ``hole``, the
            current frame elsewhere.

        Raises
        ------
        RuntimeError, MemoryError
            When the forward pass fails on the engine's device.
        """
        frames, hole, _ = baselines.check_inputs(frames, hole, None)
        cropped = self._crops(frames, hole)
        rates = self._forward_all(self.model, self.device, [inputs for _, inputs in cropped])
        rate = crops.paste(hole, zip((region for region, _ in cropped), rates, strict=True))
        scale = np.float32(self.interval_minutes / 60.0)
        return np.where(hole, rate * scale, frames[-1]).astype(np.float32)

    def infill_batch(self, items: Sequence[Item], *, batch_size: int = 8) -> list[np.ndarray]:
        """Fill several fields of one grid, ``batch_size`` of them per forward pass (backfill);
        the values of :meth:`run_batch`."""
        return [ran.values for ran in self.run_batch(items, batch_size=batch_size)]

    def run_batch(self, items: Sequence[Item], *, batch_size: int = 8) -> list[baselines.Ran]:
        """Fill several fields of one grid, ``batch_size`` of them per forward pass, each with
        what made its values (:class:`~radinfill.model.baselines.Ran`).

        Parameters
        ----------
        items
            ``(frames, hole)`` pairs, each as for :meth:`infill`, all on the same grid.
        batch_size
            Fields whose crops go through the model together, one forward pass per crop shape
            (memory grows linearly with it).

        Returns
        -------
        list of Ran
            One per item; its values as :meth:`infill` returns them.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        checked = [baselines.check_inputs(frames, hole, None)[:2] for frames, hole in items]
        if len({hole.shape for _, hole in checked}) > 1:
            raise ValueError("infill_batch needs fields of one grid; got several shapes")
        runs = [baselines.Ran(frames[-1].copy(), self.variant) for frames, _ in checked]
        todo = [i for i, (_, hole) in enumerate(checked) if hole.any()]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for i, ran in zip(chunk, self._fill([checked[i] for i in chunk]), strict=True):
                hole, values = checked[i][1], runs[i].values
                values[hole] = np.clip(np.nan_to_num(ran.values[hole], nan=0.0), 0.0, None)
                runs[i] = baselines.Ran(values, ran.method, ran.fallback)
        return runs

    def _fill(self, items: Sequence[Item]) -> list[baselines.Ran]:
        """Fields (mm per interval) whose hole pixels fill ``items``, from the model or baseline,
        each with the method that made them.

        Every crop of every item goes through the model in one batch per crop shape; the
        envelope then judges each field as a whole, on its crops' pixels pasted together.
        Components of at most :data:`SMALL_HOLE_PIXELS` are the fallback baseline's (when there
        is one): they get no crop, and read as no-data, not as hole, in the network's.
        """
        split = [self._split(hole) for _, hole in items]
        cropped = [
            self._crops(frames, large) for (frames, _), (large, _) in zip(items, split, strict=True)
        ]
        rates, reason = self._predict(
            [inputs for crops_of_item in cropped for _, inputs in crops_of_item]
        )
        if rates is None:  # the model failed; _predict re-raised unless there is a baseline
            return [
                baselines.Ran(self._baseline(frames, hole), str(self.fallback), reason)  # type: ignore[misc]
                for frames, hole in items
            ]
        to_rate = np.float32(60.0 / self.interval_minutes)
        remaining = iter(rates)
        filled = []
        for (frames, _), (large, small), crops_of_item in zip(items, split, cropped, strict=True):
            if not large.any():  # specks only: the baseline's, as the network's prior would be
                filled.append(baselines.Ran(self._specks(frames, small), str(self.fallback)))
                continue
            regions = [region for region, _ in crops_of_item]
            rate = crops.paste(
                large, zip(regions, itertools.islice(remaining, len(regions)), strict=True)
            )
            prior = crops.paste(
                large, ((region, item.aux[features.AUX_ADVECTED]) for region, item in crops_of_item)
            )
            cap = crops.paste(
                large,
                (
                    (region, envelope.evidence_cap(frames[(..., *region)], large[region]) * to_rate)
                    for region in regions
                ),
            )
            # The envelope judges the hole's pixels only, as vectors: on full grids its dozen
            # temporaries were the largest arrays of a product after the network's.
            bounded, departed = envelope.bound(rate[large], prior[large], cap[large])
            values = np.full(large.shape, np.nan, dtype=np.float32)
            values[large] = bounded / to_rate
            if small.any():
                values[small] = self._specks(frames, small)[small]
            if departed:
                self._count_envelope()
                filled.append(baselines.Ran(values, features.PRIOR, ENVELOPE))
            else:
                filled.append(baselines.Ran(values, self.variant, reason))
        return filled

    def _split(self, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``hole`` as (the network's components, the baseline's specks): see
        :data:`SMALL_HOLE_PIXELS`; without a fallback baseline every component is the
        network's."""
        if self._baseline is None:
            return hole, np.zeros_like(hole)
        small = crops.small_components(hole, SMALL_HOLE_PIXELS)
        return hole & ~small, small

    def _specks(self, frames: np.ndarray, small: np.ndarray) -> np.ndarray:
        """The fallback baseline's infill of the specks ``small`` (:meth:`_split`)."""
        assert self._baseline is not None  # _split leaves no specks without one
        return self._baseline(frames, small)

    def _crops(self, frames: np.ndarray, hole: np.ndarray) -> list[Crop]:
        """The network inputs on the neighbourhood of each hole component (module notes).

        The motion is estimated once on the whole grid and cut to each crop; ``frames`` are
        checked, in the product unit. A hole without pixels has no crops and costs nothing.
        The network's crop reaches :data:`CROP_MARGIN` px beyond each component; its inputs
        are built on a crop that reaches as far as the advected prior does
        (:func:`radinfill.model.features.crop_margin`, which grows with the frames of a long
        outage) and cut down to it, so the network's cost does not grow with the outage.
        """
        if not hole.any():
            return []
        # Only the frames the motion reads are copied: a long outage's window is 24 fields.
        recent = frames[-motion.N_FRAMES :].copy()
        recent[-1][hole] = np.nan  # the contract: the current hole is never read
        flow = motion.estimate(recent)
        beyond = max(features.crop_margin(flow, frames, hole) - CROP_MARGIN, 0)
        result = []
        for region in crops.regions(hole, CROP_MARGIN, self._align):
            outer = crops.grown(region, beyond, hole.shape)
            inputs = features.prepare(
                frames[(..., *outer)],
                hole[outer],
                window=self.window,
                interval_minutes=self.interval_minutes,
                flow=flow[(..., *outer)],
            )
            result.append((region, features.cropped(inputs, *crops.inside(region, outer))))
        return result

    def _predict(self, inputs: Sequence[features.Inputs]) -> tuple[list[np.ndarray] | None, str]:
        """Model predictions (rows, cols) in mm/h of each input, trying the device, then the
        CPU; with the fallback reason ("" on the device, :data:`CUDA_TO_CPU`).

        Returns (None, :data:`MODEL_TO_BASELINE`) when the model failed and a baseline should
        fill in.
        """
        try:
            return self._forward_all(self.model, self.device, inputs), ""
        except (RuntimeError, MemoryError) as err:
            if not str(self.device).startswith("cuda") or not _is_cuda_failure(err):
                return self._give_up(err, self.device)
            self._count(CUDA_TO_CPU, self.device, err, "the CPU")
        import torch

        torch.cuda.empty_cache()  # outside the handler, so the failed pass's tensors are freed
        cpu = torch.device("cpu")
        try:
            return self._forward_all(self._cpu_model, cpu, inputs), CUDA_TO_CPU
        except (RuntimeError, MemoryError) as err:
            return self._give_up(err, cpu)

    def _give_up(self, err: BaseException, device: str | torch.device) -> tuple[None, str]:
        """Hand a failed batch to the baseline (counted, logged); re-raise without one."""
        if self._baseline is None:
            raise err
        self._count(MODEL_TO_BASELINE, device, err, f"baseline {self.fallback!r}")
        return None, MODEL_TO_BASELINE

    def _forward_all(
        self,
        model: nn.Module | Graph,
        device: str | torch.device,
        inputs: Sequence[features.Inputs],
    ) -> list[np.ndarray]:
        """One forward pass per shape among ``inputs``; their (rows, cols) float32 mm/h."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(inputs):
            by_shape.setdefault(item.aux.shape, []).append(i)
        outputs: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(inputs)
        for group in by_shape.values():
            rates = self._forward(model, device, [inputs[i] for i in group])
            for i, rate in zip(group, rates, strict=True):
                outputs[i] = rate
        return outputs

    def _forward(
        self,
        model: nn.Module | Graph,
        device: str | torch.device,
        inputs: Sequence[features.Inputs],
    ) -> np.ndarray:
        """One forward pass over a batch on ``device``; (B, rows, cols) float32 mm/h."""
        run = model if isinstance(model, Graph) else self._torch_run(model, device)
        values, valid, aux = features.to_arrays(inputs)
        if self.tile is None:
            return run(values, valid, aux)
        return self._tiled(run, self.tile, values, valid, aux)

    def _torch_run(self, model: nn.Module, device: str | torch.device) -> Run:
        """``model``'s forward pass on ``device`` (under autocast for a half precision on
        CUDA), on NumPy arrays."""
        import torch

        dtype = PRECISIONS[self.precision]
        on_cuda = str(device).startswith("cuda") and dtype is not None

        def run(values: np.ndarray, valid: np.ndarray, aux: np.ndarray) -> np.ndarray:
            tensors = (torch.from_numpy(array).to(device) for array in (values, valid, aux))
            autocast = (
                torch.autocast(device_type="cuda", dtype=getattr(torch, str(dtype)))
                if on_cuda
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                prediction = model(*tensors)[0]
            return prediction.float()[:, 0].cpu().numpy()

        return run

    def _tiled(
        self,
        run: Run,
        tile: tuple[int, int],
        values: np.ndarray,
        valid: np.ndarray,
        aux: np.ndarray,
    ) -> np.ndarray:
        """Forward pass tile by tile, blended with linear ramps (see the module notes)."""
        rows, cols = aux.shape[-2:]
        total = np.zeros((aux.shape[0], rows, cols), dtype=np.float32)
        weight = np.zeros((rows, cols), dtype=np.float32)
        for (r0, r1), (c0, c1), w in _tiles((rows, cols), tile, self.overlap, self._align):
            window = (..., slice(r0, r1), slice(c0, c1))
            total[window] += run(values[window], valid[window], aux[window]) * w
            weight[window] += w
        return total / weight

    def _count_envelope(self) -> None:
        """Count a prediction that left the safety envelope (the prior was used instead)."""
        self.fallbacks[ENVELOPE] += 1
        LOG.warning(
            "model output left the safety envelope; using its prior advection_boundary "
            "(%s fallbacks so far: %d)",
            ENVELOPE,
            self.fallbacks[ENVELOPE],
        )

    def _count(
        self, reason: str, device: str | torch.device, err: BaseException, instead: str
    ) -> None:
        """Count a fallback and log it with the error's first line."""
        self.fallbacks[reason] += 1
        LOG.warning(
            "model inference on %s failed (%s: %s); using %s (%s fallbacks so far: %d)",
            device,
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
            instead,
            reason,
            self.fallbacks[reason],
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked against the machine.

    Raises
    ------
    ValueError
        For a device that is neither CPU nor CUDA, or CUDA on a machine without it.
    """
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available")
    return resolved


def tile_spans(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Start and stop of the tiles covering ``range(size)`` along one axis.

    Tiles are ``tile`` long (the last one up to ``align - 1`` longer so that it ends at
    ``size``), start at multiples of ``align``, and neighbours overlap by at least ``overlap``.
    One tile spans everything when ``tile >= size``.
    """
    if tile >= size:
        return [(0, size)]
    step = max(align, (tile - overlap) // align * align)
    spans = [(start, start + tile) for start in range(0, size - tile, step)]
    last = (size - tile) // align * align
    if last == spans[-1][0]:
        spans[-1] = (last, size)
    else:
        spans.append((last, size))
    return spans


def ramp(start: int, stop: int, size: int, overlap: int) -> np.ndarray:
    """Blending weights of one tile along one axis.

    At an inner edge (not 0 or ``size``) the outer quarter of the overlap gets weight 0 (the
    pixels most affected by the edge), the middle half a linear ramp from 0 to 1, and the rest
    of the tile 1. Where two tiles overlap by exactly ``overlap`` the two ramps sum to 1.
    """
    inside = np.arange(start, stop, dtype=np.float32) + np.float32(0.5)
    weight = np.ones(stop - start, dtype=np.float32)
    if overlap > 0:
        quarter, half = np.float32(overlap / 4), np.float32(overlap / 2)
        if start > 0:
            weight = np.minimum(weight, np.clip((inside - start - quarter) / half, 0, 1))
        if stop < size:
            weight = np.minimum(weight, np.clip((stop - inside - quarter) / half, 0, 1))
    return weight


def _tiles(
    shape: tuple[int, int], tile: tuple[int, int], overlap: int, align: int
) -> Iterator[tuple[tuple[int, int], tuple[int, int], np.ndarray]]:
    """Row span, column span and 2-D blending weight of every tile."""
    rows, cols = shape
    for r0, r1 in tile_spans(rows, tile[0], overlap, align):
        row_weight = ramp(r0, r1, rows, overlap)
        for c0, c1 in tile_spans(cols, tile[1], overlap, align):
            yield (r0, r1), (c0, c1), np.outer(row_weight, ramp(c0, c1, cols, overlap))


def _checked_tile(tile: tuple[int, int] | None, overlap: int) -> tuple[int, int] | None:
    if tile is None:
        return None
    rows, cols = (int(n) for n in tile)
    if overlap < 0 or min(rows, cols) <= 2 * overlap:
        raise ValueError(f"tile {tile} must be more than twice the overlap {overlap} (>= 0) px")
    return rows, cols


def _downsampling(model: nn.Module | Graph) -> int:
    """Total down-sampling factor of the network (tile origins are multiples of it)."""
    return int(getattr(model, "multiple", 1))


def _runs_on_the_cpu(device: str | torch.device) -> bool:
    """Whether ``device`` means the CPU, decided without importing torch where possible: with
    ``"auto"``, a machine without NVIDIA device nodes (``/dev/nvidia0``, ...) has no CUDA
    device for torch to find."""
    if str(device) == "auto" and any(Path("/dev").glob("nvidia[0-9]*")):
        return resolve_device(device).type == "cpu"
    return str(device) in ("auto", "cpu")


def _is_cuda_failure(err: BaseException) -> bool:
    """Whether an error came from the CUDA device (out of memory, driver or kernel errors)."""
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "CUDA" in str(err)
