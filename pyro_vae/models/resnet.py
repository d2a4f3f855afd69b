"""The ResNet VAE: residual down- and up-sampling stages (after Kingma et al. 2016)."""

from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError
from ..likelihoods import build_likelihood
from ..nets.resnet import ResNetDecoderNet, ResNetEncoderTrunk
from .base import MODELS, VAE, Decoder, Encoder
from .conv import check_stages, check_widths


@MODELS.register("resnet")
class ResNetVAE(VAE):
    """A VAE whose encoder and decoder are stacks of pre-activation residual blocks.

    Encoder: per stage a stride-2 convolution into ``channels[i]`` and ``blocks`` residual
    blocks (last conv of each branch zero-initialised); then a dense layer to ``hidden``
    features h and the Gaussian head. Decoder: dense layers from z to the last feature map,
    then per stage ``blocks`` residual blocks and a stride-2 transposed convolution, back through
    the encoder's sizes to the likelihood parameters. Depth (``blocks``) and width
    (``channels``) are configurable; a single latent z keeps the model/guide contract of
    every other VAE here, unlike the hierarchical ResNet VAE of Kingma et al. 2016
    (arXiv:1606.04934), whose residual encoder/decoder this follows.

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        likelihood: ``bernoulli`` (binary images), ``gaussian`` or ``logistic`` (grey levels).
        channels: width of each down-sampling stage (the decoder mirrors them).
        blocks: residual blocks per stage.
        hidden: width of the dense features between the convolutions and z.
        activation: ``elu``, ``relu``, ``softplus`` or ``tanh``.
        dropout: probability of dropout in every residual branch and after the dense
            layers (0: none; off in evaluation).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int = 32,
        likelihood: str = "bernoulli",
        channels: Sequence[int] = (16, 32),
        blocks: int = 1,
        hidden: int = 256,
        activation: str = "elu",
        dropout: float = 0.0,
    ) -> None:
        widths = check_widths(channels, hidden)
        check_stages(x_shape, len(widths), "resnet")
        if int(blocks) < 0:
            raise ConfigError(f"blocks must be zero or positive, got {blocks}", params=("blocks",))
        lik = build_likelihood(likelihood, x_shape)
        trunk = ResNetEncoderTrunk(x_shape, widths, int(blocks), int(hidden), activation, dropout)
        net = ResNetDecoderNet(z_dim, trunk.shapes, lik.param_shape[0], int(blocks), int(hidden),
                               activation, dropout)
        super().__init__(x_shape, z_dim, Encoder(trunk, int(hidden), z_dim), Decoder(net, lik))
