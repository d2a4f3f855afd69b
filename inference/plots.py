"""Figures of a run: image grids (torchvision) and the loss curve (matplotlib)."""

from __future__ import annotations

import io
from typing import Any, Dict, List, Optional, Tuple

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image

from .io import atomic_write_bytes


def save_grid(images: Tensor, path: str, nrow: int = 8) -> None:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid (written atomically)."""
    buf = io.BytesIO()
    save_image(images.detach().float().clamp(0, 1).cpu(), buf, nrow=nrow, padding=2, format="png")
    atomic_write_bytes(path, buf.getvalue())


def reconstruction_grid(x: Tensor, recon: Tensor, nrow: int = 8) -> Tensor:
    """Interleave rows of originals and reconstructions: row 2i originals, row 2i+1 recons
    (rows of ``min(nrow, len(x))`` images: a test split may hold fewer than ``nrow``)."""
    nrow = max(1, min(nrow, len(x)))
    n = (len(x) // nrow) * nrow
    x, recon = x[:n], recon[:n]
    rows = []
    for i in range(0, n, nrow):
        rows += [x[i : i + nrow], recon[i : i + nrow]]
    return torch.cat(rows)


def subplots(nrows: int = 1, ncols: int = 1, squeeze: bool = True, **kwargs: Any) -> Tuple[Figure, Any]:
    """A matplotlib figure and its axes, as ``pyplot.subplots`` makes them (``kwargs`` such
    as ``figsize`` go to the figure), but without pyplot: no backend, no display and no
    global registry of figures to close (matplotlib's advice for figures that are only saved)."""
    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def save_figure(fig: Figure, path: str, dpi: int = 100) -> None:
    """Save a matplotlib figure as a PNG (written atomically)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def loss_plot(metrics: List[Dict[str, float]], path: str, title: Optional[str] = None) -> None:
    """Train objective and test ELBO (nats per example) against epochs."""
    epochs = [m["epoch"] for m in metrics]
    fig, ax = subplots(figsize=(6, 4))
    ax.plot(epochs, [-m["train_loss"] for m in metrics], label="train objective (β-ELBO)")
    ax.plot(epochs, [m["test_elbo"] for m in metrics], label="test ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
