"""Figures of the posterior analysis (matplotlib figures without pyplot, ArviZ KDEs).

* :func:`marginals_figure` — one image: the guide's marginals over the NUTS marginals for
  the leading latent dimensions, and the joint of the two leading ones;
* :func:`traversal_figure` — decode while one latent coordinate moves, the others fixed;
* :func:`manifold_figure` — for z_dim = 2, decoded means on a grid of prior quantiles
  (Kingma & Welling 2013, arXiv:1312.6114, Fig. 4);
* :func:`latent_scatter` — for z_dim = 2, posterior means of a data set coloured by label;
* :func:`label_figure` — a semi-supervised VAE's q(y | x) beside p(y | x), per image.
"""

from __future__ import annotations

from typing import Optional, Sequence

import arviz as az
import numpy as np
import torch
from torch import Tensor

from pyro_vae.models import VAE

from .plots import save_figure, save_grid, subplots


def marginals_figure(
    nuts_idata,
    guide_idata,
    example: int,
    dims: Sequence[int],
    path: str,
    guide_name: str = "guide",
) -> None:
    """KDEs of q(z_j | x) (guide) over p(z_j | x) (NUTS) for ``dims``, plus one joint panel.

    Args:
        nuts_idata: the NUTS InferenceData (``z``: chain, draw, example, z_dim).
        guide_idata: the guide's InferenceData, same layout.
        example: the image's dataset index (coordinate of ``example``).
        dims: latent dimensions to show (the first two also form the joint panel).
        path: PNG file to write.
        guide_name: legend label of the guide.
    """
    p = nuts_idata.posterior["z"].sel(example=example)
    q = guide_idata.posterior["z"].sel(example=example)
    dims = list(dims)
    joint = len(dims) >= 2
    ncols = len(dims) + int(joint)
    fig, axes = subplots(1, ncols, figsize=(3.0 * ncols, 2.8), squeeze=False)
    for ax, j in zip(axes[0], dims):
        # ArviZ's KDE (linear diffusion with an adaptive bandwidth), drawn by matplotlib
        grid, pdf = az.kde(p.sel(z_dim=j).values.ravel())
        ax.plot(grid, pdf, color="black", linewidth=1.5, label="NUTS p(z|x)")
        grid, pdf = az.kde(q.sel(z_dim=j).values.ravel())
        ax.plot(grid, pdf, color="tab:orange", linestyle="--", label=f"{guide_name} q(z|x)")
        ax.set_title(f"z[{j}]", fontsize=10)
        ax.set_yticks([])
    if joint:
        ax = axes[0][-1]
        a, b = dims[0], dims[1]
        pa, pb = p.sel(z_dim=a).values.ravel(), p.sel(z_dim=b).values.ravel()
        qa, qb = q.sel(z_dim=a).values.ravel(), q.sel(z_dim=b).values.ravel()
        ax.scatter(pa, pb, s=2, alpha=0.25, color="black", label="NUTS")
        ax.scatter(qa, qb, s=2, alpha=0.25, color="tab:orange", label=guide_name)
        ax.set_xlabel(f"z[{a}]")
        ax.set_ylabel(f"z[{b}]")
        ax.set_title("joint", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(f"test image {example}: posterior marginals", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    save_figure(fig, path)


@torch.no_grad()
def traversal_figure(
    vae: VAE, z0: Tensor, dims: Sequence[int], path: str, span: float = 3.0, steps: int = 9,
    y: Optional[Tensor] = None,
) -> None:
    """Decode while one coordinate moves over [−span, span], the others held at ``z0``.

    One row per dimension in ``dims``.

    Args:
        vae: the model (its decoder's mean image is drawn).
        z0: the starting latent (z_dim,), e.g. the posterior mean of an image.
        dims: the dimensions to traverse, one row each.
        path: PNG file.
        span: half-width of the sweep, in prior standard deviations around 0.
        steps: images per row.
        y: the image's label (a 0-d tensor), for a VAE that takes labels.
    """
    values = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)
    rows = []
    for j in dims:
        z = z0.expand(steps, -1).clone()
        z[:, j] = values
        rows.append(z)
    z = torch.cat(rows)
    save_grid(vae.decode(z, None if y is None else y.expand(len(z))), path, nrow=steps)


@torch.no_grad()
def manifold_figure(vae: VAE, path: str, n: int = 20, y: Optional[Tensor] = None) -> None:
    """Decoded means on an n × n grid of standard-Normal quantiles (z_dim must be 2; of the
    label ``y``, a 0-d tensor, for a VAE that takes labels)."""
    if vae.z_dim != 2:
        raise ValueError("the latent manifold is drawn for z_dim = 2 only")
    p = torch.distributions.Normal(0.0, 1.0)
    q = p.icdf(torch.linspace(0.05, 0.95, n))
    device = next(vae.parameters()).device
    grid = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)
    # rows top → bottom: z[1] from high to low; columns left → right: z[0] from low to high
    z = grid.to(device=device, dtype=next(vae.parameters()).dtype)
    save_grid(vae.decode(z, None if y is None else y.expand(len(z))), path, nrow=n)


def latent_scatter(means: Tensor, labels: Optional[Tensor], path: str) -> None:
    """Scatter of posterior means (N, 2), coloured by label when there are labels."""
    m = means.detach().cpu().double().numpy()
    fig, ax = subplots(figsize=(5.5, 5))
    if labels is None:
        ax.scatter(m[:, 0], m[:, 1], s=4, alpha=0.6)
    else:
        lab = np.asarray(labels.cpu())
        sc = ax.scatter(m[:, 0], m[:, 1], c=lab, cmap="tab10", s=4, alpha=0.7,
                        vmin=-0.5, vmax=9.5 if lab.max() < 10 else lab.max() + 0.5)
        fig.colorbar(sc, ax=ax, ticks=np.unique(lab)[:20], label="label")
    ax.set_xlabel("E_q[z_0 | x]")
    ax.set_ylabel("E_q[z_1 | x]")
    ax.set_title(f"posterior means of {len(m)} images")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def label_figure(q: Tensor, p: Tensor, examples: Sequence[int], path: str) -> None:
    """For each image, the classifier q(y | x) beside the model's posterior p(y | x) over the
    classes (bars)."""
    n, classes = q.shape
    fig, axes = subplots(n, 1, figsize=(max(5.0, 0.45 * classes), 1.8 * n), squeeze=False)
    positions = np.arange(classes)
    for ax, qi, pi, index in zip(axes[:, 0], q.cpu().numpy(), p.cpu().numpy(), examples):
        ax.bar(positions - 0.2, pi, width=0.4, label="p(y | x) (IWAE per class)")
        ax.bar(positions + 0.2, qi, width=0.4, label="q(y | x) (the classifier)")
        ax.set_xticks(positions)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"image {index}", fontsize=9)
    axes[0][0].legend(fontsize=8, loc="upper right")
    axes[-1][0].set_xlabel("class y")
    fig.tight_layout()
    save_figure(fig, path)
