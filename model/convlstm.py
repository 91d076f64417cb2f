"""Convolutional LSTM (Shi et al. 2015): the temporal memory of the infill networks.

A ConvLSTM is an LSTM whose gates are convolutions, so its state is a feature map and the same
weights run on any grid. It carries what earlier frames showed (e.g. rain just before a radar
failed) into the current step.

There are no peephole weights: the seed model's per-pixel peepholes were tensors of the grid's
size, which tied a trained model to one grid (and, moved to the GPU after registration, were never
trained). Gates see the input and the previous hidden state only.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvLSTM", "ConvLSTMCell", "LSTMState"]

#: Hidden and cell state ``(h, c)``, each ``(B, hidden, H, W)``.
LSTMState = tuple[torch.Tensor, torch.Tensor]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``(x_t, (h, c)) -> (h', c')``.

    Parameters
    ----------
    in_channels : int
        Channels of the input ``x_t``.
    hidden_channels : int
        Channels of ``h`` and ``c``.
    kernel_size : int
        Odd size of the gate convolution (same padding, stride 1).

    The four gates (input, forget, cell, output) come from one convolution over
    ``[x_t, h]``. The forget gate's bias starts at 1 so that the untrained cell keeps its memory
    (Jozefowicz et al. 2015).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(f"channels must be positive, got {in_channels}, {hidden_channels}")
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
        )
        with torch.no_grad():
            self.gates.bias[hidden_channels : 2 * hidden_channels].fill_(1.0)

    def forward(self, x: torch.Tensor, state: LSTMState | None = None) -> LSTMState:
        """Advance one step.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, in_channels, H, W)``.
        state : LSTMState, optional
            Previous ``(h, c)``; zeros when None.

        Returns
        -------
        LSTMState
            The new ``(h, c)``.
        """
        if state is None:
            zeros = x.new_zeros((x.shape[0], self.hidden_channels, *x.shape[2:]))
            state = (zeros, zeros)
        hidden, cell = state
        if hidden.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"state size {tuple(hidden.shape[2:])} does not match input {tuple(x.shape[2:])}"
            )
        gate_in, gate_forget, gate_cell, gate_out = self.gates(torch.cat([x, hidden], 1)).chunk(
            4, dim=1
        )
        cell = torch.sigmoid(gate_forget) * cell + torch.sigmoid(gate_in) * torch.tanh(gate_cell)
        hidden = torch.sigmoid(gate_out) * torch.tanh(cell)
        return hidden, cell


class ConvLSTM(nn.Module):
    """A ConvLSTM run over a sequence, oldest first.

    Parameters
    ----------
    in_channels, hidden_channels, kernel_size : int
        As in :class:`ConvLSTMCell`.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)

    def forward(
        self, sequence: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Run the cell over ``sequence`` ``(B, T, C, H, W)`` from ``state`` (zeros if None).

        Returns
        -------
        outputs, state
            The hidden states ``(B, T, hidden, H, W)`` and the final ``(h, c)``. Feeding a
            sequence in pieces, each starting from the state the previous piece returned, gives
            the same result as feeding it whole (the same operations run in the same order).
        """
        if sequence.dim() != 5:
            raise ValueError(f"sequence must be (B, T, C, H, W), got {tuple(sequence.shape)}")
        outputs = []
        for step in sequence.unbind(1):
            state = self.cell(step, state)
            outputs.append(state[0])
        if state is None:
            raise ValueError("sequence must hold at least one step (T >= 1)")
        return torch.stack(outputs, 1), state
