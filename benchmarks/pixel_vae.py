"""PixelVAE vs conv and dense VAEs on mnist5k, and the cost of autoregressive sampling.

For each model: train for the same number of epochs with the same optimiser settings, then
report the test ELBO, the IWAE NLL (the same k for every model), the KL term, the active
units (Burda et al. 2015) and seconds per epoch. Then time drawing 64 images of 28×28 from
the PixelVAE's decoder with and without the sampler's cache. Run::

    python benchmarks/pixel_vae.py --epochs 20 --iwae-samples 100 --out /tmp/pixel_bench

The models are trained with ``pyro_vae.infer.trainer.Trainer``, as ``pyro-vae train`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pyro
import torch

from pyro_vae.infer.evaluate import evaluate
from pyro_vae.infer.usage import latent_usage
from pyro_vae.infer.trainer import TrainConfig, Trainer
from pyro_vae import build_guide, build_vae, load_dataset


def train_and_evaluate(name, data, epochs, iwae_samples, seed, train_options, model_options):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = build_vae(name, data.x_shape, z_dim=32, **model_options)
    guide = build_guide("gaussian", vae)
    trainer = Trainer(vae, guide, data, TrainConfig(epochs=epochs, seed=seed, **train_options))
    history = []
    for _ in range(epochs):
        m = trainer.train_epoch()
        history.append({k: m[k] for k in ("epoch", "valid_elbo", "valid_kl", "seconds")})
        print(f"{name} epoch {m['epoch']}: validation ELBO {m['valid_elbo']:.2f} KL {m['valid_kl']:.2f} "
              f"({m['seconds']:.1f} s)", flush=True)
    x = data.eval_data("test")
    result = evaluate(vae, guide, x, num_samples=iwae_samples, seed=0)
    usage = latent_usage(vae, guide, x)
    return vae, {
        "model": name,
        "epochs": epochs,
        "test_elbo": result["elbo"],
        "nll": result["nll"],
        "nll_sem": result["nll_sem"],
        "kl": result["kl"],
        "active_units": usage["active_units"],
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
        "iwae_samples": iwae_samples,
        "history": history,
    }


def time_sampling(vae, n=64, seed=0):
    out = {}
    for cache in (True, False):
        torch.manual_seed(seed)
        z = vae.prior().sample((n,))
        d = vae.decoder.distribution(z)
        d.cache = cache
        start = time.perf_counter()
        d.sample()
        out["cached" if cache else "naive"] = time.perf_counter() - start
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--iwae-samples", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["dense", "conv", "pixel"])
    p.add_argument("--free-bits", type=float, default=0.25)
    p.add_argument("--kl-warmup", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="directory for results.json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    data = load_dataset("mnist5k", binarize="dynamic", valid_fraction=0.1)  # curves on validation
    rows = []
    pixel = None
    for name in a.models:
        train_options = {}
        if name == "pixel":
            train_options = {"free_bits": a.free_bits, "kl_warmup": a.kl_warmup}
        vae, row = train_and_evaluate(name, data, a.epochs, a.iwae_samples, a.seed, train_options, {})
        rows.append(row)
        if name == "pixel":
            pixel = vae
    sampling = time_sampling(pixel) if pixel is not None else None
    if pixel is not None and a.out:
        from inference.plots import save_grid

        os.makedirs(a.out, exist_ok=True)
        torch.manual_seed(a.seed)
        save_grid(pixel.generate(64), os.path.join(a.out, "pixel_samples.png"))
    print(f"\nmnist5k, {a.epochs} epochs, seed {a.seed}, IWAE k={a.iwae_samples} on 1000 test images")
    print("| model | test ELBO | test NLL (IWAE) | KL | active units | s / epoch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['test_elbo']:.2f} | {r['nll']:.2f} ± {r['nll_sem']:.2f} | "
              f"{r['kl']:.2f} | {r['active_units']} | {r['seconds_per_epoch']:.1f} |")
    if sampling:
        print(f"\nsampling 64 images 28×28 from the PixelVAE decoder: cached {sampling['cached']:.1f} s, "
              f"naive {sampling['naive']:.1f} s ({sampling['naive'] / sampling['cached']:.1f}× faster)")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump({"rows": rows, "sampling": sampling, "args": vars(a)}, f, indent=2)


if __name__ == "__main__":
    main()
