"""Generalization and honest model selection on mnist5k (docs/benchmarks.md, "Generalization").

Every row is one ``pyro-vae train`` command (seed 0, IWAE k = 1000 on the 1,000 test images
at the end, of the weights of the best validation epoch unless the run has no validation
split), run in this process's working directory into ``--runs/NAME``; for each run the
script also evaluates the *last* epoch's weights with the same k (``NAME.last.json`` beside
the run), so that the gain of selection is measured on one training run. Then it prints
the table: the targets of issue 21 and the ablation — no validation split and the last
epoch (0.2's protocol), selection alone, + the moving average (EMA), + regularisation.
Run it with one torch thread::

    OMP_NUM_THREADS=1 python benchmarks/generalization.py --runs runs/gen --only dense-sel dense
    OMP_NUM_THREADS=1 python benchmarks/generalization.py --runs runs/gen --table-only
    OMP_NUM_THREADS=1 python benchmarks/generalization.py --runs runs/gen --only conv-nodecay conv-wd01 --valid-nll

A run directory that already holds ``eval.json`` is not trained again (``--table-only``
trains nothing), so the rows can be run in several sittings and, with ``--only``, in two
processes at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Tuple

from train_rows import print_table, train_missing

#: Flags that turn the command line's selection defaults off: no moving average.
NO_EMA = ["--ema", "0"]
#: No KL warm-up: the dense VAE's default before it warmed up (the rows measured then keep it).
NO_WARMUP = ["--kl-warmup", "0"]
#: No weight decay: the VampPrior's default before it decayed (the rows measured then keep it).
NO_DECAY = ["--weight-decay", "0"]
#: The VampPrior of the paper, K = 500 pseudo-inputs: its default before validation chose 200
#: (the rows measured then keep it).
VAMP500 = ["--prior", "vamp", "--prior-set", "components=500"]
#: The pythae comparison: one static binarization, 200 epochs.
STATIC = ["--binarize", "static", "--epochs", "200"]


def decayed(model: str, decay: str, epochs: int, *flags: str) -> Tuple[List[str], str]:
    """The row of ``model`` with decoupled weight decay λ = ``decay`` over ``epochs`` epochs
    (and ``flags``): both pinned, since the defaults of both have moved."""
    what = "no weight decay" if float(decay) == 0 else f"decoupled weight decay {decay}"
    return (["--model", model, "--weight-decay", decay, "--epochs", str(epochs), *flags],
            f"{model}{' ' + ' '.join(flags) if flags else ''}, {what}, {epochs} epochs")


#: name → (``pyro-vae train`` flags, what the row is). The rows without flags are the models'
#: defaults (5 % of the training images for validation, ema 0.999; dense: 300 epochs and a KL
#: warm-up over 50, conv 400 and resnet 500 with weight decay 0.1, hvae 400 with a KL warm-up
#: over 50 and weight decay 0.1, the others 200; dense with a static binarization: dropout 0.1;
#: `--prior vamp`: K = 200 pseudo-inputs and weight decay 0.1); the others say what they change.
RUNS = {
    # dense, dynamic binarization (the default run)
    "dense": ([], "the default `pyro-vae train`"),
    "dense-nowarm": ([*NO_WARMUP], "dense, no KL warm-up (0.3's first default)"),
    "dense-sel": ([*NO_EMA, *NO_WARMUP], "dense, selection alone"),
    "dense-wd": (["--weight-decay", "0.01", *NO_WARMUP], "dense, + weight decay 0.01"),
    "dense-d05": (["--set", "dropout=0.05", *NO_WARMUP], "dense, + dropout 0.05"),
    # dense, static binarization (the pythae comparison)
    "static-last": ([*STATIC, "--valid-fraction", "0", *NO_EMA, "--set", "dropout=0", *NO_WARMUP],
                    "static, 0.2's protocol (last epoch)"),
    "static-sel": ([*STATIC, *NO_EMA, "--set", "dropout=0", *NO_WARMUP], "static, selection alone"),
    "static-ema": ([*STATIC, "--set", "dropout=0", *NO_WARMUP], "static, + EMA"),
    "static-nowarm": ([*STATIC, *NO_WARMUP], "static, + EMA + dropout 0.1"),
    "static": ([*STATIC], "static, + EMA + dropout 0.1 + KL warm-up (the defaults)"),
    # VampPrior
    "vamp-sel": ([*VAMP500, *NO_DECAY, *NO_EMA, *NO_WARMUP], "VampPrior, selection alone"),
    "vamp-nowarm": ([*VAMP500, *NO_DECAY, *NO_WARMUP], "VampPrior, no KL warm-up"),
    "vamp": ([*VAMP500, *NO_DECAY], "VampPrior, the defaults before its weight decay"),
    "vamp-patience": ([*VAMP500, *NO_DECAY, "--patience", "10", "--ema", "0.999"], "VampPrior, patience 10"),
    "vamp-patience-nowarm": ([*VAMP500, *NO_DECAY, "--patience", "10", "--ema", "0.999", *NO_WARMUP],
                             "VampPrior, patience 10, no KL warm-up"),
    # fewer pseudo-inputs: K = 500 are 12.5 % of 3,800 training images (1 % of the paper's 50,000)
    "vamp-k50-nowarm": (["--prior", "vamp", *NO_DECAY, "--prior-set", "components=50", *NO_WARMUP],
                        "VampPrior, K = 50, no KL warm-up"),
    "vamp-k10-nowarm": (["--prior", "vamp", *NO_DECAY, "--prior-set", "components=10", *NO_WARMUP],
                        "VampPrior, K = 10, no KL warm-up"),
    # the VampPrior loosens the KL term, and the code's extra information is what over-fits: dropout
    "vamp-k50-d01": (["--prior", "vamp", *NO_DECAY, "--prior-set", "components=50", "--set", "dropout=0.1",
                      *NO_WARMUP],
                     "VampPrior, K = 50, + dropout 0.1, no KL warm-up"),
    # the VampPrior paper warms the KL term up (over 100 epochs), which made it the dense default
    "vamp-k50": (["--prior", "vamp", *NO_DECAY, "--prior-set", "components=50"], "VampPrior, K = 50"),
    # conv, resnet, hvae
    "conv-sel": (["--model", "conv", *NO_EMA], "conv, selection alone"),
    "conv": (["--model", "conv"], "conv, the defaults"),
    "resnet-sel": (["--model", "resnet", *NO_EMA], "resnet, selection alone"),
    "resnet": (["--model", "resnet"], "resnet, the defaults"),
    "hvae-sel": (["--model", "hvae", *NO_EMA], "hvae, selection alone"),
    "hvae": (["--model", "hvae"], "hvae, the defaults"),
    # their budget of 0.3's first measurement (the runs of the table's first version)
    "conv-200": (["--model", "conv", "--epochs", "200"], "conv, 200 epochs"),
    "resnet-200": (["--model", "resnet", "--epochs", "200"], "resnet, 200 epochs"),
    "hvae-200": (["--model", "hvae", "--epochs", "200", "--kl-warmup", "0"], "hvae, 200 epochs, no warm-up"),
    # the deep models' budget: their best validation epoch was the 200th of 200
    "conv-400": (["--model", "conv", "--epochs", "400"], "conv, 400 epochs"),
    "conv-400-decay": (["--model", "conv", "--epochs", "400", "--lr-decay", "0.995"],
                       "conv, 400 epochs, learning rate × 0.995 an epoch (× 0.13 by the last)"),
    # the warm-up that helps hvae and the dense VAE, for conv (0.96 short)
    "conv-warmup": (["--model", "conv", "--kl-warmup", "50"], "conv, KL warm-up over 50 epochs"),
    # a longer average (0.9995: ~2,000 steps, ~67 epochs of 30 steps) for resnet, 0.13 short
    "resnet-ema9995": (["--model", "resnet", "--epochs", "400", "--ema", "0.9995"],
                       "resnet, 400 epochs, EMA 0.9995"),
    "conv-b64": (["--model", "conv", "--epochs", "200", "--batch-size", "64"],
                 "conv, mini-batches of 64 (twice the steps)"),
    "resnet-b64": (["--model", "resnet", "--epochs", "200", "--batch-size", "64"], "resnet, mini-batches of 64"),
    "hvae-b64-warmup": (["--model", "hvae", "--epochs", "300", "--batch-size", "64", "--kl-warmup", "50"],
                        "hvae, 300 epochs of 64, KL warm-up over 50"),
    "resnet-400": (["--model", "resnet", "--epochs", "400"], "resnet, 400 epochs"),
    "hvae-400": (["--model", "hvae", "--epochs", "400", "--kl-warmup", "0"], "hvae, 400 epochs, no warm-up"),
    "hvae-400-warmup": (["--model", "hvae", "--epochs", "400", "--kl-warmup", "50"],
                        "hvae, 400 epochs, the KL weight from 0 to 1 over the first 50 (as the ladder VAE)"),
    "resnet-400-warmup": (["--model", "resnet", "--epochs", "400", "--kl-warmup", "50"],
                          "resnet, 400 epochs, the same KL warm-up"),
    # the weight decay λ of the conv, ResNet and hierarchical VAEs: the row names with -nodecay
    # are the defaults before it (a best epoch before the 400th: the 300 epochs conv had then
    # select the same weights as 400); each row names its budget, which the defaults have changed
    "conv-nodecay": decayed("conv", "0", 300),
    "conv-wd01-300": decayed("conv", "0.1", 300),
    "conv-wd03-300": decayed("conv", "0.3", 300),
    "conv-wd01": decayed("conv", "0.1", 400),
    "conv-wd03": decayed("conv", "0.3", 400),
    "resnet-nodecay": decayed("resnet", "0", 400),
    "resnet-wd002": decayed("resnet", "0.02", 400),
    "resnet-wd01": decayed("resnet", "0.1", 400),
    "resnet-wd03": decayed("resnet", "0.3", 400),
    "hvae-nodecay": decayed("hvae", "0", 300),
    "hvae-wd01": decayed("hvae", "0.1", 300),
    # the longer budgets of the runs whose best epoch was near their last (a run resumed to
    # more epochs repeats the longer run exactly)
    "hvae-wd01-400": decayed("hvae", "0.1", 400),
    "resnet-wd01-500": decayed("resnet", "0.1", 500),
    "resnet-wd01-600": decayed("resnet", "0.1", 600),
    # the hierarchical VAE as wide as the ResNet VAE's features (hidden 256, its default 192)
    "hvae-h256": decayed("hvae", "0.1", 400, "--set", "hidden=256"),
    "conv-wd01-500": decayed("conv", "0.1", 500),
    # conv-b64 (0.43 nats ahead of conv-200 at 200 epochs, still rising) with the default's decay
    "conv-b64-wd01": decayed("conv", "0.1", 400, "--batch-size", "64"),
    "dense-wd01": (["--weight-decay", "0.1"], "dense, decoupled weight decay 0.1"),
    "vamp-wd01": decayed("dense", "0.1", 300, *VAMP500),
    "vamp-wd01-300": decayed("dense", "0.1", 300, *VAMP500),  # vamp-wd01 (stopped at 223), resumed
    "vamp-k50-wd01": decayed("dense", "0.1", 300, "--prior", "vamp", "--prior-set", "components=50"),
    "vamp-k100-wd01": decayed("dense", "0.1", 300, "--prior", "vamp", "--prior-set", "components=100"),
    # K = 200 (the default since: the best validation NLL of K = 50, 100, 200, 500)
    "vamp-k200-wd01": decayed("dense", "0.1", 300, "--prior", "vamp", "--prior-set", "components=200"),
}


def command(name: str, runs: str, extra: list) -> list:
    return [sys.executable, "-m", "inference.cli", "train", *RUNS[name][0], *extra, "--out",
            os.path.join(runs, name), "--no-progress"]


def evaluate_weights(run: str, checkpoint: str, split: str, k: int = 1000) -> dict:
    """The IWAE-k evaluation of ``run``'s ``checkpoint`` weights (``best`` or ``last``) on its
    ``split``, saying which weights it is of. The last epoch on ``test`` is what selection
    gained against; the best on ``valid`` is what chooses a setting that changes the bound's
    tightness (weight decay tightens the ELBO, so the validation ELBO, which picks the best
    epoch, over-rates a large λ)."""
    from inference.evaluate import evaluate_model, record_weights
    from inference.restore import load_data, load_run

    model, guide, config, payload = load_run(run, checkpoint=checkpoint)
    data = load_data(run, config.data)
    return record_weights(evaluate_model(model, guide, data, split, k), payload, config)


def valid_row(name: str, runs: str) -> str:
    run = os.path.join(runs, name)
    result = json.load(open(os.path.join(run, "eval.json")))
    valid = json.load(open(os.path.join(runs, f"{name}.valid.json")))
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return (f"| {name} | {RUNS[name][1]} | {result.get('best_epoch') or '—'} | {metrics[-1]['best_valid_elbo']:.2f} | "
            f"{valid['nll']:.2f} | {result['elbo']:.2f} | **{result['nll']:.2f}** ± {result['nll_sem']:.2f} | "
            f"{-result['elbo'] - result['nll']:.2f} | {sum(m['seconds'] for m in metrics):.0f} |")


def row(name: str, runs: str) -> str:
    run = os.path.join(runs, name)
    result = json.load(open(os.path.join(run, "eval.json")))
    last_path = os.path.join(runs, f"{name}.last.json")
    last = json.load(open(last_path)) if os.path.exists(last_path) else None
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    seconds = sum(m["seconds"] for m in metrics)
    best = result.get("best_epoch") or "—"
    stop = f"stopped at {result['epochs']}" if result.get("stopped_early") else f"{result['epochs']}"
    last_text = f"{last['nll']:.2f}" if last else "—"
    gain = f"{last['nll'] - result['nll']:+.2f}" if last else "—"
    return (f"| {name} | {RUNS[name][1]} | {stop} | {best} | {result['elbo']:.2f} | "
            f"**{result['nll']:.2f}** ± {result['nll_sem']:.2f} | {last_text} | {gain} | {seconds:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/gen")
    p.add_argument("--only", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--skip-last", action="store_true",
                   help="do not evaluate the last epoch's weights (an IWAE-1000 evaluation of a conv decoder "
                        "costs as much as a third of its training)")
    p.add_argument("--valid-nll", action="store_true",
                   help="also evaluate the best weights on the validation split (IWAE k = 1000; NAME.valid.json "
                        "beside the run) and print the table that chooses the weight decay")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train flags for every row")
    a = p.parse_args()
    if not a.table_only:
        train_missing(a.only, a.runs, lambda name: command(name, a.runs, a.extra))
        for name in a.only:
            last = os.path.join(a.runs, f"{name}.last.json")
            if not os.path.exists(last) and not a.skip_last:
                # written once evaluated: a kill leaves none
                result = evaluate_weights(os.path.join(a.runs, name), "last", "test")
                with open(last, "w") as f:
                    json.dump(result, f, indent=1)
    if a.valid_nll:
        for name in a.only:
            path = os.path.join(a.runs, f"{name}.valid.json")
            if os.path.exists(os.path.join(a.runs, name, "eval.json")) and not os.path.exists(path):
                result = evaluate_weights(os.path.join(a.runs, name), "best", "valid")
                with open(path, "w") as f:
                    json.dump(result, f, indent=1)
        print_table(["run", "what", "best epoch", "best valid ELBO", "valid NLL (k=1000)", "test ELBO",
                     "test NLL (k=1000)", "test −ELBO − NLL", "train s"], a.only, a.runs, valid_row)
        return
    print_table(["run", "what", "epochs", "best epoch", "test ELBO", "test NLL (k=1000), selected",
                 "NLL of the last epoch", "gain of selection", "train s"], a.only, a.runs, row)


if __name__ == "__main__":
    main()
