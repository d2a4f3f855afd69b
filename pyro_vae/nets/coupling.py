"""Coupling networks: the conditioners ``x_a → (shift, log_scale)`` of coupling layers
(density flows in :mod:`pyro_vae.flows`, the flow prior in :mod:`pyro_vae.priors`).

Each network's last layer is zero-initialised, so every coupling layer starts as the
identity and a freshly built flow is its base distribution pushed through the fixed
preprocessing (the "zero_last" initialisation of Glow and VDVAE). Log-scales are bounded
softly, ``s = B · tanh(raw / B)``, so that no early step can blow a scale up.

All networks accept any number of leading (batch / particle) dimensions.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from pyro.nn import DenseNN
from torch import Tensor, nn
from torch.nn import functional as F


def zero_last(net: DenseNN) -> DenseNN:
    """Zero the last linear layer of a Pyro ``DenseNN`` (so its outputs start at 0)."""
    last = net.layers[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


class ResidualBlock(nn.Module):
    """``h + conv3×3(relu(conv3×3(relu(h))))`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class ConvCouplingNet(nn.Module):
    """A small convolutional ResNet ``(…, C_in, H, W) → (shift, log_scale)``, each ``(…, C_out, H, W)``.

    ``conv3×3 → blocks × ResidualBlock → relu → conv3×3`` (the last one zero-initialised):
    the coupling network of RealNVP (arXiv:1605.08803) and, with ``blocks=0`` and a
    1×1 convolution in the middle, close to Glow's (arXiv:1807.03039).

    Args:
        in_channels: channels of the conditioning half.
        out_channels: channels of the transformed half.
        hidden: width of the hidden feature maps.
        blocks: number of residual blocks.
        log_scale_bound: B of the soft bound ``B tanh(raw / B)`` on the log-scale.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 32,
        blocks: int = 1,
        log_scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        self.bound = float(log_scale_bound)
        self.inp = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden) for _ in range(blocks)])
        self.mid = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, 2 * out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        batch = x.shape[:-3]
        h = self.blocks(self.inp(x.reshape(-1, *x.shape[-3:])))
        h = self.out(F.relu(self.mid(F.relu(h))))
        h = h.reshape(*batch, *h.shape[-3:])
        shift, raw = h.chunk(2, dim=-3)
        return shift, self.bound * torch.tanh(raw / self.bound)


class ChannelCouplingNet(nn.Module):
    """Adapter that lets :class:`ConvCouplingNet` serve Pyro's ``AffineCoupling(dim=-3)``.

    Pyro's coupling flattens the conditioning half to ``(…, split·H·W)`` before calling its
    hypernet and expects flat outputs ``(…, (C − split)·H·W)``; this reshapes around the
    convolutional network.

    Args:
        split: channels of the conditioning half.
        out_channels: channels of the transformed half.
        height: H.
        width: W.
        hidden, blocks, log_scale_bound: as in :class:`ConvCouplingNet`.
    """

    def __init__(
        self,
        split: int,
        out_channels: int,
        height: int,
        width: int,
        hidden: int = 32,
        blocks: int = 1,
        log_scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        self.in_shape = (split, height, width)
        self.net = ConvCouplingNet(split, out_channels, hidden, blocks, log_scale_bound)

    def forward(self, flat: Tensor) -> Tuple[Tensor, Tensor]:
        shift, log_scale = self.net(flat.reshape(*flat.shape[:-1], *self.in_shape))
        return shift.flatten(-3), log_scale.flatten(-3)


class DenseCouplingNet(nn.Module):
    """An MLP conditioner for vectors: ``(…, in) → (shift, log_scale)``, each ``(…, out)``.

    Pyro's ``DenseNN`` (ReLU) with a zero-initialised last layer and the soft log-scale
    bound; for Pyro's ``AffineCoupling`` on vectors (the RealNVP prior).

    Args:
        in_features: width of the conditioning half.
        out_features: width of the transformed half.
        hidden: hidden widths.
        log_scale_bound: B of ``B tanh(raw / B)``.
    """

    def __init__(
        self, in_features: int, out_features: int, hidden: Sequence[int], log_scale_bound: float = 2.0
    ) -> None:
        super().__init__()
        self.bound = float(log_scale_bound)
        self.net = zero_last(DenseNN(in_features, list(hidden), [out_features, out_features]))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        shift, raw = self.net(x)
        return shift, self.bound * torch.tanh(raw / self.bound)


class AdditiveCouplingNet(nn.Module):
    """NICE's conditioner: an MLP shift and a zero log-scale, so Pyro's ``AffineCoupling``
    becomes the additive (volume-preserving) coupling ``y_b = x_b + m(x_a)`` of
    Dinh, Krueger & Bengio 2014 (arXiv:1410.8516).

    Args:
        in_features: width of the conditioning half.
        out_features: width of the transformed half.
        hidden: hidden widths of the MLP (ReLU).
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = zero_last(DenseNN(in_features, list(hidden), [out_features]))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        shift = self.net(x)
        return shift, torch.zeros_like(shift)
