"""Posterior analysis: how good is the guide q_φ(z | x) of a trained VAE?

For chosen images x the decoder is frozen and the exact posterior
p_θ(z | x) ∝ p_θ(z) p_θ(x | z) becomes an ordinary inference problem. This module answers
it three ways and compares them:

* **Reference** — NUTS (Hoffman & Gelman 2014, arXiv:1111.4246) by ``pyro.infer.MCMC``
  on the VAE's *own* ``model(x)``, which already observes ``x``; :func:`frozen` turns
  every network parameter off, so ``pyro.module`` registers nothing and nothing is trained.
* **Amortized guide** — draws of the trained guide for the same images.
* **Locally optimal guide** — the best member of the *same guide family* for each single
  image, fitted by SVI from the amortized guide (:func:`fit_local_guide`).

ArviZ holds the draws (:class:`arviz.InferenceData` with dims ``example`` and ``z_dim``)
and judges the reference: bulk / tail effective sample sizes and rank-normalized split
R-hat (Vehtari et al. 2021, arXiv:1903.08008). The guide's importance weights get the
Pareto k̂ of PSIS (Yao et al. 2018, arXiv:1802.02538): k̂ < 0.7 says q(z|x) is a usable
importance proposal for p(z|x).

**Inference gaps** (Cremer, Li & Duvenaud 2018, arXiv:1801.03558). With q_amort the
amortized guide and q* the locally optimal member of its family,

    log p(x) − ELBO[q_amort]  =  (log p(x) − ELBO[q*])  +  (ELBO[q*] − ELBO[q_amort])
        inference gap              approximation gap          amortization gap

The approximation gap is what the *family* costs (KL(q* ‖ p(z|x))), the amortization gap
what sharing one encoder across images costs. log p(x) is estimated by IWAE with k = 5000
(Burda et al. 2015, arXiv:1509.00519) with q_amort, q* and — when NUTS was run — a
Student-t fitted to the NUTS draws as proposals; each is a stochastic lower bound, and the
largest one whose PSIS k̂ is below 0.5 (finite-variance weights; the largest of all if
none is) is used. Gaussian guides are narrower than p(z|x) (PSIS k̂ > 0.7 on
MNIST), so their own IWAE estimates fall short of log p(x) by up to a nat or more; the
NUTS-based proposal does not depend on the guide being judged.

**Latent usage**: KL(q(z_j | x) ‖ p(z_j)) per dimension, averaged over the data, and the
active units of Burda et al. 2015: dimension j is active when Cov_x(E_q[z_j]) > 0.01.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, Trace_ELBO
from torch import Tensor, nn

from pyro_vae.errors import ConfigError
from pyro_vae.models.base import VAE, data_plate, kl_scaled

from .evaluate import log_weights

#: PSIS k̂ below which the importance weights have a finite variance, so that an IWAE
#: estimate's standard error means something (Vehtari et al. 2024, arXiv:1507.02646).
KHAT_RELIABLE = 0.5

#: Dimension names of the latent and of an image in every InferenceData written here.
Z_DIMS = ["example", "z_dim"]
X_DIMS = ["example", "channel", "row", "column"]


# ---------------------------------------------------------------------- configuration
@dataclass
class NUTSConfig:
    """Settings of the NUTS reference posterior.

    Attributes:
        chains: independent chains per image (≥ 2, so that R-hat compares chains).
        draws: kept draws per chain.
        warmup: adaptation steps per chain (step size and diagonal mass matrix), discarded.
        target_accept: target acceptance probability of the step-size adaptation.
        max_tree_depth: cap on the NUTS trajectory length (2^depth leapfrog steps).
        jit: compile the potential energy with the PyTorch JIT (``torch.jit.trace``): about
            twice as fast on the dense VAE, same draws; off by default because tracing
            silently freezes data-dependent Python control flow of a model.
        threads: torch intra-op threads while sampling (``None``: leave as set). NUTS
            evaluates one image at a time, where thread synchronisation costs more than
            it gains: a gradient of the dense decoder took 0.4 ms on 1 thread and 14 ms
            on 2 on the shared 2-core reference machine.
        seed: base seed; chain c of dataset image n is seeded from (seed, n, c), so an
            image's draws do not depend on which other images were asked for.
    """

    chains: int = 4
    draws: int = 500
    warmup: int = 500
    target_accept: float = 0.8
    max_tree_depth: int = 10
    jit: bool = False
    threads: Optional[int] = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self, {
            "threads": self.threads is None or self.threads >= 1,
            "chains": self.chains >= 2,
            "draws": self.draws >= 4,
            "warmup": self.warmup >= 0,
            "target_accept": 0 < self.target_accept < 1,
            "max_tree_depth": self.max_tree_depth >= 1,
        }, "NUTS settings (chains ≥ 2 for R-hat, draws ≥ 4)")


@dataclass
class LocalFitConfig:
    """Settings of the per-image SVI fit of the locally optimal guide q*.

    The fit runs Adam on ``Trace_ELBO(num_particles, vectorize_particles=True)`` and halves
    the learning rate whenever the mean loss over ``window`` steps has not improved by
    ``tol`` nats for ``patience`` windows (``torch.optim.lr_scheduler.ReduceLROnPlateau``);
    it has converged once the rate has been halved ``reductions`` times. Near the optimum
    the window means fluctuate by Monte-Carlo noise only, so the halvings become a
    step-size annealing schedule that lets Adam settle instead of rattling around q*.

    Attributes:
        method: ``auto`` (``gaussian`` when q(z|x) is a diagonal Normal, else ``copy``),
            ``gaussian`` (free mean and scale per image) or ``copy`` (a per-image copy of
            the guide; see :func:`local_guide`).
        max_steps: hard cap on SVI steps per image.
        particles: samples of z per step (vectorized).
        lr: initial Adam learning rate.
        window: steps per window mean.
        patience: windows without improvement before the rate is halved.
        tol: improvement (nats) that counts.
        reductions: number of halvings that ends the fit.
        threads: torch intra-op threads during the fit (see :class:`NUTSConfig`).
    """

    method: str = "auto"
    max_steps: int = 3000
    particles: int = 16
    lr: float = 0.01
    window: int = 50
    patience: int = 1
    tol: float = 0.01
    reductions: int = 5
    threads: Optional[int] = 1

    def __post_init__(self) -> None:
        if self.method not in LOCAL_METHODS:
            raise ConfigError(
                f"unknown local-guide method {self.method!r}; valid methods: {', '.join(LOCAL_METHODS)}"
            )
        _check(self, {
            "max_steps": self.max_steps >= 1,
            "particles": self.particles >= 1,
            "lr": self.lr > 0,
            "window": self.window >= 1,
            "patience": self.patience >= 0,
            "tol": self.tol >= 0,
            "reductions": self.reductions >= 1,
            "threads": self.threads is None or self.threads >= 1,
        }, "local-fit settings")


LOCAL_METHODS = ("auto", "gaussian", "copy")


def _check(cfg: Any, checks: Dict[str, bool], what: str) -> None:
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ConfigError(f"invalid {what}: " + ", ".join(f"{k}={getattr(cfg, k)!r}" for k in bad))


def _seed(*parts: int) -> int:
    """A 32-bit seed that differs for every tuple ``parts`` (numpy's SeedSequence hash)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# ---------------------------------------------------------------------- frozen networks
@contextlib.contextmanager
def frozen(*modules: Any) -> Iterator[None]:
    """Put modules in eval mode with ``requires_grad=False``; restore both on exit.

    ``pyro.module`` registers only parameters that require gradients, so inside this
    context ``vae.model(x)`` adds nothing to Pyro's param store and MCMC or SVI on it can
    move the latent variables only. Non-modules (e.g. the bound method ``vae.guide``) are
    ignored.
    """
    saved = []
    for m in modules:
        if not isinstance(m, nn.Module):
            continue
        saved.append((m, m.training, [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        # reverse order: a parameter shared by two modules ends with its first-seen flag
        for m, training, flags in reversed(saved):
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)


@contextlib.contextmanager
def num_threads(n: Optional[int]) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``: unchanged); restore afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _isolated(x: Tensor, seed: Optional[int]) -> Iterator[None]:
    """A private param store and a forked torch RNG seeded with ``seed``."""
    devices = [x.device] if x.device.type == "cuda" else []
    with pyro.get_param_store().scope(), torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _guide_module(guide: Callable) -> Optional[nn.Module]:
    return guide if isinstance(guide, nn.Module) else None


def _is_vae_guide(vae: VAE, guide: Callable) -> bool:
    """Whether ``guide`` is the bound method ``vae.guide``."""
    return (getattr(guide, "__self__", None) is vae
            and getattr(guide, "__func__", None) is type(vae).guide)


def guide_distribution(vae: VAE, guide: Callable, x: Tensor) -> Optional[dist.Distribution]:
    """q(z | x) as a distribution (batch (B,), event (z_dim,)), or ``None`` if unavailable.

    Works for every :class:`~pyro_vae.guides.Guide` (``guide.distribution``) and for the
    VAE's own ``vae.guide`` (the encoder's diagonal Gaussian).
    """
    if hasattr(guide, "distribution"):
        return guide.distribution(x)
    if _is_vae_guide(vae, guide):
        return vae.encoder(vae.check_x(x))
    return None


def _diagonal_normal(d: Optional[dist.Distribution]) -> Optional[dist.Normal]:
    """The Normal base of ``Normal(...).to_event(1)``, else ``None``."""
    if isinstance(d, dist.Independent) and isinstance(d.base_dist, dist.Normal) and (
        d.reinterpreted_batch_ndims == 1
    ):
        return d.base_dist
    return None


def guide_draws(guide: Callable, x: Tensor, num_samples: int) -> Tensor:
    """``num_samples`` draws of site ``"z"`` from the guide per image, (S, B, z_dim)."""
    with pyro.plate("draws", num_samples, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    return trace.nodes["z"]["value"]


# ---------------------------------------------------------------------- NUTS reference
def nuts_posterior(
    vae: VAE,
    x: Tensor,
    config: Optional[NUTSConfig] = None,
    examples: Optional[Sequence[int]] = None,
    progress: bool = False,
):
    """Sample p_θ(z | x) for each image by NUTS on the VAE's model, decoder frozen.

    Each image gets its own ``config.chains`` chains, each its own ``MCMC`` run with one
    chain: step size and mass matrix adapt to that image's posterior, a hard image cannot
    slow down the others, and the chains run in this process in a fixed order (Pyro would
    start a process per chain otherwise, which makes seeds depend on the machine).
    Chains start from Pyro's default ``init_to_uniform`` (unconstrained values in
    (−2, 2)), over-dispersed relative to a typical posterior, as R-hat wants.

    Args:
        vae: the trained VAE; its ``model(x)`` is the target.
        x: images (B, C, H, W).
        config: chains, draws, warm-up, seed.
        examples: dataset index of each image (coordinates of ``example``; default 0..B−1).
        progress: show Pyro's progress bar for each chain.

    Returns:
        ``arviz.InferenceData`` with groups ``posterior`` (``z``: chain, draw, example,
        z_dim), ``sample_stats`` (``diverging``), ``log_likelihood`` (``x``: log p(x | z)
        per draw) and ``observed_data`` (``x``).
    """
    import arviz as az

    config = config or NUTSConfig()
    vae.check_x(x)
    examples = _examples(x, examples)
    per_example = []
    with frozen(vae), _isolated(x, None), num_threads(config.threads):
        for i, index in enumerate(examples):
            xi = x[i : i + 1]
            chains = []
            for c in range(config.chains):
                torch.manual_seed(_seed(config.seed, index, c))
                kernel = NUTS(
                    vae.model,
                    target_accept_prob=config.target_accept,
                    max_tree_depth=config.max_tree_depth,
                    jit_compile=config.jit,
                    ignore_jit_warnings=True,
                )
                mcmc = MCMC(kernel, num_samples=config.draws, warmup_steps=config.warmup,
                            num_chains=1, disable_progbar=not progress)
                mcmc.run(xi)
                chains.append(az.from_pyro(mcmc, log_likelihood=True, coords=_coords(vae, [index]),
                                           dims={"z": Z_DIMS, "x": X_DIMS}))
            per_example.append(az.concat(*chains, dim="chain", reset_dim=True))
    idata = concat_examples(per_example)
    idata.posterior.attrs["method"] = (
        f"NUTS, {config.chains} chains × {config.draws} draws after {config.warmup} warm-up"
    )
    return idata


def _examples(x: Tensor, examples: Optional[Sequence[int]]) -> List[int]:
    examples = list(range(len(x))) if examples is None else [int(e) for e in examples]
    if len(examples) != len(x):
        raise ConfigError(f"{len(examples)} example indices for {len(x)} images")
    return examples


def _coords(vae: VAE, examples: Sequence[int]) -> Dict[str, Any]:
    c, h, w = vae.x_shape
    return {"example": list(examples), "z_dim": np.arange(vae.z_dim), "channel": np.arange(c),
            "row": np.arange(h), "column": np.arange(w)}


def concat_examples(idatas: Sequence[Any]):
    """Join InferenceData objects of single images along ``example`` (group by group)."""
    import arviz as az
    import xarray as xr

    groups = {}
    for group in idatas[0].groups():
        parts = []
        for idata in idatas:
            ds = idata[group]
            if "example" not in ds.dims:  # e.g. sample_stats: divergences are per image
                ds = ds.expand_dims(example=idata.posterior["example"].values)
            parts.append(ds)
        groups[group] = (parts[0] if len(parts) == 1 else
                         xr.concat(parts, dim="example", combine_attrs="drop_conflicts"))
    return az.InferenceData(**groups)


# ---------------------------------------------------------------------- guide draws
@torch.no_grad()
def guide_posterior(
    vae: VAE,
    guide: Callable,
    x: Tensor,
    num_draws: int = 2000,
    examples: Optional[Sequence[int]] = None,
    seed: int = 0,
):
    """Draws of the trained guide for each image, with their log densities, as ArviZ data.

    The guide scores only its own draws (flows can do no more), taken from the same
    traces as the draws.

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (``z``: chain = 1, draw, example, z_dim),
        ``sample_stats`` (``log_q`` = log q(z|x), ``lp`` = log p(x, z), and
        ``log_weight`` = lp − log_q per draw), ``log_likelihood`` (``x`` = log p(x | z))
        and ``observed_data`` (``x``).
    """
    import arviz as az

    if num_draws < 1:
        raise ConfigError(f"the number of guide draws must be positive, got {num_draws}")
    vae.check_x(x)
    examples = _examples(x, examples)
    with frozen(vae, _guide_module(guide)), _isolated(x, seed):
        lw = log_weights(vae, guide, x, num_draws)

    def np1(t: Tensor) -> np.ndarray:  # (S, B, ...) → (1 chain, S, B, ...)
        return t.detach().cpu().double().numpy()[None]

    lp = lw.log_px_z + lw.log_pz
    idata = az.from_dict(
        posterior={"z": np1(lw.z)},
        sample_stats={"log_q": np1(lw.log_qz), "lp": np1(lp), "log_weight": np1(lp - lw.log_qz)},
        log_likelihood={"x": np1(lw.log_px_z)},
        observed_data={"x": x.detach().cpu().double().numpy()},
        coords=_coords(vae, examples),
        dims={"z": Z_DIMS, "x": X_DIMS, "log_q": ["example"], "lp": ["example"],
              "log_weight": ["example"]},
    )
    idata.posterior.attrs["method"] = f"amortized guide, {num_draws} independent draws"
    return idata


# ---------------------------------------------------------------------- diagnostics
def nuts_diagnostics(idata) -> List[Dict[str, Any]]:
    """Per image: the worst bulk / tail ESS and R-hat over latent dims, and divergences."""
    import arviz as az

    ess_bulk = az.ess(idata, var_names=["z"], method="bulk")["z"]
    ess_tail = az.ess(idata, var_names=["z"], method="tail")["z"]
    rhat = az.rhat(idata, var_names=["z"])["z"]
    diverging = idata.sample_stats["diverging"].sum(("chain", "draw"))
    rows = []
    for index in idata.posterior["example"].values:
        sel = {"example": index}
        rows.append({
            "example": int(index),
            "min_ess_bulk": float(ess_bulk.sel(sel).min()),
            "min_ess_tail": float(ess_tail.sel(sel).min()),
            "max_r_hat": float(rhat.sel(sel).max()),
            "divergences": int(diverging.sel(sel)),
            "draws": int(idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]),
        })
    return rows


def nuts_summary(idata):
    """``arviz.summary`` of the NUTS latents: mean, sd, HDI, MCSE, ESS bulk/tail, R-hat."""
    import arviz as az

    return az.summary(idata, var_names=["z"])


def psis_khat(guide_idata) -> Dict[int, float]:
    """Pareto k̂ of the guide's importance weights p(x, z) / q(z | x), per image.

    k̂ < 0.5: q(z|x) covers the posterior well; 0.5–0.7: usable; > 0.7: the posterior has
    mass where q has almost none (Yao et al. 2018, arXiv:1802.02538).
    """
    import arviz as az

    log_w = guide_idata.sample_stats["log_weight"]  # (chain, draw, example)
    log_w = log_w.stack(__sample__=("chain", "draw")).transpose("example", "__sample__")
    _, khat = az.psislw(log_w.copy())
    return {int(e): float(k) for e, k in zip(khat["example"].values, khat.values)}


def compare_moments(nuts_idata, guide_idata) -> List[Dict[str, float]]:
    """Per image: how far the guide's mean and sd are from the NUTS ones.

    ``mean_shift``: average over dims of |E_q z_j − E_p z_j| / sd_p(z_j);
    ``sd_ratio``: geometric mean over dims of sd_q(z_j) / sd_p(z_j) (< 1: q too narrow).
    """
    p = nuts_idata.posterior["z"]
    q = guide_idata.posterior["z"]
    rows = []
    for index in p["example"].values:
        ps, qs = p.sel(example=index), q.sel(example=index)
        mp, sp = ps.mean(("chain", "draw")), ps.std(("chain", "draw"))
        mq, sq = qs.mean(("chain", "draw")), qs.std(("chain", "draw"))
        rows.append({
            "example": int(index),
            "mean_shift": float((abs(mq - mp) / sp).mean()),
            "sd_ratio": float(np.exp(np.log(sq / sp).mean())),
        })
    return rows


# ---------------------------------------------------------------------- local guides
class LocalGaussianGuide(nn.Module):
    """A non-amortized diagonal Gaussian: free (μ_n, σ_n) for each of B fixed images.

    q_n(z) = N(μ_n, diag σ_n²), parameterised by μ and log σ. It is the whole diagonal
    Gaussian family for each image, so fitting it to one image gives the locally optimal
    member of the family of the amortized Gaussian guide.

    Args:
        loc: initial means (B, z_dim), e.g. the encoder's μ_φ(x).
        scale: initial standard deviations (B, z_dim).
    """

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().log().clone())

    def distribution(self, x: Optional[Tensor] = None) -> dist.TorchDistribution:
        """q(z) with batch (B,) and event (z_dim,); ``x`` is ignored (the guide interface)."""
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        if len(x) != len(self.loc):
            raise ConfigError(f"this local guide was fitted to {len(self.loc)} images, got {len(x)}")
        with data_plate(x, num_data), kl_scaled(kl_scale):
            return pyro.sample("z", self.distribution(x))


def local_guide(vae: VAE, guide: Callable, x: Tensor, method: str = "auto") -> Tuple[nn.Module, str]:
    """An un-fitted, non-amortized guide for the images ``x``, initialised from ``guide``.

    * ``gaussian``: :class:`LocalGaussianGuide` started at the encoder's (μ, σ) — needs a
      guide whose q(z|x) is a diagonal Normal (``vae.guide``, the ``gaussian`` guide).
    * ``copy``: a deep copy of the guide whose per-image parameters are the bias of the
      encoder's Gaussian head (h → μ, σ of the base distribution) and all of the guide's
      own parameters (e.g. the flows conditioned on h); the encoder trunk and the head's
      weights stay fixed, and so does h. The head's bias alone spans every (μ, σ) of the
      base, and the flows' weights span what their architecture can express, so the copy
      ranges over the guide's family at x. It works for any
      :class:`~pyro_vae.guides.Guide` — flow guides included — without knowing its
      internals; ``x`` must hold a single image. For the Gaussian guide it is the
      ``gaussian`` local guide in another parameterisation (the tests check that both
      reach the closed-form optimum). Freeing the head's weights or the trunk too adds
      thousands of redundant parameters, each moved by about the learning rate per Adam
      step: on the default MNIST run that fit stalled 0.1–0.6 nats short.
    * ``auto``: ``gaussian`` when q(z|x) is a diagonal Normal, else ``copy``.

    Returns:
        ``(guide, method)`` with the method actually used.
    """
    if method not in LOCAL_METHODS:
        raise ConfigError(f"unknown local-guide method {method!r}; "
                          f"valid methods: {', '.join(LOCAL_METHODS)}")
    normal = None
    if method in ("auto", "gaussian"):
        with torch.no_grad():
            normal = _diagonal_normal(guide_distribution(vae, guide, x))
        if normal is None and method == "gaussian":
            raise ConfigError(
                "the 'gaussian' local guide needs a guide whose q(z|x) is a diagonal Normal"
            )
    if normal is not None:
        return LocalGaussianGuide(normal.loc, normal.scale), "gaussian"
    if len(x) != 1:
        raise ConfigError("a 'copy' local guide is fitted to one image at a time")
    if _is_vae_guide(vae, guide):
        from pyro_vae.guides import build_guide

        guide = build_guide("gaussian", vae)
    if not hasattr(guide, "vae"):
        raise ConfigError(f"cannot build a local guide from {type(guide).__name__}: "
                          "it is neither vae.guide nor a pyro_vae Guide")
    local = copy.deepcopy(guide)  # copies guide.vae (held outside the module tree) too
    local.eval()
    local.vae.eval()
    for p in list(local.parameters()) + list(local.vae.encoder.parameters()):
        p.requires_grad_(True)
    head = getattr(local.vae.encoder, "head", None)
    free_bias = getattr(head, "bias", None)
    for p in local.vae.encoder.parameters():
        if p is not free_bias:
            p.requires_grad_(False)
    return local, "copy"


def _local_parameters(local: nn.Module) -> List[nn.Parameter]:
    params = list(local.parameters())
    vae = getattr(local, "vae", None)
    if isinstance(vae, VAE):
        params += list(vae.encoder.parameters())
    return [p for p in params if p.requires_grad]


def fit_local_guide(
    vae: VAE,
    guide: Callable,
    x: Tensor,
    config: Optional[LocalFitConfig] = None,
    seed: Optional[int] = 0,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Fit the locally optimal member q* of the guide's family to the images ``x`` by SVI.

    The model's networks stay frozen; only the local guide's parameters move. The loss
    is Pyro's ``Trace_ELBO`` on the un-scaled ``"data"`` plate, i.e. −Σ_n ELBO_n over the
    B images, whose parameters are disjoint, so fitting them together equals fitting each
    alone (Adam is elementwise); only the stopping rule is shared.

    Returns:
        ``(q_star, info)`` with ``info`` = ``{"method", "steps", "converged",
        "final_lr", "loss_history"}`` (window means of −ELBO per image).
    """
    config = config or LocalFitConfig()
    vae.check_x(x)
    local, method = local_guide(vae, guide, x, config.method)
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
    with frozen(vae, _guide_module(guide)), _isolated(x, seed), num_threads(config.threads), \
            pyro.validation_enabled(False):
        for step in range(1, config.max_steps + 1):
            loss = elbo.differentiable_loss(vae.model, local, x)
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
    info = {"method": method, "steps": step, "converged": converged,
            "final_lr": optim.param_groups[0]["lr"], "loss_history": history}
    return local, info


# ---------------------------------------------------------------------- inference gaps
@torch.no_grad()
def bounds(
    vae: VAE, guide: Callable, x: Tensor, num_samples: int = 5000, max_rows: int = 20_000
) -> Dict[str, Tensor]:
    """Per-image ELBO and IWAE-k, their Monte-Carlo standard errors and PSIS k̂, each (B,).

    The same k draws give both: ELBO = mean_s log w_s (standard error sd(log w) / √k) and
    IWAE = logsumexp_s log w_s − log k, whose standard error is ≈ sd(w) / (mean(w) √k) by
    the delta method. Both errors are estimated from the draws themselves, which fails
    when the weights are heavy-tailed (q narrower than p(z|x) somewhere): the Pareto k̂ of
    the weights (``khat``, Yao et al. 2018, arXiv:1802.02538) says when: below 0.5 the
    weights have a finite variance; above 0.7 the IWAE estimate is unreliable and
    log p(x) likely underestimated.
    """
    import arviz as az

    chunk = max(1, max_rows // len(x))
    parts, done = [], 0
    while done < num_samples:
        n = min(chunk, num_samples - done)
        parts.append(log_weights(vae, guide, x, n).log_w.double())
        done += n
    lw = torch.cat(parts)  # (k, B)
    k = num_samples
    lse = torch.logsumexp(lw, 0)
    # sd(w)² / mean(w)² = k Σw² / (Σw)² − 1
    rel_var = (math.log(k) + torch.logsumexp(2 * lw, 0) - 2 * lse).exp() - 1
    sd = lw.std(0) if k > 1 else torch.zeros_like(lse)
    _, khat = az.psislw(lw.T.cpu().numpy().copy())
    # equal weights (q = p(z|x) exactly) have no tail at all; psislw reports inf for them
    spread = (lw.max(0).values - lw.min(0).values).cpu().numpy()
    khat = np.where(spread <= 1e-9 * (1 + lse.abs().cpu().numpy()), 0.0, np.atleast_1d(khat))
    return {"elbo": lw.mean(0), "elbo_se": sd / math.sqrt(k), "iwae": lse - math.log(k),
            "iwae_se": (rel_var.clamp_min(0) / k).sqrt(),
            "khat": torch.as_tensor(khat, dtype=torch.float64)}


class FixedGuide(nn.Module):
    """A guide that ignores x: z_n ~ Student-t(ν, m_n, L_n L_nᵀ) for each of B fixed images.

    Fitted to NUTS draws (:meth:`from_draws`), it is an importance proposal for log p(x)
    that does not depend on the guide being judged: with ν = 5 its covariance is
    ν / (ν − 2) = 5/3 times the posterior's and its tails are polynomial, so the
    importance weights p(x, z) / q(z) stay bounded where a Gaussian guide's would not.
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor, df: float = 5.0) -> None:
        super().__init__()
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
        return dist.MultivariateStudentT(torch.tensor(self.df, dtype=self.loc.dtype,
                                                      device=self.loc.device),
                                         self.loc, self.scale_tril)

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        if len(x) != len(self.loc):
            raise ConfigError(f"this proposal was fitted to {len(self.loc)} images, got {len(x)}")
        with data_plate(x, num_data), kl_scaled(kl_scale):
            return pyro.sample("z", self.distribution(x))


def reference_proposal(nuts_idata, example: int, dtype: torch.dtype = torch.float32,
                       device: Any = "cpu") -> FixedGuide:
    """:class:`FixedGuide` fitted to the NUTS draws of one image (all chains pooled)."""
    z = nuts_idata.posterior["z"].sel(example=example).stack(sample=("chain", "draw"))
    z = torch.as_tensor(z.transpose("sample", "z_dim").values, dtype=dtype, device=device)
    return FixedGuide.from_draws(z[:, None, :])


def inference_gaps(
    vae: VAE,
    guide: Callable,
    x: Tensor,
    iwae_samples: int = 5000,
    local: Optional[LocalFitConfig] = None,
    examples: Optional[Sequence[int]] = None,
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
    reference: Optional[Any] = None,
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
    so is the approximation gap. Each image is seeded from (seed, its dataset index).

    Returns:
        ``{"examples": [row per image], "mean": {...}, "iwae_samples": k, "local": {...}}``.
    """
    if iwae_samples < 1:
        raise ConfigError(f"--iwae-samples must be positive, got {iwae_samples}")
    local = local or LocalFitConfig()
    vae.check_x(x)
    examples = _examples(x, examples)
    rows = []
    for i, index in enumerate(examples):
        xi = x[i : i + 1]
        with frozen(vae, _guide_module(guide)), _isolated(xi, _seed(seed, index, 1)):
            amortized = bounds(vae, guide, xi, iwae_samples)
        q_star, info = fit_local_guide(vae, guide, xi, local, seed=_seed(seed, index, 2))
        with frozen(vae, q_star), _isolated(xi, _seed(seed, index, 3)):
            optimal = bounds(vae, q_star, xi, iwae_samples)
        estimates = {"amortized": amortized, "local": optimal}
        if reference is not None:
            proposal = reference_proposal(reference, index, dtype=xi.dtype, device=xi.device)
            with frozen(vae), _isolated(xi, _seed(seed, index, 4)):
                estimates["reference"] = bounds(vae, proposal, xi, iwae_samples)
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


def format_gaps(gaps: Dict[str, Any]) -> str:
    """The gap table as aligned text (nats per image)."""
    head = ["image", "log p(x)", "ELBO amort.", "ELBO local", "approx. gap", "amort. gap", "total gap"]
    keys = ["log_px", "elbo_amortized", "elbo_local", "approximation_gap", "amortization_gap",
            "inference_gap"]
    lines = [head]
    for r in gaps["examples"]:
        lines.append([str(r["example"])] + [f"{r[k]:.2f}" for k in keys])
    lines.append(["mean"] + [f"{gaps['mean'][k]:.2f}" for k in keys])
    widths = [max(len(row[j]) for row in lines) for j in range(len(head))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    sources = sorted({r["log_px_from"] for r in gaps["examples"]})
    text.append(f"(nats; log p(x): the largest reliable IWAE k={gaps['iwae_samples']} estimate, "
                f"from the {' / '.join(sources)} proposal; ELBOs are "
                f"{gaps['iwae_samples']}-sample averages)")
    return "\n".join(text)


# ---------------------------------------------------------------------- latent usage
@torch.no_grad()
def latent_usage(
    vae: VAE,
    guide: Callable,
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
    vae.check_x(x)
    prior = _diagonal_normal(vae.prior())
    means, kls, mc_var = [], [], []
    method = "exact"
    with frozen(vae, _guide_module(guide)), _isolated(x, seed):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            q = _diagonal_normal(guide_distribution(vae, guide, xb))
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
def posterior_means(vae: VAE, guide: Callable, x: Tensor, num_samples: int = 256,
                    batch_size: int = 250, seed: int = 0) -> Tensor:
    """E_q[z | x] for each image, (B, z_dim): exact for a diagonal Normal, else sampled."""
    out = []
    with frozen(vae, _guide_module(guide)), _isolated(x, seed):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            q = _diagonal_normal(guide_distribution(vae, guide, xb))
            out.append(q.loc if q is not None else guide_draws(guide, xb, num_samples).mean(0))
    return torch.cat(out)


def leading_dims(usage: Dict[str, Any], k: int) -> List[int]:
    """The ``k`` latent dimensions that carry most information (largest KL, else activity)."""
    score = usage["kl_per_dim"] if usage.get("kl_per_dim") is not None else usage["activity"]
    order = sorted(range(len(score)), key=lambda j: -score[j])
    return order[: max(1, min(k, len(order)))]


# ---------------------------------------------------------------------- saving
def save_netcdf(idata, path: str) -> str:
    """Write ``idata`` to ``path`` atomically (a temporary file renamed over it)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        idata.to_netcdf(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------- the whole analysis
@dataclass
class PosteriorConfig:
    """What :func:`posterior_run` does (besides the NUTS and local-fit settings).

    Attributes:
        indices: indices of the analysed images in ``split``.
        split: ``test`` or ``train``.
        guide_draws: draws of the amortized guide per image (default chains × draws).
        iwae_samples: k of the log p(x) estimates and of the ELBO averages.
        leading: number of latent dimensions shown in marginal and traversal figures.
        seed: seed of the guide draws and of the gaps.
    """

    indices: Tuple[int, ...] = (0, 1, 2)
    split: str = "test"
    guide_draws: Optional[int] = None
    iwae_samples: int = 5000
    leading: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        self.indices = tuple(int(i) for i in self.indices)
        _check(self, {
            "indices": len(self.indices) > 0 and len(set(self.indices)) == len(self.indices),
            "guide_draws": self.guide_draws is None or self.guide_draws >= 4,
            "iwae_samples": self.iwae_samples >= 1,
            "leading": self.leading >= 1,
        }, "posterior settings (indices must be distinct)")


def posterior_run(
    run_dir: str,
    config: Optional[PosteriorConfig] = None,
    nuts: Optional[NUTSConfig] = None,
    local: Optional[LocalFitConfig] = None,
    out: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Analyse the posterior of a trained run for a few images; write netCDF, JSON, figures.

    Writes into ``out`` (default ``RUN_DIR/posterior``): ``nuts.nc`` and ``guide.nc``
    (ArviZ InferenceData), ``nuts_summary.csv`` (``arviz.summary``), ``gaps.json``,
    ``diagnostics.json`` (ESS, R-hat, divergences, PSIS k̂, moment comparison per image),
    ``latent_usage.json``, ``marginals_<i>.png`` and ``traversal_<i>.png`` per image, and
    for z_dim = 2 ``manifold.png`` and ``latent_means.png``. Existing files of the same
    names are replaced (atomically), like ``eval.json`` by ``evaluate``.

    Returns:
        ``{"out", "gaps", "diagnostics", "latent_usage", "files"}``.
    """
    from pyro_vae.data import SPLITS

    from . import posterior_plots as plots
    from .checkpoint import atomic_write_json, atomic_write_text
    from .run import DataConfig, load_run

    config = config or PosteriorConfig()
    nuts = nuts or NUTSConfig()
    local = local or LocalFitConfig()
    if config.split not in SPLITS:
        raise ConfigError(f"unknown split {config.split!r}; valid splits: {', '.join(SPLITS)}")
    vae, guide, run_config, _ = load_run(run_dir, device=device)
    data = DataConfig.from_dict(run_config["data"]).load()
    x_all = data.eval_data(config.split, dequantize=vae.likelihood.dequantize).to(device)
    bad = [i for i in config.indices if not 0 <= i < len(x_all)]
    if bad:
        raise ConfigError(
            f"index {bad[0]} is out of range: the {config.split} split has {len(x_all)} images "
            f"(valid indices 0..{len(x_all) - 1})"
        )
    out = out or os.path.join(run_dir, "posterior")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write to {out}: directory {parent} does not exist")
    os.makedirs(out, exist_ok=True)
    indices = list(config.indices)
    x = x_all[torch.tensor(indices)]
    files: List[str] = []

    log(f"latent usage on the {len(x_all)} {config.split} images")
    usage = latent_usage(vae, guide, x_all, seed=config.seed)
    atomic_write_json(os.path.join(out, "latent_usage.json"), usage)
    files.append(os.path.join(out, "latent_usage.json"))
    kl_text = ("" if usage["kl_total"] is None
               else f", KL {usage['kl_total']:.2f} nats ({usage['method']})")
    log(f"  active units: {usage['active_units']} of {vae.z_dim}{kl_text}")

    log(f"NUTS on p(z | x) for images {indices}: {nuts.chains} chains × {nuts.draws} draws "
        f"after {nuts.warmup} warm-up")
    nuts_idata = nuts_posterior(vae, x, nuts, examples=indices, progress=progress)
    files.append(save_netcdf(nuts_idata, os.path.join(out, "nuts.nc")))
    summary = nuts_summary(nuts_idata)
    atomic_write_text(os.path.join(out, "nuts_summary.csv"), summary.to_csv())
    files.append(os.path.join(out, "nuts_summary.csv"))

    draws = config.guide_draws or nuts.chains * nuts.draws
    guide_idata = guide_posterior(vae, guide, x, draws, examples=indices, seed=config.seed)
    files.append(save_netcdf(guide_idata, os.path.join(out, "guide.nc")))

    diagnostics = nuts_diagnostics(nuts_idata)
    khat = psis_khat(guide_idata)
    moments = {r["example"]: r for r in compare_moments(nuts_idata, guide_idata)}
    for row in diagnostics:
        row["psis_khat"] = khat[row["example"]]
        row["guide_mean_shift"] = moments[row["example"]]["mean_shift"]
        row["guide_sd_ratio"] = moments[row["example"]]["sd_ratio"]
        flag = "" if row["max_r_hat"] < 1.01 and row["divergences"] == 0 else "  <- check the chains"
        log(f"  image {row['example']}: ESS bulk ≥ {row['min_ess_bulk']:.0f}, tail ≥ "
            f"{row['min_ess_tail']:.0f}, R-hat ≤ {row['max_r_hat']:.3f}, {row['divergences']} "
            f"divergences; guide: PSIS k̂ {row['psis_khat']:.2f}, mean shift "
            f"{row['guide_mean_shift']:.2f} sd, sd ratio {row['guide_sd_ratio']:.2f}{flag}")
    atomic_write_json(os.path.join(out, "diagnostics.json"),
                      {"nuts": asdict(nuts), "examples": diagnostics})
    files.append(os.path.join(out, "diagnostics.json"))

    log(f"inference gaps (IWAE k={config.iwae_samples}; local guides by SVI)")
    gaps = inference_gaps(vae, guide, x, config.iwae_samples, local, examples=indices,
                          seed=config.seed, log=log, reference=nuts_idata)
    gaps["guide"] = run_config["guide"]
    atomic_write_json(os.path.join(out, "gaps.json"), gaps)
    files.append(os.path.join(out, "gaps.json"))

    dims = leading_dims(usage, config.leading)
    means = posterior_means(vae, guide, x, seed=config.seed)
    for i, index in enumerate(indices):
        path = os.path.join(out, f"marginals_{index}.png")
        plots.marginals_figure(nuts_idata, guide_idata, index, dims, path,
                               guide_name=run_config["guide"]["name"])
        files.append(path)
        path = os.path.join(out, f"traversal_{index}.png")
        plots.traversal_figure(vae, means[i], dims, path)
        files.append(path)
    if vae.z_dim == 2:
        path = os.path.join(out, "manifold.png")
        plots.manifold_figure(vae, path)
        files.append(path)
        path = os.path.join(out, "latent_means.png")
        all_means = posterior_means(vae, guide, x_all, seed=config.seed)
        labels = data.labels(config.split)
        plots.latent_scatter(all_means, labels, path)
        files.append(path)
    return {"out": out, "gaps": gaps, "diagnostics": diagnostics, "latent_usage": usage,
            "files": files}
