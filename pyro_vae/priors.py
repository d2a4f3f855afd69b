"""Priors p_θ(z): modules whose ``forward()`` returns a distribution with event shape (z_dim,).

A prior with parameters (a learned flow prior, say) is registered with Pyro by the model
(``VAE.register_prior``) and trained jointly with the VAE; the KL term of the ELBO is then
estimated by Monte Carlo, which is what ``Trace_ELBO`` does for every prior anyway.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .registry import Registry

PRIORS: Registry[type] = Registry("prior")


@PRIORS.register("normal")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


def build_prior(name: str, z_dim: int) -> nn.Module:
    """Build a registered prior by name for a ``z_dim``-dimensional latent."""
    return PRIORS.get(name)(z_dim)
