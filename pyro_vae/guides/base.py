"""Amortized guides q_φ(z | x), swappable by name without touching the model."""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Dict, Optional

import pyro
import torch
from torch import Tensor, nn

from ..models.base import VAE, check_options
from ..registry import Registry

GUIDES: Registry[type] = Registry("guide")

_instance_counter = itertools.count()


class Guide(nn.Module):
    """Base class of guides: ``guide(x, num_data=None, kl_scale=1.0)`` samples site ``"z"``.

    A guide *references* its VAE (it is not a submodule), so ``guide.state_dict()`` holds only
    the guide's own parameters (e.g. flows) while the encoder's live in the VAE. Every guide
    conditions on the VAE's encoder features ``h = vae.encoder.features(x)``.
    """

    registry_name: str = ""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.__dict__["vae"] = vae  # bypass nn.Module registration on purpose (see above)
        self.pyro_prefix = f"{vae.pyro_prefix}.{type(self).__name__}{next(_instance_counter)}"
        #: The arguments :func:`build_guide` was called with; recorded in checkpoints.
        self.spec: Dict[str, Any] = {}

    def register(self) -> None:
        """Register the encoder and this guide's own parameters with Pyro's param store."""
        self.vae._register("encoder", self.vae.encoder)
        if any(True for _ in self.parameters()):
            pyro.module(self.pyro_prefix, self)

    def distribution(self, x: Tensor):  # pragma: no cover - abstract
        """q_φ(z | x) with batch shape (B,) and event shape (z_dim,)."""
        raise NotImplementedError

    def location(self, x: Tensor) -> Tensor:
        """A deterministic summary z of q_φ(z | x), (B, z_dim): the encoder mean μ_φ(x) here;
        flow guides push it through their flows."""
        loc, _ = self.vae.encoder.loc_scale(self.vae.encoder.features(self.vae.check_x(x)))
        return loc

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``vae.decode`` (the mean of p_θ(x | z), or a sample) at z = :meth:`location` (x)."""
        return self.vae.decode(self.location(x))

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        raise NotImplementedError  # pragma: no cover


def register_guide(name: str):
    """Class decorator: register a :class:`Guide` subclass under ``name``."""

    def decorator(cls: type) -> type:
        cls.registry_name = name
        return GUIDES.register(name)(cls)

    return decorator


def build_guide(name: str, vae: VAE, **options: Any) -> Guide:
    """Build a registered guide for ``vae``.

    Args:
        name: guide name (``gaussian``, ...); unknown names raise listing the valid ones.
        vae: the VAE whose encoder the guide conditions on.
        **options: guide-specific options (e.g. ``num_flows``); unknown keys raise.

    Example:
        >>> from pyro_vae import build_vae
        >>> vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=4, hidden=(32,))
        >>> build_guide("gaussian", vae).spec
        {'name': 'gaussian'}
    """
    cls = GUIDES.get(name)
    check_options(cls.__init__, options, f"guide {name!r}", skip=2)
    guide = cls(vae, **options)
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, vae, **options)
    bound.apply_defaults()
    args = {k: v for k, v in list(bound.arguments.items())[2:]}
    guide.spec = {"name": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}
    return guide
