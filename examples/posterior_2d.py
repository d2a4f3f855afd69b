"""The exact 2-D posterior of a trained VAE against a Gaussian and a flow approximation.

Trains a dense VAE with z_dim = 2 and the Gaussian guide on mnist5k. With two latent
dimensions the posterior p(z|x) ∝ p(z) p(x|z) of one image can be computed on a grid and
normalised numerically, which gives log p(x) to high accuracy. For the test images whose
posterior is least Gaussian (largest KL from its moment-matched Gaussian, among the first
``--candidates``), the figure compares with it

* the amortized guide q_φ(z|x) (the encoder's output),
* the best diagonal Gaussian for that image alone (fitted by SVI, decoder frozen), and
* an IAF for that image alone (Pyro ``AffineAutoregressive`` steps on a Gaussian base,
  fitted by SVI the same way),

each labelled with KL(q ‖ p(z|x)) = log p(x) − ELBO(q), the ELBO estimated with many
samples of q. The difference between the first two is the amortization gap of the image,
the KL of the second is its approximation gap (Cremer et al. 2018, arXiv:1801.03558), and
the third shows how much of that a flow family recovers (Rezende & Mohamed 2015,
arXiv:1505.05770; Kingma et al. 2016, arXiv:1606.04934). This script makes the figure of
docs/theory.md §7::

    python examples/posterior_2d.py --out docs/figures/posterior_2d.png
"""

from __future__ import annotations

import argparse
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_vae import build_guide, build_vae, load_dataset  # noqa: E402
from pyro_vae.guides.local import LocalFlowGuide  # noqa: E402
from pyro_vae.infer.evaluate import bounds, evaluate  # noqa: E402
from pyro_vae.infer.gaps import LocalFitConfig, fit_guide  # noqa: E402
from pyro_vae.infer.trainer import TrainConfig, Trainer  # noqa: E402


def train(vae, guide, data, epochs, seed):
    pyro.set_rng_seed(seed)
    trainer = Trainer(vae, guide, data, TrainConfig(epochs=epochs, seed=seed))
    for _ in range(epochs):
        m = trainer.train_epoch()
    return m


@torch.no_grad()
def log_joint(vae, x, z):
    """log p(z) + log p(x|z) for one image x (1, C, H, W) and grid points z (G, 2)."""
    return vae.prior().log_prob(z) + vae.decoder.distribution(z).log_prob(x[0])


def grid(lo, hi, n):
    """An n × n grid of 2-D points over [lo, hi] (per axis), flattened to (n², 2), and the cell area."""
    a = torch.linspace(lo[0], hi[0], n)
    b = torch.linspace(lo[1], hi[1], n)
    za, zb = torch.meshgrid(a, b, indexing="ij")
    area = float((a[1] - a[0]) * (b[1] - b[0]))
    return torch.stack([za.reshape(-1), zb.reshape(-1)], -1), area, (za, zb)


@torch.no_grad()
def zoom(vae, x, wide=5.0, rounds=5, coarse=61, within=25.0):
    """The box ``(lo, hi)`` (two (2,) tensors) that holds the posterior of x.

    The posterior of a 784-pixel image in 2-D can be far narrower than a coarse grid's
    spacing, where a Riemann sum is meaningless. So zoom: on a coarse grid over the current
    box, keep the points whose log p(x, z) is within ``within`` nats of the largest, and
    shrink the box to them plus one cell on each side; repeat. Several modes stay inside one
    box.
    """
    lo, hi = torch.tensor([-wide, -wide]), torch.tensor([wide, wide])
    for _ in range(rounds):
        z, _, _ = grid(lo, hi, coarse)
        log_f = log_joint(vae, x, z)
        keep = z[log_f > log_f.max() - within]
        cell = (hi - lo) / (coarse - 1)
        lo, hi = keep.min(0).values - cell, keep.max(0).values + cell
    return lo, hi


@torch.no_grad()
def exact_posterior(vae, x, box, n):
    """The posterior of x on an n × n grid over ``box``: the grid points (n², 2), the cell
    area, the mesh, log p(z|x) at the points and log p(x) (Riemann sum)."""
    z, area, mesh = grid(*box, n)
    log_f = log_joint(vae, x, z)
    log_px = float(torch.logsumexp(log_f, 0) + math.log(area))
    return z, area, mesh, log_f - log_px, log_px


@torch.no_grad()
def non_gaussianity(log_post, z, area):
    """KL(p ‖ N(mean, cov)) of the grid posterior from its moment-matched Gaussian."""
    p = log_post.exp() * area
    mean = (p[:, None] * z).sum(0)
    d = z - mean
    cov = (p[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0)
    gauss = torch.distributions.MultivariateNormal(mean, cov + 1e-9 * torch.eye(2))
    return float((p * (log_post - gauss.log_prob(z))).sum())


def hpd_levels(density, masses=(0.99, 0.9, 0.5)):
    """Density levels whose super-level sets hold the given masses (highest-density regions)
    of a density on a regular grid, in increasing order (for matplotlib's contour)."""
    d = density.reshape(-1).sort(descending=True).values
    cum = d.cumsum(0) / d.sum()
    idx = [min(int(torch.searchsorted(cum, m)), len(d) - 1) for m in masses]
    levels = sorted({float(d[i]) for i in idx})
    return levels if len(levels) > 1 else [float(d[-1]), float(d[0])]


def elbo(vae, q, x, samples=20_000):
    """E_q[log p(x, z) − log q(z)] of the guide q by Monte Carlo (the library's per-image bound)."""
    return float(bounds(vae, q, x, samples)["elbo"][0])


def fit_local(vae, x, starts, flows, steps, seed):
    """The library's local guide for one image — ``LocalFlowGuide``: a Gaussian in
    standardised coordinates, with ``flows`` IAF steps — fitted by the library's SVI
    (``fit_guide``, decoder frozen) from each (loc, scale) in ``starts``; the best by a
    2,000-sample ELBO (a start may sit in a minor mode)."""
    config = LocalFitConfig(max_steps=steps, particles=64, lr=5e-3, threads=None)
    best, best_guide = -math.inf, None
    for loc, scale in starts:
        guide = LocalFlowGuide(loc[None], scale[None], num_flows=flows)
        guide, _ = fit_guide(vae, guide, x, config, seed=seed)
        value = elbo(vae, guide, x, samples=2000)
        if value > best:
            best, best_guide = value, guide
    return best_guide


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=100, help="epochs of the VAE with the Gaussian guide")
    p.add_argument("--flows", type=int, default=8, help="IAF steps of the local flow")
    p.add_argument("--steps", type=int, default=2000, help="SVI steps of each local fit")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--candidates", type=int, default=100, help="test images searched for the figure")
    p.add_argument("--grid", type=int, default=161)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="posterior_2d.png")
    a = p.parse_args()

    data = load_dataset("mnist5k", binarize="dynamic", train_size=a.train_size)
    pyro.set_rng_seed(a.seed)  # before the networks are initialised: the same seed, the same figure
    vae = build_vae("dense", data.x_shape, z_dim=2)
    gauss = build_guide("gaussian", vae)
    train(vae, gauss, data, a.epochs, a.seed)
    test = evaluate(vae, gauss, data.eval_data("test"), num_samples=1)
    print(f"VAE with Gaussian guide, {a.epochs} epochs: test ELBO {test['elbo']:.2f}")
    vae.eval()
    vae.requires_grad_(False)

    x_all = data.eval_data("test")[: a.candidates]
    boxes = [zoom(vae, x_all[i : i + 1]) for i in range(len(x_all))]
    scores = []
    for i, box in enumerate(boxes):  # the least Gaussian posteriors
        z, area, _, log_post, _ = exact_posterior(vae, x_all[i : i + 1], box, 61)
        scores.append(non_gaussianity(log_post, z, area))
    # keep only images whose posterior the grid resolves: log p(x) on the n-point grid and on
    # one twice as fine agree within 0.02 nats (a mode narrower than a cell would not)
    posteriors = {}
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        coarse = exact_posterior(vae, x_all[i : i + 1], boxes[i], a.grid)
        fine = exact_posterior(vae, x_all[i : i + 1], boxes[i], 2 * a.grid - 1)
        if abs(coarse[4] - fine[4]) < 0.02:
            posteriors[i] = coarse
        if len(posteriors) == a.images:
            break
    chosen = list(posteriors)

    columns = ("amortized Gaussian", "best Gaussian (this x)", f"IAF, {a.flows} steps (this x)")
    fig, axes = plt.subplots(len(chosen), 4, figsize=(12, 2.9 * len(chosen)), squeeze=False)
    for row, i in enumerate(chosen):
        x = x_all[i : i + 1]
        z, _, (za, zb), log_post, log_px = posteriors[i]
        with torch.no_grad():
            amortized = gauss.distribution(x).base_dist  # N(μ_φ(x), σ_φ(x)²), batch (1,)
        # start the local fits at the encoder's output, at the posterior's highest point (two
        # grid cells wide: a narrow mode) and at its moment-matched Gaussian: the best of all
        p_grid = log_post.exp() / log_post.exp().sum()
        mean = (p_grid[:, None] * z).sum(0)
        sd = (p_grid[:, None] * (z - mean) ** 2).sum(0).sqrt()
        cell = torch.stack([za[1, 0] - za[0, 0], zb[0, 1] - zb[0, 0]])
        starts = [(amortized.loc[0], amortized.scale[0]), (z[log_post.argmax()], 2 * cell), (mean, sd)]
        qs = [gauss, fit_local(vae, x, starts, 0, a.steps, a.seed),
              fit_local(vae, x, starts, a.flows, a.steps, a.seed)]
        kls = [log_px - elbo(vae, q, x) for q in qs]
        # cross-check of the grid's log p(x): importance sampling from the best Gaussian
        log_px_is = float(bounds(vae, qs[1], x, 20_000)["iwae"][0])
        axes[row, 0].imshow(x[0, 0], cmap="gray")
        axes[row, 0].set_title(f"test image {i}")
        axes[row, 0].axis("off")
        post = log_post.exp().reshape(za.shape)
        post_levels = hpd_levels(post)
        for col, (q, kl, label) in enumerate(zip(qs, kls, columns), start=1):
            ax = axes[row, col]
            ax.contourf(za, zb, post, levels=post_levels + [float(post.max()) * 1.01], cmap="Greys")
            with torch.no_grad():
                density = q.distribution(x).log_prob(z).exp().reshape(za.shape)
            ax.contour(za, zb, density, levels=hpd_levels(density), cmap="autumn", linewidths=1.1)
            ax.set_title(f"{label}\nKL(q ‖ p(z|x)) = {kl:.2f} nats", fontsize=9)
            ax.set_xlabel("z₁")
            ax.set_ylabel("z₂")
            ax.tick_params(labelsize=7)
        print(f"image {i}: log p(x) {log_px:.3f} (grid; importance sampling {log_px_is:.3f}); "
              f"KL(q‖p) amortized {kls[0]:.3f}, "
              f"best Gaussian {kls[1]:.3f}, IAF {kls[2]:.3f} nats")
    fig.suptitle("grey: exact posterior p(z|x) on a grid; lines: q(z) — regions holding 99%, 90% and 50% of the mass",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
