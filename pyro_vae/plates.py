"""What every Pyro program of pyro-vae shares: the ``"data"`` plate, the KL weight, the
checks of image shapes, images and the latent dimension.

The generative model and the guide both run inside ``data_plate(x, num_data)``: with
``num_data=N`` the plate scales the log-densities by N / B, so ``Trace_ELBO`` returns an
unbiased estimate of the *full-data* ELBO from a mini-batch of B images (the M-sized
mini-batch estimator of Kingma & Welling 2013, arXiv:1312.6114). ``kl_scaled(β)`` wraps the
latent sites in ``poutine.scale`` (KL warm-up, β-VAE).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Optional, Sequence, Tuple, Union

import pyro
import pyro.nn  # noqa: F401  (registers the module_local_params setting)
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from torch import Size, Tensor

from .errors import ConfigError, DataError


def check_images(x: Tensor, x_shape: Sequence[int], dtype: Optional[torch.dtype] = None) -> Tensor:
    """``x`` checked as a batch of images ``(B, *x_shape)``, in the floating-point ``dtype`` of
    the model that takes it; else one :class:`DataError` saying what is wrong.

    Every check is O(1) — this runs at every model and guide call of training; the values
    themselves are scanned by :func:`check_finite` and the likelihoods' support checks. A
    float tensor of another precision (float64, float16) or a boolean one is converted,
    the obvious intent; an integer tensor is refused, since 0/1 pixels and 8-bit levels
    would both need another conversion.
    """
    if not isinstance(x, Tensor) or x.dim() != len(x_shape) + 1 or tuple(x.shape[1:]) != tuple(x_shape):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"expected images of shape (B, {', '.join(map(str, x_shape))}), got {shape}")
    if x.shape[0] == 0:
        raise DataError(f"expected a batch of at least one image of shape {tuple(x_shape)}, got an empty one")
    if x.dtype == torch.bool:
        x = x.to(dtype or torch.get_default_dtype())
    elif not x.is_floating_point():
        raise DataError(f"images must be floating point (binary 0/1 or grey levels in [0, 1]), got {x.dtype}; "
                        "8-bit levels k are k / 255, e.g. x.float() / 255")
    elif dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    return x


def check_finite(x: Tensor, what: str = "the images") -> Tensor:
    """``x`` if it holds no NaN or infinity; else a :class:`DataError` naming ``what`` (one
    pass over x)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{bad} NaN or infinite values in {what}")
    return x


def check_range(x: Tensor, what: str = "grey levels", support: Optional[Tuple[float, float]] = None) -> None:
    """Refuse grey levels outside [0, 1] with a :class:`DataError` naming the range found —
    or, with ``support`` ``(lo, hi)``, outside that interval (a density that lives on a
    little more than [0, 1], which the message then names)."""
    lo, hi = float(x.min()), float(x.max())
    low, high = support or (0.0, 1.0)
    if lo < low or hi > high:
        wider = f" (the density lives on ({low:.3g}, {high:.3g}))" if support else ""
        raise DataError(f"expected {what} in [0, 1]{wider}, got values in [{lo:g}, {hi:g}]; 8-bit levels k "
                        "are k / 255")


def check_labels(y: Tensor, batch: int, num_classes: int, values: bool = True) -> Tensor:
    """``y`` checked as the integer labels (B,) of a batch of ``batch`` images, each a class
    in 0..num_classes−1 (with ``values``: one pass over y); else one :class:`DataError`."""
    if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != batch:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise DataError(f"expected the labels of the {batch} images as a tensor of shape ({batch},), got {shape}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise DataError(f"labels must be integer classes 0..{num_classes - 1}, got {y.dtype}")
    if values and batch and not bool(((y >= 0) & (y < num_classes)).all()):
        lo, hi = int(y.min()), int(y.max())
        raise DataError(f"labels must be classes 0..{num_classes - 1}, got values in [{lo}, {hi}]")
    return y


def validating() -> bool:
    """Whether Pyro's validation is on (the default outside the training engine): then the
    models also scan their input's values, as Pyro's distributions do."""
    return is_validation_enabled()


def data_plate(x: Tensor, num_data: Optional[int]) -> pyro.plate:
    """The ``"data"`` plate over a mini-batch ``x`` drawn from ``num_data`` examples.

    With ``num_data=None`` the plate covers just the batch (no rescaling).
    """
    batch = x.shape[0]
    size = batch if num_data is None else int(num_data)
    if size < batch:
        raise ConfigError(f"num_data={size} is smaller than the mini-batch ({batch})", params=("num_data",))
    # The batch is already a random draw from the data: give the plate its own indices
    # (Pyro would otherwise draw random ones, which cost a permutation of N per call and are
    # never used); only the scale N / B matters.
    return pyro.plate("data", size, subsample=_arange(batch, x.device), dim=-1)


@functools.lru_cache(maxsize=64)
def _arange(n: int, device: torch.device) -> Tensor:
    return torch.arange(n, device=device)


def uses_param_store() -> bool:
    """Whether parameters are to be registered in Pyro's global param store (``SVI``'s
    route); not under ``pyro.settings``' ``module_local_params=True`` (the training engine's),
    where the models and guides skip their registration walk altogether (it costs a few µs a
    call, on every step)."""
    return not pyro.settings.get("module_local_params")


def register(name: str, module: torch.nn.Module) -> None:
    """``pyro.module(name, module)``: put its parameters in Pyro's global param store, which
    ``SVI`` optimises — unless ``pyro.settings`` has ``module_local_params=True``, under which
    parameters live in their modules and a torch optimizer steps them (the training engine,
    :class:`~pyro_vae.infer.trainer.Trainer`, and Pyro's ``ELBOModule`` route)."""
    if uses_param_store():
        pyro.module(name, module)


def kl_scaled(kl_scale: Union[float, Tensor]):
    """Scale the latent site (KL warm-up / β) with ``poutine.scale``; a no-op at 1. A 0-d
    tensor (a compiled step's input, :mod:`pyro_vae.infer.compiled`) always scales: Python
    may not branch on its value while the step is captured."""
    if not isinstance(kl_scale, Tensor) and kl_scale == 1.0:
        return contextlib.nullcontext()
    return poutine.scale(scale=kl_scale)


def check_shape(x_shape: Sequence[int]) -> Tuple[int, int, int]:
    """``x_shape`` as a tuple (C, H, W) of positive integers, or a ConfigError."""
    shape = tuple(x_shape) if isinstance(x_shape, (list, tuple, Size)) else ()
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ConfigError(f"x_shape must be (C, H, W) with positive integer sizes, got {x_shape!r}",
                          params=("x_shape",))
    return shape  # type: ignore[return-value]


#: Most latent dimensions: the decoder's first layer alone holds z_dim × its width weights,
#: and 10⁸ of them exhausted 128 GB before the first epoch.
MAX_Z_DIM = 100_000


def check_z_dim(z_dim: int) -> int:
    """``z_dim`` if the latent has from 1 to :data:`MAX_Z_DIM` dimensions; else a ConfigError."""
    if z_dim < 1:
        raise ConfigError(f"z_dim must be positive, got {z_dim}", params=("z_dim",))
    if z_dim > MAX_Z_DIM:
        raise ConfigError(f"z_dim must be at most {MAX_Z_DIM:,}, got {z_dim:,}", params=("z_dim",))
    return z_dim


def full_precision(t: Tensor) -> Tensor:
    """``t`` in float32 if a network computed it in half precision (``precision="bf16"``
    runs the networks under ``torch.autocast``): distributions, log-densities and the ELBO
    are always computed in full precision."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t
