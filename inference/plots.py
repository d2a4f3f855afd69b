"""Figures of a run: image grids (torchvision), the loss curves and a classifier's confusion
matrix (matplotlib).

The curves are drawn so that the late epochs, where over-fitting shows, are readable: the
y-axis spans the values from the first tenth of the run on (:func:`readable_limits`; the
first epochs' ELBO, hundreds of nats below the rest, would squeeze the others into a few
pixels) and the best validation epoch is marked.
"""

from __future__ import annotations

import io
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image

from .io import atomic_write_bytes
from .rundir import best_of, held_out_curve


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


def readable_limits(curves: Sequence[Sequence[Tuple[int, float]]], margin: float = 0.08) -> Optional[Tuple[float, float]]:
    """y-limits that show every curve's points from the first tenth of the epochs on (at least
    from the second epoch of a run of five or more), with a margin; ``None`` without points."""
    last = max((e for curve in curves for e, _ in curve), default=0)
    start = max(2, math.ceil(0.1 * last)) if last >= 5 else 1
    values = [v for curve in curves for e, v in curve if e >= start and math.isfinite(v)]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = margin * (high - low) or 1.0
    return low - pad, high + pad


def mark_best(ax: Any, best: Optional[Tuple[int, float]], color: Optional[str] = None, label: bool = True) -> None:
    """A star at the best validation epoch and a dashed line through it."""
    if best is None:
        return
    epoch, value = best
    ax.axvline(epoch, color=color or "grey", linestyle="--", linewidth=0.8, alpha=0.7)
    ax.plot([epoch], [value], marker="*", markersize=12, color=color or "black", linestyle="none",
            label=f"best epoch {epoch} ({value:.2f})" if label else None)


def loss_plot(metrics: List[Dict[str, float]], path: str, title: Optional[str] = None) -> None:
    """Train objective and validation ELBO (nats per example) against epochs, the best epoch
    marked, on an axis where the late epochs are readable."""
    train = [(m["epoch"], -m["train_loss"]) for m in metrics]
    label, held_out = held_out_curve(metrics)
    fig, ax = subplots(figsize=(6.5, 4.2))
    ax.plot(*zip(*train), label="train objective (β-ELBO)")
    if held_out:
        ax.plot(*zip(*held_out), label=label)
    mark_best(ax, best_of(metrics))
    limits = readable_limits([train, held_out])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
