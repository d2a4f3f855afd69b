"""Convolutional blocks: strided-convolution encoders and transposed-convolution decoders.

Every spatial size is computed from the input shape by a dummy forward pass and each
upsampling step targets the exact size its encoder counterpart had, so any ``(C, H, W)``
works — odd sizes included — and nothing is hard-coded for 28 × 28 or 32 × 32.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .mlp import act_dropout

Size = Tuple[int, int]


class Batched(nn.Module):
    """Apply ``net`` to inputs with any leading dimensions, merged into one batch.

    Convolutions take exactly one batch dimension, but a VAE decoder receives ``z`` of shape
    ``(..., z_dim)`` (particles on dim −2 under ``vectorize_particles`` and in IWAE). The
    leading dimensions are flattened into the batch and restored on the output. Without
    gradients (evaluation), large batches run in chunks of ``max_rows`` so that IWAE with
    thousands of samples keeps conv activations bounded in memory.

    Args:
        net: module taking ``(N, *in_shape)`` and returning ``(N, *out_shape)``.
        event_dims: number of trailing input dimensions that belong to one example.
        max_rows: largest batch passed at once when gradients are off.
    """

    def __init__(self, net: nn.Module, event_dims: int, max_rows: int = 1024) -> None:
        super().__init__()
        self.net = net
        self.event_dims = int(event_dims)
        self.max_rows = int(max_rows)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[: x.dim() - self.event_dims]
        flat = x.reshape(-1, *x.shape[x.dim() - self.event_dims :])
        if torch.is_grad_enabled() or flat.shape[0] <= self.max_rows:
            out = self.net(flat)
        else:
            out = torch.cat([self.net(chunk) for chunk in flat.split(self.max_rows)])
        return out.reshape(*lead, *out.shape[1:])


def spatial_sizes(stages: Sequence[nn.Module], in_shape: Sequence[int]) -> List[Tuple[int, ...]]:
    """Shapes ``(C, H, W)`` of the input and of the output of each stage (a dummy pass)."""
    shapes = [tuple(int(s) for s in in_shape)]
    with torch.no_grad():
        h = torch.zeros(1, *in_shape)
        for stage in stages:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


def mirrored(shapes: Sequence[Tuple[int, ...]], out_channels: int
             ) -> Tuple[List[int], List[Tuple[int, ...]]]:
    """The channels and sizes of a decoder that mirrors an encoder whose stages had
    ``shapes`` (input first): the encoder's stages in reverse, the last one giving
    ``out_channels`` (the likelihood's parameters) instead of the image's channels."""
    widths = [s[0] for s in shapes[1:]][::-1] + [int(out_channels)]
    sizes = [tuple(s[1:]) for s in shapes][::-1]
    return widths, sizes


class DownConv(nn.Sequential):
    """``Conv2d(3 × 3, stride 2, padding 1) → act [→ dropout]``: halves H and W (rounding up)."""

    def __init__(self, in_channels: int, out_channels: int, act: str = "elu", final_act: bool = True,
                 dropout: float = 0.0):
        layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)]
        if final_act:
            layers += act_dropout(act, dropout)
        super().__init__(*layers)


class UpConv(nn.Sequential):
    """``ConvTranspose2d(3 × 3, stride 2, padding 1) [→ act]`` from ``in_size`` to ``size``.

    It inverts a :class:`DownConv` (which maps m to ⌈m / 2⌉) for any m: the transposed
    convolution maps n to 2n − 1 + p, and the output padding p ∈ {0, 1} is chosen from
    the target size, so odd sizes (7 → 4 → 7) come back exactly. It costs a quarter of
    nearest upsampling followed by a 3 × 3 convolution at the high resolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        in_size: input ``(H, W)``.
        size: output ``(H, W)``; each side must be ``2n − 1`` or ``2n`` for input side n.
        act: activation name.
        final_act: apply the activation (and ``dropout``) after the convolution.
        dropout: dropout probability after the activation.
    """

    def __init__(self, in_channels: int, out_channels: int, in_size: Size, size: Size,
                 act: str = "elu", final_act: bool = True, dropout: float = 0.0):
        padding = tuple(int(t) - (2 * int(n) - 1) for n, t in zip(in_size, size))
        if any(p not in (0, 1) for p in padding):
            raise ValueError(f"a stride-2 UpConv cannot map {tuple(in_size)} to {tuple(size)}")
        layers: List[nn.Module] = [
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                               output_padding=padding),
        ]
        if final_act:
            layers += act_dropout(act, dropout)
        super().__init__(*layers)


class ConvEncoderTrunk(nn.Module):
    """``x (..., C, H, W) → h (..., hidden)``: strided convolutions, then a dense layer.

    Args:
        x_shape: image shape ``(C, H, W)``.
        channels: output channels of each stride-2 convolution (copied, never mutated).
        hidden: width of the features ``h``.
        act: activation name.
        dropout: dropout probability after every activation.

    Attributes:
        shapes: ``(C, H, W)`` of the input and after each convolution (for the decoder).
    """

    def __init__(self, x_shape: Sequence[int], channels: Sequence[int], hidden: int, act: str = "elu",
                 dropout: float = 0.0):
        super().__init__()
        widths = [int(x_shape[0]), *[int(c) for c in channels]]
        convs = [DownConv(a, b, act, dropout=dropout) for a, b in zip(widths[:-1], widths[1:])]
        self.shapes = spatial_sizes(convs, x_shape)
        self.net = Batched(
            nn.Sequential(
                *convs,
                nn.Flatten(),
                nn.Linear(math.prod(self.shapes[-1]), hidden),
                *act_dropout(act, dropout),
            ),
            event_dims=3,
        )
        self.out_features = int(hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoderNet(nn.Module):
    """``z (..., z_dim) → params (..., P, H, W)``: the mirror image of a :class:`ConvEncoderTrunk`.

    A dense layer maps z to features of the encoder's last shape, then each
    :class:`UpConv` returns to the size of the matching encoder stage; the last one outputs
    the ``P`` likelihood-parameter channels (no activation).

    Args:
        z_dim: latent dimension.
        shapes: the encoder's ``shapes`` (input first).
        out_channels: P, channels of the likelihood parameters.
        hidden: width of the dense layer after z.
        act: activation name.
        dropout: dropout probability after every activation.
    """

    def __init__(self, z_dim: int, shapes: Sequence[Tuple[int, ...]], out_channels: int,
                 hidden: int, act: str = "elu", dropout: float = 0.0):
        super().__init__()
        top = tuple(shapes[-1])
        widths, sizes = mirrored(shapes, out_channels)
        ups = [
            UpConv(widths[i], widths[i + 1], sizes[i], sizes[i + 1], act, final_act=i < len(sizes) - 2,
                   dropout=dropout)
            for i in range(len(sizes) - 1)
        ]
        self.net = Batched(
            nn.Sequential(
                nn.Linear(z_dim, hidden),
                *act_dropout(act, dropout),
                nn.Linear(hidden, math.prod(top)),
                *act_dropout(act, dropout),
                nn.Unflatten(1, top),
                *ups,
            ),
            event_dims=1,
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
