"""``pyro-vae posterior``: how good is the guide q_φ(z | x) of a trained run?

This module only wires the library's posterior analysis to a run directory:

* :mod:`pyro_vae.infer.usage` — the KL per latent dimension and the active units;
* :mod:`pyro_vae.infer.nuts` — the exact posterior p_θ(z | x) by NUTS and the guide's draws,
  as ArviZ ``InferenceData``, with ESS, R-hat, divergences and PSIS k̂;
* :mod:`pyro_vae.infer.gaps` — the locally optimal guide per image and the approximation
  and amortization gaps (Cremer et al. 2018, arXiv:1801.03558);
* :mod:`pyro_vae.infer.labels` — for the semi-supervised VAE, its classifier q(y | x)
  against the model's posterior p(y | x) of the discrete label, estimated by IWAE per class;
* :mod:`inference.posterior_plots` — the figures.

For a VAE that takes labels the continuous latent is analysed given the label: a conditional
VAE's images with their own labels, the semi-supervised VAE's with the class p(y | x) finds
most probable.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Callable, Dict, List

import torch

from pyro_vae.errors import DataError
from pyro_vae.infer.gaps import inference_gaps
from pyro_vae.infer.labels import label_posterior
from pyro_vae.infer.nuts import (compare_moments, guide_posterior, nuts_diagnostics, nuts_posterior, nuts_summary,
                                 psis_khat)
from pyro_vae.infer.usage import latent_usage, leading_dims, posterior_means

from . import posterior_plots as plots
from .distributed import check_device
from .io import atomic_netcdf, atomic_write_json, atomic_write_text, output_error
from .restore import load_data, load_run
from .settings import PosteriorOptions, check_indices


def posterior_run(opts: PosteriorOptions, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Analyse the posterior of a trained run for a few images; write netCDF, JSON, figures.

    Writes into ``opts.out`` (default ``RUN_DIR/posterior``): ``nuts.nc`` and ``guide.nc``
    (ArviZ InferenceData), ``nuts_summary.csv`` (``arviz.summary``), ``gaps.json``,
    ``diagnostics.json`` (ESS, R-hat, divergences, PSIS k̂, moment comparison per image),
    ``latent_usage.json``, ``marginals_<i>.png`` and ``traversal_<i>.png`` per image, and
    for z_dim = 2 ``manifold.png`` and ``latent_means.png``. Existing files of the same
    names are replaced (atomically), like ``eval.json`` by ``evaluate``.

    Returns:
        ``{"out", "gaps", "diagnostics", "latent_usage", "files"}``.
    """
    opts.check_paths()  # before the work, not after it
    config, nuts, local, out, run_dir = opts, opts.nuts, opts.local, opts.out, opts.run_dir
    progress, device = not opts.no_progress, opts.device
    vae, guide, run_config, payload = load_run(run_dir, device=device, checkpoint=opts.checkpoint)
    log(f"weights: the {payload['selected']['checkpoint']} checkpoint (epoch {payload['selected']['epoch']})")
    data = load_data(run_dir, run_config.data)
    x_all = data.eval_data(config.split, dequantize=vae.dequantize).to(device)
    check_indices(config.index, len(x_all), config.split, "index")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise output_error(err, out, "create") from None
    indices = list(config.index)
    x = x_all[torch.tensor(indices)]
    files: List[str] = []
    y_all, y = None, None  # the labels the latent z is analysed given
    if vae.num_classes is not None and not vae.label_is_latent:
        y_all = data.labels(config.split)
        if y_all is None:
            raise DataError(f"a conditional VAE is analysed given the images' labels, but the {config.split} split "
                            f"of {data.name} has none")
        y_all = y_all.to(device)
        y = y_all[torch.tensor(indices, device=device)]
    elif vae.label_is_latent:
        y = label_analysis(vae, guide, x, indices, config, out, files, log)

    log(f"latent usage on the {len(x_all)} {config.split} images")
    usage = latent_usage(vae, guide, x_all, seed=config.seed, y=y_all)
    atomic_write_json(os.path.join(out, "latent_usage.json"), usage)
    files.append(os.path.join(out, "latent_usage.json"))
    kl_text = ("" if usage["kl_total"] is None
               else f", KL {usage['kl_total']:.2f} nats ({usage['method']})")
    log(f"  active units: {usage['active_units']} of {vae.z_dim}{kl_text}")

    log(f"NUTS on p(z | x) for images {indices}: {nuts.chains} chains × {nuts.draws} draws "
        f"after {nuts.warmup} warm-up")
    nuts_idata = nuts_posterior(vae, x, nuts, examples=indices, progress=progress, y=y)
    files.append(atomic_netcdf(nuts_idata, os.path.join(out, "nuts.nc")))
    summary = nuts_summary(nuts_idata)
    atomic_write_text(os.path.join(out, "nuts_summary.csv"), summary.to_csv())
    files.append(os.path.join(out, "nuts_summary.csv"))

    draws = config.guide_draws or nuts.chains * nuts.draws
    guide_idata = guide_posterior(vae, guide, x, draws, examples=indices, seed=config.seed, y=y)
    files.append(atomic_netcdf(guide_idata, os.path.join(out, "guide.nc")))

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
                          seed=config.seed, log=log, reference=nuts_idata, y=y)
    gaps["guide"] = run_config.guide
    atomic_write_json(os.path.join(out, "gaps.json"), gaps)
    files.append(os.path.join(out, "gaps.json"))

    dims = leading_dims(usage, config.leading)
    means = posterior_means(vae, guide, x, seed=config.seed, y=y)
    for i, index in enumerate(indices):
        path = os.path.join(out, f"marginals_{index}.png")
        plots.marginals_figure(nuts_idata, guide_idata, index, dims, path,
                               guide_name=run_config.guide["name"])
        files.append(path)
        path = os.path.join(out, f"traversal_{index}.png")
        plots.traversal_figure(vae, means[i], dims, path, y=None if y is None else y[i])
        files.append(path)
    if vae.z_dim == 2:
        path = os.path.join(out, "manifold.png")
        plots.manifold_figure(vae, path, y=None if y is None else y[0])
        files.append(path)
        path = os.path.join(out, "latent_means.png")
        all_means = posterior_means(vae, guide, x_all, seed=config.seed, y=y_all)
        labels = data.labels(config.split)
        plots.latent_scatter(all_means, labels, path)
        files.append(path)
    return {"out": out, "gaps": gaps, "diagnostics": diagnostics, "latent_usage": usage,
            "files": files}



def label_analysis(vae, guide, x, indices: List[int], config: PosteriorOptions, out: str, files: List[str],
                   log: Callable[[str], None]) -> torch.Tensor:
    """The semi-supervised VAE's q(y | x) against its p(y | x) for the images ``x`` (dataset
    indices ``indices``): ``labels.json``, ``labels.png``; returns the most probable class
    under p(y | x) of each image, which the rest of the analysis conditions on."""
    log(f"q(y | x) against p(y | x) ∝ p(y) p(x | y), log p(x | y) by IWAE k={config.iwae_samples} for each class")
    found = label_posterior(vae, guide, x, config.iwae_samples, seed=config.seed)
    rows = []
    for i, index in enumerate(indices):
        q, p = found["q"][i], found["p"][i]
        rows.append({"example": index, "q": q.tolist(), "p": p.tolist(), "log_px_y": found["log_px_y"][i].tolist(),
                     "log_px": float(found["log_px"][i]), "kl_p_q": float(found["kl_p_q"][i]),
                     "class_q": int(q.argmax()), "class_p": int(p.argmax())})
        log(f"  image {index}: q(y|x) says {rows[-1]['class_q']} ({float(q.max()):.3f}), p(y|x) says "
            f"{rows[-1]['class_p']} ({float(p.max()):.3f}); KL(p ‖ q) {rows[-1]['kl_p_q']:.3f} nats")
    path = os.path.join(out, "labels.json")
    atomic_write_json(path, {"iwae_samples": config.iwae_samples, "examples": rows})
    files.append(path)
    path = os.path.join(out, "labels.png")
    plots.label_figure(found["q"], found["p"], indices, path)
    files.append(path)
    return found["p"].argmax(-1)


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


def main(opts: PosteriorOptions, _: Any = None) -> int:
    """``pyro-vae posterior``."""
    check_device(opts.device)
    result = posterior_run(opts)
    print(format_gaps(result["gaps"]))
    print(f"wrote {len(result['files'])} files to {result['out']}")
    return 0
