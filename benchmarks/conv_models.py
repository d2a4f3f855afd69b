"""Dense vs conv vs ResNet VAE on mnist5k at the same number of epochs.

Each model is trained with its default options exactly as ``pyro-vae train --model NAME
--epochs E`` would (Gaussian guide, batch 128, ClippedAdam lr 1e-3, dynamic binarization,
seed 0), through the same library call, into a run directory under ``--runs``; then the
test set is scored with IWAE (k = ``--iwae-samples``). Reported: test ELBO, test NLL
(IWAE-k), training seconds per epoch (the SVI steps only, as recorded in metrics.jsonl) and
the parameter count. Run::

    python benchmarks/conv_models.py --epochs 100 --iwae-samples 1000 --runs /tmp/bench

and then, for the cost of the Pyro machinery per model,
``python benchmarks/svi_overhead.py --model conv``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

from inference.run import DataConfig, train_run
from inference.svi import TrainConfig


def run_one(name: str, epochs: int, iwae_samples: int, runs: str, seed: int = 0) -> dict:
    run_dir = os.path.join(runs, f"{name}-{epochs}ep-seed{seed}")
    result = train_run(
        run_dir,
        model={"name": name, "z_dim": 32, "likelihood": "bernoulli", "prior": "normal"},
        guide={"name": "gaussian"},
        data=DataConfig(name="mnist5k", binarize="dynamic"),
        train=TrainConfig(epochs=epochs, seed=seed),
        iwae_samples=iwae_samples,
        progress=False,
        log=lambda line: None,
    )
    metrics = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    params = sum(t.numel() for t in torch.load(os.path.join(run_dir, "checkpoint.pt"),
                                               weights_only=True)["model_state"].values())
    seconds = [m["seconds"] for m in metrics]
    return {
        "model": name,
        "epochs": epochs,
        "elbo": result["elbo"],
        "nll": result["nll"],
        "nll_sem": result["nll_sem"],
        "iwae_samples": result["iwae_samples"],
        "seconds_per_epoch_mean": sum(seconds) / len(seconds),
        "seconds_per_epoch_median": statistics.median(seconds),
        "params": params,
        "run_dir": run_dir,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["dense", "conv", "resnet"])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/bench-conv", help="where the run directories go")
    a = p.parse_args()
    rows = []
    for name in a.models:
        row = run_one(name, a.epochs, a.iwae_samples, a.runs, a.seed)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\nmnist5k, {a.epochs} epochs, seed {a.seed}, IWAE k={a.iwae_samples}")
    print("| model | parameters | test ELBO | test NLL (IWAE) | s / epoch (median) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['elbo']:.2f} | {r['nll']:.2f} ± {r['nll_sem']:.2f} "
              f"| {r['seconds_per_epoch_median']:.2f} |")


if __name__ == "__main__":
    main()
