"""A VAE of my own, written outside pyro-vae: a Pyro program that pyro-vae trains, evaluates,
samples, resumes and analyses by its import path, as it does its own models.

    pyro-vae train --model examples/own_model/my_vae.py:ResidualMLPVAE --set width=256

The model is a subclass of ``pyro_vae.VAE``: it builds an encoder (a feature trunk x → h and
a Gaussian head) and a decoder (z → the likelihood's parameters), and inherits the Pyro
program itself — ``model(x)`` samples ``"z"`` from the prior and observes ``"x"`` inside the
``"data"`` plate, ``guide(x)`` samples ``"z"`` from N(μ(x), σ(x)²). Its options are the
annotated parameters of ``__init__``: ``--set width=256 --set blocks=3`` is checked against
them like a built-in model's, and a value it refuses is a ``pyro_vae.ConfigError`` (one line).

``StudentTGuide`` is a guide of my own for any VAE (``--guide examples/own_model/my_vae.py:StudentTGuide``):
q(z | x) a diagonal Student-t with learned degrees of freedom, heavier-tailed than the
Gaussian, conditioned on the VAE's encoder features h.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae import VAE, ConfigError
from pyro_vae.guides import JointGuide
from pyro_vae.likelihoods import build_likelihood
from pyro_vae.models import Decoder, Encoder


class ResidualBlock(nn.Module):
    """x + W₂ GELU(W₁ LayerNorm(x)), the last layer zero-initialised (the block starts as the identity)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, width)
        self.outer = nn.Linear(width, width)
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(F.gelu(self.inner(self.norm(x))))


def residual_mlp(d_in: int, width: int, blocks: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), *[ResidualBlock(width) for _ in range(blocks)],
                         nn.LayerNorm(width), nn.GELU(), nn.Linear(width, d_out))


class ResidualMLPVAE(VAE):
    """A VAE whose encoder and decoder are residual MLPs on flattened images.

    Args:
        x_shape: image shape (C, H, W) — pyro-vae passes the data's.
        z_dim: latent dimension (``--z-dim``).
        likelihood: p(x | z), a name pyro-vae knows (``--likelihood``).
        width: width of the residual blocks.
        blocks: residual blocks in the encoder and in the decoder.
    """

    def __init__(self, x_shape: Sequence[int], z_dim: int = 16, likelihood: str = "bernoulli",
                 width: int = 128, blocks: int = 2) -> None:
        if width < 1 or blocks < 0:  # pyro-vae's own error: one line naming the option
            raise ConfigError(f"width must be ≥ 1 and blocks ≥ 0, got {width}, {blocks}", params=("width", "blocks"))
        lik = build_likelihood(likelihood, x_shape)
        d = math.prod(x_shape)
        trunk = nn.Sequential(nn.Flatten(start_dim=-len(x_shape)), residual_mlp(d, width, blocks, width), nn.GELU())
        net = nn.Sequential(residual_mlp(z_dim, width, blocks, math.prod(lik.param_shape)),
                            nn.Unflatten(-1, lik.param_shape))
        super().__init__(x_shape, z_dim, Encoder(trunk, width, z_dim), Decoder(net, lik))


class StudentTGuide(JointGuide):
    """q(z | x) = ∏_j StudentT(ν, μ_j(h), σ_j(h)), h the VAE's encoder features.

    Args:
        vae: the VAE whose encoder features the guide conditions on.
        df: the initial degrees of freedom ν (learned; ν → ∞ is the Gaussian guide).
    """

    def __init__(self, vae: VAE, df: float = 5.0) -> None:
        super().__init__(vae)
        if not df > 0:
            raise ConfigError(f"df must be positive, got {df}", params=("df",))
        self.head = nn.Linear(vae.encoder.h_dim, 2 * vae.z_dim)
        self.log_df = nn.Parameter(torch.tensor(math.log(df)))

    def _distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.head(self.vae.encoder.features(x)).chunk(2, dim=-1)
        return dist.StudentT(self.log_df.exp(), loc, F.softplus(raw) + 1e-4).to_event(1)

    def _location(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vae.encoder.features(x)).chunk(2, dim=-1)[0]
