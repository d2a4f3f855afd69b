"""The dense (MLP) VAE of Kingma & Welling 2013 (arXiv:1312.6114)."""

from __future__ import annotations

import math
from typing import Sequence, Tuple

from torch import nn

from ..errors import ConfigError
from ..likelihoods import Likelihood, build_likelihood
from ..nets import MLP
from .base import MODELS, VAE, Decoder, Encoder


def check_hidden_dims(hidden_dims: Sequence[int]) -> Tuple[int, ...]:
    """``hidden_dims`` as a tuple of positive widths; else a ConfigError."""
    hidden: Tuple[int, ...] = tuple(int(h) for h in hidden_dims)
    if not hidden or min(hidden) < 1:
        raise ConfigError(f"hidden_dims must be a non-empty list of positive widths, got {list(hidden)}",
                          params=("hidden_dims",))
    return hidden


def dense_trunk(x_shape: Sequence[int], hidden: Sequence[int], activation: str,
                dropout: float = 0.0) -> nn.Module:
    """``x (..., C, H, W) → h (..., hidden[-1])``: the flattened image through an MLP (dropout
    after every hidden activation)."""
    d = int(math.prod(x_shape))
    return nn.Sequential(nn.Flatten(start_dim=-len(x_shape)),
                         MLP(d, hidden[:-1], hidden[-1], act=activation, final_act=True, dropout=dropout))


def dense_decoder_net(z_dim: int, hidden: Sequence[int], lik: Likelihood, activation: str,
                      dropout: float = 0.0) -> nn.Module:
    """``z (..., z_dim) → params (..., *param_shape)``: the trunk's MLP mirrored."""
    return nn.Sequential(MLP(z_dim, hidden[::-1], int(math.prod(lik.param_shape)), act=activation,
                             dropout=dropout),
                         nn.Unflatten(-1, lik.param_shape))


@MODELS.register("dense", aliases={"hidden": "hidden_dims"})
class DenseVAE(VAE):
    """A VAE whose encoder and decoder are multi-layer perceptrons on flattened images.

    Encoder: ``flatten(x) → MLP(hidden) → h``, then a linear Gaussian head.
    Decoder: ``z → MLP(reversed(hidden)) → likelihood params``, reshaped to the image.

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        likelihood: ``bernoulli`` for binary images, ``gaussian`` for grey levels.
        hidden_dims: hidden widths of the encoder's MLP; the decoder mirrors them (the old
            spelling ``hidden`` is accepted too).
        activation: ``relu``, ``elu``, ``softplus`` or ``tanh``.
        dropout: probability of dropout after every hidden activation of the encoder and
            the decoder (0: none; off in evaluation).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int = 32,
        likelihood: str = "bernoulli",
        hidden_dims: Sequence[int] = (512, 256),
        activation: str = "elu",
        dropout: float = 0.0,
    ) -> None:
        hidden = check_hidden_dims(hidden_dims)
        lik = build_likelihood(likelihood, x_shape)
        trunk = dense_trunk(x_shape, hidden, activation, dropout)
        net = dense_decoder_net(z_dim, hidden, lik, activation, dropout)
        super().__init__(x_shape, z_dim, Encoder(trunk, hidden[-1], z_dim), Decoder(net, lik))
