"""The linear-Gaussian VAE (probabilistic PCA / factor analysis), with exact answers.

Model: z ~ N(0, I_d), x | z ~ N(W z + b, diag σ²) with D-dimensional x. Everything a VAE
approximates is available in closed form here (Tipping & Bishop 1999; Bishop, PRML §12.2):

* marginal likelihood  log p(x) = log N(x; b, W Wᵀ + diag σ²);
* exact posterior      p(z | x) = N(μ, Σ) with Σ = (I + Wᵀ diag(σ⁻²) W)⁻¹ and
  μ = Σ Wᵀ diag(σ⁻²) (x − b).

Its encoder is linear as well, so when Wᵀ diag(σ⁻²) W is diagonal the exact posterior is
inside the diagonal-Gaussian guide family: :meth:`LinearGaussianVAE.set_exact_guide` sets it,
and then every importance weight equals p(x) exactly. The tests of the estimators
(ELBO ≤ log p(x), IWAE → log p(x), unbiased mini-batch scaling) use this model.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..likelihoods import GaussianLikelihood, build_likelihood
from ..nets.mlp import check_dropout
from .base import MODELS, VAE, Decoder, Encoder


@MODELS.register("linear")
class LinearGaussianVAE(VAE):
    """A VAE with linear decoder (and linear encoder): probabilistic PCA as a Pyro program.

    Args:
        x_shape: image shape ``(C, H, W)``; pixels are treated as one vector of length D.
        z_dim: latent dimension d.
        likelihood: ``gaussian`` (closed forms available) or ``bernoulli`` (a logistic
            PCA, no closed forms).
        dropout: probability of dropout on the inputs of the encoder's and the decoder's
            linear maps (0: none, the model of the closed forms; off in evaluation).
    """

    def __init__(self, x_shape: Sequence[int], z_dim: int = 32, likelihood: str = "gaussian",
                 dropout: float = 0.0) -> None:
        lik = build_likelihood(likelihood, x_shape)
        d = int(math.prod(x_shape))
        drop = [nn.Dropout(check_dropout(dropout))] if dropout else []
        trunk = nn.Sequential(nn.Flatten(start_dim=-len(x_shape)), *drop)
        net = nn.Sequential(*drop, nn.Linear(z_dim, int(math.prod(lik.param_shape))), nn.Unflatten(-1, lik.param_shape))
        super().__init__(x_shape, z_dim, Encoder(trunk, d, z_dim), Decoder(net, lik))

    def check_values(self, x: Tensor) -> None:
        """Probabilistic PCA models real vectors: with the Gaussian likelihood any finite
        value is in its support (not only grey levels in [0, 1])."""
        if self.likelihood.binary:
            self.likelihood.check_values(x)

    # ------------------------------------------------------------------ closed forms
    def _require_gaussian(self) -> GaussianLikelihood:
        if not isinstance(self.likelihood, GaussianLikelihood):
            raise ConfigError("closed forms exist only for the gaussian likelihood")
        return self.likelihood

    @property
    def weight(self) -> Tensor:
        """W, shape (D, d)."""
        return self.decoder.net[-2].weight

    @property
    def bias(self) -> Tensor:
        """b, shape (D,)."""
        return self.decoder.net[-2].bias

    def noise_var(self) -> Tensor:
        """σ², shape (D,)."""
        return self._require_gaussian().scale.reshape(-1) ** 2

    def marginal(self) -> torch.distributions.MultivariateNormal:
        """p(x) = N(b, W Wᵀ + diag σ²) over flattened images."""
        w = self.weight
        cov = w @ w.T + torch.diag(self.noise_var())
        return torch.distributions.MultivariateNormal(self.bias, covariance_matrix=cov)

    def exact_log_prob(self, x: Tensor) -> Tensor:
        """log p(x) for images x (B, C, H, W), shape (B,)."""
        return self.marginal().log_prob(self.check_x(x).reshape(len(x), -1))

    def exact_posterior(self, x: Tensor) -> torch.distributions.MultivariateNormal:
        """p(z | x) = N(μ, Σ) with batch shape (B,)."""
        w, prec_x = self.weight, 1.0 / self.noise_var()
        eye = torch.eye(self.z_dim, dtype=w.dtype, device=w.device)
        cov = torch.linalg.inv(eye + w.T @ (prec_x[:, None] * w))
        resid = self.check_x(x).reshape(len(x), -1) - self.bias
        loc = (resid * prec_x) @ w @ cov.T
        return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)

    @torch.no_grad()
    def set_exact_guide(self) -> None:
        """Set the encoder to the exact posterior (requires Wᵀ diag(σ⁻²) W diagonal).

        The posterior mean is linear in x, μ = A (x − b) with A = Σ Wᵀ diag(σ⁻²), and its
        covariance does not depend on x, so the linear head can represent it exactly.
        """
        w, prec_x = self.weight, 1.0 / self.noise_var()
        eye = torch.eye(self.z_dim, dtype=w.dtype, device=w.device)
        gram = w.T @ (prec_x[:, None] * w)
        off = gram - torch.diag(torch.diagonal(gram))
        if off.abs().max() > 1e-8 * gram.abs().max():
            raise ConfigError("the exact posterior is not diagonal: Wᵀ diag(σ⁻²) W must be diagonal")
        cov = torch.linalg.inv(eye + gram)
        a = cov @ w.T * prec_x  # (d, D)
        sd = torch.sqrt(torch.diagonal(cov))
        head = self.encoder.head
        head.weight.zero_()
        head.weight[: self.z_dim] = a
        head.bias.zero_()
        head.bias[: self.z_dim] = -a @ self.bias
        # scale = softplus(raw) + min_scale  ⇒  raw = softplus⁻¹(sd − min_scale)
        target = sd - self.encoder.min_scale
        head.bias[self.z_dim :] = target + torch.log(-torch.expm1(-target))
