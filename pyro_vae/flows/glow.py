"""Glow: ActNorm → invertible 1×1 convolution → affine coupling, in a multi-scale architecture."""

from __future__ import annotations

from typing import Sequence

import torch
from pyro.distributions.transforms import AffineCoupling, GeneralizedChannelPermute
from torch import Tensor, nn
from torch.distributions import ComposeTransform, Transform

from ..nets.coupling import ChannelCouplingNet
from ..options import check_ranges
from .base import FLOW_MODELS, FlowModel
from .transforms import ActNorm, FactorOut, Squeeze, check_squeezable


class InvertibleConv1x1(GeneralizedChannelPermute):
    """Glow's invertible 1×1 convolution: Pyro's ``GeneralizedChannelPermute`` (W = PLU,
    started at a random rotation) with two changes.

    * Its ``LU`` parameter is made contiguous. ``torch.linalg.lu_factor`` returns it in
      column-major layout, and Pyro's param store keeps a *contiguous copy* of a
      non-contiguous parameter, so ``pyro.module`` would register a tensor the transform
      never uses: plain ``SVI`` would optimise the copy and never train the convolution.
    * The inverse (sampling) forms W⁻¹ = U⁻¹ L⁻¹ Pᵀ once per call by two C × C triangular
      solves and applies it like the forward map; Pyro solves the triangular systems for
      every image, which dominated sampling time on the CPU.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels=channels)
        self.LU.data = self.LU.data.contiguous()

    def _inverse(self, y: Tensor) -> Tensor:
        l_inv_pt = torch.linalg.solve_triangular(self.L, self.permutation.T, upper=False)
        w_inv = torch.linalg.solve_triangular(self.U, l_inv_pt, upper=True)
        return (w_inv[..., None, None] * y.unsqueeze(-4)).sum(-3)


class GlowScale(nn.Module):
    """One level of Glow on ``(C, H, W)``, holding the next level inside.

    Normalizing direction: squeeze → ``steps`` × [ActNorm → 1×1 conv → affine coupling]
    → (except at the last level) half of the channels factored out, the other half through
    the next level → unsqueeze.
    """

    def __init__(
        self, channels: int, height: int, width: int, levels: int, steps: int, hidden: int, blocks: int
    ) -> None:
        super().__init__()
        check_squeezable(height, width, "Glow")
        c4, h2, w2 = 4 * channels, height // 2, width // 2
        self.split = c4 // 2
        self.steps = nn.ModuleList(
            nn.ModuleList([
                ActNorm(c4),
                InvertibleConv1x1(c4),
                AffineCoupling(
                    self.split,
                    ChannelCouplingNet(self.split, c4 - self.split, h2, w2, hidden, blocks),
                    dim=-3,
                ),
            ])
            for _ in range(steps)
        )
        self.inner = (
            GlowScale(self.split, h2, w2, levels - 1, steps, hidden, blocks) if levels > 1 else None
        )

    def transform(self) -> Transform:
        parts = [Squeeze(), *(layer for step in self.steps for layer in step)]
        if self.inner is not None:
            parts.append(FactorOut(self.inner.transform(), self.split))
        parts.append(Squeeze().inv)
        return ComposeTransform(parts)


@FLOW_MODELS.register("glow", aliases={"hidden": "hidden_channels"})
class Glow(FlowModel):
    r"""Glow: a multi-scale flow whose steps are ActNorm, an invertible 1×1 convolution
    (:class:`InvertibleConv1x1`, from Pyro's ``GeneralizedChannelPermute``, W = PLU) and an
    affine coupling.

    ActNorm is initialised from the first training batch; the 1×1 convolution starts at a
    random rotation; the coupling networks start at zero (identity steps). The factored-out
    channels are scored by the N(0, I) base (the paper's learned conditional prior for them
    is left out). For MNIST (1, 28, 28) and 2 levels the flow works at 14² × 4 and 7² × 8.

    Args:
        x_shape: image shape (C, H, W); H and W must be divisible by 2^num_scales.
        num_scales: levels L (the paper: 3).
        steps: steps K per level (the paper: 32).
        hidden_channels: channels of the coupling networks (the paper: 512).
        blocks: residual blocks per coupling network (0 gives Glow's conv3×3 → conv1×1 →
            conv3×3).
        preprocess: map to grey levels (the paper: ``center``, y − ½).
        alpha: margin of the logit preprocessing (with ``preprocess="logit"``).

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions,
        arXiv:1807.03039.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        num_scales: int = 2,
        steps: int = 4,
        hidden_channels: int = 32,
        blocks: int = 0,
        preprocess: str = "center",
        alpha: float = 0.05,
    ) -> None:
        super().__init__(x_shape, preprocess=preprocess, alpha=alpha, base="normal")
        check_ranges(dict(num_scales=num_scales, steps=steps, hidden_channels=hidden_channels, blocks=blocks), {
            "num_scales": (num_scales >= 1, "≥ 1"), "steps": (steps >= 1, "≥ 1"),
            "hidden_channels": (hidden_channels >= 1, "≥ 1"), "blocks": (blocks >= 0, "≥ 0"),
        }, "options of the glow model")
        c, h, w = self.x_shape
        self.root = GlowScale(c, h, w, num_scales, steps, hidden_channels, blocks)
        self._init_base()

    def build_transform(self) -> Transform:
        return self.root.transform()
