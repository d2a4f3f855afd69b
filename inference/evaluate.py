"""Honest evaluation: the ELBO, the IWAE estimate of log p(x), bits/dim.

For S samples z_s ~ q_φ(z | x) the log importance weights are

    log w_s = log p_θ(x, z_s) − log q_φ(z_s | x),

computed from Pyro traces of the guide and of the model replayed against it, vectorized
over samples with a ``pyro.plate`` at dim −2. Their mean is an unbiased estimate of the
ELBO and ``logsumexp_s(log w_s) − log S`` is the IWAE bound L_S of Burda et al. 2015
(arXiv:1509.00519), which increases to log p(x) as S grows. Samples are processed in
chunks so memory is bounded by ``max_rows`` decoder evaluations whatever S is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyro_vae.models.base import VAE


@dataclass
class LogWeights:
    """Per-sample, per-example terms of the log importance weight, each (S, B).

    Attributes:
        log_px_z: log p_θ(x | z) — the reconstruction term.
        log_pz: log p_θ(z) (summed over all latent sites of the model).
        log_qz: log q_φ(z | x).
        z: the guide's draws of site ``"z"``, (S, B, z_dim).
    """

    log_px_z: Tensor
    log_pz: Tensor
    log_qz: Tensor
    z: Optional[Tensor] = None

    @property
    def log_w(self) -> Tensor:
        return self.log_px_z + self.log_pz - self.log_qz


def log_weights(vae: VAE, guide: Callable, x: Tensor, num_samples: int) -> LogWeights:
    """Draw ``num_samples`` z ~ q(z | x) per image and score them under model and guide.

    Args:
        vae: the model (its ``model(x)`` is replayed against the guide's samples).
        guide: any guide with site ``"z"`` (``vae.guide`` or a built guide).
        x: images (B, C, H, W).
        num_samples: S, vectorized along a new leading dimension.

    Returns:
        :class:`LogWeights` with tensors of shape (S, B).
    """
    with pyro.plate("iw_samples", num_samples, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    shape = (num_samples, x.shape[0])
    zero = torch.zeros(shape, dtype=x.dtype, device=x.device)
    terms = {"obs": zero, "latent": zero, "guide": zero}
    for trace, role in ((model_trace, "model"), (guide_trace, "guide")):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["fn"].log_prob(site["value"])
            lp = lp.expand(shape) if lp.shape != shape else lp
            key = "guide" if role == "guide" else ("obs" if site["is_observed"] else "latent")
            terms[key] = terms[key] + lp
    z = guide_trace.nodes["z"]["value"] if "z" in guide_trace.nodes else None
    return LogWeights(terms["obs"], terms["latent"], terms["guide"], z)


def _chunks(total: int, size: int):
    done = 0
    while done < total:
        n = min(size, total - done)
        yield n
        done += n


@torch.no_grad()
def evaluate(
    vae: VAE,
    guide: Callable,
    x: Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    max_rows: int = 20_000,
    seed: Optional[int] = 0,
    progress: bool = False,
) -> Dict[str, float]:
    """ELBO and IWAE log-likelihood of the images ``x``, in nats per example.

    Args:
        vae: the model.
        guide: the guide the ELBO and the importance weights use.
        x: prepared evaluation images (binarized / dequantized as in training).
        num_samples: k, the number of importance samples per image.
        batch_size: images per pass.
        max_rows: upper bound on samples × images per decoder pass (memory bound); a model
            whose decoder is expensive lowers it with a ``max_eval_rows`` attribute.
        seed: seed of the samples (the global RNG state is restored afterwards);
            ``None`` uses the current global RNG.
        progress: show a tqdm bar.

    Returns:
        ``elbo`` (mean over images of the k-sample average of log w, a lower bound on
        log p(x)), ``iwae`` (mean of the k-sample IWAE bound), ``nll`` (= −iwae), their
        standard errors over images, ``rec`` (E_q log p(x|z)) and ``kl``
        (E_q[log q(z|x) − log p(z)]), ``iwae_samples`` and ``num_examples``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    vae.check_x(x)
    max_rows = min(max_rows, getattr(vae, "max_eval_rows", max_rows))
    was_training = vae.training
    vae.eval()
    if isinstance(guide, torch.nn.Module):
        guide_training = guide.training
        guide.eval()
    start = time.perf_counter()
    elbos, iwaes, recs, kls = [], [], [], []
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            batches = range(0, len(x), batch_size)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=f"IWAE k={num_samples}", leave=False)
            for i in batches:
                xb = x[i : i + batch_size]
                chunk = max(1, max_rows // len(xb))
                lse = torch.full((len(xb),), -math.inf, dtype=torch.float64, device=x.device)
                sums = {"w": 0.0, "rec": 0.0, "kl": 0.0}
                for n in _chunks(num_samples, chunk):
                    lw = log_weights(vae, guide, xb, n)
                    log_w = lw.log_w.double()
                    lse = torch.logaddexp(lse, torch.logsumexp(log_w, dim=0))
                    sums["w"] = sums["w"] + log_w.sum(0)
                    sums["rec"] = sums["rec"] + lw.log_px_z.double().sum(0)
                    sums["kl"] = sums["kl"] + (lw.log_qz - lw.log_pz).double().sum(0)
                iwaes.append(lse - math.log(num_samples))
                elbos.append(sums["w"] / num_samples)
                recs.append(sums["rec"] / num_samples)
                kls.append(sums["kl"] / num_samples)
    finally:
        vae.train(was_training)
        if isinstance(guide, torch.nn.Module):
            guide.train(guide_training)
    elbo, iwae = torch.cat(elbos), torch.cat(iwaes)
    n = len(x)

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
        "rec": float(torch.cat(recs).mean()),
        "kl": float(torch.cat(kls).mean()),
        "iwae_samples": int(num_samples),
        "num_examples": int(n),
        "seconds": time.perf_counter() - start,
    }


def bits_per_dim(vae: VAE, nll: float) -> float:
    """Bits per dimension of ``nll`` nats per example under ``vae``'s likelihood."""
    return vae.likelihood.bits_per_dim(nll)
