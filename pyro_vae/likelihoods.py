"""Observation models p_θ(x | z) as Pyro distributions over whole images.

A :class:`Likelihood` is a small ``nn.Module`` that turns the decoder's output tensor
into a distribution whose ``event_shape`` is the image shape ``(C, H, W)``, so the model
writes ``pyro.sample("x", likelihood(params), obs=x)`` and Pyro sums over pixels. It
also says what data it accepts (binary or grey levels), whether those grey levels are
dequantized, and how to turn a negative log-likelihood in nats into bits per dimension.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .distributions import BernoulliImages, DiscretizedLogisticMixture, num_coeffs
from .errors import ConfigError, DataError
from .plates import check_range
from .registry import Registry

LIKELIHOODS: Registry[type] = Registry("likelihood")


class Likelihood(nn.Module):
    """Base class: maps decoder outputs of shape ``param_shape`` to a distribution over x.

    Attributes:
        binary: the likelihood is defined on {0, 1} data only.
        dequantize: the likelihood is a continuous density fitted to dequantized 8-bit
            grey levels ``(k + u) / 256`` (see :mod:`pyro_vae.data`).
        params_per_channel: decoder output channels per image channel (``None`` where the
            count is not proportional to C, e.g. the logistic mixture's; ``param_shape`` is
            what decoders use).
    """

    binary: bool = False
    dequantize: bool = False
    params_per_channel: int = 1

    def __init__(self, x_shape: Sequence[int]) -> None:
        super().__init__()
        self.x_shape: Tuple[int, ...] = tuple(int(s) for s in x_shape)

    @property
    def param_shape(self) -> Tuple[int, ...]:
        """Shape of the decoder output for one image."""
        c, *rest = self.x_shape
        return (c * self.params_per_channel, *rest)

    @property
    def num_dims(self) -> int:
        return int(math.prod(self.x_shape))

    def forward(self, params: Tensor, validate_args: Optional[bool] = None) -> dist.TorchDistribution:
        """p(x | params), over images ``x_shape`` (``validate_args`` as torch's
        distributions take it: ``None`` follows Pyro's validation setting)."""
        raise NotImplementedError  # pragma: no cover

    def check_data(self, binary: bool) -> None:
        """Refuse data this likelihood is not defined on (``binary``: data are {0, 1})."""
        name = type(self).name
        if self.binary and not binary:
            grey = ", ".join(n for n in LIKELIHOODS.names() if not LIKELIHOODS.get(n).binary)
            raise ConfigError(
                f"the {name} likelihood needs binary data; use binarize='dynamic' or 'static', "
                f"or a likelihood for grey levels ({grey})", params=("likelihood", "binarize")
            )
        if not self.binary and binary:
            raise ConfigError(
                f"the {name} likelihood models grey levels, but the data are binarized; "
                "use binarize='none' or likelihood='bernoulli'", params=("likelihood", "binarize")
            )

    def check_values(self, x: Tensor) -> None:
        """Refuse finite images outside this likelihood's support (a :class:`DataError`)."""
        name = type(self).name
        if self.binary:
            if not bool(((x == 0) | (x == 1)).all()):
                raise DataError(f"the {name} likelihood needs binary images (0 or 1), got grey levels; "
                                "binarize them (e.g. torch.bernoulli(x)) or use a likelihood for grey levels")
        else:
            check_range(x, f"grey levels of the {name} likelihood")

    def bits_per_dim(self, nll: float) -> float:
        """Bits per dimension of a negative log-likelihood ``nll`` (nats per example).

        For a density fitted to dequantized data in [0, 1), the discrete NLL of the 8-bit
        image is at most ``nll + D log 256``, so that term is added before dividing by
        ``D ln 2`` (Theis et al. 2016, arXiv:1511.01844).
        """
        d = self.num_dims
        offset = d * math.log(256.0) if self.dequantize else 0.0
        return (nll + offset) / (d * math.log(2.0))

    def mean(self, params: Tensor) -> Tensor:
        """Mean image (for reconstructions and sample grids), in [0, 1]."""
        return self(params).mean.clamp(0.0, 1.0)


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder, for binary images."""

    name = "bernoulli"
    binary = True

    def forward(self, params: Tensor, validate_args: Optional[bool] = None) -> dist.TorchDistribution:
        return BernoulliImages(params, len(self.x_shape), validate_args=validate_args)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Independent Normal pixels: mean from the decoder, a learned per-pixel scale.

    The scale is ``softplus(ρ) + min_scale`` with ``ρ`` a parameter of shape ``x_shape``
    (shared across examples), fitted to dequantized grey levels, so the density cannot
    collapse onto the 256 discrete levels.
    """

    name = "gaussian"
    dequantize = True

    def __init__(self, x_shape: Sequence[int], init_scale: float = 0.1, min_scale: float = 1e-3):
        super().__init__(x_shape)
        self.min_scale = min_scale
        # inverse softplus of (init_scale - min_scale)
        raw = math.log(math.expm1(init_scale - min_scale))
        self.raw_scale = nn.Parameter(torch.full(self.x_shape, raw))

    @property
    def scale(self) -> Tensor:
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self, params: Tensor, validate_args: Optional[bool] = None) -> dist.TorchDistribution:
        return dist.Normal(params, self.scale, validate_args=validate_args).to_event(len(self.x_shape))

    def mean(self, params: Tensor) -> Tensor:
        return params.clamp(0.0, 1.0)


@LIKELIHOODS.register("logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """A mixture of K discretized logistics per pixel over the 256 levels (PixelCNN++).

    For 8-bit grey-level or colour images ``x = k / 255`` as loaded with ``binarize="none"``
    (not dequantized: the likelihood is a probability mass function on the 256 levels, so
    bits/dim = NLL / (D ln 2) with no correction). See
    :class:`~pyro_vae.distributions.DiscretizedLogisticMixture` for the model, the edge bins
    at levels 0 and 255 and the channel conditioning of colour images.

    The decoder outputs, per pixel, ``K`` mixture logits, then for each component ``C``
    means, ``C`` raw log-scales and ``C (C − 1) / 2`` raw channel coefficients: ``K (1 +
    2C + C (C − 1) / 2)`` channels (3K for grey, 10K for RGB, as in PixelCNN++). Log-scales
    are bounded below by ``min_log_scale`` and coefficients squashed by ``tanh``, the
    parametrisation of PixelCNN++ (arXiv:1701.05517).

    Args:
        x_shape: image shape ``(C, H, W)``.
        num_mixtures: K, components per pixel.
        min_log_scale: lower bound on the log-scales (in the ``[−1, 1]`` scale of y).
    """

    name = "logistic"
    dequantize = False
    params_per_channel = None  # type: ignore[assignment]  # not proportional to C: see param_shape

    def __init__(self, x_shape: Sequence[int], num_mixtures: int = 5, min_log_scale: float = -7.0):
        super().__init__(x_shape)
        if int(num_mixtures) < 1:
            raise ConfigError(f"num_mixtures must be positive, got {num_mixtures}", params=("num_mixtures",))
        self.num_mixtures = int(num_mixtures)
        self.min_log_scale = float(min_log_scale)

    @property
    def param_shape(self) -> Tuple[int, ...]:
        c, *rest = self.x_shape
        return (self.num_mixtures * (1 + 2 * c + num_coeffs(c)), *rest)

    def forward(self, params: Tensor, validate_args: Optional[bool] = None) -> DiscretizedLogisticMixture:
        # spatial size from the parameters, so that a patch of an image (an autoregressive
        # sampler's single pixel) works as well as the whole image
        c = self.x_shape[0]
        h, w = params.shape[-2:]
        k, nc = self.num_mixtures, num_coeffs(c)
        lead = params.shape[:-3]
        logits, locs, log_scales, coeffs = params.split([k, k * c, k * c, k * nc], dim=-3)
        locs = locs.reshape(*lead, k, c, h, w)
        log_scales = log_scales.reshape(*lead, k, c, h, w).clamp(min=self.min_log_scale)
        coeffs = torch.tanh(coeffs.reshape(*lead, k, nc, h, w))
        return DiscretizedLogisticMixture(logits, locs, log_scales, coeffs, validate_args=validate_args)


def build_likelihood(name: str, x_shape: Sequence[int], **kwargs) -> Likelihood:
    """Build a registered likelihood by name for images of shape ``x_shape``."""
    return LIKELIHOODS.get(name)(x_shape, **kwargs)

