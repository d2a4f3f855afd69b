"""Residual blocks and the ResNet encoder/decoder of the ResNet VAE.

Blocks are pre-activation (He et al. 2016, arXiv:1603.05027): the residual stream is never
passed through a nonlinearity, each branch is ``act → conv → act → conv``, and the last
convolution of every branch starts at zero, so each block starts as the identity and a deep
stack trains like a shallow one (as in the ResNet VAE of Kingma et al. 2016,
arXiv:1606.04934, and VDVAE's ``zero_last``). There is no batch normalisation: its
batch statistics would couple the examples and particles of a Pyro plate.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from .conv import Batched, DownConv, UpConv, mirrored, spatial_sizes
from .mlp import act_dropout, activation


class ResBlock(nn.Module):
    """``x + conv(drop(act(conv(act(x)))))`` with 3 × 3 convolutions; the last one
    zero-initialised; dropout between the two convolutions, as in wide residual networks
    (Zagoruyko & Komodakis 2016, arXiv:1605.07146).

    Args:
        channels: channels of the residual stream (input and output).
        mid: channels inside the branch (default ``channels``).
        act: activation name.
        dropout: dropout probability inside the branch.
    """

    def __init__(self, channels: int, mid: Optional[int] = None, act: str = "elu", dropout: float = 0.0) -> None:
        super().__init__()
        mid = int(mid or channels)
        self.branch = nn.Sequential(
            activation(act)(),
            nn.Conv2d(channels, mid, 3, padding=1),
            *act_dropout(act, dropout),
            nn.Conv2d(mid, channels, 3, padding=1),
        )
        last = self.branch[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class DownStage(nn.Sequential):
    """A stride-2 convolution into ``out_channels`` (no activation: it opens a residual
    stream) followed by ``blocks`` :class:`ResBlock` s at the new resolution."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, act: str = "elu", dropout: float = 0.0):
        super().__init__(
            DownConv(in_channels, out_channels, act, final_act=False),
            *[ResBlock(out_channels, act=act, dropout=dropout) for _ in range(blocks)],
        )


class UpStage(nn.Sequential):
    """``blocks`` :class:`ResBlock` s, then ``act →`` a stride-2 transposed convolution
    from ``in_size`` to ``size`` into ``out_channels`` (the mirror image of a
    :class:`DownStage`)."""

    def __init__(self, in_channels: int, out_channels: int, in_size: Tuple[int, int],
                 size: Tuple[int, int], blocks: int, act: str = "elu", dropout: float = 0.0):
        super().__init__(
            *[ResBlock(in_channels, act=act, dropout=dropout) for _ in range(blocks)],
            activation(act)(),
            UpConv(in_channels, out_channels, in_size, size, act, final_act=False),
        )


class ResNetEncoderTrunk(nn.Module):
    """``x (..., C, H, W) → h (..., hidden)`` through residual down-sampling stages.

    Args:
        x_shape: image shape ``(C, H, W)``.
        channels: width of each stage; each stage halves H and W (copied, never mutated).
        blocks: residual blocks per stage (the depth).
        hidden: width of the features ``h``.
        act: activation name.
        dropout: dropout probability in every residual branch and after the dense layer.

    Attributes:
        shapes: ``(C, H, W)`` of the input and after each stage (for the decoder).
    """

    def __init__(self, x_shape: Sequence[int], channels: Sequence[int], blocks: int, hidden: int,
                 act: str = "elu", dropout: float = 0.0):
        super().__init__()
        widths = [int(x_shape[0]), *[int(c) for c in channels]]
        stages = [DownStage(a, b, blocks, act, dropout) for a, b in zip(widths[:-1], widths[1:])]
        self.shapes = spatial_sizes(stages, x_shape)
        self.net = Batched(
            nn.Sequential(
                *stages,
                activation(act)(),
                nn.Flatten(),
                nn.Linear(math.prod(self.shapes[-1]), hidden),
                *act_dropout(act, dropout),
            ),
            event_dims=3,
        )
        self.out_features = int(hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ResNetDecoderNet(nn.Module):
    """``z (..., z_dim) → params (..., P, H, W)``, mirroring a :class:`ResNetEncoderTrunk`.

    Args:
        z_dim: latent dimension.
        shapes: the encoder's ``shapes`` (input first).
        out_channels: P, channels of the likelihood parameters.
        blocks: residual blocks per stage.
        hidden: width of the dense layer after z.
        act: activation name.
        dropout: dropout probability after the dense layer and in every residual branch.
    """

    def __init__(self, z_dim: int, shapes: Sequence[Tuple[int, ...]], out_channels: int,
                 blocks: int, hidden: int, act: str = "elu", dropout: float = 0.0):
        super().__init__()
        top = tuple(shapes[-1])
        widths, sizes = mirrored(shapes, out_channels)
        stages: List[nn.Module] = [
            UpStage(widths[i], widths[i + 1], sizes[i], sizes[i + 1], blocks, act, dropout)
            for i in range(len(sizes) - 1)
        ]
        self.net = Batched(
            nn.Sequential(
                nn.Linear(z_dim, hidden),
                *act_dropout(act, dropout),
                nn.Linear(hidden, math.prod(top)),
                nn.Unflatten(1, top),
                *stages,
            ),
            event_dims=1,
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
