"""The exact posterior p_θ(z | x) of a trained VAE, sampled by NUTS, and the guide's draws
beside it — both as ArviZ ``InferenceData`` — with ArviZ's diagnostics.

For chosen images x the decoder is frozen and p_θ(z | x) ∝ p_θ(z) p_θ(x | z) becomes an
ordinary inference problem: NUTS (Hoffman & Gelman 2014, arXiv:1111.4246) by
``pyro.infer.MCMC`` on the VAE's *own* ``model(x)``, which already observes ``x``;
:func:`~pyro_vae.infer.context.frozen` turns every network parameter off, so
``pyro.module`` registers nothing and nothing is trained.

ArviZ holds the draws (:class:`arviz.InferenceData` with dims ``example`` and ``z_dim``)
and judges the reference. A model with several latent sites (a hierarchical VAE: ``"z_2"``,
``"z_1"``) is sampled jointly over all of them — NUTS on ``model(x)`` sees every latent
site — and each site is kept as its own variable (dims ``example``, ``z_2_dim``, …) beside
the joint latent ``z`` (their concatenation in ``vae.latent_sites`` order), which the
diagnostics, the summaries and the inference gaps read, as for a single-latent VAE: bulk / tail effective sample sizes and rank-normalized split
R-hat (Vehtari et al. 2021, arXiv:1903.08008). The guide's importance weights get the
Pareto k̂ of PSIS (Yao et al. 2018, arXiv:1802.02538): k̂ < 0.7 says q(z|x) is a usable
importance proposal for p(z|x).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import arviz as az
import numpy as np
import torch
import xarray as xr
from pyro.infer import MCMC, NUTS
from torch import Tensor, nn

from ..contract import Model
from ..errors import ConfigError
from ..options import check_int
from .config import NUTSConfig
from .context import frozen, isolated, num_threads, seed_from
from .evaluate import log_weights

#: Dimension names of the latent and of an image in every InferenceData written here.
Z_DIMS = ["example", "z_dim"]
X_DIMS = ["example", "channel", "row", "column"]


def nuts_posterior(
    vae: Model,
    x: Tensor,
    config: Optional[NUTSConfig] = None,
    examples: Optional[Sequence[int]] = None,
    progress: bool = False,
    y: Optional[Tensor] = None,
):
    """Sample p_θ(z | x) for each image by NUTS on the VAE's model, decoder frozen (p_θ(z | x, y)
    given the images' labels ``y``, for a VAE that takes labels).

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
        z_dim; and each latent site of a model with several), ``sample_stats`` (``diverging``), ``log_likelihood`` (``x``: log p(x | z)
        per draw) and ``observed_data`` (``x``).
    """
    config = config or NUTSConfig()
    x = vae.check_x(x, values=True)
    y = vae.check_y(y, len(x), values=True)
    examples = example_indices(x, examples)
    per_example = []
    with frozen(vae), isolated(x, None), num_threads(config.threads):
        for i, index in enumerate(examples):
            xi = x[i : i + 1]
            chains = []
            for c in range(config.chains):
                torch.manual_seed(seed_from(config.seed, index, c))
                kernel = NUTS(
                    vae.model,
                    target_accept_prob=config.target_accept,
                    max_tree_depth=config.max_tree_depth,
                    jit_compile=config.jit,
                    ignore_jit_warnings=True,
                )
                mcmc = MCMC(kernel, num_samples=config.draws, warmup_steps=config.warmup,
                            num_chains=1, disable_progbar=not progress)
                mcmc.run(xi, **({} if y is None else {"y": y[i : i + 1]}))
                chains.append(az.from_pyro(mcmc, log_likelihood=True, coords=_coords(vae, [index]),
                                           dims={**_site_dims(vae), "x": X_DIMS}))
            per_example.append(az.concat(*chains, dim="chain", reset_dim=True))
    idata = concat_examples(per_example)
    add_joint_latent(idata.posterior, vae)
    idata.posterior.attrs["method"] = (
        f"NUTS, {config.chains} chains × {config.draws} draws after {config.warmup} warm-up"
    )
    return idata


def example_indices(x: Tensor, examples: Optional[Sequence[int]]) -> List[int]:
    examples = list(range(len(x))) if examples is None else [int(e) for e in examples]
    if len(examples) != len(x):
        raise ConfigError(f"{len(examples)} example indices for {len(x)} images", params=("examples",))
    return examples


def _coords(vae: Model, examples: Sequence[int]) -> Dict[str, Any]:
    c, h, w = vae.x_shape
    sites = {f"{name}_dim": np.arange(d) for name, d in vae.latent_sites.items()}
    return {"example": list(examples), "z_dim": np.arange(vae.z_dim), **sites,
            "channel": np.arange(c), "row": np.arange(h), "column": np.arange(w)}


def _site_dims(vae: Model) -> Dict[str, List[str]]:
    """ArviZ dims of every latent site: ``{"z": ["example", "z_dim"]}`` for one site."""
    return {name: ["example", f"{name}_dim"] for name in vae.latent_sites}


def add_joint_latent(posterior, vae: Model) -> None:
    """Add the joint latent ``z`` (example, z_dim) — the sites concatenated in
    ``vae.latent_sites`` order — to a posterior group of a model with several sites."""
    if list(vae.latent_sites) == ["z"]:
        return
    parts = [posterior[name].rename({f"{name}_dim": "z_dim"}).drop_vars("z_dim", errors="ignore")
             for name in vae.latent_sites]
    posterior["z"] = xr.concat(parts, dim="z_dim").assign_coords(z_dim=np.arange(vae.z_dim))


def concat_examples(idatas: Sequence[Any]):
    """Join InferenceData objects of single images along ``example`` (group by group)."""
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
    vae: Model,
    guide: nn.Module,
    x: Tensor,
    num_draws: int = 2000,
    examples: Optional[Sequence[int]] = None,
    seed: int = 0,
    y: Optional[Tensor] = None,
):
    """Draws of the trained guide for each image (given their labels ``y``, for a VAE that
    takes labels), with their log densities, as ArviZ data.

    The guide scores only its own draws (flows can do no more), taken from the same
    traces as the draws.

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (``z``: chain = 1, draw, example, z_dim;
        and each latent site of a model with several),
        ``sample_stats`` (``log_q`` = log q(z|x), ``lp`` = log p(x, z), and
        ``log_weight`` = lp − log_q per draw), ``log_likelihood`` (``x`` = log p(x | z))
        and ``observed_data`` (``x``).
    """
    check_int(num_draws, "num_draws", 1)
    x = vae.check_x(x, values=True)
    examples = example_indices(x, examples)
    with frozen(vae, guide), isolated(x, seed):
        lw = log_weights(vae, guide, x, num_draws, y)

    def np1(t: Tensor) -> np.ndarray:  # (S, B, ...) → (1 chain, S, B, ...)
        return t.detach().cpu().double().numpy()[None]

    lp = lw.log_px_z + lw.log_pz
    sites = {name: np1(value) for name, value in lw.latents.items()}
    if list(sites) != ["z"]:
        sites["z"] = np1(vae.join_latents(lw.latents))
    idata = az.from_dict(
        posterior=sites,
        sample_stats={"log_q": np1(lw.log_qz), "lp": np1(lp), "log_weight": np1(lp - lw.log_qz)},
        log_likelihood={"x": np1(lw.log_px_z)},
        observed_data={"x": x.detach().cpu().double().numpy()},
        coords=_coords(vae, examples),
        dims={**_site_dims(vae), "z": Z_DIMS, "x": X_DIMS, "log_q": ["example"], "lp": ["example"],
              "log_weight": ["example"]},
    )
    idata.posterior.attrs["method"] = f"amortized guide, {num_draws} independent draws"
    return idata


# ---------------------------------------------------------------------- diagnostics
def nuts_diagnostics(idata) -> List[Dict[str, Any]]:
    """Per image: the worst bulk / tail ESS and R-hat over latent dims, and divergences."""
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
    return az.summary(idata, var_names=["z"])


def psis_khat(guide_idata) -> Dict[int, float]:
    """Pareto k̂ of the guide's importance weights p(x, z) / q(z | x), per image.

    k̂ < 0.5: q(z|x) covers the posterior well; 0.5–0.7: usable; > 0.7: the posterior has
    mass where q has almost none (Yao et al. 2018, arXiv:1802.02538).
    """
    log_w = guide_idata.sample_stats["log_weight"]  # (chain, draw, example)
    log_w = log_w.stack(__sample__=("chain", "draw")).transpose("example", "__sample__")
    _, khat = az.psislw(log_w.copy())
    return {int(e): float(k) for e, k in zip(khat["example"].values, khat.values)}


def compare_moments(nuts_idata, guide_idata) -> List[Dict[str, float]]:
    """Per image: how far the guide's mean and sd are from the NUTS ones.

    ``mean_shift``: average over dims of ``|E_q z_j − E_p z_j| / sd_p(z_j)``;
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
