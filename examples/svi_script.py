"""A VAE trained by Pyro's SVI in ten lines: the model and guide are plain Pyro programs.

    python examples/svi_script.py --epochs 20
"""

import argparse

from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_vae import build_vae, load_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--train-size", type=int, default=None)
args = parser.parse_args()

# --- the ten lines -------------------------------------------------------------------
data = load_dataset("mnist5k", binarize="dynamic", train_size=args.train_size)
vae = build_vae("dense", x_shape=data.x_shape, z_dim=32)
svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": 1e-3}), Trace_ELBO())
n = len(data.train)
for epoch in range(args.epochs):
    # each step returns −ELBO of the *whole* training set, estimated from one mini-batch
    losses = [svi.step(x, num_data=n) for x in data.batches("train", batch_size=128)]
    print(f"epoch {epoch + 1}: train ELBO {-sum(losses) / len(losses) / n:.2f} nats per image")
# -------------------------------------------------------------------------------------
