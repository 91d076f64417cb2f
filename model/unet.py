"""The infill network: a partial-convolution U-Net with optional ConvLSTM memory and attention.

Reads top to bottom like torchvision's ``resnet.py``: building blocks, the one assembly class
:class:`InfillNet`, then the variant registry behind :func:`build` and :func:`list_variants`.

Architecture (``L = len(widths)`` levels; level ``i`` is at 1/2**(i+1) resolution)::

    radar frames ──PConv s2──► level 0 ──PConv s2──► ... level L-1     (one frame at a time)
                                  │                       │
            memory: ConvLSTM over the window (lstm, deepest levels) or the last frame
                                  │                       │
    aux channels ──pool/PConv──► fuse ◄── (attention)    fuse                (current step only)
                                  │                       │
                              decoder ◄── up + PConv ◄── ... ◄─────────────── bottleneck
                                  │
    input skip ──────────────► head: up + zero-initialised linear 3x3 PConv at full resolution
                                  = correction c in log1p space

* **Masks** are data-domain validity. The radar stream of frame t uses the frame's own mask (holes
  and no-coverage are 0); the auxiliary stream and everything after the fusion use the *domain*
  of the current step: pixels with data in the current frame or inside the hole, i.e. where an
  answer is wanted. Padding is outside every mask.
* **Residual output**: ``prediction = expm1(relu(log1p(advected) + c))`` in mm/h, computed in the
  equivalent form ``relu(advected + (1 + advected) * expm1(c))``, which is exactly ``advected``
  for ``c = 0``: the untrained network (head weights zero) returns the ``advection_boundary``
  infill unchanged, and every output is >= 0.
* **Causal and streamable**: the temporal variants keep one ConvLSTM state per memory level;
  the state after frame t depends on frames <= t only, and feeding frames one at a time with
  the returned state equals one call with the whole window. Auxiliary channels enter after the
  memory, so the state never depends on them. The non-temporal variants read only the last
  frame.
* **Grid independent**: no weight depends on H or W; the input is padded at the bottom and right
  to a multiple of ``2**L`` (masks 0 there) and the output cropped back. Without attention the
  network is local (its output depends on a bounded neighbourhood); the attention's channel
  weights pool over the whole field.

There is no batch normalisation: inference runs on single fields, and a normalisation would
shift masked pixels away from 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)
from torch import nn

from radinfill.model.attention import CrossModalAttention
from radinfill.model.convlstm import ConvLSTM, LSTMState
from radinfill.model.features import AUX_ADVECTED, AUX_CHANNELS, AUX_HOLE
from radinfill.model.pconv import MaskedAvgPool2d, PartialConv2d

__all__ = ["InfillNet", "State", "build", "list_variants"]

#: Recurrent state of the temporal variants: one ConvLSTM ``(h, c)`` per memory level, deepest
#: last.
State = tuple[LSTMState, ...]
#: A feature map and its ``(B, 1, H, W)`` validity mask.
Masked = tuple[torch.Tensor, torch.Tensor]

#: LeakyReLU slope of the decoder (ReLU in the encoder), after Liu et al. 2018.
_DECODER_SLOPE = 0.2


# --- building blocks ----------------------------------------------------------------------------


class PConvBlock(nn.Module):
    """Partial convolution followed by a (leaky) ReLU, which keeps masked outputs at 0.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        As in :class:`~radinfill.model.pconv.PartialConv2d`.
    stride : int
        2 to halve the resolution.
    negative_slope : float or None
        0 for ReLU, > 0 for LeakyReLU, None for no activation (a linear output layer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        negative_slope: float | None = 0.0,
    ) -> None:
        super().__init__()
        self.conv = PartialConv2d(in_channels, out_channels, kernel_size, stride=stride)
        self.activation = (
            nn.Identity() if negative_slope is None else nn.LeakyReLU(negative_slope, inplace=True)
        )

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor) -> Masked:
        """Return the activated features and their new mask (``x`` may be given as the
        channel groups of a concatenation, see :func:`~radinfill.model.pconv.partial_conv2d`).

        ``x`` must be 0 wherever ``mask`` is 0 (:func:`~radinfill.model.pconv.partial_conv2d`'s
        ``masked``), and is throughout the network: its inputs are masked, each block's
        output is 0 outside its new mask (an activation keeps 0 at 0), and the decoder's
        masks are unions of the masks of what it concatenates.
        """
        x, mask = self.conv(x, mask, masked=True)
        # In place: the convolution's output is this block's own, and at full resolution it
        # is among the largest tensors of a pass.
        return self.activation(x), mask


class PConvEncoder(nn.Module):
    """Stride-2 partial convolutions, one per level; returns every level's features and mask.

    Parameters
    ----------
    in_channels : int
        Input channels.
    widths, kernels : sequence of int
        Output channels and kernel size of each level.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], kernels: Sequence[int]) -> None:
        super().__init__()
        ins = [in_channels, *widths[:-1]]
        self.blocks = nn.ModuleList(
            PConvBlock(i, o, k, stride=2) for i, o, k in zip(ins, widths, kernels, strict=True)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Iterator[Masked]:
        """``(B, C, H, W)`` and its mask -> ``(features, mask)`` of every level, computed as the
        caller takes them: a level's features of every frame are the largest tensors of a
        pass, and the caller can let each go once the next level is made."""
        for block in self.blocks:
            x, mask = block(x, mask)
            yield x, mask


class PoolingPyramid(nn.Module):
    """Masked average pooling to every level's resolution, with the encoder's window geometry.

    The parameter-free way to bring auxiliary channels to each level (the variants without
    attention); masks follow the same rule as a :class:`PConvEncoder` with the same kernels.
    """

    def __init__(self, channels: int, kernels: Sequence[int]) -> None:
        super().__init__()
        self.pools = nn.ModuleList(MaskedAvgPool2d(channels, k, stride=2) for k in kernels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Iterator[Masked]:
        """``(B, C, H, W)`` and its mask -> ``(pooled, mask)`` of every level, as for
        :class:`PConvEncoder`."""
        for pool in self.pools:
            x, mask = pool(x, mask)
            yield x, mask


class FusionLevel(nn.Module):
    """One encoder level's skip: radar memory, fused with the auxiliary features of the level.

    Parameters
    ----------
    width : int
        Radar feature channels of the level (also the output channels).
    aux_width : int
        Auxiliary feature channels of the level.
    lstm_kernel : int or None
        Kernel of a ConvLSTM over the frames; None uses the last frame only.
    attention_reduction : int or None
        Channel-attention reduction of a :class:`CrossModalAttention` applied to the auxiliary
        features; None concatenates them as they are.

    The ConvLSTM input is the radar features plus their mask as one more channel, so that the
    memory can tell "no data" from "dry". The fusion is a 1 x 1 convolution + ReLU over
    ``[radar, radar mask, auxiliary]``, masked by the domain.
    """

    def __init__(
        self,
        width: int,
        aux_width: int,
        *,
        lstm_kernel: int | None,
        attention_reduction: int | None,
    ) -> None:
        super().__init__()
        self.memory = None if lstm_kernel is None else ConvLSTM(width + 1, width, lstm_kernel)
        self.attention = (
            None
            if attention_reduction is None
            else CrossModalAttention(aux_width, attention_reduction)
        )
        self.fuse = nn.Conv2d(width + 1 + aux_width, width, 1)

    @property
    def recurrent(self) -> bool:
        """Whether this level carries a ConvLSTM state."""
        return self.memory is not None

    def forward(
        self,
        radar: torch.Tensor,
        radar_mask: torch.Tensor,
        aux: torch.Tensor,
        domain: torch.Tensor,
        state: LSTMState | None,
    ) -> tuple[torch.Tensor, LSTMState | None]:
        """Fuse one level.

        Parameters
        ----------
        radar, radar_mask : torch.Tensor
            ``(B, T, C, h, w)`` per-frame features and ``(B, T, 1, h, w)`` masks.
        aux, domain : torch.Tensor
            ``(B, C_aux, h, w)`` auxiliary features of the current step and ``(B, 1, h, w)``
            domain mask.
        state : LSTMState or None
            ConvLSTM state before the first frame (zeros if None; must be None without memory).

        Returns
        -------
        fused, state
            ``(B, C, h, w)`` features (0 outside the domain) and the state after the last frame
            (None without memory).
        """
        current = radar[:, -1]
        if self.memory is not None:
            _, state = self.memory(torch.cat([radar, radar_mask], 2), state)
            current = state[0]
        if self.attention is not None:
            aux = self.attention(aux, domain, current)
        fused = F.relu(self.fuse(torch.cat([current, radar_mask[:, -1], aux], 1)))
        return fused * domain, state


class DecoderBlock(nn.Module):
    """Nearest 2x upsampling, concatenation with the skip, and a 3 x 3 partial convolution.

    The single-channel masks of the upsampled features and the skip combine as their union
    (what concatenating per-channel masks amounts to when each is one channel).

    Parameters
    ----------
    in_channels, skip_channels, out_channels : int
        Channels of the coarser features, of the skip, and of the output.
    negative_slope : float or None
        LeakyReLU slope; None for a linear output layer.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        negative_slope: float | None = _DECODER_SLOPE,
    ) -> None:
        super().__init__()
        self.block = PConvBlock(
            in_channels + skip_channels, out_channels, 3, negative_slope=negative_slope
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, skip: torch.Tensor, skip_mask: torch.Tensor
    ) -> Masked:
        """Upsample ``x`` to the skip's size, concatenate, convolve; returns features and mask."""
        # The concatenation is given as its two parts and never made: at the head it would be
        # 23 full-resolution channels, the largest tensor of a pass.
        size = skip.shape[2:]
        mask = torch.maximum(F.interpolate(mask, size=size, mode="nearest"), skip_mask)
        return self.block([F.interpolate(x, size=size, mode="nearest"), skip], mask)


# --- the assembly class -------------------------------------------------------------------------


class InfillNet(nn.Module):
    """Partial-convolution U-Net that corrects the advected field inside radar-failure holes.

    Parameters
    ----------
    widths : sequence of int
        Channels of each encoder level (also the decoder's, mirrored); its length is the depth.
    kernels : sequence of int
        Odd kernel size of each level's stride-2 partial convolution.
    window : int
        Frames per input window (recorded for the feature builder; the network itself accepts
        any number of frames).
    aux_channels : int
        Auxiliary input channels, at least the base ``AUX_CHANNELS`` (more with NWP fields).
    lstm : bool
        Carry a ConvLSTM over the window at the deepest ``lstm_levels`` levels (else only the
        last frame is read).
    attention : bool
        Pass the auxiliary channels through their own partial-convolution encoder and fuse them
        with cross-modal attention (else masked average pooling and plain concatenation).
    attention_reduction : int
        Channel-attention MLP reduction.
    lstm_kernel : int
        ConvLSTM gate kernel size.
    lstm_levels : int
        How many of the deepest levels carry a ConvLSTM (``len(widths)`` = every level, as in
        the seed model). The default 2 keeps the memory where a level's pixel covers 8-16 km,
        the scale of a failed radar's disc: the memory of the two finest levels would cost about
        twice the rest of the network on a 900 x 900 grid, for detail the advected field
        already has.

    All arguments are keyword-only and JSON-serialisable; :attr:`hparams` returns them, and
    ``build(model.variant, **model.hparams)`` rebuilds the same architecture.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = (16, 32, 48, 64),
        kernels: Sequence[int] = (5, 3, 3, 3),
        window: int = 6,
        aux_channels: int = AUX_CHANNELS,
        lstm: bool = False,
        attention: bool = False,
        attention_reduction: int = 4,
        lstm_kernel: int = 3,
        lstm_levels: int = 2,
    ) -> None:
        super().__init__()
        widths, kernels = tuple(int(w) for w in widths), tuple(int(k) for k in kernels)
        _check_hparams(widths, kernels, window, aux_channels, lstm_levels if lstm else None)
        self._hparams: dict[str, Any] = {
            "widths": list(widths),
            "kernels": list(kernels),
            "window": int(window),
            "aux_channels": int(aux_channels),
            "lstm": bool(lstm),
            "attention": bool(attention),
            "attention_reduction": int(attention_reduction),
            "lstm_kernel": int(lstm_kernel),
            "lstm_levels": int(lstm_levels),
        }
        self.multiple = 2 ** len(widths)
        self.encoder = PConvEncoder(1, widths, kernels)
        if attention:
            self.aux_encoder: nn.Module = PConvEncoder(aux_channels, widths, kernels)
            aux_widths = widths
        else:
            self.aux_encoder = PoolingPyramid(aux_channels, kernels)
            aux_widths = (aux_channels,) * len(widths)
        first_lstm = len(widths) - lstm_levels if lstm else len(widths)
        self.levels = nn.ModuleList(
            FusionLevel(
                width,
                aux_width,
                lstm_kernel=lstm_kernel if level >= first_lstm else None,
                attention_reduction=attention_reduction if attention else None,
            )
            for level, (width, aux_width) in enumerate(zip(widths, aux_widths, strict=True))
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(widths[i + 1], widths[i], widths[i])
            for i in reversed(range(len(widths) - 1))
        )
        # The last layer (as in the seed model) is linear at full resolution over the input skip
        # (current frame in log1p, its mask, the auxiliary channels); zero-initialised, so the
        # untrained correction is 0.
        self.head = DecoderBlock(widths[0], 2 + aux_channels, 1, negative_slope=None)
        nn.init.zeros_(self.head.block.conv.weight)
        nn.init.zeros_(self.head.block.conv.bias)

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (a fresh JSON-serialisable dict)."""
        return json.loads(json.dumps(self._hparams))

    @property
    def variant(self) -> str:
        """The registered variant name this architecture belongs to."""
        flags = {key: self._hparams[key] for key in ("lstm", "attention")}
        return next(name for name, pinned in _VARIANTS.items() if dict(pinned) == flags)

    @property
    def temporal(self) -> bool:
        """Whether the network reads the whole window and carries a recurrent state."""
        return self._hparams["lstm"]

    def forward(
        self,
        values: torch.Tensor,
        valid: torch.Tensor,
        aux: torch.Tensor,
        state: State | None = None,
    ) -> tuple[torch.Tensor, State | None]:
        """Predict the rain rate of the current (last) frame.

        Parameters
        ----------
        values : torch.Tensor
            ``(B, T, 1, H, W)`` rain rate in mm/h, oldest first (0 where not valid).
        valid : torch.Tensor
            ``(B, T, 1, H, W)``, 1 where the frame had data.
        aux : torch.Tensor
            ``(B, aux_channels, H, W)`` auxiliary channels of the current step (see
            :mod:`radinfill.model.features`).
        state : State, optional
            The state returned by the previous call on the same grid (temporal variants only);
            the frames then continue that sequence.

        Returns
        -------
        prediction, state
            ``(B, 1, H, W)`` rain rate in mm/h, >= 0, and the state after the last frame: one
            ``(h, c)`` per ConvLSTM level, deepest last (None for the non-temporal variants).

        Raises
        ------
        ValueError
            For inconsistent shapes, or a state passed to a non-temporal variant.
        """
        self._check_inputs(values, valid, aux, state)
        height, width = values.shape[-2:]
        if not self.temporal:
            values, valid = values[:, -1:], valid[:, -1:]
        values, valid, aux = (_pad(t, self.multiple) for t in (values, valid, aux))

        advected = aux[:, AUX_ADVECTED : AUX_ADVECTED + 1].clamp(min=0.0)
        hole = (aux[:, AUX_HOLE : AUX_HOLE + 1] > 0.5).to(aux.dtype)
        domain = torch.maximum(valid[:, -1], hole)
        aux = torch.cat(
            [aux[:, :AUX_ADVECTED], torch.log1p(advected), aux[:, AUX_ADVECTED + 1 :]], 1
        )
        aux = _channels_last(aux * domain)
        radar_levels = self._encode_frames(values, valid)
        aux_levels = self.aux_encoder(aux, domain)
        previous = iter(state if state is not None else [None] * self._recurrent_levels)
        skips: list[Masked] = []
        states: list[LSTMState] = []
        for level, (x, m), (a, d) in zip(self.levels, radar_levels, aux_levels, strict=True):
            fused, level_state = level(x, m, a, d, next(previous) if level.recurrent else None)
            skips.append((fused, d))
            if level_state is not None:
                states.append(level_state)

        x, mask = skips[-1]
        for block, (skip, skip_mask) in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x, mask = block(x, mask, skip, skip_mask)
        skip = _channels_last(
            torch.cat([_radar(values[:, -1], valid[:, -1]), valid[:, -1], aux], 1)
        )
        correction, _ = self.head(x, mask, skip, domain)
        correction = correction * domain
        prediction = F.relu(advected + (1.0 + advected) * torch.expm1(correction))
        return prediction[..., :height, :width], tuple(states) if self.temporal else None

    def _encode_frames(self, values: torch.Tensor, valid: torch.Tensor) -> Iterator[Masked]:
        """Each level's radar features and masks of the frames its fusion reads: ``(B, T', C,
        h, w)``, every frame at a level with memory, the last frame elsewhere (``T' = 1``).

        ``values`` and ``valid`` as for :meth:`forward`, padded. The frames go through the
        encoder one at a time, each frame's radar input made as it goes: a level's features
        of every frame are the largest tensors of a pass (16 channels at half resolution),
        and the finer levels, which have no memory, need only the last frame's; the others
        are let go as soon as the next level is made. Each level is let go once the caller
        takes the next.
        """
        steps = values.shape[1]
        kept: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in self.levels]
        for t in range(steps):
            radar = _channels_last(_radar(values[:, t], valid[:, t]))
            levels = self.encoder(radar, _channels_last(valid[:, t]))
            for level, (xs, ms), (x, m) in zip(self.levels, kept, levels, strict=True):
                if level.recurrent or t == steps - 1:
                    xs.append(x)
                    ms.append(m)
        while kept:
            xs, ms = kept.pop(0)
            yield _stack_frames(xs), _stack_frames(ms)

    @property
    def _recurrent_levels(self) -> int:
        """Number of levels with a ConvLSTM (the length of the state)."""
        return sum(level.recurrent for level in self.levels)

    def _check_inputs(
        self,
        values: torch.Tensor,
        valid: torch.Tensor,
        aux: torch.Tensor,
        state: State | None,
    ) -> None:
        """Raise ValueError naming the argument whose shape breaks the forward contract."""
        if values.dim() != 5 or values.shape[2] != 1 or values.shape[1] < 1:
            raise ValueError(f"values must be (B, T >= 1, 1, H, W), got {tuple(values.shape)}")
        if valid.shape != values.shape:
            raise ValueError(f"valid {tuple(valid.shape)} != values {tuple(values.shape)}")
        expected = (values.shape[0], self._hparams["aux_channels"], *values.shape[3:])
        if tuple(aux.shape) != expected:
            raise ValueError(f"aux must be {expected}, got {tuple(aux.shape)}")
        if state is None:
            return
        if not self.temporal:
            raise ValueError(f"variant {self.variant!r} has no recurrent state; pass state=None")
        if len(state) != self._recurrent_levels:
            raise ValueError(f"state has {len(state)} levels, the network {self._recurrent_levels}")


def _check_hparams(
    widths: tuple[int, ...],
    kernels: tuple[int, ...],
    window: int,
    aux_channels: int,
    lstm_levels: int | None,
) -> None:
    """Raise ValueError quoting the hyper-parameter the network cannot honour."""
    if not widths or len(widths) != len(kernels):
        raise ValueError(f"widths {widths} and kernels {kernels} must be equally long, >= 1")
    if min(widths) < 1:
        raise ValueError(f"widths must be positive, got {widths}")
    if any(k < 1 or k % 2 == 0 for k in kernels):
        raise ValueError(f"kernels must be odd and positive, got {kernels}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if aux_channels < AUX_CHANNELS:
        raise ValueError(f"aux_channels must be >= {AUX_CHANNELS}, got {aux_channels}")
    if lstm_levels is not None and not 1 <= lstm_levels <= len(widths):
        raise ValueError(f"lstm_levels must be in 1..{len(widths)}, got {lstm_levels}")


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` in channels-last memory layout.

    Layout only (values and shapes are unchanged): oneDNN convolutions on the CPU run 1.3-3.5x
    faster on it, narrow outputs like the one-channel head the most.
    """
    return x.contiguous(memory_format=torch.channels_last)


def _radar(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The radar stream's input: ``log1p`` of the rain rate (mm/h), 0 where there is no data."""
    return torch.log1p(values.clamp(min=0.0)) * valid


def _stack_frames(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """Channels-last ``(B, C, h, w)`` frames -> ``(B, T, C, h, w)`` whose every frame is still
    channels-last (``torch.stack`` would make them channels-first), as the convolutions after
    the encoder read them."""
    return torch.stack([frame.permute(0, 2, 3, 1) for frame in frames], 1).permute(0, 1, 4, 2, 3)


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last two dimensions at the end up to a multiple of ``multiple``."""
    rows, cols = x.shape[-2:]
    if not (rows % multiple or cols % multiple):
        return x  # the engine's crops are aligned: no copy of the inputs
    return F.pad(x, (0, -cols % multiple, 0, -rows % multiple))


# --- variants -----------------------------------------------------------------------------------

#: Each variant pins the arguments that define it; everything else is a free hyper-parameter.
_VARIANTS: Mapping[str, Mapping[str, bool]] = MappingProxyType(
    {
        "baseline": MappingProxyType({"lstm": False, "attention": False}),
        "lstm": MappingProxyType({"lstm": True, "attention": False}),
        "attention": MappingProxyType({"lstm": False, "attention": True}),
        "lstm_attention": MappingProxyType({"lstm": True, "attention": True}),
    }
)


def list_variants() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_VARIANTS)


def build(variant: str, **hparams: Any) -> InfillNet:
    """Build an untrained network of a registered variant.

    Parameters
    ----------
    variant : str
        One of :func:`list_variants`: ``baseline`` (PConv U-Net on the current frame),
        ``lstm`` (+ ConvLSTM over the window), ``attention`` (+ cross-modal attention on the
        auxiliary channels), ``lstm_attention`` (both).
    **hparams
        :class:`InfillNet` arguments. ``lstm`` and ``attention`` may be given only with the
        variant's own values (as in ``build(model.variant, **model.hparams)``).

    Returns
    -------
    InfillNet

    Raises
    ------
    ValueError
        For an unknown variant (the message lists the known ones) or a hyper-parameter that
        conflicts with the variant.
    TypeError
        For an argument :class:`InfillNet` does not take.
    """
    try:
        pinned = _VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"unknown model variant {variant!r}; known variants: {', '.join(list_variants())}"
        ) from None
    for key, value in pinned.items():
        if key in hparams and hparams[key] != value:
            raise ValueError(f"variant {variant!r} fixes {key}={value}, got {key}={hparams[key]!r}")
    return InfillNet(**{**hparams, **pinned})
