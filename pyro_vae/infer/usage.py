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


def guide_draws(guide: nn.Module, x: Tensor, num_samples: int, site: str = "z") -> Tensor:
    """``num_samples`` draws of latent ``site`` from the guide per image, (S, B, d)."""
    with pyro.plate("draws", num_samples, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    return trace.nodes[site]["value"]


def _site_traces(vae: Model, guide: nn.Module, x: Tensor, num_samples: int, y: Optional[Tensor] = None):
    """Guide trace and, replayed against it, the trace of ``vae.latent_model`` (the priors
    p(z_l | z_{>l}) of every latent site, no decoder), with ``num_samples`` draws at dim −2
    (given the labels ``y`` of a model that takes them)."""
    labels = {} if y is None else {"y": y}
    with pyro.plate("draws", num_samples, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x, **labels)
        prior_trace = poutine.trace(poutine.replay(vae.latent_model, trace=guide_trace)).get_trace(x, **labels)
    return guide_trace, prior_trace


def _site_stats(vae: Model, guide: nn.Module, x: Tensor, num_samples: int,
                y: Optional[Tensor] = None) -> Dict[str, Dict[str, Any]]:
    """Per latent site and image: the posterior mean, its Monte-Carlo variance, the KL per
    dimension (or only in total) and how it was computed (see :func:`latent_usage`)."""
    sites = vae.latent_sites
    guide_trace, prior_trace = _site_traces(vae, guide, x, 1, y)
    drawn_label = y is None and vae.label_is_latent  # q(z | x) is a mixture over the drawn y
    if len(sites) > 1 or drawn_label or diagonal_normal(guide_trace.nodes["z"]["fn"]) is None:
        guide_trace, prior_trace = _site_traces(vae, guide, x, num_samples, y)  # moments need draws
    stats = {}
    for name in sites:
        q_site, p_site = guide_trace.nodes[name], prior_trace.nodes[name]
        z, n = q_site["value"], q_site["value"].shape[0]
        q, p = diagonal_normal(q_site["fn"]), diagonal_normal(p_site["fn"])
        kl = total = None
        if q is not None:  # exact given the layers above; E_q over them by the draws
            m = q.loc.mean(0)
            mc_var = q.loc.var(0) / n if n > 1 else torch.zeros_like(m)
            method = "exact"
            if p is not None:
                kl = torch.distributions.kl_divergence(q, p).mean(0)
        else:
            m, v = z.mean(0), z.var(0)
            mc_var = v / n
            if p is not None and bool((p.loc == p.loc[:1]).all() and (p.scale == p.scale[:1]).all()):
                method = "moment-matched"  # p(z_l) does not depend on other draws
                kl = torch.distributions.kl_divergence(dist.Normal(m, v.sqrt()),
                                                       dist.Normal(p.loc[0], p.scale[0]))
            else:  # a flow guide below the top layer: KL only in total, by Monte Carlo
                method = "monte-carlo"
                total = (q_site["fn"].log_prob(z) - p_site["fn"].log_prob(z)).mean(0)
        if kl is not None:
            total = kl.sum(-1)
        stats[name] = {"mean": m, "mc_var": mc_var, "kl": kl, "kl_total": total, "method": method}
    return stats


@torch.no_grad()
def latent_usage(
    vae: Model,
    guide: nn.Module,
    x: Tensor,
    threshold: float = 0.01,
    num_samples: int = 256,
    batch_size: int = 250,
    seed: int = 0,
    y: Optional[Tensor] = None,
) -> Dict[str, Any]:
    """KL per latent dimension and active units over the images ``x`` (given their labels
    ``y``, for a model that takes labels; the semi-supervised VAE draws them from q(y | x)
    where they are not given), per latent site.

    Each site's q(z_l | x, z_{>l}) and p(z_l | z_{>l}) come from a trace of the guide and of
    ``vae.latent_model`` replayed against it (the decoder is not run):

    * if both are diagonal Normals, KL(q ‖ p) is a sum over dimensions and each term is exact
      (``method = "exact"``); for a site below the top of a hierarchy it is exact given the
      layers above and averaged over ``num_samples`` draws of them, so the sites' KLs add up
      to the total KL E_q[log q(z|x) − log p(z)]; posterior means E_q[z_l] likewise;
    * otherwise (flow guides) q's means and variances are estimated from ``num_samples``
      draws per image, and the per-dimension term is KL(N(m_j, v_j) ‖ p(z_j)) of the
      moment-matched Normal (``method = "moment-matched"``, an approximation: a
      non-factorized q has no exact per-dimension split); where p itself depends on the
      draws (a flow guide below the top layer) only the total is estimated, by Monte Carlo
      (``method = "monte-carlo"``, ``kl_per_dim`` None).

    Active units (Burda et al. 2015, arXiv:1509.00519): A_j = Cov_x(E_q[z_j]) over the
    images; dimension j is active when A_j > ``threshold``. With sampled means, the
    Monte-Carlo variance of each mean is subtracted so A_j stays unbiased.

    Returns:
        ``{"kl_per_dim", "activity", "active", "active_units", "kl_total", "threshold",
        "method", "num_examples", "sites"}``: lists over the joint latent's z_dim (sites
        concatenated in ``vae.latent_sites`` order), and ``sites`` = the same per latent site
        (``{"z": …}`` for a single-latent VAE, ``{"z_2": …, "z_1": …}`` for a hierarchy).
    """
    x = vae.check_x(x, values=True)
    parts: Dict[str, Dict[str, List[Tensor]]] = {}
    methods: Dict[str, str] = {}
    with frozen(vae, guide), isolated(x, seed):
        for start in range(0, len(x), batch_size):
            labels = None if y is None else y[start : start + batch_size]
            stats = _site_stats(vae, guide, x[start : start + batch_size], num_samples, labels)
            for name, st in stats.items():
                acc = parts.setdefault(name, {"mean": [], "mc_var": [], "kl": [], "kl_total": []})
                for key in acc:
                    acc[key].append(st[key])
                methods[name] = st["method"]
    n = len(x)
    sites = {}
    for name, acc in parts.items():
        means = torch.cat(acc["mean"]).double()
        activity = means.var(0) - torch.cat(acc["mc_var"]).double().mean(0)
        kl = None if acc["kl"][0] is None else torch.cat(acc["kl"]).double().sum(0) / n
        total = None if acc["kl_total"][0] is None else float(torch.cat(acc["kl_total"]).double().mean())
        sites[name] = {
            "dims": int(means.shape[-1]),
            "kl_per_dim": None if kl is None else kl.tolist(),
            "kl_total": total,
            "activity": activity.tolist(),
            "active": (activity > threshold).tolist(),
            "active_units": int((activity > threshold).sum()),
            "method": methods[name],
        }
    rows = list(sites.values())
    per_dim = [r["kl_per_dim"] for r in rows]
    totals = [r["kl_total"] for r in rows]
    kinds = sorted(set(methods.values()))
    return {
        "kl_per_dim": None if any(k is None for k in per_dim) else sum(per_dim, []),
        "kl_total": None if any(t is None for t in totals) else float(sum(totals)),
        "activity": sum((r["activity"] for r in rows), []),
        "active": sum((r["active"] for r in rows), []),
        "active_units": sum(r["active_units"] for r in rows),
        "threshold": threshold,
        "method": kinds[0] if len(kinds) == 1 else "mixed",
        "num_examples": n,
        "sites": sites,
    }


@torch.no_grad()
def posterior_means(vae: Model, guide: nn.Module, x: Tensor, num_samples: int = 256,
                    batch_size: int = 250, seed: int = 0, y: Optional[Tensor] = None) -> Tensor:
    """E_q[z | x] (E_q[z | x, y] given labels) of the joint latent for each image,
    (B, z_dim): exact for a diagonal Normal (given the layers above, averaged over their
    draws), else sampled."""
    out = []
    with frozen(vae, guide), isolated(x, seed):
        for start in range(0, len(x), batch_size):
            labels = None if y is None else y[start : start + batch_size]
            stats = _site_stats(vae, guide, x[start : start + batch_size], num_samples, labels)
            out.append(vae.join_latents({name: st["mean"] for name, st in stats.items()}))
    return torch.cat(out)


def leading_dims(usage: Dict[str, Any], k: int) -> List[int]:
    """The ``k`` latent dimensions that carry most information (largest KL, else activity)."""
    score = usage["kl_per_dim"] if usage.get("kl_per_dim") is not None else usage["activity"]
    order = sorted(range(len(score)), key=lambda j: -score[j])
    return order[: max(1, min(k, len(order)))]
