"""NICE: additive coupling layers and a diagonal scaling (Dinh, Krueger & Bengio 2014)."""

from __future__ import annotations

from typing import Sequence

import torch
from pyro.distributions.transforms import AffineCoupling, Permute
from torch import nn
from torch.distributions import ComposeTransform, ReshapeTransform, Transform

from ..errors import ConfigError
from ..nets.coupling import AdditiveCouplingNet
from ..options import check_ranges
from .base import FLOW_MODELS, FlowModel
from .transforms import ActNorm


@FLOW_MODELS.register("nice", aliases={"hidden": "hidden_dims"})
class NICE(FlowModel):
    r"""Non-linear Independent Components Estimation on flattened images.

    In the normalizing direction the image is flattened to D entries, split into odd and
    even pixels, and passed through ``couplings`` additive coupling layers

        :math:`y_a = x_a,\quad y_b = x_b + m(x_a)`   (``log |det| = 0``),

    the halves swapping roles between layers, then a diagonal scaling
    :math:`z = e^{s} \odot (y + b)`, an :class:`~pyro_vae.flows.transforms.ActNorm` over the
    D entries. Only the scaling changes volume. Unlike the paper's, it is initialised from
    the first batch (per-pixel mean and scale) and has a shift b: in logit space MNIST's
    background pixels vary by ~0.02, so the scaling must reach e^4 — from the identity, at
    a learning rate of 1e-3, that alone takes thousands of steps. The coupling is Pyro's
    ``AffineCoupling`` with a zero log-scale
    (:class:`~pyro_vae.nets.coupling.AdditiveCouplingNet`). The base is the standard
    logistic distribution, as in the paper.

    Args:
        x_shape: image shape (C, H, W).
        couplings: number of additive coupling layers (the paper: 4).
        hidden_dims: hidden widths of each coupling MLP (the paper: 5 × 1000 for MNIST).
        preprocess: map to grey levels (``logit``, ``center`` or ``none``).
        alpha: margin of the logit preprocessing.
        base: ``logistic`` (the paper) or ``normal``.

    References:
        Dinh, Krueger & Bengio, NICE: Non-linear Independent Components Estimation,
        arXiv:1410.8516.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        couplings: int = 4,
        hidden_dims: Sequence[int] = (500, 500),
        preprocess: str = "logit",
        alpha: float = 0.05,
        base: str = "logistic",
    ) -> None:
        super().__init__(x_shape, preprocess=preprocess, alpha=alpha, base=base)
        d = self.num_dims
        if d < 2:
            raise ConfigError(f"NICE needs at least 2 dimensions, got x_shape {self.x_shape}",
                              params=("x_shape",))
        check_ranges({"couplings": couplings, "hidden_dims": list(hidden_dims)}, {
            "couplings": (couplings >= 1, "≥ 1"),
            "hidden_dims": (bool(hidden_dims) and min(int(h) for h in hidden_dims) >= 1, "non-empty, each ≥ 1"),
        }, "options of the nice model")
        half = d // 2
        self.layers = nn.ModuleList(
            AffineCoupling(half, AdditiveCouplingNet(half, d - half, [int(h) for h in hidden_dims]))
            for _ in range(couplings)
        )
        self.scaling = ActNorm(d, event_dim=1)
        # odd / even partition of the flattened image, then halves reversed between layers
        self.register_buffer("interleave", torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)]))
        self.register_buffer("reverse", torch.arange(d - 1, -1, -1))
        self._init_base()

    def build_transform(self) -> Transform:
        parts = [ReshapeTransform(self.x_shape, (self.num_dims,)), Permute(self.interleave)]
        for i, layer in enumerate(self.layers):
            if i:
                parts.append(Permute(self.reverse))
            parts.append(layer)
        parts.append(self.scaling)
        return ComposeTransform(parts)
