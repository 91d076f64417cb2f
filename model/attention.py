"""Cross-modal attention: the radar decides where auxiliary information is used.

After CBAM (Woo et al. 2018) as the seed model used it for reanalysis inputs, across two streams:

1. **Channel attention** on the auxiliary features: a shared MLP on their global average and
   global maximum, summed, sigmoid -> one weight per channel (which auxiliary features matter now).
2. **Spatial attention** from the radar features: a 7 x 7 convolution over their channel-wise
   maximum and mean, sigmoid -> one weight per pixel (where the radar asks for help, e.g. in and
   around a hole).
3. Output: auxiliary features x channel weights x spatial weights, to be concatenated into the
   radar stream.

Global pooling is over the valid pixels of the auxiliary mask, for any H x W (the seed pooled
with a kernel equal to the map height, which assumed square maps). Excluding masked pixels keeps
padding and out-of-coverage areas from diluting the statistics; with an all-ones mask it equals
adaptive average and max pooling.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelAttention", "CrossModalAttention", "SpatialAttention", "masked_global_pool"]


def masked_global_pool(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and maximum of each channel over the pixels where ``mask`` is 1.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)``.
    mask : torch.Tensor
        ``(B, 1, H, W)``, 0 or 1.

    Returns
    -------
    mean, maximum : torch.Tensor
        ``(B, C)`` each; 0 for a sample without any valid pixel.
    """
    valid = mask > 0.5
    count = valid.sum(dim=(2, 3)).clamp(min=1).to(x.dtype)
    mean = (x * valid).sum(dim=(2, 3)) / count
    maximum = x.masked_fill(~valid, float("-inf")).amax(dim=(2, 3))
    maximum = torch.where(valid.any(dim=(2, 3)), maximum, torch.zeros_like(maximum))
    return mean, maximum


class ChannelAttention(nn.Module):
    """Per-channel weights in (0, 1) from globally pooled features.

    Parameters
    ----------
    channels : int
        Feature channels.
    reduction : int
        Width reduction of the shared MLP's hidden layer (``channels // reduction``, at least 1).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Weights ``(B, C, 1, 1)`` for ``x`` ``(B, C, H, W)`` pooled over ``mask``."""
        mean, maximum = masked_global_pool(x, mask)
        return torch.sigmoid(self.mlp(mean) + self.mlp(maximum))[:, :, None, None]


class SpatialAttention(nn.Module):
    """Per-pixel weights in (0, 1) from the channel-wise maximum and mean of features.

    Parameters
    ----------
    kernel_size : int
        Odd size of the convolution over the two pooled maps.
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Weights ``(B, 1, H, W)`` for ``x`` ``(B, C, H, W)``."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)
        return torch.sigmoid(self.conv(pooled))


class CrossModalAttention(nn.Module):
    """Auxiliary features weighted by their channel attention and the radar's spatial attention.

    Parameters
    ----------
    aux_channels : int
        Channels of the auxiliary features.
    reduction : int
        Channel-attention MLP reduction.
    spatial_kernel : int
        Spatial-attention kernel size.
    """

    def __init__(self, aux_channels: int, reduction: int = 4, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(aux_channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(
        self, aux: torch.Tensor, aux_mask: torch.Tensor, radar: torch.Tensor
    ) -> torch.Tensor:
        """Attend ``aux`` ``(B, C_aux, H, W)`` (valid where ``aux_mask``) by ``radar`` features.

        Returns
        -------
        torch.Tensor
            ``(B, C_aux, H, W)``, 0 where ``aux_mask`` is 0.
        """
        return aux * aux_mask * self.channel(aux, aux_mask) * self.spatial(radar)
