"""``--elbo meanfield`` against ``--elbo trace``: the same ELBO, another estimator
(docs/benchmarks.md, "Speed and scale").

For the default dense VAE trained ``--epochs`` epochs by the engine (``Trace_ELBO``), on one
fixed mini-batch of 128 training images, ``--draws`` independent evaluations of each
estimator of the per-image −ELBO and of its gradient: their means (equal, up to Monte Carlo
error: both estimate the same ELBO), the standard deviation of the loss, and the mean
squared deviation of the gradient from the average gradient (over all parameters, relative
to the squared norm of that average) — the noise each estimator puts into a step. Then the
step time of each, interleaved (``--rounds`` rounds of ``--steps`` steps)::

    OMP_NUM_THREADS=1 python benchmarks/meanfield.py --epochs 20
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import pyro
import torch

from pyro_vae import build_vae, load_dataset
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.elbo import make_elbo
from pyro_vae.infer.trainer import Trainer


def _draws(loss, params, x, n_data, draws):
    values, grads = [], []
    for _ in range(draws):
        value = loss(x, num_data=n_data)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)]))
        values.append(float(value.detach()) / n_data)
    grads = torch.stack(grads)
    mean = grads.mean(0)
    noise = float(((grads - mean) ** 2).sum(1).mean() / mean.pow(2).sum())
    return statistics.mean(values), statistics.stdev(values), noise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    data = load_dataset("mnist5k")
    vae = build_vae("dense", data.x_shape)
    config = TrainConfig(epochs=a.epochs)
    trainer = Trainer(vae, vae.guide, data, config)
    with pyro.settings.context(module_local_params=True):
        for _ in range(a.epochs):
            trainer.train_epoch()
        x = next(data.batches("train", 128, shuffle=True, generator=torch.Generator().manual_seed(1)))
        params = [q for q in list(vae.parameters()) + list(vae.guide.parameters()) if q.requires_grad]
        params = list({id(q): q for q in params}.values())
        n = len(data.train)
        print(f"dense VAE after {a.epochs} epochs; one batch of 128; {a.draws} draws of each estimator")
        print("| estimator | −ELBO per image (mean) | its std over draws | gradient noise ‖g − ḡ‖² / ‖ḡ‖² |")
        print("|---|---|---|---|")
        losses = {}
        with pyro.validation_enabled(False):
            for name in ("trace", "meanfield"):
                losses[name] = make_elbo(dataclasses.replace(config, elbo=name))(vae, vae.guide)
                mean, std, noise = _draws(losses[name], params, x, n, a.draws)
                print(f"| {name} | {mean:.3f} | {std:.3f} | {noise:.4f} |")
            times = {name: [] for name in losses}
            for _ in range(a.rounds):
                for name, loss in losses.items():
                    start = time.perf_counter()
                    for _ in range(a.steps):
                        value = loss(x, num_data=n)
                        value.backward()
                        value.item()
                    times[name].append((time.perf_counter() - start) / a.steps * 1e3)
        base = statistics.median(times["trace"])
        for name, t in times.items():
            print(f"{name}: {statistics.median(t):.2f} ms per forward + backward ({statistics.median(t) / base:.3f}× trace)")


if __name__ == "__main__":
    main()
