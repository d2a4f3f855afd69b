"""How much log-likelihood a guide loses: the inference gaps of Cremer, Li & Duvenaud 2018
(arXiv:1801.03558), with the locally optimal guide fitted per image.

With q_amort the amortized guide and q* the locally optimal member of its family (fitted to
each single image by SVI, :func:`fit_local_guide`),

    log p(x) − ELBO[q_amort]  =  (log p(x) − ELBO[q*])  +  (ELBO[q*] − ELBO[q_amort])
        inference gap              approximation gap          amortization gap

The approximation gap is what the *family* costs (KL(q* ‖ p(z|x))), the amortization gap
what sharing one encoder across images costs. log p(x) is estimated by IWAE with k = 5000
(Burda et al. 2015, arXiv:1509.00519) with q_amort, q* and — when NUTS was run — a
Student-t fitted to the NUTS draws as proposals (:func:`~pyro_vae.infer.evaluate.bounds`,
the evaluation's own chunked estimator); each is a stochastic lower bound, and the largest
one whose PSIS k̂ is below 0.5 (finite-variance weights; the largest of all if none is) is
used. Gaussian guides are narrower than p(z|x) (PSIS k̂ > 0.7 on MNIST), so their own
IWAE estimates fall short of log p(x) by up to a nat or more; the NUTS-based proposal does
not depend on the guide being judged.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from ..contract import Model
from ..errors import ConfigError
from ..guides.base import Guide, JointGuide
from ..guides.local import FixedGuide, LocalGaussianGuide
from ..options import check_int
from .config import LocalFitConfig, check_local_method
from .context import frozen, isolated, num_threads, seed_from
from .evaluate import bounds
from .nuts import example_indices
from .usage import diagonal_normal

#: PSIS k̂ below which the importance weights have a finite variance, so that an IWAE
#: estimate's standard error means something (Vehtari et al. 2024, arXiv:1507.02646).
KHAT_RELIABLE = 0.5


def local_guide(vae: Model, guide: Guide, x: Tensor, method: str = "auto",
                y: Optional[Tensor] = None) -> Tuple[Guide, str]:
    """An un-fitted, non-amortized guide for the images ``x``, initialised from ``guide``.

    * ``gaussian``: :class:`LocalGaussianGuide` started at the encoder's (μ, σ) — needs a
      guide whose q(z|x) is a diagonal Normal (``vae.guide``, the ``gaussian`` guide).
    * ``copy``: a deep copy of the guide whose per-image parameters are its
      :meth:`~pyro_vae.guides.base.Guide.local_parameters` — the bias of the encoder's
      Gaussian head (h → μ, σ of the base distribution; for a hierarchical guide the bias of
      every layer's posterior head) and all of the guide's own parameters (e.g. the flows
      conditioned on h); the encoder trunk and the head's
      weights stay fixed, and so does h. The head's bias alone spans every (μ, σ) of the
      base, and the flows' weights span what their architecture can express, so the copy
      ranges over the guide's family at x. It works for any
      :class:`~pyro_vae.guides.Guide` — flow guides included — without knowing its
      internals; ``x`` must hold a single image. For the Gaussian guide it is the
      ``gaussian`` local guide in another parameterisation (the tests check that both
      reach the closed-form optimum). Freeing the head's weights or the trunk too adds
      thousands of redundant parameters, each moved by about the learning rate per Adam
      step: on the default MNIST run that fit stalled 0.1–0.6 nats short.
    * ``auto``: ``gaussian`` when q(z|x) is one diagonal Normal (a
      :class:`~pyro_vae.guides.base.JointGuide` whose ``distribution`` is one), else
      ``copy`` (always for the hierarchical VAE's guide, one distribution per layer).

    Returns:
        ``(guide, method)`` with the method actually used.
    """
    check_local_method(method)
    normal = None
    if method in ("auto", "gaussian") and isinstance(guide, JointGuide):
        with torch.no_grad():
            normal = diagonal_normal(guide.distribution(x, y))
    if normal is None and method == "gaussian":
        raise ConfigError(
            "the 'gaussian' local guide needs a guide whose q(z|x) is a diagonal Normal"
        )
    if normal is not None:  # q of the joint latent, cut into the model's sites if several
        return LocalGaussianGuide(normal.loc, normal.scale, vae.latent_sites), "gaussian"
    if len(x) != 1:
        raise ConfigError("a 'copy' local guide is fitted to one image at a time")
    if not isinstance(guide, Guide) or guide.vae is None:
        raise ConfigError(f"cannot build a local guide from {type(guide).__name__}: "
                          "it is not an amortized pyro_vae Guide")
    local = copy.deepcopy(guide)  # copies guide.vae (held outside the module tree) too
    local.eval()
    local.vae.eval()
    free = {id(p) for p in local.local_parameters()}
    for p in list(local.parameters()) + list(local.vae.parameters()):
        p.requires_grad_(id(p) in free)
    return local, "copy"


def _local_parameters(local: nn.Module) -> List[nn.Parameter]:
    params = local.local_parameters() if isinstance(local, Guide) else list(local.parameters())
    return [p for p in params if p.requires_grad]


def fit_local_guide(
    vae: Model,
    guide: Guide,
    x: Tensor,
    config: Optional[LocalFitConfig] = None,
    seed: Optional[int] = 0,
    y: Optional[Tensor] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Fit the locally optimal member q* of the guide's family to the images ``x`` (given
    their labels ``y``, for a VAE that takes them) by SVI: :func:`local_guide` started from
    ``guide``, fitted by :func:`fit_guide`.

    Returns:
        ``(q_star, info)`` with ``info`` = ``{"method", "steps", "converged",
        "final_lr", "loss_history"}`` (window means of −ELBO per image).
    """
    config = config or LocalFitConfig()
    x = vae.check_x(x, values=True)
    local, method = local_guide(vae, guide, x, config.method, y)
    local, info = fit_guide(vae, local, x, config, seed, fixed=(guide,), y=y)
    return local, {"method": method, **info}


def fit_guide(
    vae: Model,
    local: nn.Module,
    x: Tensor,
    config: Optional[LocalFitConfig] = None,
    seed: Optional[int] = 0,
    fixed: Sequence[nn.Module] = (),
    y: Optional[Tensor] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Fit a non-amortized guide ``local`` (e.g. :class:`~pyro_vae.guides.local.LocalGaussianGuide`,
    :class:`~pyro_vae.guides.local.LocalFlowGuide`) to the images ``x`` by SVI.

    The model's networks (and those of ``fixed``) stay frozen; only the parameters of
    ``local`` that require gradients move. The loss is Pyro's ``Trace_ELBO`` on the
    un-scaled ``"data"`` plate, i.e. −Σ_n ELBO_n over the B images, whose parameters are
    disjoint, so fitting them together equals fitting each alone (Adam is elementwise);
    only the stopping rule is shared. Adam's rate is halved on plateaus
    (:class:`LocalFitConfig`); the fit ends when it has been halved ``reductions`` times.

    Returns:
        ``(local, info)`` with ``info`` = ``{"steps", "converged", "final_lr",
        "loss_history"}``; ``local`` is left frozen, in eval mode.
    """
    config = config or LocalFitConfig()
    lr = config.lr
    params = _local_parameters(local)
    optim = torch.optim.Adam(params, lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optim, mode="min", factor=0.5, patience=config.patience, threshold=config.tol,
        threshold_mode="abs",
    )
    elbo = Trace_ELBO(num_particles=config.particles, vectorize_particles=config.particles > 1,
                      max_plate_nesting=1)
    history, window, converged, step = [], [], False, 0
    stop_lr = lr * 0.5 ** config.reductions * (1 + 1e-9)
    with frozen(vae, *fixed), isolated(x, seed), num_threads(config.threads), \
            pyro.validation_enabled(False):
        for step in range(1, config.max_steps + 1):
            loss = elbo.differentiable_loss(vae.model, local, x, **({} if y is None else {"y": y}))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            window.append(loss.detach().item() / len(x))
            if len(window) == config.window:
                mean = sum(window) / len(window)
                history.append(mean)
                window = []
                plateau.step(mean)
                if optim.param_groups[0]["lr"] <= stop_lr:
                    converged = True
                    break
    for p in params:
        p.requires_grad_(False)
    local.eval()
    info = {"steps": step, "converged": converged,
            "final_lr": optim.param_groups[0]["lr"], "loss_history": history}
    return local, info


def reference_proposal(nuts_idata, example: int, dtype: torch.dtype = torch.float32,
                       device: Any = "cpu", sites: Optional[Dict[str, int]] = None) -> FixedGuide:
    """:class:`FixedGuide` fitted to the NUTS draws of the joint latent ``z`` of one image (all
    chains pooled); ``sites`` (``vae.latent_sites``) when the model has several."""
    z = nuts_idata.posterior["z"].sel(example=example).stack(sample=("chain", "draw"))
    z = torch.as_tensor(z.transpose("sample", "z_dim").values, dtype=dtype, device=device)
    return FixedGuide.from_draws(z[:, None, :], sites=sites)


def inference_gaps(
    vae: Model,
    guide: Guide,
    x: Tensor,
    iwae_samples: int = 5000,
    local: Optional[LocalFitConfig] = None,
    examples: Optional[Sequence[int]] = None,
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
    reference: Optional[Any] = None,
    y: Optional[Tensor] = None,
) -> Dict[str, Any]:
    """Approximation and amortization gaps of ``guide`` per image and on average (nats).

    For each image: the amortized ELBO and IWAE-k of ``guide``; the locally optimal
    guide q* of the same family fitted by :func:`fit_local_guide`, with its ELBO and
    IWAE-k; with ``reference`` (the NUTS InferenceData of these images), IWAE-k with the
    Student-t proposal fitted to the NUTS draws (:func:`reference_proposal`). Every IWAE-k
    is a stochastic lower bound on log p(x); log p(x) is estimated by the largest whose
    PSIS k̂ < 0.5 (by the largest of all when none is), and ``log_px_from`` names it. Then

    * ``approximation_gap`` = log p(x) − ELBO[q*],
    * ``amortization_gap`` = ELBO[q*] − ELBO[q_amort],
    * ``inference_gap`` = log p(x) − ELBO[q_amort] (their sum).

    ELBOs are k-sample averages with standard errors ``*_se``; each IWAE estimate comes
    with its PSIS k̂ (``*_khat``; > 0.5: infinite-variance weights, > 0.7: that
    proposal's estimate is unreliable and likely low). log p(x) being a lower estimate,
    so is the approximation gap. Each image is seeded from (seed, its dataset index). Given
    the images' labels ``y`` (a VAE that takes them) every quantity is of p(x | y).

    Returns:
        ``{"examples": [row per image], "mean": {...}, "iwae_samples": k, "local": {...}}``.
    """
    check_int(iwae_samples, "iwae_samples", 1)
    local = local or LocalFitConfig()
    x = vae.check_x(x, values=True)
    examples = example_indices(x, examples)
    rows = []
    for i, index in enumerate(examples):
        xi, yi = x[i : i + 1], None if y is None else y[i : i + 1]
        with frozen(vae, guide), isolated(xi, seed_from(seed, index, 1)):
            amortized = bounds(vae, guide, xi, iwae_samples, y=yi)
        q_star, info = fit_local_guide(vae, guide, xi, local, seed=seed_from(seed, index, 2), y=yi)
        with frozen(vae, q_star), isolated(xi, seed_from(seed, index, 3)):
            optimal = bounds(vae, q_star, xi, iwae_samples, y=yi)
        estimates = {"amortized": amortized, "local": optimal}
        if reference is not None:
            proposal = reference_proposal(reference, index, dtype=xi.dtype, device=xi.device,
                                          sites=vae.latent_sites)
            with frozen(vae), isolated(xi, seed_from(seed, index, 4)):
                estimates["reference"] = bounds(vae, proposal, xi, iwae_samples, y=yi)
        # Above k̂ = 0.5 the weights have infinite variance: such an estimate mostly falls
        # short of log p(x) but now and then jumps above it, and the maximum would pick the
        # jumps. So the largest estimate with finite-variance weights is used.
        reliable = [n for n, b in estimates.items() if float(b["khat"]) < KHAT_RELIABLE]
        best = max(reliable or estimates, key=lambda name: float(estimates[name]["iwae"]))
        log_px = float(estimates[best]["iwae"])
        row = {"example": index, "log_px": log_px, "log_px_from": best}
        for name, b in estimates.items():
            row.update({f"iwae_{name}": float(b["iwae"]), f"iwae_{name}_se": float(b["iwae_se"]),
                        f"iwae_{name}_khat": float(b["khat"])})
        row.update({
            "elbo_amortized": float(amortized["elbo"]),
            "elbo_amortized_se": float(amortized["elbo_se"]),
            "elbo_local": float(optimal["elbo"]),
            "elbo_local_se": float(optimal["elbo_se"]),
            "approximation_gap": log_px - float(optimal["elbo"]),
            "amortization_gap": float(optimal["elbo"] - amortized["elbo"]),
            "inference_gap": log_px - float(amortized["elbo"]),
            "local_method": info["method"],
            "local_steps": info["steps"],
            "local_converged": info["converged"],
        })
        rows.append(row)
        if log is not None:
            log(f"  image {index}: approximation gap {row['approximation_gap']:.2f}, "
                f"amortization gap {row['amortization_gap']:.2f} nats (q* by {info['method']}, "
                f"{info['steps']} steps; log p(x) from the {best} proposal, "
                f"k̂ {row[f'iwae_{best}_khat']:.2f})")
    keys = ["log_px", "elbo_amortized", "elbo_local", "approximation_gap", "amortization_gap",
            "inference_gap"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    settings = {k: v for k, v in asdict(local).items()}
    return {"examples": rows, "mean": mean, "iwae_samples": int(iwae_samples), "local": settings,
            "seed": int(seed)}
