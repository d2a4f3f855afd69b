"""Data-parallel scaling on CPUs: training samples per second in one process and in two
(gloo, one torch thread each), and how far two processes' parameters are from one's.

For each model, every world size trains the engine (:class:`pyro_vae.infer.trainer.Trainer`,
DDP for two processes) on the same global mini-batches of ``--batch-size`` images; after
``--warmup`` steps, ``--steps`` steps are timed (wall clock of rank 0, the gradient
all-reduce included). The parameter check runs ``--check-steps`` steps with a noise-free
guide (q = δ(μ_φ(x))), so one process and two see identical draws and any difference is
the arithmetic of the all-reduce (float32). Run::

    python benchmarks/ddp_scaling.py --models conv resnet
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import torch
import torch.multiprocessing as mp

from pyro_vae.guides.base import JointGuide


class DeltaGuide(JointGuide):
    """q(z | x) = δ(μ_φ(x)) (no noise)."""

    def _distribution(self, x):
        import pyro.distributions as dist

        return dist.Delta(self.vae.encoder.loc_scale(self.vae.encoder.features(x))[0], event_dim=1)


def _worker(rank, world, model, batch, warmup, steps, check_steps, port, out, compression="none", compile=False,
            sync=True):
    import pyro

    from pyro_vae import build_vae, load_dataset
    from pyro_vae.infer.config import TrainConfig
    from pyro_vae.infer.trainer import Trainer

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    data = load_dataset("mnist5k")
    gen = torch.Generator().manual_seed(0)
    batches = [x for x, _ in zip(data.batches("train", batch, generator=gen, drop_last=True), range(16))]
    result = {}
    for guide_name in ("gaussian", "delta"):
        pyro.set_rng_seed(0)
        vae = build_vae(model, data.x_shape, z_dim=32)
        guide = vae.guide if guide_name == "gaussian" else DeltaGuide(vae)
        trainer = Trainer(vae, guide, data, TrainConfig(grad_compression=compression,
                                                        compile=compile and guide_name == "gaussian"))
        n = warmup + steps if guide_name == "gaussian" else check_steps
        # sync=False: each process steps on its own shard without the all-reduce (DDP's
        # no_sync), the cost of two processes computing side by side on the machine
        alone = trainer._loss.no_sync() if world > 1 and not sync else contextlib.nullcontext()
        with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False), alone:
            for i in range(n):
                if guide_name == "gaussian" and i == warmup:
                    if world > 1:
                        torch.distributed.barrier()
                    start = time.perf_counter()
                x = batches[i % len(batches)]
                trainer.step(torch.tensor_split(x, world)[rank], global_batch=len(x)).item()
        if guide_name == "gaussian":
            result["seconds"] = time.perf_counter() - start
        else:
            result["params"] = {k: v.clone() for k, v in vae.state_dict().items()}
    if rank == 0:
        torch.save(result, out)
    if world > 1:
        torch.distributed.destroy_process_group()


def measure(model, world, batch, warmup, steps, check_steps, compression="none", compile=False, sync=True):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.pt")
        args = (world, model, batch, warmup, steps, check_steps, 29600 + os.getpid() % 300, out, compression,
                compile, sync)
        if world == 1:
            _worker(0, *args)
        else:
            mp.spawn(_worker, args=args, nprocs=world, join=True)
        return torch.load(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["conv", "resnet"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--check-steps", type=int, default=20)
    p.add_argument("--compressions", nargs="+", default=["none"], help="none | fp16 | bf16 (each a row)")
    p.add_argument("--compile", action="store_true", help="the compiled step in both (TrainConfig.compile)")
    p.add_argument("--ceiling", action="store_true",
                   help="also what bounds the speed-up on this machine: one process on half a batch, and two "
                        "processes on their halves without the all-reduce")
    a = p.parse_args()
    print(f"batch {a.batch_size} (global), {a.steps} timed steps, 1 torch thread per process, gloo"
          + (", compiled step" if a.compile else ""))
    print("| model | gradients | 1 process: samples/s | 2 processes: samples/s | speed-up | "
          f"max |Δθ| after {a.check_steps} steps (noise-free guide) |")
    print("|---|---|---|---|---|---|")
    for model in a.models:
        one = measure(model, 1, a.batch_size, a.warmup, a.steps, a.check_steps, compile=a.compile)
        for compression in a.compressions:
            two = measure(model, 2, a.batch_size, a.warmup, a.steps, a.check_steps, compression, a.compile)
            rate = [a.steps * a.batch_size / r["seconds"] for r in (one, two)]
            diff = max(float((one["params"][k] - two["params"][k]).abs().max()) for k in one["params"])
            print(f"| {model} | {compression} | {rate[0]:.0f} | {rate[1]:.0f} | {rate[1] / rate[0]:.2f}× | "
                  f"{diff:.1e} |")
        if a.ceiling:
            half = measure(model, 1, a.batch_size // 2, a.warmup, a.steps, 0)
            alone = measure(model, 2, a.batch_size, a.warmup, a.steps, 0, sync=False)
            rate = [a.steps * b / r["seconds"] for b, r in ((a.batch_size, one), (a.batch_size // 2, half),
                                                             (a.batch_size, alone))]
            print(f"| {model} | ceiling: 1 process on {a.batch_size // 2} images a step | {rate[0]:.0f} | "
                  f"{2 * rate[1]:.0f} (2 × {rate[1]:.0f}) | {2 * rate[1] / rate[0]:.2f}× | — |")
            print(f"| {model} | ceiling: 2 processes, no all-reduce | {rate[0]:.0f} | {rate[2]:.0f} | "
                  f"{rate[2] / rate[0]:.2f}× | — |")


if __name__ == "__main__":
    main()
