"""Dense vs conv vs ResNet VAE on mnist5k at the same number of epochs.

Each model is trained with its default options exactly as ``pyro-vae train --model NAME
--epochs E`` would (Gaussian guide, batch 128, ClippedAdam lr 1e-3, dynamic binarization,
seed 0), through the same library call, into a run directory under ``--runs``; then the
test set is scored with IWAE (k = ``--iwae-samples``). Reported: test ELBO, test NLL
(IWAE-k), training seconds per epoch (the SVI steps only, as recorded in metrics.jsonl) and
the parameter count. Run::

    python benchmarks/conv_models.py --epochs 100 --iwae-samples 1000 --runs /tmp/bench

and then, for the cost of the Pyro machinery per model,
``python benchmarks/svi_overhead.py --model conv``. Seconds per epoch from separate runs
drift with the machine's load; ``--step-times`` instead times the training step (the
``Trainer``'s SVI step, batch 128) of every model interleaved in one process, so that the
relative costs survive a shared machine::

    python benchmarks/conv_models.py --step-times --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import pyro
import torch

from inference.checkpoint import build_from_checkpoint, load_checkpoint
from inference.config import DataConfig, RunConfig
from inference.train import train_run
from pyro_vae.infer.config import TrainConfig


def run_one(name: str, epochs: int, iwae_samples: int, runs: str, seed: int = 0) -> dict:
    run_dir = os.path.join(runs, f"{name}-{epochs}ep-seed{seed}")
    config = RunConfig(
        model={"name": name, "z_dim": 32, "likelihood": "bernoulli"},
        guide={"name": "gaussian"},
        prior={"name": "normal"},
        data=DataConfig(name="mnist5k", binarize="dynamic"),
        train=TrainConfig(epochs=epochs, seed=seed),
        iwae_samples=iwae_samples,
    )
    result = train_run(run_dir, config, progress=False, log=lambda line: None)
    metrics = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    vae, _ = build_from_checkpoint(load_checkpoint(os.path.join(run_dir, "checkpoint.pt")))
    params = sum(t.numel() for t in vae.parameters())
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


def step_times(models, rounds: int = 9, steps: int = 5) -> dict:
    """Median milliseconds per training step of each model, timed in interleaved rounds."""
    import time

    from pyro_vae.infer.trainer import Trainer
    from pyro_vae import build_guide, build_vae, load_dataset

    data = load_dataset("mnist5k", binarize="dynamic")
    x = next(data.batches("train", 128, shuffle=False))
    trainers = {}
    for name in models:
        vae = build_vae(name, data.x_shape, z_dim=32)
        trainer = Trainer(vae, build_guide("gaussian", vae), data, TrainConfig())
        trainers[name] = trainer
    times = {name: [] for name in models}
    for r in range(rounds + 1):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            with pyro.validation_enabled(False):  # as Trainer.train_epoch runs its steps
                for _ in range(steps):
                    trainer.svi.step(x, num_data=len(data.train))
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - start) / steps * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["dense", "conv", "resnet"])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/bench-conv", help="where the run directories go")
    p.add_argument("--step-times", action="store_true", help="only time the training steps")
    p.add_argument("--rounds", type=int, default=9, help="rounds of --step-times")
    a = p.parse_args()
    if a.step_times:
        ms = step_times(a.models, a.rounds)
        print(f"torch threads {torch.get_num_threads()}, batch 128, median of {a.rounds} rounds")
        print("| model | ms / step | relative to " + a.models[0] + " |")
        print("|---|---|---|")
        for name, t in ms.items():
            print(f"| {name} | {t:.1f} | {t / ms[a.models[0]]:.2f} |")
        return
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
