"""Non-amortized guides for a fixed batch of B images: the locally optimal Gaussian of the
posterior analysis, and a Student-t fitted to reference draws.

Both are :class:`~pyro_vae.guides.base.Guide` s without a VAE: ``distribution(x)`` ignores
``x`` but for its length (one q_n per image), and the base class's ``forward`` samples
site ``"z"`` in the ``"data"`` plate like every guide.
"""

from __future__ import annotations

from typing import Optional

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Guide


class _FixedBatch(Guide):
    """A guide of B fixed images: refuses a batch of another size."""

    what = "guide"

    def __init__(self, batch: int) -> None:
        super().__init__(None)
        self.batch = int(batch)

    def check_x(self, x: Tensor) -> Tensor:
        if len(x) != self.batch:
            raise ConfigError(f"this {self.what} was fitted to {self.batch} images, got {len(x)}")
        return x


class LocalGaussianGuide(_FixedBatch):
    """A non-amortized diagonal Gaussian: free (μ_n, σ_n) for each of B fixed images.

    q_n(z) = N(μ_n, diag σ_n²), parameterised by μ and log σ. It is the whole diagonal
    Gaussian family for each image, so fitting it to one image gives the locally optimal
    member of the family of the amortized Gaussian guide.

    Args:
        loc: initial means (B, z_dim), e.g. the encoder's μ_φ(x).
        scale: initial standard deviations (B, z_dim).
    """

    what = "local guide"

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__(len(loc))
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().log().clone())

    def distribution(self, x: Optional[Tensor] = None) -> dist.TorchDistribution:
        """q(z) with batch (B,) and event (z_dim,); ``x`` is ignored (the guide interface)."""
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)

    def location(self, x: Tensor) -> Tensor:
        return self.loc


class FixedGuide(_FixedBatch):
    """A guide that ignores x: z_n ~ Student-t(ν, m_n, L_n L_nᵀ) for each of B fixed images.

    Fitted to reference draws (:meth:`from_draws`, e.g. NUTS'), it is an importance
    proposal for log p(x) that does not depend on the guide being judged: with ν = 5 its
    covariance is ν / (ν − 2) = 5/3 times the posterior's and its tails are polynomial, so
    the importance weights p(x, z) / q(z) stay bounded where a Gaussian guide's would not.
    """

    what = "proposal"

    def __init__(self, loc: Tensor, scale_tril: Tensor, df: float = 5.0) -> None:
        super().__init__(len(loc))
        self.register_buffer("loc", loc.detach().clone())
        self.register_buffer("scale_tril", scale_tril.detach().clone())
        self.df = float(df)

    @classmethod
    def from_draws(cls, z: Tensor, df: float = 5.0, jitter: float = 1e-6) -> "FixedGuide":
        """Location and scale from draws ``z`` of shape (S, B, z_dim)."""
        loc = z.mean(0)
        centred = (z - loc).transpose(0, 1)  # (B, S, d)
        cov = centred.transpose(1, 2) @ centred / (z.shape[0] - 1)
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return cls(loc, torch.linalg.cholesky(cov + jitter * eye), df)

    def distribution(self, x: Optional[Tensor] = None) -> dist.TorchDistribution:
        df = torch.tensor(self.df, dtype=self.loc.dtype, device=self.loc.device)
        return dist.MultivariateStudentT(df, self.loc, self.scale_tril)

    def location(self, x: Tensor) -> Tensor:
        return self.loc
