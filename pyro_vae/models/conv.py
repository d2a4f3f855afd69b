"""The convolutional VAE: strided convolutions in the encoder, transposed ones in the decoder."""

from __future__ import annotations

from typing import Sequence, Tuple

from ..errors import ConfigError
from ..likelihoods import build_likelihood
from ..nets.conv import ConvDecoderNet, ConvEncoderTrunk
from .base import MODELS, VAE, Decoder, Encoder


def check_widths(channels: Sequence[int], hidden: int) -> Tuple[int, ...]:
    """Validate stage widths and the feature width; return the widths as a tuple."""
    widths = tuple(int(c) for c in channels)
    if not widths or min(widths) < 1:
        raise ConfigError(f"channels must be a non-empty list of positive widths, got {list(widths)}",
                          params=("channels",))
    if int(hidden) < 1:
        raise ConfigError(f"hidden must be a positive width, got {hidden}", params=("hidden",))
    return widths


def check_stages(x_shape: Sequence[int], stages: int, name: str) -> None:
    """Refuse images too small for ``stages`` stride-2 stages: each must halve a side of at
    least 2 pixels (on a 1 × 1 image a "convolutional" VAE convolves nothing)."""
    _, h, w = (int(s) for s in x_shape)
    smallest = 2 ** (stages - 1) + 1
    if min(h, w) < smallest:
        raise ConfigError(f"the {name} model's {stages} stride-2 stage{'s' if stages > 1 else ''} need images "
                          f"of at least {smallest}×{smallest} pixels, got {h}×{w}; use fewer stages "
                          "(channels=[…]) or the dense model", params=("channels",))


@MODELS.register("conv")
class ConvVAE(VAE):
    """A VAE with a convolutional encoder and decoder, for any image size.

    Encoder: ``len(channels)`` stride-2 3 × 3 convolutions (each halves H and W, rounding
    up), a dense layer to ``hidden`` features h, then the Gaussian head. Decoder: dense
    layers from z to the encoder's last feature map, then stride-2 3 × 3 transposed
    convolutions back through the encoder's sizes to the likelihood parameters. For
    (1, 28, 28) with the defaults: 28 → 14 → 7 and back.

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        likelihood: ``bernoulli`` (binary images), ``gaussian`` or ``logistic`` (grey levels).
        channels: channels of the encoder's stages (the decoder mirrors them).
        hidden: width of the dense features between the convolutions and z.
        activation: ``elu``, ``relu``, ``softplus`` or ``tanh``.
        dropout: probability of dropout after every activation of the encoder and the
            decoder (0: none; off in evaluation).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int = 32,
        likelihood: str = "bernoulli",
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        activation: str = "elu",
        dropout: float = 0.0,
    ) -> None:
        widths = check_widths(channels, hidden)
        check_stages(x_shape, len(widths), "conv")
        lik = build_likelihood(likelihood, x_shape)
        trunk = ConvEncoderTrunk(x_shape, widths, int(hidden), activation, dropout)
        net = ConvDecoderNet(z_dim, trunk.shapes, lik.param_shape[0], int(hidden), activation, dropout)
        super().__init__(x_shape, z_dim, Encoder(trunk, int(hidden), z_dim), Decoder(net, lik))
