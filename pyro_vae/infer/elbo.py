"""Free bits: a Trace_ELBO that stops pushing a latent's KL below a floor.

Kingma et al. 2016 (arXiv:1606.04934, appendix C): with a strong decoder the ELBO is easily
maximised by ignoring z (posterior collapse, KL → 0). Free bits replaces each latent
dimension's KL term by max(λ, KL_j), where KL_j is the KL of dimension j averaged over the
mini-batch:

    L̃ = E_q[log p(x | z)] − Σ_j max(λ, E_batch[KL_j]).

Below λ nats a dimension's KL is no longer penalised (its gradient is zero), so the encoder
can afford to put information into it. The KL terms are the Monte-Carlo ones of Trace_ELBO,
log q(z_j | x) − log p(z_j), per dimension when guide and prior factorise over dimensions
(the diagonal Gaussian guide with a Normal prior); otherwise the whole latent site is one
group with floor λ·dim. Pyro has no such ELBO; this subclass changes only how a particle's
loss is assembled from the traces Trace_ELBO already builds.
"""

from __future__ import annotations

import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item
from torch.distributions import Independent


def _per_dim_log_prob(fn, value: torch.Tensor):
    """log-density per latent dimension (…, d) if ``fn`` factorises over the last dim, else None."""
    base = fn
    while hasattr(base, "base_dist") and not isinstance(base, Independent):
        base = base.base_dist  # ExpandedDistribution and friends
    if isinstance(base, Independent) and base.reinterpreted_batch_ndims == 1:
        inner = base.base_dist
        if type(inner).__name__ in ("Normal", "Laplace", "StudentT", "Cauchy"):
            return inner.log_prob(value)
    return None


class FreeBitsTrace_ELBO(Trace_ELBO):
    """``Trace_ELBO`` with free bits λ (nats per latent dimension) on every latent site.

    Args:
        free_bits: λ ≥ 0; 0 gives exactly Trace_ELBO.
        **kwargs: passed to :class:`pyro.infer.Trace_ELBO`.

    The reported loss is the free-bits objective (what is optimised); evaluate the true ELBO
    with :func:`inference.evaluate.evaluate`.
    """

    def __init__(self, free_bits: float = 0.0, **kwargs):
        if free_bits < 0:
            raise ValueError(f"free_bits must be non-negative, got {free_bits}")
        super().__init__(**kwargs)
        self.free_bits = float(free_bits)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The free-bits objective (Trace_ELBO's ``loss`` would return the plain −ELBO, which
        is not what :meth:`loss_and_grads` optimises)."""
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        if self.free_bits <= 0:
            return loss, surrogate
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or name not in model_trace.nodes:
                continue
            prior_site = model_trace.nodes[name]
            z = site["value"]
            log_q = _per_dim_log_prob(site["fn"], z)
            log_p = _per_dim_log_prob(prior_site["fn"], z)
            if log_q is None or log_p is None:  # one group: the whole site
                kl = (site["fn"].log_prob(z) - prior_site["fn"].log_prob(z)).unsqueeze(-1)
                floor = self.free_bits * z.shape[-1]
            else:
                kl = log_q - log_p  # (..., B, d)
                floor = self.free_bits
            count = kl[..., 0].numel()  # examples × vectorized particles in this trace
            kl_mean = kl.reshape(-1, kl.shape[-1]).mean(0)  # per group, over batch & particles
            # replace Σ_n KL_n = count · Σ_j mean_j by count · Σ_j max(λ, mean_j), with the
            # site's scale (N / B for the data plate, β for KL warm-up)
            scale = site["scale"]
            correction = scale * count * (torch.clamp(kl_mean, min=floor) - kl_mean).sum()
            loss = loss + torch_item(correction)
            surrogate = surrogate + correction
        return loss, surrogate
