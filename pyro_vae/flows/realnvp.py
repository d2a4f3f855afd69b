"""RealNVP: checkerboard and channel-wise affine couplings in a multi-scale architecture."""

from __future__ import annotations

from typing import Sequence

import torch
from pyro.distributions.transforms import AffineCoupling, Permute
from torch import nn
from torch.distributions import ComposeTransform, Transform

from ..nets.coupling import ChannelCouplingNet, ConvCouplingNet
from ..options import check_ranges
from .base import FLOW_MODELS, FlowModel
from .transforms import ActNorm, CheckerboardAffineCoupling, FactorOut, Squeeze, check_squeezable


class RealNVPScale(nn.Module):
    """One scale of RealNVP on ``(C, H, W)``, holding the next scale inside.

    Normalizing direction: ``k`` checkerboard couplings (alternating parity) → squeeze →
    ``k`` channel-wise couplings (Pyro ``AffineCoupling`` on the channel split, halves
    reversed in between) → half of the channels factored out, the other half through the
    next scale → unsqueeze. The last scale is ``k + 1`` checkerboard couplings. With
    ``norm``, every coupling is followed by an ActNorm.
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        scales: int,
        k: int,
        hidden: int,
        blocks: int,
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.last = scales == 1
        net = lambda c_in, c_out: ConvCouplingNet(c_in, c_out, hidden, blocks)  # noqa: E731
        n_checker = k + 1 if self.last else k
        self.checkerboard = nn.ModuleList(
            CheckerboardAffineCoupling(channels, height, width, net(channels, channels), parity=i % 2)
            for i in range(n_checker)
        )
        self.checkerboard_norms = nn.ModuleList(
            ActNorm(channels) for _ in range(n_checker if norm else 0)
        )
        if self.last:
            return
        check_squeezable(height, width, "RealNVP")
        c4, h2, w2 = 4 * channels, height // 2, width // 2
        self.keep = c4 // 2
        self.channelwise = nn.ModuleList(
            AffineCoupling(
                self.keep,
                ChannelCouplingNet(self.keep, c4 - self.keep, h2, w2, hidden, blocks),
                dim=-3,
            )
            for _ in range(k)
        )
        self.channelwise_norms = nn.ModuleList(ActNorm(c4) for _ in range(k if norm else 0))
        self.register_buffer("reverse", torch.arange(c4 - 1, -1, -1))
        self.inner = RealNVPScale(self.keep, h2, w2, scales - 1, k, hidden, blocks, norm)

    def transform(self) -> Transform:
        parts = []
        for i, layer in enumerate(self.checkerboard):
            parts.append(layer)
            if self.checkerboard_norms:
                parts.append(self.checkerboard_norms[i])
        if not self.last:
            parts.append(Squeeze())
            for i, layer in enumerate(self.channelwise):
                if i:
                    parts.append(Permute(self.reverse, dim=-3))
                parts.append(layer)
                if self.channelwise_norms:
                    parts.append(self.channelwise_norms[i])
            parts += [FactorOut(self.inner.transform(), self.keep), Squeeze().inv]
        return ComposeTransform(parts)


@FLOW_MODELS.register("realnvp", aliases={"hidden": "hidden_channels"})
class RealNVP(FlowModel):
    r"""Real-valued non-volume-preserving flow with a multi-scale architecture.

    Affine couplings :math:`y_b = x_b \odot e^{s(x_a)} + t(x_a)` whose conditioners are
    small convolutional ResNets (:class:`~pyro_vae.nets.coupling.ConvCouplingNet`), with
    checkerboard masks at each resolution and channel splits after each squeeze; at every
    scale but the last, half of the channels are factored out to the N(0, I) base. For
    MNIST (1, 28, 28) with 3 scales the flow works at 28², 14² and 7². The paper
    batch-normalises each coupling's output; here an ActNorm (initialised from the first
    batch) takes that place, because batch statistics would make an example's density
    depend on its batch — Pyro's ``BatchNorm`` transform does exactly that in training
    mode, and it normalises the last dimension, not image channels.

    Args:
        x_shape: image shape (C, H, W); H and W must be divisible by 2^(num_scales − 1).
        num_scales: number of scales (the paper: 2 to 5).
        couplings: couplings of each kind per scale (the paper: 3; the last scale has
            ``couplings + 1`` checkerboard layers).
        hidden_channels: channels of the coupling ResNets (the paper: 64).
        blocks: residual blocks per coupling ResNet (the paper: 2 to 8).
        norm: an ActNorm after every coupling (the paper: batch normalization).
        preprocess: map to grey levels (the paper: ``logit``).
        alpha: margin of the logit preprocessing (the paper: 0.05).

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP, arXiv:1605.08803.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        num_scales: int = 3,
        couplings: int = 3,
        hidden_channels: int = 32,
        blocks: int = 1,
        norm: bool = True,
        preprocess: str = "logit",
        alpha: float = 0.05,
    ) -> None:
        super().__init__(x_shape, preprocess=preprocess, alpha=alpha, base="normal")
        check_ranges(dict(num_scales=num_scales, couplings=couplings, hidden_channels=hidden_channels, blocks=blocks), {
            "num_scales": (num_scales >= 1, "≥ 1"), "couplings": (couplings >= 1, "≥ 1"),
            "hidden_channels": (hidden_channels >= 1, "≥ 1"), "blocks": (blocks >= 0, "≥ 0"),
        }, "options of the realnvp model")
        c, h, w = self.x_shape
        self.root = RealNVPScale(c, h, w, num_scales, couplings, hidden_channels, blocks, norm)
        self._init_base()

    def build_transform(self) -> Transform:
        return self.root.transform()
