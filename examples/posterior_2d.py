"""The exact 2-D posterior of a trained VAE against a Gaussian guide and a flow guide.

Trains a dense VAE with z_dim = 2 and the Gaussian guide on mnist5k, then fits a flow guide
(IAF by default) to the *same, frozen* decoder, so both guides approximate the same
posterior p(z|x) ∝ p(z) p(x|z). With two latent dimensions that posterior can be computed on
a grid, normalised numerically, and compared with each guide's density: the figure shows
the true posterior (filled), each guide's density (contours) and KL(q ‖ p(z|x)) computed on
the grid. The test images shown are those, among the first 200, where the Gaussian guide's
KL is largest (the least Gaussian posteriors). This script makes the figure of
docs/theory.md §7::

    python examples/posterior_2d.py --out docs/figures/posterior_2d.png
"""

from __future__ import annotations

import argparse
import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from inference.svi import TrainConfig, Trainer  # noqa: E402
from pyro_vae import build_guide, build_vae, load_dataset  # noqa: E402


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


def normalise(log_f, area):
    """log of a density from unnormalised log-values on a grid (Riemann sum)."""
    return log_f - torch.logsumexp(log_f, 0) - math.log(area)


def kl_on_grid(log_q, log_p, area):
    """KL(q ‖ p) = ∫ q (log q − log p), both normalised on the grid."""
    q = log_q.exp()
    return float((q * (log_q - log_p)).sum() * area)


@torch.no_grad()
def panel_data(vae, gauss, flow, x, n, wide=5.0):
    # locate the posterior on a coarse wide grid, then zoom to its mean ± 4.5 sd
    z, area, _ = grid((-wide, -wide), (wide, wide), 121)
    p = normalise(log_joint(vae, x, z), area).exp() * area
    mean = (p[:, None] * z).sum(0)
    sd = ((p[:, None] * (z - mean) ** 2).sum(0)).sqrt().clamp(min=0.05)
    z, area, mesh = grid(mean - 4.5 * sd, mean + 4.5 * sd, n)
    log_post = normalise(log_joint(vae, x, z), area)
    out = {"mesh": mesh, "post": log_post}
    for name, guide in (("gaussian", gauss), ("flow", flow)):
        log_q = guide.distribution(x).log_prob(z[:, None, :])[:, 0]  # scores grid points
        log_q = normalise(log_q, area)  # mass outside the window is negligible at ±4.5 sd
        out[name] = log_q
        out[f"kl_{name}"] = kl_on_grid(log_q, log_post, area)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=100, help="epochs of the VAE with the Gaussian guide")
    p.add_argument("--guide-epochs", type=int, default=100, help="epochs of the flow guide (decoder frozen)")
    p.add_argument("--flow", default="iaf")
    p.add_argument("--flows", type=int, default=8)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--candidates", type=int, default=200, help="test images searched for the figure")
    p.add_argument("--grid", type=int, default=161)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="posterior_2d.png")
    a = p.parse_args()

    data = load_dataset("mnist5k", binarize="dynamic", train_size=a.train_size)
    vae = build_vae("dense", data.x_shape, z_dim=2)
    gauss = build_guide("gaussian", vae)
    m = train(vae, gauss, data, a.epochs, a.seed)
    print(f"VAE with Gaussian guide, {a.epochs} epochs: test ELBO {m['test_elbo']:.2f}")

    # a second copy of the model: the same decoder, frozen; its own encoder and flows
    twin = build_vae("dense", data.x_shape, z_dim=2)
    twin.load_state_dict(vae.state_dict())
    twin.decoder.requires_grad_(False)
    flow = build_guide(a.flow, twin, num_flows=a.flows)
    with warnings.catch_warnings():  # pyro.module notes the frozen decoder on every step
        warnings.filterwarnings("ignore", message=".*requires_grad=False.*")
        m = train(twin, flow, data, a.guide_epochs, a.seed + 1)
    print(f"{a.flow} guide ({a.flows} flows) on the frozen decoder, {a.guide_epochs} epochs: "
          f"test ELBO {m['test_elbo']:.2f}")

    x_all = data.eval_data("test")[: a.candidates]
    vae.eval(), twin.eval()
    # rank the candidates by the Gaussian guide's KL on a coarse grid
    scores = []
    for i in range(len(x_all)):
        d = panel_data(vae, gauss, flow, x_all[i : i + 1], 41)
        scores.append(d["kl_gaussian"])
    chosen = sorted(range(len(scores)), key=lambda i: -scores[i])[: a.images]

    fig, axes = plt.subplots(len(chosen), 4, figsize=(11, 2.8 * len(chosen)), squeeze=False)
    for row, i in enumerate(chosen):
        x = x_all[i : i + 1]
        d = panel_data(vae, gauss, flow, x, a.grid)
        za, zb = d["mesh"]
        post = d["post"].exp().reshape(za.shape)
        axes[row, 0].imshow(x[0, 0], cmap="gray")
        axes[row, 0].set_title(f"test image {i}")
        axes[row, 0].axis("off")
        axes[row, 1].contourf(za, zb, post, levels=12, cmap="Greys")
        axes[row, 1].set_title("true posterior p(z|x)")
        for col, name, label in ((2, "gaussian", "Gaussian guide"), (3, "flow", f"{a.flow.upper()} guide")):
            ax = axes[row, col]
            ax.contourf(za, zb, post, levels=12, cmap="Greys")
            ax.contour(za, zb, d[name].exp().reshape(za.shape), levels=6, cmap="autumn", linewidths=1.2)
            ax.set_title(f"{label}: KL = {d['kl_' + name]:.2f} nats")
        for ax in axes[row, 1:]:
            ax.set_xlabel("z₁")
            ax.set_ylabel("z₂")
            ax.tick_params(labelsize=7)
        print(f"image {i}: KL(q‖p) Gaussian {d['kl_gaussian']:.3f}, {a.flow} {d['kl_flow']:.3f} nats")
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
