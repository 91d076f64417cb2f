"""Partial convolution: a convolution that sees only valid inputs (Liu et al. 2018).

Radar composites have no-data areas (outside coverage, failed radars); a plain convolution would
read them as "no rain". A partial convolution multiplies its input by a validity mask, rescales
each output by how much of its window was valid, and reports where it had any valid input::

    out = W * (x m) * (window_size / count) + b    where count > 0
    out = 0, new_mask = 0                          where count == 0

with ``count`` the number of valid inputs in the window. This is NVIDIA's renormalisation (the
seed model divided by ``count`` alone, which only rescales the weights by a constant).

**One mask channel.** Masks here are ``(B, 1, H, W)`` and broadcast over the input channels: in
these networks every channel of a feature map shares one validity (a pixel has data or not). The
count over ``C_in x kh x kw`` inputs is then ``C_in`` times the single-channel count and the
ratio ``window_size / count`` is the same as NVIDIA's multi-channel one, while the mask
convolution is ``C_in x C_out`` times cheaper and the mask stays one channel through the network.

Values under mask 0 never influence the output, whatever they are: they are multiplied by 0
before the convolution (unless the caller says they are 0 already, ``masked``), and outputs
whose window saw no valid input are set to 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)
from torch import nn

__all__ = ["MaskedAvgPool2d", "PartialConv2d", "partial_conv2d"]


def partial_conv2d(
    x: torch.Tensor | Sequence[torch.Tensor],
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    masked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial convolution of ``x`` over the valid pixels of ``mask``.

    Parameters
    ----------
    x : torch.Tensor or sequence of torch.Tensor
        ``(B, C_in, H, W)`` input, or its channel groups in order: the parts of a
        concatenation, each convolved with its slice of ``weight`` and summed, so that the
        concatenated copy is never made (at a decoder's full-resolution head it would be the
        largest tensor of a pass).
    mask : torch.Tensor
        ``(B, 1, H, W)``, 1 where ``x`` is valid and 0 where not (float, same dtype as ``x``).
    weight : torch.Tensor
        ``(C_out, C_in, kh, kw)`` convolution weights.
    bias : torch.Tensor, optional
        ``(C_out,)``, added where the window saw a valid input.
    stride, padding, dilation : int
        As in :func:`torch.nn.functional.conv2d`. Padded pixels count as not valid.
    masked : bool
        The caller's promise that ``x`` is already 0 wherever ``mask`` is 0, as every output
        of this function is: ``x`` is then not multiplied by the mask into a copy, which at
        full resolution is the largest tensor of a pass (the result is the same).

    Returns
    -------
    out, new_mask : torch.Tensor
        ``(B, C_out, H', W')`` renormalised output (0 where ``new_mask`` is 0) and
        ``(B, 1, H', W')`` new mask: 1 exactly where the window held at least one valid input.
    """
    parts = [x] if isinstance(x, torch.Tensor) else list(x)
    for part in parts:
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != part.shape[0]:
            raise ValueError(
                f"mask must be (B, 1, H, W) for x {tuple(part.shape)}, got {mask.shape}"
            )
        if mask.shape[2:] != part.shape[2:]:
            raise ValueError(f"mask size {tuple(mask.shape[2:])} != x size {tuple(part.shape[2:])}")
    if (channels := sum(part.shape[1] for part in parts)) != weight.shape[1]:
        raise ValueError(f"x has {channels} channels, the weight {weight.shape[1]}")
    kernel = tuple(weight.shape[2:])
    window_size = kernel[0] * kernel[1]
    with torch.no_grad():
        if dilation == 1:  # pooling is much faster than a one-channel convolution
            share = F.avg_pool2d(mask, kernel, stride, padding, count_include_pad=True)
        else:
            ones = mask.new_ones((1, 1, *kernel))
            share = F.conv2d(mask, ones, None, stride, padding, dilation) / window_size
        new_mask = (share > 0.5 / window_size).to(parts[0].dtype)
        scale = new_mask / share.clamp(min=1.0 / window_size)
    start, out = 0, None
    for part in parts:
        stop = start + part.shape[1]
        term = F.conv2d(
            part if masked else part * mask, weight[:, start:stop], None, stride, padding, dilation
        )
        out, start = (term if out is None else out.add_(term)), stop
    assert out is not None  # the channel check above leaves at least one part
    out.mul_(scale)
    if bias is not None:
        out.addcmul_(bias.view(1, -1, 1, 1), new_mask)
    return out, new_mask


class PartialConv2d(nn.Module):
    """A partial convolution layer with learned weights (see :func:`partial_conv2d`).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    kernel_size : int
        Odd square kernel size; padding keeps the size ("same") at stride 1.
    stride, dilation : int
        As in :class:`torch.nn.Conv2d`.
    bias : bool
        Whether to learn a bias.

    Weights are initialised as :class:`torch.nn.Conv2d` does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size // 2)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, x: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor, *, masked: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(out, new_mask)`` for ``x`` ``(B, C_in, H, W)`` (or its channel groups),
        ``mask`` ``(B, 1, H, W)``; ``x`` and ``masked`` as for :func:`partial_conv2d`."""
        return partial_conv2d(
            x, mask, self.weight, self.bias, self.stride, self.padding, self.dilation, masked=masked
        )

    def extra_repr(self) -> str:
        """Shape summary for ``print(model)``."""
        out_channels, in_channels, kernel, _ = self.weight.shape
        return (
            f"{in_channels}, {out_channels}, kernel_size={kernel}, stride={self.stride}, "
            f"dilation={self.dilation}, bias={self.bias is not None}"
        )


class MaskedAvgPool2d(nn.Module):
    """Mean of the valid pixels in each window: a partial convolution with fixed averaging weights.

    Used to bring auxiliary channels to the resolution of each encoder level without learning
    anything; the new mask follows the same rule as :class:`PartialConv2d` of the same geometry,
    so the pooled channels and the learned features share their masks.

    Parameters
    ----------
    channels : int
        Number of channels (each is averaged on its own).
    kernel_size : int
        Odd square window size.
    stride : int
        Step between windows.
    """

    def __init__(self, channels: int, kernel_size: int, *, stride: int = 2) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.stride = stride
        self.padding = kernel_size // 2
        averaging = torch.eye(channels)[:, :, None, None] / (kernel_size * kernel_size)
        self.register_buffer(
            "weight", averaging.expand(-1, -1, kernel_size, kernel_size).clone(), persistent=False
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mean, new_mask)`` for ``x`` ``(B, C, H, W)`` and ``mask`` ``(B, 1, H, W)``."""
        return partial_conv2d(x, mask, self.weight, None, self.stride, self.padding)
