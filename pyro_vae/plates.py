"""What every Pyro program of pyro-vae shares: the ``"data"`` plate, the KL weight, the
image-shape check.

The generative model and the guide both run inside ``data_plate(x, num_data)``: with
``num_data=N`` the plate scales the log-densities by N / B, so ``Trace_ELBO`` returns an
unbiased estimate of the *full-data* ELBO from a mini-batch of B images (the M-sized
mini-batch estimator of Kingma & Welling 2013, arXiv:1312.6114). ``kl_scaled(β)`` wraps the
latent sites in ``poutine.scale`` (KL warm-up, β-VAE).
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Tuple

import pyro
from pyro import poutine
from torch import Size, Tensor

from .errors import ConfigError, DataError


def check_images(x: Tensor, x_shape: Sequence[int]) -> Tensor:
    """``x`` if it is a tensor of shape (B, *x_shape); else a :class:`DataError` naming both."""
    if not isinstance(x, Tensor) or x.dim() != len(x_shape) + 1 or tuple(x.shape[1:]) != tuple(x_shape):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"expected images of shape (B, {', '.join(map(str, x_shape))}), got {shape}")
    return x


def data_plate(x: Tensor, num_data: Optional[int]) -> pyro.plate:
    """The ``"data"`` plate over a mini-batch ``x`` drawn from ``num_data`` examples.

    With ``num_data=None`` the plate covers just the batch (no rescaling).
    """
    batch = x.shape[0]
    size = batch if num_data is None else int(num_data)
    if size < batch:
        raise ConfigError(f"num_data={size} is smaller than the mini-batch ({batch})")
    # Pyro draws random subsample indices when size > batch; only the N / B scale is used.
    return pyro.plate("data", size, subsample_size=batch, dim=-1, device=x.device)


def kl_scaled(kl_scale: float):
    """Scale the latent site (KL warm-up / β) with ``poutine.scale``; a no-op at 1."""
    if kl_scale == 1.0:
        return contextlib.nullcontext()
    return poutine.scale(scale=kl_scale)


def check_shape(x_shape: Sequence[int]) -> Tuple[int, int, int]:
    """``x_shape`` as a tuple (C, H, W) of positive integers, or a ConfigError."""
    shape = tuple(x_shape) if isinstance(x_shape, (list, tuple, Size)) else ()
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"x_shape must be (C, H, W) with positive integer sizes, got {x_shape!r}")
    return shape  # type: ignore[return-value]
