"""Distributions over 8-bit images that Pyro lacks: the discretized logistic mixture.

Pyro and PyTorch have no distribution over the 256 grey levels of an 8-bit image with a
continuous, smooth parametrisation, so this module writes one (the PixelCNN++ likelihood of
Salimans et al. 2017, arXiv:1701.05517) as a :class:`pyro.distributions.TorchDistribution`:
``pyro.sample("x", DiscretizedLogisticMixture(...), obs=x)`` works as it is.
"""

from __future__ import annotations

from typing import Optional

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import constraints
from torch.nn import functional as F


class _Levels(constraints.Constraint):
    """The ``levels`` equally spaced values ``k / (levels − 1)``, ``k = 0 … levels − 1``."""

    is_discrete = True
    event_dim = 0

    def __init__(self, levels: int = 256) -> None:
        self.levels = int(levels)
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        scaled = value * (self.levels - 1)
        # float32 k / 255 is within ~1e-5 of the lattice after scaling; 1e-3 refuses
        # anything that is not an 8-bit level (e.g. dequantized data) with a wide margin.
        return (value >= 0) & (value <= 1) & ((scaled - scaled.round()).abs() < 1e-3)

    def __repr__(self) -> str:
        return f"{type(self).__name__[1:]}(levels={self.levels})"


def num_coeffs(channels: int) -> int:
    """Number of autoregressive channel coefficients per component: C (C − 1) / 2."""
    return channels * (channels - 1) // 2


def _coeff_index(c: int, j: int) -> int:
    """Position of the coefficient of channel ``j`` in the mean of channel ``c`` (j < c).

    Pairs are ordered (1, 0), (2, 0), (2, 1), (3, 0), …, so for RGB index 0 is G|R, 1 is
    B|R and 2 is B|G, the order of PixelCNN++.
    """
    return c * (c - 1) // 2 + j


class DiscretizedLogisticMixture(dist.TorchDistribution):
    r"""A mixture of discretized logistics over the 256 levels of each pixel (PixelCNN++).

    **Data convention.** Values are 8-bit levels ``x = k / 255`` with ``k ∈ {0, …, 255}``,
    i.e. ``[0, 1]`` images as :func:`pyro_vae.data.load_dataset` returns them with
    ``binarize="none"``, *not* dequantized. Internally ``y = 2x − 1 ∈ [−1, 1]`` (the scale of
    PixelCNN++), so level k is the centre of a bin of half-width ``1 / 255``.

    **Model.** Per pixel, one mixture component i ~ Categorical(π) is shared by the C
    channels; given i the channels are autoregressive (R, then G | R, then B | R, G)::

        μ_c = m_{i,c} + Σ_{j<c} α_{i,c,j} y_j,        s_c = exp(log_scale_{i,c})
        P(level k_c | i, y_{<c}) = F((y_c + 1/255 − μ_c) / s_c) − F((y_c − 1/255 − μ_c) / s_c)

    with F the logistic CDF (a sigmoid), and the two edge bins extended to infinity:
    ``P(0) = F((−1 + 1/255 − μ) / s)`` and ``P(255) = 1 − F((1 − 1/255 − μ) / s)``. So the
    probabilities of the 256 levels sum to exactly one, and the log-likelihood is that of
    the discrete data: bits/dim = NLL / (D ln 2), with no dequantization term.

    PixelCNN++ replaces ``log(F(a) − F(b))`` by a density approximation when the difference
    is below 1e-5; here it is evaluated exactly and stably for all parameters as
    ``log σ(a) − softplus(b) + log(1 − e^{b − a})`` (which follows from
    ``σ(a) − σ(b) = (eᵃ − eᵇ) / ((1 + eᵃ)(1 + eᵇ))``), so the sum-to-one property holds
    everywhere.

    Args:
        logits: mixture logits, shape ``(..., K, H, W)``.
        locs: component means m in the ``[−1, 1]`` scale, shape ``(..., K, C, H, W)``.
        log_scales: log of the logistic scales s, shape ``(..., K, C, H, W)``.
        coeffs: channel coefficients α, shape ``(..., K, C (C − 1) / 2, H, W)``; ``None``
            (or ignored) for one channel.

    ``batch_shape`` is the broadcast of the leading dimensions ``...``, ``event_shape`` is
    ``(C, H, W)``. ``log_prob`` returns one value per image.

    References:
        Salimans, Karpathy, Chen, Kingma 2017, *PixelCNN++*, arXiv:1701.05517.
    """

    arg_constraints = {
        "logits": constraints.real,
        "locs": constraints.real,
        "log_scales": constraints.real,
        "coeffs": constraints.real,
    }
    support = _Levels(256)
    has_rsample = False
    #: Number of grey levels and the half-width of a level's bin in the y = 2x − 1 scale.
    levels = 256
    half_bin = 1.0 / 255.0

    def __init__(
        self,
        logits: Tensor,
        locs: Tensor,
        log_scales: Tensor,
        coeffs: Optional[Tensor] = None,
        validate_args: Optional[bool] = None,
    ) -> None:
        if locs.dim() < 4 or locs.shape != log_scales.shape:
            raise ValueError(
                "locs and log_scales must have the same shape (..., K, C, H, W), got "
                f"{tuple(locs.shape)} and {tuple(log_scales.shape)}"
            )
        k, c, h, w = locs.shape[-4:]
        if logits.shape[-3:] != (k, h, w):
            raise ValueError(f"logits must have shape (..., {k}, {h}, {w}), got {tuple(logits.shape)}")
        nc = num_coeffs(c)
        if coeffs is None:
            coeffs = locs.new_zeros((*locs.shape[:-3], nc, h, w))
        elif coeffs.shape[-4:] != (k, nc, h, w):
            raise ValueError(
                f"coeffs must have shape (..., {k}, {nc}, {h}, {w}) for {c} channels, "
                f"got {tuple(coeffs.shape)}"
            )
        batch_shape = torch.broadcast_shapes(
            logits.shape[:-3], locs.shape[:-4], log_scales.shape[:-4], coeffs.shape[:-4]
        )
        self.logits = logits.expand(*batch_shape, k, h, w)
        self.locs = locs.expand(*batch_shape, k, c, h, w)
        self.log_scales = log_scales.expand(*batch_shape, k, c, h, w)
        self.coeffs = coeffs.expand(*batch_shape, k, nc, h, w)
        super().__init__(batch_shape, torch.Size((c, h, w)), validate_args=validate_args)

    @property
    def num_components(self) -> int:
        return self.locs.shape[-4]

    def expand(self, batch_shape, _instance=None) -> "DiscretizedLogisticMixture":
        new = self._get_checked_instance(DiscretizedLogisticMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(*batch_shape, *self.logits.shape[-3:])
        new.locs = self.locs.expand(*batch_shape, *self.locs.shape[-4:])
        new.log_scales = self.log_scales.expand(*batch_shape, *self.log_scales.shape[-4:])
        new.coeffs = self.coeffs.expand(*batch_shape, *self.coeffs.shape[-4:])
        super(DiscretizedLogisticMixture, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # ------------------------------------------------------------------ helpers
    def _channel_means(self, y: Tensor) -> Tensor:
        """Means μ of every channel given the (observed or sampled) channels ``y``.

        Args:
            y: values in the ``[−1, 1]`` scale, shape ``(..., 1, C, H, W)`` (a broadcast
                component dimension).

        Returns:
            μ of shape ``(..., K, C, H, W)``.
        """
        channels = self.locs.shape[-3]
        if channels == 1:
            return self.locs
        means = [self.locs[..., 0, :, :]]
        for c in range(1, channels):
            m = self.locs[..., c, :, :]
            for j in range(c):
                m = m + self.coeffs[..., _coeff_index(c, j), :, :] * y[..., j, :, :]
            means.append(m)
        return torch.stack(torch.broadcast_tensors(*means), dim=-3)

    @classmethod
    def _log_bin_prob(cls, k: Tensor, y: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
        """log P(level k) of a discretized logistic(μ, s); all arguments broadcast."""
        inv_s = torch.exp(-log_s)
        upper = inv_s * (y - mu + cls.half_bin)  # a
        lower = inv_s * (y - mu - cls.half_bin)  # b
        log_cdf_upper = F.logsigmoid(upper)  # log F(a): level 0, whose bin extends to −∞
        log_sf_lower = -F.softplus(lower)  # log(1 − F(b)): level 255, bin extends to +∞
        # log(σ(a) − σ(b)) = log σ(a) − softplus(b) + log(1 − e^{−(a − b)}), a − b = 2 / (255 s)
        interior = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-2 * cls.half_bin * inv_s))
        return torch.where(k <= 0, log_cdf_upper, torch.where(k >= cls.levels - 1, log_sf_lower, interior))

    def _levels(self, value: Tensor) -> Tensor:
        """Integer levels k (as floats) of values ``x = k / 255``."""
        return torch.round(value * (self.levels - 1)).clamp(0, self.levels - 1)

    # ------------------------------------------------------------------ distribution API
    def log_prob(self, value: Tensor) -> Tensor:
        """log P(x) of images ``value`` (..., C, H, W) in ``[0, 1]``; shape ``batch_shape``
        broadcast with the leading dimensions of ``value``."""
        if self._validate_args:
            self._validate_sample(value)
        k = self._levels(value).unsqueeze(-4)  # (..., 1, C, H, W)
        y = 2.0 * k / (self.levels - 1) - 1.0
        mu = self._channel_means(y)
        per_channel = self._log_bin_prob(k, y, mu, self.log_scales)  # (..., K, C, H, W)
        log_mix = torch.log_softmax(self.logits, dim=-3)  # (..., K, H, W)
        per_pixel = torch.logsumexp(log_mix + per_channel.sum(-3), dim=-3)  # (..., H, W)
        return per_pixel.sum((-2, -1))

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Exact samples ``k / 255`` of shape ``sample_shape + batch_shape + (C, H, W)``.

        A component is drawn per pixel, then each channel by inverting the logistic CDF,
        conditioning later channels on the *discretized* earlier ones — the same
        conditionals ``log_prob`` scores.
        """
        shape = self._extended_shape(sample_shape)
        lead = shape[:-3]
        channels = shape[-3]
        logits = self.logits.expand(*lead, *self.logits.shape[-3:])
        comp = torch.distributions.Categorical(logits=logits.movedim(-3, -1)).sample()  # (..., H, W)
        index = comp.unsqueeze(-3).unsqueeze(-4)  # (..., 1, 1, H, W)

        def pick(t: Tensor) -> Tensor:  # the chosen component's parameters, (..., n, H, W)
            t = t.expand(*lead, *t.shape[-4:])
            return t.gather(-4, index.expand(*lead, 1, *t.shape[-3:])).squeeze(-4)

        locs, log_scales, coeffs = pick(self.locs), pick(self.log_scales), pick(self.coeffs)
        ys = []
        for c in range(channels):
            mu = locs[..., c, :, :]
            for j in range(c):
                mu = mu + coeffs[..., _coeff_index(c, j), :, :] * ys[j]
            u = torch.rand(mu.shape, dtype=mu.dtype, device=mu.device)  # in [0, 1)
            # inverse CDF; u = 0 gives −∞, which the clamp below sends to level 0
            cont = mu + torch.exp(log_scales[..., c, :, :]) * (torch.log(u) - torch.log1p(-u))
            k = torch.round((cont + 1.0) / (2 * self.half_bin)).clamp(0, self.levels - 1)
            ys.append(2.0 * k / (self.levels - 1) - 1.0)
        return (torch.stack(ys, dim=-3) + 1.0) / 2.0

    @property
    def mean(self) -> Tensor:
        """E[x] (approximately, see below), shape ``batch_shape + (C, H, W)``, in ``[0, 1]``.

        Per component and channel this is the mean of the continuous logistic clamped to the
        data range, ``E[clamp(Y, −1, 1)] = −1 + s [softplus((μ + 1) / s) − softplus((μ − 1) / s)]``
        (from ``E[clamp(Y, a, b)] = a + ∫_a^b (1 − F(t)) dt``), mapped to ``[0, 1]``. The
        discrete level is that value rounded to the nearest level, so this is within half a
        level (1 / 510) of the exact mean of the 256-level distribution, at the cost of a
        few element-wise operations instead of a sum over 255 levels. Channels after the
        first enter with the earlier channels at their means (the plug-in rule; exact when
        the coefficients α are zero). It serves pictures (reconstructions, sample grids).
        """
        channels = self.locs.shape[-3]
        means = []
        for c in range(channels):
            mu = self.locs[..., c, :, :]
            for j in range(c):
                mu = mu + self.coeffs[..., _coeff_index(c, j), :, :] * means[j]
            s = torch.exp(self.log_scales[..., c, :, :])
            means.append(-1.0 + s * (F.softplus((mu + 1.0) / s) - F.softplus((mu - 1.0) / s)))
        y_mean = torch.stack(torch.broadcast_tensors(*means), dim=-3)  # (..., K, C, H, W)
        weights = torch.softmax(self.logits, dim=-3).unsqueeze(-3)  # (..., K, 1, H, W)
        return ((weights * y_mean).sum(-4) + 1.0) / 2.0


__all__ = ["DiscretizedLogisticMixture", "num_coeffs"]


class BernoulliImages(dist.Independent):
    """Independent Bernoulli pixels over the last ``event_dims`` dimensions: Pyro's
    ``Bernoulli(logits).to_event(event_dims)``, the same distribution, whose ``log_prob``
    sums the per-pixel binary cross-entropies *before* negating them.

    ``Bernoulli.log_prob`` negates a whole image-sized tensor (and its gradient) that is
    summed at once anyway; negating the per-image sums gives the same numbers (negation is
    exact) for a few percent of a dense VAE's training step. The likelihood of every
    binarized model is one.
    """

    def __init__(self, logits: Tensor, event_dims: int, validate_args=None) -> None:
        super().__init__(dist.Bernoulli(logits=logits), event_dims, validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.base_dist.logits, value)
        bce = F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -bce.flatten(-self.reinterpreted_batch_ndims).sum(-1)

    def expand(self, batch_shape, _instance=None) -> "BernoulliImages":
        shape = torch.Size(batch_shape) + self.event_shape
        return BernoulliImages(self.base_dist.logits.expand(shape), self.reinterpreted_batch_ndims)
