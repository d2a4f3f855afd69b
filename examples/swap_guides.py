"""One model, several guides, the same budget: only the name of the guide changes.

    python examples/swap_guides.py --epochs 20 --guides gaussian iaf sylvester --flows 4

Each guide is paired with a freshly initialised dense VAE (same seed, so the same initial
model weights and mini-batches) and trained by the same SVI loop; then the test ELBO and
the IWAE estimate of the test NLL (nats, k importance samples from the guide) are printed
with the seconds per epoch.
"""

import argparse

import pyro

from pyro_vae.infer.evaluate import evaluate
from pyro_vae.infer.trainer import TrainConfig, Trainer, set_seed
from pyro_vae import GUIDES, build_guide, build_vae, load_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--guides", nargs="+", default=["gaussian", "planar", "iaf", "sylvester"],
                    help=f"any of: {', '.join(GUIDES.names())}")
parser.add_argument("--flows", type=int, default=4)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--z-dim", type=int, default=32)
parser.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
parser.add_argument("--train-size", type=int, default=None)
parser.add_argument("--test-size", type=int, default=None)
parser.add_argument("--iwae-samples", type=int, default=1000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

data = load_dataset("mnist5k", binarize="dynamic", train_size=args.train_size, test_size=args.test_size)
x_test = data.eval_data("test")
rows = []
for name in args.guides:
    pyro.clear_param_store()
    set_seed(args.seed)  # the same initial model and the same mini-batches for every guide
    vae = build_vae("dense", data.x_shape, z_dim=args.z_dim, hidden=args.hidden)
    guide = build_guide(name, vae, **({} if name == "gaussian" else {"num_flows": args.flows}))
    trainer = Trainer(vae, guide, data, TrainConfig(epochs=args.epochs, seed=args.seed))
    seconds = sum(trainer.train_epoch()["seconds"] for _ in range(args.epochs))
    result = evaluate(vae, guide, x_test, num_samples=args.iwae_samples, seed=0)
    rows.append((name, result["elbo"], result["nll"], seconds / args.epochs))
    print(f"trained {name}", flush=True)

print(f"\n{'guide':<12} {'test ELBO':>10} {f'NLL (IWAE k={args.iwae_samples})':>20} {'s/epoch':>8}")
for name, elbo, nll, sec in rows:
    print(f"{name:<12} {elbo:>10.2f} {nll:>20.2f} {sec:>8.2f}")
