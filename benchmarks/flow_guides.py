"""Quality of flow guides against the diagonal Gaussian guide, same model, same budget.

For every guide and seed: the default dense VAE (MLP 784-512-256, ELU, z = 32, Bernoulli)
is trained on mnist5k (dynamic binarization) for ``--epochs`` epochs with the settings of
``pyro-vae train`` (batch 128, ClippedAdam lr 1e-3), then evaluated on the fixed binarized
test set: the ELBO on all 1,000 images (``--elbo-samples`` draws each) and the IWAE
log-likelihood with ``--iwae-samples`` importance samples from the guide itself on the first
``--iwae-images`` images (its cost is images × k). Only the guide changes between rows; a
seed fixes the initial model, the mini-batches and the binarizations. Results are appended
to ``--out`` (JSON lines; rows already there are skipped, so an interrupted run continues)
and summarised as a markdown table of mean ± standard deviation over seeds. Run::

    python benchmarks/flow_guides.py --epochs 30 --seeds 0 1 2 --flows 4 --iwae-images 300 \\
        --threads 1 --out flow_guides.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from typing import Dict, List

import pyro
import torch

from pyro_vae.infer.evaluate import evaluate
from pyro_vae.infer.trainer import TrainConfig, Trainer, set_seed
from pyro_vae import build_guide, build_vae, load_dataset


def run_one(data, guide: str, seed: int, epochs: int, flows: int, iwae_samples: int,
            options: Dict, iwae_images: int, elbo_samples: int) -> Dict:
    pyro.clear_param_store()
    set_seed(seed)
    vae = build_vae("dense", data.x_shape, z_dim=32)
    kwargs = dict(options.get(guide, {}))
    if guide != "gaussian":
        kwargs.setdefault("num_flows", flows)
    g = build_guide(guide, vae, **kwargs)
    trainer = Trainer(vae, g, data, TrainConfig(epochs=epochs, seed=seed))
    seconds = []
    for _ in range(epochs):
        seconds.append(trainer.train_epoch()["seconds"])
    start = time.perf_counter()
    # ELBO on the whole test set (mean of log w over elbo_samples draws per image); IWAE with
    # iwae_samples draws on the first iwae_images test images (the cost is images × k).
    x_test = data.eval_data("test")
    elbo = evaluate(vae, g, x_test, num_samples=elbo_samples, seed=0)
    iwae = evaluate(vae, g, x_test[:iwae_images], num_samples=iwae_samples, seed=0)
    # the same ELBO on 1,000 training images (one fixed binarization of them): how
    # much of the amortized guide's quality is specific to the data it was trained on
    train = evaluate(vae, g, data.eval_data("train")[:1000], num_samples=elbo_samples, seed=0)
    return {
        "train_elbo": train["elbo"],
        "guide": guide, "spec": g.spec, "seed": seed, "epochs": epochs,
        "elbo": elbo["elbo"], "elbo_samples": elbo_samples, "kl": elbo["kl"],
        "nll": iwae["nll"], "nll_sem": iwae["nll_sem"], "iwae_elbo": iwae["elbo"],
        "iwae_samples": iwae_samples, "iwae_images": iwae["num_examples"],
        "seconds_per_epoch": statistics.median(seconds),
        "eval_seconds": time.perf_counter() - start,
        "guide_params": sum(p.numel() for p in g.parameters()),
    }


def _mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(rows: List[Dict]) -> str:
    """Markdown table of mean ± std over seeds, one line per guide spec; gains are per-seed
    differences with the Gaussian guide of the same seed and epochs (positive = better)."""
    groups: Dict[str, List[Dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps(r["spec"], sort_keys=True), []).append(r)
    gauss = {(r["seed"], r["epochs"]): r for r in rows if r["guide"] == "gaussian"}
    lines = ["| guide | seeds | test ELBO | ELBO gain | test NLL, IWAE | NLL gain "
             "| IWAE − ELBO, same images | s/epoch* | guide params |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, rs in groups.items():
        spec = json.loads(key)
        name = spec.pop("name")
        opts = ", ".join(f"{k}={v}" for k, v in spec.items() if v is not None)
        paired = [(r, gauss[(r["seed"], r["epochs"])]) for r in rs if (r["seed"], r["epochs"]) in gauss]
        gains = "| — | " if name == "gaussian" or not paired else (
            f"| {_mean_std([r['elbo'] - g['elbo'] for r, g in paired])} | ")
        nll_gains = "| — " if name == "gaussian" or not paired else (
            f"| {_mean_std([g['nll'] - r['nll'] for r, g in paired])} ")
        lines.append(
            f"| {name}{f' ({opts})' if opts else ''} | {len(rs)} "
            f"| {_mean_std([r['elbo'] for r in rs])} {gains}"
            f"{_mean_std([r['nll'] for r in rs])} {nll_gains}"
            f"| {_mean_std([-r['nll'] - r['iwae_elbo'] for r in rs])} "
            f"| {statistics.mean(r['seconds_per_epoch'] for r in rs):.2f} "
            f"| {rs[0]['guide_params']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guides", nargs="+", default=["gaussian", "iaf", "sylvester", "planar", "realnvp", "spline"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--flows", type=int, default=4, help="num_flows of every flow guide")
    parser.add_argument("--iwae-samples", type=int, default=1000)
    parser.add_argument("--iwae-images", type=int, default=1000, help="IWAE on the first N test images")
    parser.add_argument("--elbo-samples", type=int, default=100, help="draws per image of the test ELBO")
    parser.add_argument("--guide-options", type=json.loads, default={},
                        help='JSON {guide: {option: value}}, e.g. \'{"sylvester": {"variant": "householder"}}\'')
    parser.add_argument("--out", default="flow_guides.jsonl")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and exit")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 avoids oversubscription when processes share cores)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    rows = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    if not args.table_only:
        data = load_dataset("mnist5k", binarize="dynamic")
        for seed in args.seeds:
            for guide in args.guides:
                done = any(r["guide"] == guide and r["seed"] == seed and r["epochs"] == args.epochs
                           and r["spec"].get("num_flows", args.flows) == args.flows
                           and all(r["spec"].get(k) == v for k, v in args.guide_options.get(guide, {}).items())
                           for r in rows)
                if done:
                    continue
                row = run_one(data, guide, seed, args.epochs, args.flows, args.iwae_samples,
                              args.guide_options, args.iwae_images, args.elbo_samples)
                rows.append(row)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{guide:12s} seed {seed}: ELBO {row['elbo']:.2f}  NLL {row['nll']:.2f}  "
                      f"{row['seconds_per_epoch']:.2f} s/epoch  (eval {row['eval_seconds']:.0f} s)", flush=True)
    print(table([r for r in rows if not math.isnan(r["elbo"])]))


if __name__ == "__main__":
    main()
