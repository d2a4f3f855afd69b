"""Deep VAEs on mnist5k: the hierarchical VAE against the ResNet VAE, the IWAE objective
against the ELBO, the VampPrior against the normal prior (docs/benchmarks.md, "Deep VAEs").

Each row is one ``pyro-vae train`` command (seed 0, dynamically binarized mnist5k, IWAE
k = 1000 on the 1,000 test images at the end), run one after another in this process's
working directory, each into ``--runs/NAME``; then the table is printed from the runs'
``eval.json`` and ``config.json``. Run it with one torch thread::

    OMP_NUM_THREADS=1 python benchmarks/deep_vae.py --runs runs/deep --only hvae192 resnet
    OMP_NUM_THREADS=1 python benchmarks/deep_vae.py --runs runs/deep --table-only

A run directory that already holds ``eval.json`` is not trained again (``--table-only``
trains nothing), so the rows can be run in several sittings. The figures of a hierarchical
run (samples and reconstructions; what each layer controls)::

    python benchmarks/deep_vae.py --figures runs/deep/hvae192 --figure-dir docs/figures
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from train_rows import print_table, train_missing

#: name → the ``pyro-vae train`` flags of that row (all at the models' default 200 epochs)
RUNS = {
    "resnet": ["--model", "resnet"],
    "hvae192": ["--model", "hvae", "--set", "hidden=192"],   # = the default `--model hvae`
    "hvae192-iaf": ["--model", "hvae", "--set", "hidden=192", "--guide", "iaf", "--flows", "2",
                    "--guide-set", "hidden_dims=[64]"],
    "hvae192-L3": ["--model", "hvae", "--set", "hidden=192", "--set", "levels=3"],
    "hvae192-iwae5": ["--model", "hvae", "--set", "hidden=192", "--objective", "iwae", "--particles", "5"],
    "dense-elbo": ["--model", "dense"],
    "dense-iwae5": ["--model", "dense", "--objective", "iwae", "--particles", "5"],
    "dense-vamp": ["--model", "dense", "--prior", "vamp", "--prior-set", "components=500"],  # the paper's K
    "dense-vamp50": ["--model", "dense", "--prior", "vamp", "--prior-set", "components=50"],
}


def command(name: str, runs: str) -> list:
    return [sys.executable, "-m", "inference.cli", "train", *RUNS[name], "--out", os.path.join(runs, name),
            "--no-progress"]


def row(name: str, runs: str) -> str:
    run = os.path.join(runs, name)
    result = json.load(open(os.path.join(run, "eval.json")))
    config = json.load(open(os.path.join(run, "config.json")))
    from inference.restore import load_run

    model, guide, _, _ = load_run(run)
    params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in guide.parameters())
    layers = result.get("latent_sites", {})
    usage = ", ".join(f"{k}: {v['active_units']}/{v['dims']} (KL {v['kl']:.1f})" if v["kl"] is not None
                      else f"{k}: {v['active_units']}/{v['dims']}" for k, v in layers.items())
    train = config["train"]
    return (f"| {name} | {train.get('objective', 'elbo')}, K={train['particles']} | {params:,} | "
            f"{result['epochs']} | {result['elbo']:.2f} | {result['nll']:.2f} ± {result['nll_sem']:.2f} | "
            f"{result['kl']:.2f} | {usage} |")


def figures(run_dir: str, out_dir: str, seed: int = 0, images: int = 8, draws: int = 7) -> None:
    """``hvae_samples.png`` (8 rows: 32 samples of the model, then 16 test digits above their
    reconstructions) and ``hvae_layers.png`` (what each layer controls: per test digit, its
    reconstruction and ``draws`` images with z_l resampled from p(z_l | z_>l) for l ≤ k, the
    layers above k kept at the guide's means; one row per digit and k = 1 … L−1)."""
    import pyro
    import torch
    from pyro import poutine

    from inference.plots import reconstruction_grid, save_grid
    from inference.restore import load_run
    from pyro_vae.data import load_dataset

    vae, guide, config, _ = load_run(run_dir)
    data = load_dataset(**config.data.load_kwargs())
    x = data.eval_data("test")[:images * 2]
    sites = list(vae.latent_sites)
    torch.manual_seed(seed)
    with torch.no_grad():
        top = torch.cat([vae.generate(32), reconstruction_grid(x[:16], vae.reconstruct(x[:16], guide))])
        save_grid(top, os.path.join(out_dir, "hvae_samples.png"), nrow=8)
        means = vae.split_latents(guide.location(x[:images]))  # layer by layer, given the means above
        rows = []
        for k in range(1, len(sites)):  # resample the k lowest layers z_k … z_1
            kept = {name: means[name] for name in sites[: len(sites) - k]}
            for i in range(images):
                cond = {name: v[i].expand(draws, -1) for name, v in kept.items()}
                with pyro.plate("data", draws):
                    trace = poutine.trace(poutine.condition(vae.latents, data=cond)).get_trace()
                z = vae.join_latents({n: trace.nodes[n]["value"] for n in sites})
                rows.append(torch.cat([x[i : i + 1], vae.decode(vae.join_latents(means)[i : i + 1]),
                                       vae.decode(z)]))
        save_grid(torch.cat(rows), os.path.join(out_dir, "hvae_layers.png"), nrow=draws + 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/deep")
    p.add_argument("--only", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--figures", default=None, metavar="RUN_DIR", help="draw the figures of a hierarchical run")
    p.add_argument("--figure-dir", default="docs/figures")
    a = p.parse_args()
    if a.figures:
        figures(a.figures, a.figure_dir)
        return
    if not a.table_only:
        train_missing(a.only, a.runs, lambda name: command(name, a.runs))
    print_table(["run", "objective", "parameters", "epochs", "test ELBO", "test NLL, IWAE k=1000", "KL",
                 "active units per latent site"], a.only, a.runs, row)


if __name__ == "__main__":
    main()
