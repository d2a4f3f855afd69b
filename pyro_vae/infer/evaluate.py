"""Honest evaluation: the ELBO, the IWAE estimate of log p(x), bits/dim.

For S samples z_s ~ q_φ(z | x) the log importance weights are

    log w_s = log p_θ(x, z_s) − log q_φ(z_s | x),

computed from Pyro traces of the guide and of the model replayed against it, vectorized
over samples with a ``pyro.plate`` at dim −2. Their mean is an unbiased estimate of the
ELBO and ``logsumexp_s(log w_s) − log S`` is the IWAE bound L_S of Burda et al. 2015
(arXiv:1509.00519), which increases to log p(x) as S grows. Samples are processed in
chunks (:func:`log_weight_chunks`) so memory is bounded by ``max_rows`` decoder evaluations
whatever S is; :func:`evaluate` (data-set averages) and :func:`bounds` (per image, with the
PSIS diagnostic that the inference gaps need) both draw their weights from it.

**Labels.** Given the images' labels ``y`` (a conditional VAE), the weights are those of
p(x, z | y) and the bounds are bounds on log p(x | y). A semi-supervised VAE
(``model.label_is_latent``) evaluated without labels has the label summed out exactly: with
S samples z_s ~ q(z | x, y) for each class y (log w_sy includes log p(y)),

    IWAE = log Σ_y p(y) (1/S) Σ_s p(x, z_sy | y) / q(z_sy | x, y) = logsumexp_{s,y} log w_sy − log S,
    ELBO = Σ_y q(y | x) [(1/S) Σ_s log w_sy − log q(y | x)],

the bounds on log p(x) of :func:`per_image` (the ELBO is ``TraceEnum_ELBO``'s, the IWAE bound
a stratified one, each class with its own S samples), so that they compare with any VAE's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..contract import Model
from ..options import check_int
from . import distributed
from .context import frozen, seed_from


@dataclass
class LogWeights:
    """Per-sample, per-example terms of the log importance weight, each (S, B).

    Attributes:
        log_px_z: log p_θ(x | z) — the reconstruction term.
        log_pz: log p_θ(z) (summed over all latent sites of the model).
        log_qz: log q_φ(z | x) (of all latent sites).
        latents: the guide's draws of every latent site of the model, ``{site: (S, B, d)}``.
    """

    log_px_z: Tensor
    log_pz: Tensor
    log_qz: Tensor
    latents: Dict[str, Tensor] = field(default_factory=dict)

    @property
    def z(self) -> Optional[Tensor]:
        """The draws of site ``"z"`` of a single-latent model (``None`` otherwise)."""
        return self.latents.get("z")

    @property
    def log_w(self) -> Tensor:
        return self.log_px_z + self.log_pz - self.log_qz


def log_weights(model: Model, guide: nn.Module, x: Tensor, num_samples: int,
                y: Optional[Tensor] = None) -> LogWeights:
    """Draw ``num_samples`` z ~ q(z | x) per image and score them under model and guide.

    Args:
        model: the model, a VAE or a density flow (its ``model(x)`` is replayed against
            the guide's samples).
        guide: any guide of the model (``model.guide``, a built guide, a local guide).
        x: images (B, C, H, W).
        num_samples: S, vectorized along a new leading dimension.
        y: the images' labels (B,), for a model that takes labels: z ~ q(z | x, y), and the
            weights are those of p(x, z | y) (of p(x, y, z), with log p(y), for the
            semi-supervised VAE).

    Returns:
        :class:`LogWeights` with tensors of shape (S, B).
    """
    labels = {} if y is None else {"y": y}
    with pyro.plate("iw_samples", num_samples, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x, **labels)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x, **labels)
    shape = (num_samples, x.shape[0])
    zero = torch.zeros(shape, dtype=x.dtype, device=x.device)
    terms = {"obs": zero, "latent": zero, "guide": zero}
    for trace, role in ((model_trace, "model"), (guide_trace, "guide")):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["fn"].log_prob(site["value"])
            lp = lp.expand(shape) if lp.shape != shape else lp
            # the image's log-likelihood; every other site of the model (a label's p(y)) is prior
            key = "guide" if role == "guide" else ("obs" if name == "x" else "latent")
            terms[key] = terms[key] + lp
    latents = {name: site["value"] for name, site in model_trace.nodes.items()
               if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}
    return LogWeights(terms["obs"], terms["latent"], terms["guide"], latents)


def log_weight_chunks(model: Model, guide: nn.Module, x: Tensor, num_samples: int,
                      max_rows: Optional[int] = None, y: Optional[Tensor] = None) -> Iterator[LogWeights]:
    """:func:`log_weights` of ``num_samples`` samples per image, in chunks of at most
    ``max_rows`` samples × images (and at most the model's ``max_eval_rows``)."""
    check_int(num_samples, "num_samples", 1)
    rows = model.max_eval_rows if max_rows is None else min(max_rows, model.max_eval_rows)
    chunk = max(1, rows // len(x))
    done = 0
    while done < num_samples:
        n = min(chunk, num_samples - done)
        yield log_weights(model, guide, x, n, y)
        done += n


@torch.no_grad()
def evaluate(
    model: Model,
    guide: nn.Module,
    x: Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    max_rows: int = 20_000,
    seed: Optional[int] = 0,
    progress: bool = False,
    sharded: bool = False,
    y: Optional[Tensor] = None,
) -> Dict[str, float]:
    """ELBO and IWAE log-likelihood of the images ``x``, in nats per example (of log p(x | y)
    given their labels ``y``, for a conditional VAE; the semi-supervised VAE sums unknown
    labels out, see the module docstring).

    Args:
        model: the model, a VAE or a density flow (whose guide is empty: then the ELBO and
            the IWAE bound are its exact log-likelihood).
        guide: the guide the ELBO and the importance weights use.
        x: prepared evaluation images (binarized / dequantized as in training).
        num_samples: k, the number of importance samples per image.
        batch_size: images per pass.
        max_rows: upper bound on samples × images per decoder pass (memory bound); a model
            whose decoder is expensive lowers it with its ``max_eval_rows``.
        seed: seed of the samples (the global RNG state is restored afterwards);
            ``None`` uses the current global RNG.
        progress: show a tqdm bar.
        sharded: inside a ``torch.distributed`` process group, every rank (each must call
            this) evaluates its contiguous share of ``x`` and all get the combined result.
        y: the images' labels (B,), for a model that takes labels.

    Returns:
        ``elbo`` (mean over images of the k-sample average of log w, a lower bound on
        log p(x)), ``iwae`` (mean of the k-sample IWAE bound), ``nll`` (= −iwae), their
        standard errors over images, ``rec`` (E_q log p(x|z)) and ``kl``
        (E_q[log q(z|x) − log p(z)]), ``iwae_samples`` and ``num_examples``.
    """
    model.check_guide(guide)
    x = model.check_x(x, values=True)
    y = model.check_y(y, len(x), values=True)
    start = time.perf_counter()
    rank, world = distributed.world() if sharded else (0, 1)
    if world > 1:
        x = distributed.shard(x)
        y = None if y is None else distributed.shard(y)
        seed = None if seed is None else (seed if rank == 0 else seed_from(seed, rank))
    devices = [x.device] if x.device.type == "cuda" else []
    parts: Dict[str, list] = {"elbo": [], "iwae": [], "rec": [], "kl": []}
    with frozen(model, guide), torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        batches = range(0, len(x), batch_size)
        if progress:
            batches = tqdm(batches, desc=f"IWAE k={num_samples}", leave=False)
        for i in batches:
            labels = None if y is None else y[i : i + batch_size]
            for key, value in per_image(model, guide, x[i : i + batch_size], num_samples, max_rows, labels).items():
                parts[key].append(value.cpu())
    per = {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in parts.items()}
    if world > 1:  # every rank's images, in rank order
        per = {k: torch.cat([p[k] for p in distributed.gather(per)]) for k in per}
    elbo, iwae = per["elbo"], per["iwae"]
    n = len(elbo)

    def sem(t: Tensor) -> float:
        return float(t.std() / math.sqrt(n)) if n > 1 else float("nan")

    if not torch.isfinite(iwae).all():
        raise FloatingPointError("non-finite log-likelihood: the model produced NaN or inf")
    return {
        "elbo": float(elbo.mean()),
        "elbo_sem": sem(elbo),
        "iwae": float(iwae.mean()),
        "nll": -float(iwae.mean()),
        "nll_sem": sem(iwae),
        "rec": float(per["rec"].mean()),
        "kl": float(per["kl"].mean()),
        "iwae_samples": int(num_samples),
        "num_examples": int(n),
        "seconds": time.perf_counter() - start,
    }


def per_image(model: Model, guide: nn.Module, x: Tensor, num_samples: int,
              max_rows: Optional[int] = None, y: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """For each image of ``x``: the k-sample ELBO, the IWAE-k bound, and the reconstruction
    and KL terms of the ELBO, each (B,) in float64, from :func:`log_weight_chunks` (given the
    labels ``y``; a semi-supervised VAE without them: summed over the labels, see the module
    docstring, its KL that of (y, z))."""
    if y is None and model.label_is_latent:
        return _summed_over_labels(model, guide, x, num_samples, max_rows)
    lse = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    sums = {"w": 0.0, "rec": 0.0, "kl": 0.0}
    for lw in log_weight_chunks(model, guide, x, num_samples, max_rows, y):
        log_w = lw.log_w.double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
        sums["w"] = sums["w"] + log_w.sum(0)
        sums["rec"] = sums["rec"] + lw.log_px_z.double().sum(0)
        sums["kl"] = sums["kl"] + (lw.log_qz - lw.log_pz).double().sum(0)
    return {"elbo": sums["w"] / num_samples, "iwae": lse - math.log(num_samples),
            "rec": sums["rec"] / num_samples, "kl": sums["kl"] / num_samples}


def _summed_over_labels(model: Model, guide: nn.Module, x: Tensor, num_samples: int,
                        max_rows: Optional[int]) -> Dict[str, Tensor]:
    """:func:`per_image` of a semi-supervised VAE with the label summed out: the bounds of
    each class y (whose weights include log p(y)) combined under q(y | x) and p(y)."""
    q = model.label_posterior(x).probs.double()  # (B, C)
    parts = [per_image(model, guide, x, num_samples, max_rows,
                       torch.full((len(x),), c, dtype=torch.long, device=x.device))
             for c in range(model.num_classes)]
    stack = {key: torch.stack([p[key] for p in parts], dim=-1) for key in parts[0]}  # (B, C)
    log_q = q.clamp_min(torch.finfo(q.dtype).tiny).log()
    elbo = (q * (stack["elbo"] - log_q)).sum(-1)
    rec = (q * stack["rec"]).sum(-1)
    return {"elbo": elbo, "iwae": torch.logsumexp(stack["iwae"], dim=-1), "rec": rec, "kl": rec - elbo}


@torch.no_grad()
def bounds(model: Model, guide: nn.Module, x: Tensor, num_samples: int = 5000,
           max_rows: int = 20_000, y: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Per-image ELBO and IWAE-k, their Monte-Carlo standard errors and PSIS k̂, each (B,).

    The same k draws give both: ELBO = mean_s log w_s (standard error sd(log w) / √k) and
    IWAE = logsumexp_s log w_s − log k, whose standard error is ≈ sd(w) / (mean(w) √k) by
    the delta method. Both errors are estimated from the draws themselves, which fails
    when the weights are heavy-tailed (q narrower than p(z|x) somewhere): the Pareto k̂ of
    the weights (``khat``, Yao et al. 2018, arXiv:1802.02538) says when: below 0.5 the
    weights have a finite variance; above 0.7 the IWAE estimate is unreliable and
    log p(x) likely underestimated. All k weights are kept (PSIS needs them), k × B floats.
    Given labels ``y`` (a VAE that takes them), every bound is of log p(x | y).
    """
    # arviz costs 1.4 s to import; training imports this module, only the posterior analysis this function
    import arviz as az

    lw = torch.cat([c.log_w.double() for c in log_weight_chunks(model, guide, x, num_samples, max_rows, y)])
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


def bits_per_dim(model: Model, nll: float) -> float:
    """Bits per dimension of ``nll`` nats per example under ``model``."""
    return model.bits_per_dim(nll)
