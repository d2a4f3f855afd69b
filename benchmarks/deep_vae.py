"""Deep VAEs on mnist5k: the hierarchical VAE against the ResNet VAE, the IWAE objective
against the ELBO, the VampPrior against the normal prior (docs/benchmarks.md, "Deep VAEs").

Each row is one ``pyro-vae train`` command (seed 0, dynamically binarized mnist5k, IWAE
k = 1000 on the 1,000 test images at the end), run one after another in this process's
working directory, each into ``--runs/NAME``; then the table is printed from the runs'
``eval.json`` and ``config.json``. Run it with one torch thread::

    OMP_NUM_THREADS=1 python benchmarks/deep_vae.py --runs runs/deep --only hvae192 resnet
    OMP_NUM_THREADS=1 python benchmarks/deep_vae.py --runs runs/deep --table-only

A run directory that already holds ``eval.json`` is not trained again (``--table-only``
trains nothing), so the rows can be run in several sittings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

#: name → the ``pyro-vae train`` flags of that row (all at the models' default 200 epochs)
RUNS = {
    "resnet": ["--model", "resnet"],
    "hvae192": ["--model", "hvae", "--set", "hidden=192"],
    "hvae": ["--model", "hvae"],
    "dense-elbo": ["--model", "dense"],
    "dense-iwae5": ["--model", "dense", "--objective", "iwae", "--particles", "5"],
    "dense-vamp": ["--model", "dense", "--prior", "vamp"],
}


def command(name: str, runs: str) -> list:
    return [sys.executable, "-m", "inference.cli", "train", *RUNS[name], "--out", os.path.join(runs, name),
            "--no-progress"]


def row(name: str, runs: str) -> str:
    run = os.path.join(runs, name)
    result = json.load(open(os.path.join(run, "eval.json")))
    config = json.load(open(os.path.join(run, "config.json")))
    import torch

    state = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)["model_state"]
    params = sum(v.numel() for k, v in state.items() if v.is_floating_point())
    layers = result.get("latent_sites", {})
    usage = ", ".join(f"{k}: {v['active_units']}/{v['dims']} (KL {v['kl']:.1f})" if v["kl"] is not None
                      else f"{k}: {v['active_units']}/{v['dims']}" for k, v in layers.items())
    train = config["train"]
    return (f"| {name} | {train.get('objective', 'elbo')}, K={train['particles']} | {params:,} | "
            f"{result['epochs']} | {result['elbo']:.2f} | {result['nll']:.2f} ± {result['nll_sem']:.2f} | "
            f"{result['kl']:.2f} | {usage} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/deep")
    p.add_argument("--only", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--table-only", action="store_true")
    a = p.parse_args()
    if not a.table_only:
        for name in a.only:
            if os.path.exists(os.path.join(a.runs, name, "eval.json")):
                continue
            print(" ".join(command(name, a.runs)), flush=True)
            subprocess.run(command(name, a.runs), check=True)
    print("| run | objective | parameters | epochs | test ELBO | test NLL, IWAE k=1000 | KL | "
          "active units per latent site |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.only:
        if os.path.exists(os.path.join(a.runs, name, "eval.json")):
            print(row(name, a.runs))


if __name__ == "__main__":
    main()
