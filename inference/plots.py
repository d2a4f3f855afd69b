"""Figures of a run: image grids (torchvision), the loss curve and a classifier's confusion
matrix (matplotlib)."""

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


def confusion_figure(confusion: List[List[int]], path: str, accuracy: Optional[float] = None,
                     classes: Optional[List[str]] = None) -> None:
    """The confusion matrix of a classifier (rows: true class, columns: predicted), each row
    as shares of its class, with the counts written in the cells."""
    counts = torch.tensor(confusion, dtype=torch.float64)
    shares = counts / counts.sum(1, keepdim=True).clamp_min(1)
    n = len(counts)
    names = classes or [str(i) for i in range(n)]
    fig, ax = subplots(figsize=(1.2 + 0.5 * n, 1.0 + 0.5 * n))
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:  # numbers in the cells while they fit
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, fontsize=8, rotation=90 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class (argmax q(y | x))")
    ax.set_ylabel("true class")
    if accuracy is not None:
        ax.set_title(f"accuracy {100 * accuracy:.1f} %")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the class")
    fig.tight_layout()
    save_figure(fig, path)
