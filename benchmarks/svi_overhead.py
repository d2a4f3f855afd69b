"""Time of one Pyro SVI step divided by the time of a hand-written PyTorch step.

Both steps train the same networks (the default dense VAE, or ``--model conv`` / ``resnet``
/ any registered Bernoulli VAE with its default options) on the same mini-batches. The
hand-written step draws z = μ + σ·ε, uses the closed-form Gaussian KL and the Bernoulli
log-likelihood, and updates with the same ClippedAdam algorithm in one torch optimizer;
the Pyro steps are ``SVI.step`` with ``Trace_ELBO``. Variants, from naive to what
``pyro-vae train`` runs:

* ``naive``     — ``pyro.optim.ClippedAdam`` (one torch optimizer per parameter tensor),
                  Pyro's validation on (its default);
* ``fused``     — :class:`pyro_vae.infer.optim.FusedClippedAdam` (one optimizer, gradients
                  released after the step instead of zero-filled);
* ``fused+noval`` — and per-step validation off (data are validated once at load): this is
                  the step of :class:`pyro_vae.infer.trainer.Trainer`;
* ``jit``       — and ``JitTrace_ELBO`` (what ``pyro-vae train --jit`` was);
* ``uncaptured`` — the step of :class:`pyro_vae.infer.trainer.Trainer` with
                  ``TrainConfig(capture=False)``: Pyro's ``ELBOModule``
                  (``SyncFreeTrace_ELBO()(vae, vae.guide)``), its handlers run at every step,
                  ``backward`` and the torch ClippedAdam, parameters local to the modules (no
                  param store), no TorchScript;
* ``engine``    — the Trainer's default step: the same ``ELBOModule``'s operations captured
                  once per batch shape and replayed (the same loss and gradients to the bit;
                  :class:`pyro_vae.infer.compiled.CompiledLoss` with ``compile=False``);
* ``compiled``  — the same step with ``TrainConfig(compile=True)``: the Pyro program captured
                  once into one graph and compiled by ``torch.compile``
                  (:class:`pyro_vae.infer.compiled.CompiledLoss`; CUDA graphs on a GPU).

Timing is interleaved: each round times ``--steps`` hand-written steps and ``--steps`` steps
of every variant back to back, and the reported ratio is the median over rounds of the
per-round ratio, so drifts in machine load cancel. Run::

    python benchmarks/svi_overhead.py --batch-size 128 --rounds 15
    python benchmarks/svi_overhead.py --model conv --variants fused+noval jit --rounds 9
    python benchmarks/svi_overhead.py --hidden 8 --z-dim 2 --variants uncaptured engine compiled   # tiny
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.optim import ClippedAdam
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam
from torch.nn import functional as F

from pyro_vae.infer.optim import FusedClippedAdam
from pyro_vae import build_vae, load_dataset


#: the engine's variants: their TrainConfig settings
ENGINE_VARIANTS = {"uncaptured": {"capture": False}, "engine": {}, "compiled": {"compile": True}}


def hand_step_factory(vae, num_data, lr):
    opt = TorchClippedAdam(list(vae.parameters()), lr=lr, clip_norm=10.0 * num_data)

    def step(x):
        loc, scale = vae.encoder.loc_scale(vae.encoder.features(x))
        z = loc + scale * torch.randn_like(loc)  # reparameterization
        logits = vae.decoder(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * scale.log()).sum()  # closed form
        loss = (rec + kl) * (num_data / x.shape[0])  # same full-data scale as the plate
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def engine_step_factory(vae, num_data, lr, data, **config):
    from pyro_vae.infer.config import TrainConfig
    from pyro_vae.infer.trainer import Trainer

    trainer = Trainer(vae, vae.guide, data, TrainConfig(lr=lr, **config))

    def step(x):  # as Trainer.train_epoch runs it: validation off, parameters in the modules
        with pyro.validation_enabled(False), pyro.settings.context(module_local_params=True):
            return trainer.step(x).item()

    return step


def pyro_step_factory(vae, num_data, lr, variant):
    params = list(vae.parameters())
    args = {"lr": lr, "clip_norm": 10.0 * num_data}
    optim = ClippedAdam(args) if variant == "naive" else FusedClippedAdam(args, params=params)
    elbo = (JitTrace_ELBO(max_plate_nesting=1, ignore_jit_warnings=True) if variant == "jit"
            else Trace_ELBO(max_plate_nesting=1))
    svi = SVI(vae.model, vae.guide, optim, elbo)
    validate = variant in ("naive", "fused")

    def step(x):
        with pyro.validation_enabled(validate):
            return svi.step(x, num_data=num_data, kl_scale=1.0)

    return step


def time_steps(step, batches, n):
    # every step ends in .item() (the loss), so the clock sees the device's work too
    start = time.perf_counter()
    for i in range(n):
        step(batches[i % len(batches)])
    return (time.perf_counter() - start) / n


def run(batch_size=128, rounds=15, steps=40, variants=("naive", "fused", "fused+noval", "jit", "engine"),
        hidden=(512, 256), z_dim=32, threads=None, model="dense", device="cpu"):
    if threads:
        torch.set_num_threads(threads)
    pyro.set_rng_seed(0)
    data = load_dataset("mnist5k")
    num_data = len(data.train)
    batches = [x.to(device) for x in list(data.batches("train", batch_size, drop_last=True))[:16]]
    results = {}
    steps_by_name = {}
    for name in ("hand", *variants):
        pyro.clear_param_store()
        torch.manual_seed(0)
        options = {"hidden_dims": hidden} if model == "dense" else {}
        vae = build_vae(model, data.x_shape, z_dim=z_dim, **options).to(device)
        if name == "hand":
            steps_by_name[name] = hand_step_factory(vae, num_data, 1e-4)
        elif name in ENGINE_VARIANTS:
            steps_by_name[name] = engine_step_factory(vae, num_data, 1e-4, data, **ENGINE_VARIANTS[name])
        else:
            steps_by_name[name] = pyro_step_factory(vae, num_data, 1e-4, name)
        time_steps(steps_by_name[name], batches, 10)  # warm-up (and JIT compilation, capture)
    times = {name: [] for name in steps_by_name}
    for _ in range(rounds):
        for name, step in steps_by_name.items():
            times[name].append(time_steps(step, batches, steps))
    for name in variants:
        ratios = [t / h for t, h in zip(times[name], times["hand"])]
        results[name] = {
            "ms": 1e3 * statistics.median(times[name]),
            "ratio": statistics.median(ratios),
            "ratio_iqr": (statistics.quantiles(ratios, n=4)[0], statistics.quantiles(ratios, n=4)[2]),
        }
    results["hand"] = {"ms": 1e3 * statistics.median(times["hand"]), "ratio": 1.0}
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", nargs="+", default=["naive", "fused", "fused+noval", "jit", "engine"])
    p.add_argument("--model", default="dense", help="a registered Bernoulli VAE, default options")
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 256], help="dense: hidden widths")
    p.add_argument("--z-dim", type=int, default=32)
    a = p.parse_args()
    res = run(a.batch_size, a.rounds, a.steps, tuple(a.variants), hidden=tuple(a.hidden), z_dim=a.z_dim,
              threads=a.threads, model=a.model, device=a.device)
    what = (f"dense VAE ({'-'.join(map(str, a.hidden))}, z={a.z_dim})" if a.model == "dense"
            else f"{a.model} VAE (default options, z={a.z_dim})")
    print(f"{what}, batch {a.batch_size}, {a.device}, torch threads {torch.get_num_threads()}")
    print("| step | ms / step | ratio to hand-written (median, IQR) |")
    print("|---|---|---|")
    print(f"| hand-written PyTorch | {res['hand']['ms']:.2f} | 1 |")
    for name in a.variants:
        r = res[name]
        lo, hi = r["ratio_iqr"]
        print(f"| pyro {name} | {r['ms']:.2f} | {r['ratio']:.3f} ({lo:.3f}–{hi:.3f}) |")


if __name__ == "__main__":
    main()
