"""Non-amortized guides for a fixed batch of B images: the locally optimal Gaussian of the
posterior analysis, and a Student-t fitted to reference draws.

Both are :class:`~pyro_vae.guides.base.JointGuide` s without a VAE: ``distribution(x)``
ignores ``x`` but for its length (one q_n per image), and the base class's ``forward``
samples site ``"z"`` in the ``"data"`` plate like every guide. For a model with several
latent sites (``sites``, the model's ``latent_sites``) q is a distribution of the *joint*
latent: it is sampled once as the auxiliary site ``"z_joint"`` and cut into the model's
sites, each a ``Delta`` (log-density 0), so that log q of a trace is log q(z_joint) — what
importance weights and ``Trace_ELBO`` need.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nets.hypernet import start_at
from .base import JointGuide


class _FixedBatch(JointGuide):
    """A guide of B fixed images: refuses a batch of another size."""

    what = "guide"

    def __init__(self, batch: int, sites: Optional[Dict[str, int]] = None) -> None:
        super().__init__(None)
        self.batch = int(batch)
        self.sites = dict(sites) if sites is not None and list(sites) != ["z"] else None

    def sample(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if self.sites is None:
            return super().sample(x)
        z = pyro.sample("z_joint", self._distribution(x))
        for name, part in zip(self.sites, z.split(list(self.sites.values()), dim=-1)):
            pyro.sample(name, dist.Delta(part, event_dim=1))
        return z

    def check_x(self, x: Tensor) -> Tensor:
        if len(x) != self.batch:
            raise ConfigError(f"this {self.what} was fitted to {self.batch} images, got {len(x)}")
        return x

    def distribution(self, x: Optional[Tensor] = None, y: Optional[Tensor] = None) -> dist.TorchDistribution:
        """q(z) with batch (B,) and event (z_dim,); ``x``, if given, is checked for its length
        and otherwise ignored (the guide interface)."""
        return self._distribution(None if x is None else self.check_x(x))


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

    def __init__(self, loc: Tensor, scale: Tensor, sites: Optional[Dict[str, int]] = None) -> None:
        super().__init__(len(loc), sites)
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().log().clone())

    def _distribution(self, x: Optional[Tensor], y: Optional[Tensor] = None) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)

    def _location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self.loc


class LocalFlowGuide(LocalGaussianGuide):
    """A non-amortized flow for one image: ε ~ N(0, I) through ``num_flows`` inverse
    autoregressive steps (Pyro's ``AffineAutoregressive``, the coordinate order reversed
    between steps), then z = μ + σ ⊙ ε.

    The flow works in standardised coordinates, so one learning rate suits any posterior
    width; every step starts at the identity, so a new guide is N(μ, diag σ²) — with
    ``num_flows=0`` it is that Gaussian (as a transformed distribution). A flow is shared by
    the images it is fitted to, so it is fitted to one image at a time.

    Args:
        loc: initial mean (1, z_dim).
        scale: initial standard deviation (1, z_dim).
        num_flows: IAF steps.
        hidden_dims: hidden widths of each step's MADE (each ≥ z_dim).
        sites: the model's latent sites, for a model with several (see the module docstring).
    """

    def __init__(self, loc: Tensor, scale: Tensor, num_flows: int = 4,
                 hidden_dims: Sequence[int] = (32, 32), sites: Optional[Dict[str, int]] = None) -> None:
        super().__init__(loc, scale, sites)
        d = loc.shape[-1]
        if num_flows and len(loc) != 1:
            raise ConfigError(f"a local flow is fitted to one image at a time, got {len(loc)}")
        if num_flows and (d < 2 or min(hidden_dims) < d):
            raise ConfigError(f"a local flow needs z_dim ≥ 2 and hidden widths ≥ z_dim, got "
                              f"{d} and {list(hidden_dims)}")
        self.steps = nn.ModuleList()
        for _ in range(num_flows):
            step = T.affine_autoregressive(d, hidden_dims=list(hidden_dims))
            start_at(step.arn, [0.0, 0.0], torch.zeros(1, d))  # (μ, log σ) = (0, 0)
            self.steps.append(step)
        self.register_buffer("reverse", torch.arange(d - 1, -1, -1))

    def _distribution(self, x: Optional[Tensor], y: Optional[Tensor] = None) -> dist.TorchDistribution:
        base = dist.Normal(torch.zeros_like(self.loc), torch.ones_like(self.loc)).to_event(1)
        parts = []
        for i, step in enumerate(self.steps):
            if i:
                parts.append(T.Permute(self.reverse))
            parts.append(step)
        parts.append(T.AffineTransform(self.loc, self.log_scale.exp(), event_dim=1))
        return dist.TransformedDistribution(base, parts)


class FixedGuide(_FixedBatch):
    """A guide that ignores x: z_n ~ Student-t(ν, m_n, L_n L_nᵀ) for each of B fixed images.

    Fitted to reference draws (:meth:`from_draws`, e.g. NUTS'), it is an importance
    proposal for log p(x) that does not depend on the guide being judged: with ν = 5 its
    covariance is ν / (ν − 2) = 5/3 times the posterior's and its tails are polynomial, so
    the importance weights p(x, z) / q(z) stay bounded where a Gaussian guide's would not.
    """

    what = "proposal"

    def __init__(self, loc: Tensor, scale_tril: Tensor, df: float = 5.0,
                 sites: Optional[Dict[str, int]] = None) -> None:
        super().__init__(len(loc), sites)
        self.register_buffer("loc", loc.detach().clone())
        self.register_buffer("scale_tril", scale_tril.detach().clone())
        self.df = float(df)

    @classmethod
    def from_draws(cls, z: Tensor, df: float = 5.0, jitter: float = 1e-6,
                   sites: Optional[Dict[str, int]] = None) -> "FixedGuide":
        """Location and scale from draws ``z`` of shape (S, B, z_dim) of the joint latent."""
        loc = z.mean(0)
        centred = (z - loc).transpose(0, 1)  # (B, S, d)
        cov = centred.transpose(1, 2) @ centred / (z.shape[0] - 1)
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return cls(loc, torch.linalg.cholesky(cov + jitter * eye), df, sites)

    def _distribution(self, x: Optional[Tensor], y: Optional[Tensor] = None) -> dist.TorchDistribution:
        df = torch.tensor(self.df, dtype=self.loc.dtype, device=self.loc.device)
        return dist.MultivariateStudentT(df, self.loc, self.scale_tril)

    def _location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self.loc
