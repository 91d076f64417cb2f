"""The network as an ONNX graph, run by onnxruntime: CPU inference without importing torch.

Why: importing torch costs the service 177 MB of resident memory before it computes anything
(its C++ operator tables and some 1,100 Python modules), and a forward pass with torch's
allocator more. onnxruntime's import costs 20 MB. Measured on the 2-core machine, shipped
``lstm_attention`` network, one 512 x 528 crop, two threads, process peak RSS: torch 395 MB
(import, model, inputs and pass), this graph 175 MB, at the same speed (0.16-0.18 s) and
within 3e-7 mm/h of torch's values.

A release carries the graph as :data:`GRAPH` next to its weights: the publisher exports it from
the weights it copies (:func:`export`, which needs torch and onnxscript). The graph records the
SHA-256 of those weights, and :class:`Graph` refuses a graph whose weights are not the
checkpoint's; the release's golden check then compares the graph's prediction with the one
torch made when the release was published.

The graph takes one field at a time (batch 1: on the CPU a batch only runs its items one
after another) with the checkpoint's window of frames, and rows and columns in multiples of
the network's down-sampling factor up to :data:`MAX_SIDE` (the engine's crops are aligned to
it; :class:`Graph` pads a crop at the grid's edge as the network pads its input). The engine
runs it on the CPU; a CUDA device needs torch and the weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from radinfill.model.metadata import CheckpointError

if TYPE_CHECKING:
    from torch import nn

#: File name of the graph in a release or checkpoint directory.
GRAPH = "model.onnx"
#: Inputs and output of the graph, as :meth:`radinfill.model.unet.InfillNet.forward` names them.
INPUTS = ("values", "valid", "aux")
OUTPUT = "rate"
#: Largest rows or columns the graph accepts (a multiple of every down-sampling factor): the
#: largest catalogue grid is 4800 x 4400.
MAX_SIDE = 8192


def export(model: nn.Module, *, weights_sha256: str) -> bytes:
    """``model`` (a network of :func:`radinfill.model.build`) as a serialised ONNX graph.

    ``weights_sha256`` names the weights file the model was loaded from; the graph records it,
    its variant and its down-sampling factor. Takes 15-30 s on the CPU (tracing with symbolic
    rows and columns).
    """
    import torch
    from torch.export import Dim

    class Prediction(torch.nn.Module):
        """The forward pass without the recurrent state: the prediction only."""

        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(
            self, values: torch.Tensor, valid: torch.Tensor, aux: torch.Tensor
        ) -> torch.Tensor:
            return self.network(values, valid, aux)[0]

    multiple, window = int(model.multiple), int(model.hparams["window"])
    rows = multiple * Dim("rows", min=1, max=MAX_SIDE // multiple)
    cols = multiple * Dim("cols", min=1, max=MAX_SIDE // multiple)
    # Two and three cells: sizes of 1 would be specialised as constants by the tracer.
    shape = (2 * multiple, 3 * multiple)
    example = (
        torch.zeros(1, window, 1, *shape),
        torch.ones(1, window, 1, *shape),
        torch.zeros(1, model.hparams["aux_channels"], *shape),
    )
    spatial = {"values": {3: rows, 4: cols}, "valid": {3: rows, 4: cols}, "aux": {2: rows, 3: cols}}
    program = torch.onnx.export(
        Prediction(model).eval(),
        example,
        dynamo=True,
        dynamic_shapes=spatial,
        input_names=list(INPUTS),
        output_names=[OUTPUT],
        verbose=False,
    )
    proto = program.model_proto
    for key, value in {
        "weights_sha256": weights_sha256,
        "variant": model.variant,
        "multiple": str(multiple),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


class Graph:
    """The exported network of a checkpoint, callable like the network on NumPy arrays.

    Parameters
    ----------
    path
        The graph file (:data:`GRAPH`).
    metadata
        The checkpoint's validated metadata (:func:`radinfill.model.metadata.read_metadata`):
        the graph must have been exported from the weights its ``sha256`` names.
    threads
        onnxruntime's intra-op threads; None takes ``OMP_NUM_THREADS`` where it is set, as
        torch does (torchrun sets it to 1 for each rank of a CPU backfill), else one per core.

    Raises
    ------
    CheckpointError
        If the file is not a graph onnxruntime can load, lacks the export's records, or was
        exported from other weights.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        metadata: Mapping[str, Any],
        *,
        threads: int | None = None,
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # The basic graph rewrites only: the full set converts the convolutions to a blocked
        # layout whose copies raised the peak of a 512 x 528 crop from 174 to 207 MB, for no
        # measurable speed on this network.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.intra_op_num_threads = threads or _environment_threads()
        options.inter_op_num_threads = 1
        # No arena and no memory patterns: both keep blocks sized for every crop shape seen,
        # and the crops change with each field's hole. Service benchmark, 1100 x 900, one
        # 150 km outage, peak RSS of the live run (with the backlog): with both 639 (815) MB,
        # arena only 571 (720), patterns only 519 (617), neither 488 (559), at the same speed.
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.log_severity_level = 3  # errors only: its warnings go to stderr, not the log
        try:
            self._session = onnxruntime.InferenceSession(
                os.fspath(path), options, providers=["CPUExecutionProvider"]
            )
            records = self._session.get_modelmeta().custom_metadata_map
        except Exception as err:  # onnxruntime raises its own classes for every bad file
            raise CheckpointError(f"{path}: not a loadable ONNX graph: {err}") from None
        if records.get("weights_sha256") != metadata["sha256"]:
            raise CheckpointError(
                f"{path}: graph exported from weights "
                f"{records.get('weights_sha256', 'not recorded')!r:.20}, the checkpoint's are "
                f"{metadata['sha256']:.16}...; export it again from the weights"
            )
        try:
            self.multiple = int(records["multiple"])
        except (KeyError, ValueError):
            raise CheckpointError(f"{path}: graph lacks its down-sampling factor") from None
        self.variant = str(metadata["variant"])
        self.hparams: dict[str, Any] = dict(metadata["hparams"])

    def __call__(self, values: np.ndarray, valid: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """The prediction, float32 ``(B, rows, cols)`` mm/h, of the network's inputs
        (``(B, T, 1, rows, cols)``, ``(B, T, 1, rows, cols)``, ``(B, A, rows, cols)``),
        field by field.

        Rows and columns that are not a multiple of the down-sampling factor (a crop at the
        grid's edge) are zero-padded at the end and the prediction cut back, as the network
        does itself: padding is outside every mask.
        """
        rows, cols = aux.shape[-2:]
        extra = (-rows % self.multiple, -cols % self.multiple)
        fields = []
        for item in range(len(values)):
            feed = {
                name: _padded(array[item : item + 1], *extra)
                for name, array in zip(INPUTS, (values, valid, aux), strict=True)
            }
            fields.append(self._session.run([OUTPUT], feed)[0][0, 0, :rows, :cols])
        return np.stack(fields)


def _padded(array: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``array`` as contiguous float32 with ``rows`` and ``cols`` zeros added at the end of
    its last two axes; not copied when it already is (the engine's aligned crops)."""
    if rows or cols:
        array = np.pad(array, [(0, 0)] * (array.ndim - 2) + [(0, rows), (0, cols)])
    return np.ascontiguousarray(array, dtype=np.float32)


def _environment_threads() -> int:
    """``OMP_NUM_THREADS`` as a positive count, else 0 (onnxruntime's one per core)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 0
