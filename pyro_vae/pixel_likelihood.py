"""p_θ(x | z) as an autoregressive PixelCNN: a Pyro ``TorchDistribution`` over whole images.

    p(x | s) = Π_i p(x_i | x_<i, s),   i over pixels in raster order,

where s is a conditioning map computed from z and each factor is a per-pixel likelihood
(Bernoulli logits for binary images, the discretized logistic mixture for 8-bit images)
whose parameters come from a :class:`~pyro_vae.nets.pixelcnn.GatedPixelCNN` that sees only
the pixels before i. ``log_prob`` is one parallel (teacher-forced) pass; ``sample`` draws
pixel by pixel. Both broadcast over leading batch / particle dimensions, so the distribution
works under ``Trace_ELBO(num_particles=L, vectorize_particles=True)`` and the IWAE evaluation.
"""

from __future__ import annotations

from typing import Optional

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor

from .likelihoods import Likelihood
from .nets.pixelcnn import GatedPixelCNN


class PixelCNNDistribution(TorchDistribution):
    """Autoregressive image distribution p(x | s) with a per-pixel likelihood.

    Args:
        net: the PixelCNN mapping (x, s) to per-pixel parameters.
        cond: conditioning maps s of shape ``(*batch, S, H, W)``.
        likelihood: the per-pixel likelihood (its ``x_shape`` is the image shape).
        cache: sample with the cached (fast) procedure of :meth:`GatedPixelCNN.sample`.

    Example:
        >>> from pyro_vae.likelihoods import build_likelihood
        >>> lik = build_likelihood("bernoulli", (1, 3, 3))
        >>> net = GatedPixelCNN(1, 1, cond_channels=2, channels=8, layers=2, kernel=3)
        >>> d = PixelCNNDistribution(net, torch.zeros(4, 2, 3, 3), lik)
        >>> d.batch_shape, d.event_shape, d.sample().shape
        (torch.Size([4]), torch.Size([1, 3, 3]), torch.Size([4, 1, 3, 3]))
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(
        self,
        net: GatedPixelCNN,
        cond: Tensor,
        likelihood: Likelihood,
        cache: bool = True,
        validate_args: Optional[bool] = None,
    ) -> None:
        self.net = net
        self.cond = cond
        self.likelihood = likelihood
        self.cache = cache
        event_shape = torch.Size(likelihood.x_shape)
        if tuple(cond.shape[-2:]) != tuple(event_shape[-2:]):
            raise ValueError(
                f"conditioning maps {tuple(cond.shape[-3:])} do not match images {tuple(event_shape)}"
            )
        super().__init__(cond.shape[:-3], event_shape, validate_args=validate_args)

    @property
    def support(self):
        # the per-pixel likelihood's support over a whole image (e.g. {0, 1}^D)
        return self.likelihood(self.cond.new_zeros(1, *self.likelihood.param_shape)).support

    def expand(self, batch_shape, _instance=None) -> "PixelCNNDistribution":
        batch_shape = torch.Size(batch_shape)
        cond = self.cond.expand(batch_shape + self.cond.shape[-3:])
        return PixelCNNDistribution(self.net, cond, self.likelihood, self.cache)

    def _flat(self, shape: torch.Size):
        cond = self.cond.expand(shape + self.cond.shape[-3:])
        return cond.reshape(-1, *self.cond.shape[-3:])

    def params(self, value: Tensor) -> Tensor:
        """Teacher-forced per-pixel parameters for images ``value`` ``(*batch, C, H, W)``."""
        shape = torch.broadcast_shapes(value.shape[:-3], self.batch_shape)
        x = value.expand(shape + self.event_shape).reshape(-1, *self.event_shape)
        out = self.net(x, self._flat(shape))
        return out.reshape(shape + out.shape[1:])

    def log_prob(self, value: Tensor) -> Tensor:
        """log p(x | s), summed over pixels: one parallel pass of the PixelCNN."""
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-3], self.batch_shape)
        x = value.expand(shape + self.event_shape).reshape(-1, *self.event_shape)
        params = self.net(x, self._flat(shape))
        # the value is checked once, above, against the per-pixel likelihood's own support
        return self.likelihood(params, validate_args=False).log_prob(x).reshape(shape)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Draw images pixel by pixel (H·W network passes, batched over all images)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        cond = self._flat(shape)
        x = self.net.sample(
            cond, self.event_shape, draw=lambda p: self.likelihood(p).sample(), cache=self.cache
        )
        return x.reshape(shape + self.event_shape)
