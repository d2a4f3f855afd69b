"""How good is q(z|x)? NUTS on the exact posterior against the guide, in ArviZ, with the gaps.

Trains a small dense VAE by SVI (z_dim 2 by default, so the latent space can be drawn),
then for a few test images: samples p(z | x) by NUTS with the decoder frozen, draws the
guide, prints ArviZ's diagnostics and the inference gaps of Cremer et al. 2018
(arXiv:1801.03558), counts active units, and writes figures to --out.

    python examples/posterior_analysis.py --epochs 30 --out posterior-example

For a trained run directory, `pyro-vae posterior RUN_DIR` does all of this and more.
"""

import argparse
import os

import arviz as az
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from inference.posterior import format_gaps
from pyro_vae.infer.gaps import LocalFitConfig, inference_gaps
from pyro_vae.infer.nuts import NUTSConfig, guide_posterior, nuts_posterior
from pyro_vae.infer.usage import latent_usage, posterior_means
from inference.posterior_plots import latent_scatter, manifold_figure, marginals_figure
from pyro_vae import build_vae, load_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--train-size", type=int, default=None)
parser.add_argument("--z-dim", type=int, default=2)
parser.add_argument("--index", type=int, nargs="+", default=[0, 1])
parser.add_argument("--chains", type=int, default=2)
parser.add_argument("--draws", type=int, default=300)
parser.add_argument("--iwae-samples", type=int, default=5000)
parser.add_argument("--local-steps", type=int, default=3000)
parser.add_argument("--out", default="posterior-example")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)

# --- a VAE, trained as in svi_script.py ------------------------------------------------
data = load_dataset("mnist5k", binarize="dynamic", train_size=args.train_size)
vae = build_vae("dense", x_shape=data.x_shape, z_dim=args.z_dim, hidden=(256,))
svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": 1e-3}), Trace_ELBO())
n = len(data.train)
for epoch in range(args.epochs):
    losses = [svi.step(x, num_data=n) for x in data.batches("train", batch_size=128)]
print(f"epoch {args.epochs}: train ELBO {-sum(losses) / len(losses) / n:.2f} nats per image")

# --- the exact posterior by NUTS, the guide's draws, both in ArviZ ---------------------
x_test = data.eval_data("test")
x = x_test[args.index]
nuts = nuts_posterior(vae, x, NUTSConfig(chains=args.chains, draws=args.draws, warmup=args.draws),
                      examples=args.index)
guide = guide_posterior(vae, vae.guide, x, num_draws=args.chains * args.draws, examples=args.index)
print(az.summary(nuts, var_names=["z"], kind="diagnostics"))

# --- where the log-likelihood goes -----------------------------------------------------
gaps = inference_gaps(vae, vae.guide, x, args.iwae_samples,
                      LocalFitConfig(max_steps=args.local_steps), examples=args.index)
print(format_gaps(gaps))
usage = latent_usage(vae, vae.guide, x_test)
print(f"active units: {usage['active_units']} of {args.z_dim}; "
      f"KL per dim: {', '.join(f'{k:.2f}' for k in usage['kl_per_dim'])}")

# --- figures ---------------------------------------------------------------------------
for index in args.index:
    marginals_figure(nuts, guide, index, range(min(args.z_dim, 4)),
                     os.path.join(args.out, f"marginals_{index}.png"))
if args.z_dim == 2:
    manifold_figure(vae, os.path.join(args.out, "manifold.png"))
    latent_scatter(posterior_means(vae, vae.guide, x_test), data.test_labels,
                   os.path.join(args.out, "latent_means.png"))
print(f"figures in {args.out}")
