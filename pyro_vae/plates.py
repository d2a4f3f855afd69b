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
import functools
from typing import Optional, Sequence, Tuple

import pyro
import pyro.nn  # noqa: F401  (registers the module_local_params setting)
import torch
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
    # The batch is already a random draw from the data: give the plate its own indices
    # (Pyro would otherwise draw random ones, which cost a permutation of N per call and are
    # never used); only the scale N / B matters.
    return pyro.plate("data", size, subsample=_arange(batch, x.device), dim=-1)


@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> Tensor:
    return torch.arange(n, device=device)


def register(name: str, module: torch.nn.Module) -> None:
    """``pyro.module(name, module)``: put its parameters in Pyro's global param store, which
    ``SVI`` optimises — unless ``pyro.settings`` has ``module_local_params=True``, under which
    parameters live in their modules and a torch optimizer steps them (the training engine,
    :class:`~pyro_vae.infer.trainer.Trainer`, and Pyro's ``ELBOModule`` route)."""
    if not pyro.settings.get("module_local_params"):
        pyro.module(name, module)


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


def full_precision(t: Tensor) -> Tensor:
    """``t`` in float32 if a network computed it in half precision (``--precision bf16``
    runs the networks under ``torch.autocast``): distributions, log-densities and the ELBO
    are always computed in full precision."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t
