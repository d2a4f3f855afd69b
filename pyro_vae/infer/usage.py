"""What a guide says about the latent space: its draws, its means, the KL per latent
dimension and the active units.

**Latent usage**: KL(q(z_j | x) ‖ p(z_j)) per dimension, averaged over the data, and the
active units of Burda et al. 2015 (arXiv:1509.00519): dimension j is active when
Cov_x(E_q[z_j]) > 0.01. A strong decoder that ignores z (posterior collapse) shows here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn

from ..contract import Model
from .context import frozen, isolated


def diagonal_normal(d: Optional[dist.Distribution]) -> Optional[dist.Normal]:
    """The Normal base of ``Normal(...).to_event(1)``, else ``None``."""
    if isinstance(d, dist.Independent) and isinstance(d.base_dist, dist.Normal) and (
        d.reinterpreted_batch_ndims == 1
    ):
        return d.base_dist
    return None


def guide_draws(guide: nn.Module, x: Tensor, num_samples: int) -> Tensor:
    """``num_samples`` draws of site ``"z"`` from the guide per image, (S, B, z_dim)."""
    with pyro.plate("draws", num_samples, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    return trace.nodes["z"]["value"]


@torch.no_grad()
def latent_usage(
    vae: Model,
    guide: nn.Module,
    x: Tensor,
    threshold: float = 0.01,
    num_samples: int = 256,
    batch_size: int = 250,
    seed: int = 0,
) -> Dict[str, Any]:
    """KL per latent dimension and active units over the images ``x``.

    * If q(z|x) is a diagonal Normal and p(z) a diagonal Normal, KL(q ‖ p) is a sum over
      dimensions and each term is exact (``method = "exact"``); the posterior means are
      exact too.
    * Otherwise (flow guides) q's means and variances are estimated from ``num_samples``
      draws per image, and the per-dimension term is KL(N(m_j, v_j) ‖ p(z_j)) of the
      moment-matched Normal (``method = "moment-matched"``, an approximation: a
      non-factorized q has no exact per-dimension split).

    Active units (Burda et al. 2015, arXiv:1509.00519): A_j = Cov_x(E_q[z_j]) over the
    images; dimension j is active when A_j > ``threshold``. With sampled means, the
    Monte-Carlo variance of each mean (v_j / S) is subtracted so A_j stays unbiased.

    Returns:
        ``{"kl_per_dim", "activity", "active", "active_units", "kl_total", "threshold",
        "method", "num_examples"}`` (lists over z_dim).
    """
    x = vae.check_x(x, values=True)
    prior = diagonal_normal(vae.prior())
    means, kls, mc_var = [], [], []
    method = "exact"
    with frozen(vae, guide), isolated(x, seed):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            q = diagonal_normal(guide.distribution(xb))
            if q is not None and prior is not None:
                m, v = q.loc, q.scale**2
                kls.append(torch.distributions.kl_divergence(q, prior).sum(0))
                mc_var.append(torch.zeros_like(m).sum(0))
            else:
                method = "moment-matched"
                z = guide_draws(guide, xb, num_samples)  # (S, B, d)
                m, v = z.mean(0), z.var(0)
                if prior is not None:
                    approx = dist.Normal(m, v.sqrt())
                    kls.append(torch.distributions.kl_divergence(approx, prior).sum(0))
                mc_var.append((v / num_samples).sum(0))
            means.append(m)
    means = torch.cat(means).double()
    n = len(x)
    activity = means.var(0) - (torch.stack(mc_var).sum(0).double() / n if method != "exact" else 0.0)
    kl = (torch.stack(kls).sum(0).double() / n) if kls else None
    return {
        "kl_per_dim": None if kl is None else kl.tolist(),
        "kl_total": None if kl is None else float(kl.sum()),
        "activity": activity.tolist(),
        "active": (activity > threshold).tolist(),
        "active_units": int((activity > threshold).sum()),
        "threshold": threshold,
        "method": method,
        "num_examples": n,
    }


@torch.no_grad()
def posterior_means(vae: Model, guide: nn.Module, x: Tensor, num_samples: int = 256,
                    batch_size: int = 250, seed: int = 0) -> Tensor:
    """E_q[z | x] for each image, (B, z_dim): exact for a diagonal Normal, else sampled."""
    out = []
    with frozen(vae, guide), isolated(x, seed):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            q = diagonal_normal(guide.distribution(xb))
            out.append(q.loc if q is not None else guide_draws(guide, xb, num_samples).mean(0))
    return torch.cat(out)


def leading_dims(usage: Dict[str, Any], k: int) -> List[int]:
    """The ``k`` latent dimensions that carry most information (largest KL, else activity)."""
    score = usage["kl_per_dim"] if usage.get("kl_per_dim") is not None else usage["activity"]
    order = sorted(range(len(score)), key=lambda j: -score[j])
    return order[: max(1, min(k, len(order)))]
