"""PixelVAE: a VAE whose decoder is a conditional gated PixelCNN (Gulrajani et al. 2016).

    p_θ(x | z) = Π_i p_θ(x_i | x_<i, s_θ(z)),

with s_θ(z) a conditioning map computed from z and added inside every gate of the PixelCNN
(:mod:`pyro_vae.nets.pixelcnn`). The decoder models local pixel detail autoregressively, so z
is left with the global structure a factorised decoder would blur. The encoder is the conv
VAE's (strided convolutions → h → Gaussian head), so every guide works unchanged.

A strong autoregressive decoder can ignore z (posterior collapse: KL → 0). Guard against it
with KL warm-up (``TrainConfig.kl_warmup``) and free bits (``TrainConfig.free_bits``,
:class:`pyro_vae.infer.elbo.FreeBitsTrace_ELBO`); the test KL is logged every epoch.

Reference: I. Gulrajani, K. Kumar, F. Ahmed, A. A. Taiga, F. Visin, D. Vazquez,
A. Courville. PixelVAE: A Latent Variable Model for Natural Images. arXiv:1611.05013.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..likelihoods import Likelihood, build_likelihood
from ..nets.conv import ConvEncoderTrunk
from ..nets.mlp import act_dropout
from ..nets.pixelcnn import GatedPixelCNN
from ..options import check_int
from ..pixel_likelihood import PixelCNNDistribution
from .base import MODELS, VAE, Decoder, Encoder
from .conv import check_stages, check_widths


class ConditioningNet(nn.Module):
    """z (..., z_dim) → conditioning map s (..., S, H, W).

    A dense layer to a coarse map of a quarter of the image's height and width (then
    dropout, if asked), nearest upsampling to (H, W) and a 3 × 3 convolution; sizes come
    from the image shape.
    """

    def __init__(self, z_dim: int, out_channels: int, size: Tuple[int, int], coarse_channels: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        h, w = size
        self.size = (int(h), int(w))
        self.coarse = (coarse_channels, math.ceil(h / 4), math.ceil(w / 4))
        self.dense = nn.Sequential(nn.Linear(z_dim, int(math.prod(self.coarse))), *act_dropout("elu", dropout))
        self.conv = nn.Sequential(
            nn.Upsample(size=self.size, mode="nearest"),
            nn.Conv2d(coarse_channels, out_channels, 3, padding=1),
            nn.ELU(),
        )
        self.out_channels = out_channels

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        s = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.coarse)
        s = self.conv(s)
        return s.reshape(*lead, *s.shape[1:])


class PixelDecoder(Decoder):
    """p_θ(x | z) as a :class:`~pyro_vae.pixel_likelihood.PixelCNNDistribution`.

    ``forward(z)`` returns the conditioning maps; ``distribution(z)`` the autoregressive
    distribution over images, whose per-pixel factors are ``likelihood``'s.
    """

    def __init__(self, cond_net: ConditioningNet, pixelcnn: GatedPixelCNN, likelihood: Likelihood):
        super().__init__(cond_net, likelihood)
        self.pixelcnn = pixelcnn

    def distribution(self, z: Tensor) -> dist.TorchDistribution:
        return PixelCNNDistribution(self.pixelcnn, self(z), self.likelihood)


@MODELS.register("pixel")
class PixelVAE(VAE):
    """A VAE with a conv encoder and a gated PixelCNN decoder conditioned on z.

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        likelihood: per-pixel likelihood: ``bernoulli`` (binary) or ``logistic`` (8-bit).
        channels: encoder stage widths (as the conv VAE).
        hidden: encoder feature width h.
        pixel_channels: width F of the PixelCNN's stacks.
        pixel_layers: number of gated layers.
        kernel: odd kernel width of the gated layers.
        cond_channels: channels S of the conditioning map s(z).
        activation: encoder activation.
        dropout: probability of dropout in the encoder and the conditioning network (not
            inside the autoregressive PixelCNN; 0: none; off in evaluation).
    """

    #: decoder evaluations per IWAE chunk: a PixelCNN pass costs ~1e3× a dense decoder's, and
    #: on a CPU its time per image grows with the chunk (3.5 ms at 128 rows, 8.7 ms at 1,000:
    #: the activations leave the cache), so chunks are kept small
    max_eval_rows = 128
    #: the PixelCNN runs inside the likelihood's log_prob: no bfloat16
    supports_bf16 = False

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int = 32,
        likelihood: str = "bernoulli",
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        pixel_channels: int = 16,
        pixel_layers: int = 4,
        kernel: int = 5,
        cond_channels: int = 16,
        activation: str = "elu",
        dropout: float = 0.0,
    ) -> None:
        widths = check_widths(channels, hidden)
        check_stages(x_shape, len(widths), "pixel")
        for name, value in (("pixel_channels", pixel_channels), ("pixel_layers", pixel_layers),
                            ("cond_channels", cond_channels)):
            check_int(value, name, 1)
        if int(kernel) < 3 or int(kernel) % 2 == 0:
            raise ConfigError(f"kernel must be odd and at least 3, got {kernel}", params=("kernel",))
        lik = build_likelihood(likelihood, x_shape)
        if lik.dequantize:
            raise ConfigError(
                f"the pixel model needs a discrete per-pixel likelihood (bernoulli or logistic), "
                f"not {likelihood}", params=("likelihood",)
            )
        trunk = ConvEncoderTrunk(x_shape, widths, int(hidden), activation, dropout)
        cond_net = ConditioningNet(z_dim, int(cond_channels), tuple(x_shape[1:]), dropout=dropout)
        pixelcnn = GatedPixelCNN(
            x_shape[0], lik.param_shape[0], int(cond_channels), int(pixel_channels),
            int(pixel_layers), int(kernel),
        )
        super().__init__(
            x_shape, z_dim, Encoder(trunk, int(hidden), z_dim), PixelDecoder(cond_net, pixelcnn, lik)
        )

    @torch.no_grad()
    def decode(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Images drawn pixel by pixel from p(x | z) (p(x | z, y) given labels; the mean of an
        autoregressive decoder has no closed form): samples, reconstructions and traversals
        show global structure from z, local detail redrawn."""
        return self.decoder.distribution(self.labelled(z, y)).sample()
