"""The density-flow contract: an image density p_θ(y) as a Pyro program with no latent.

A :class:`FlowModel` is an ``nn.Module`` whose density over (dequantized) grey levels
y ∈ [0, 1)^D is a ``TransformedDistribution``::

    z ~ base = N(0, T² I)       (or a standard logistic, scaled by T, for NICE)
    u = f_θ⁻¹(z)                  the flow, written in the normalizing direction u → z
    y = P(u)                      fixed preprocessing (logit / centring), see
                                  :func:`~pyro_vae.flows.transforms.preprocessing`

so that log p(y) = log p_base(f_θ(P⁻¹(y))) + log|det ∂f_θ/∂u| + log|det ∂P⁻¹/∂y| exactly.
The Pyro program is::

    def model(x, num_data=None, kl_scale=1.0):
        with pyro.plate("data", N, subsample_size=B):
            pyro.sample("x", p_θ, obs=x)

    def guide(x, num_data=None, kl_scale=1.0):
        pass                                       # nothing latent

With an empty guide ``Trace_ELBO``'s loss is exactly −(N / B) Σ_batch log p_θ(x): SVI is
maximum likelihood, and the IWAE estimate with k = 1 is the exact log-likelihood. The
same training loop, evaluation and run directories as the VAEs therefore apply unchanged.

Flow models live in their own registry, :data:`FLOW_MODELS`, because they are not VAEs
(no ``z``, no encoder, no guide to swap); model names are unique across both registries
(:func:`model_kind`).
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import ComposeTransform, Transform

from ..errors import ConfigError
from ..likelihoods import Likelihood
from ..models import MODELS
from ..models.base import check_images, check_options, data_plate
from ..registry import Registry
from .transforms import clear_caches, preprocessing

FLOW_MODELS: Registry[type] = Registry("flow model")

BASES = ("normal", "logistic")

_instance_counter = itertools.count()


class DequantizedDensity(Likelihood):
    """What a flow model says about its data: a density over dequantized grey levels.

    Not a decoder likelihood (it has no parameters and is never called); it carries the
    data contract the training loop and the evaluation read from ``model.likelihood``:
    grey levels only, dequantized as ``(k + u) / 256``, and bits/dim with the
    ``D log 256`` discretization term of :meth:`Likelihood.bits_per_dim`.
    """

    name = "flow"
    binary = False
    dequantize = True

    def forward(self, params: Tensor) -> dist.TorchDistribution:  # pragma: no cover
        raise TypeError("a flow model's density is FlowModel.distribution(), not a likelihood")

    def check_data(self, binary: bool) -> None:
        if binary:
            raise ConfigError(
                "flow models are densities over dequantized grey levels, but the data are "
                "binarized; use --binarize none"
            )


class FlowModel(nn.Module):
    """Base class of density flows over images of shape ``x_shape``.

    Subclasses build their parameterised layers in ``__init__``, then call
    :meth:`_init_base`, and implement :meth:`build_transform`, which assembles the
    normalizing map u → z from those layers; :meth:`transform` calls it *per use*, with the
    layers' caches cleared, so that no built transform goes stale.

    Args:
        x_shape: image shape ``(C, H, W)``.
        preprocess: ``"logit"``, ``"center"`` or ``"none"``.
        alpha: margin of the logit preprocessing.
        base: ``"normal"`` (N(0, I)) or ``"logistic"`` (standard logistic, as in NICE).
    """

    registry_name: str = ""
    #: ``pyro-vae train`` defaults for density flows (flags given by the user win)
    train_defaults: Dict[str, Any] = {"epochs": 10}

    def __init__(
        self,
        x_shape: Sequence[int],
        preprocess: str = "logit",
        alpha: float = 0.05,
        base: str = "normal",
    ) -> None:
        super().__init__()
        self.x_shape: Tuple[int, ...] = tuple(int(s) for s in x_shape)
        if base not in BASES:
            raise ConfigError(f"unknown base distribution {base!r}; valid bases: {', '.join(BASES)}")
        preprocessing(preprocess, alpha)  # validates
        self.preprocess = preprocess
        self.alpha = float(alpha)
        self.base_name = base
        self.likelihood = DequantizedDensity(self.x_shape)
        self.pyro_prefix = f"{type(self).__name__}{next(_instance_counter)}"
        #: The arguments :func:`build_flow_model` was called with; recorded in checkpoints.
        self.spec: Dict[str, Any] = {}

    # ------------------------------------------------------------------ the density
    def build_transform(self) -> Transform:  # pragma: no cover - abstract
        """The normalizing map u → z (event dim 3 on u), assembled from the layers."""
        raise NotImplementedError

    def transform(self) -> Transform:
        """A fresh normalizing map u → z: :meth:`build_transform` with cleared caches."""
        clear_caches(self)
        return self.build_transform()

    def _init_base(self) -> None:
        shape = tuple(self.transform().forward_shape(self.x_shape))
        if math.prod(shape) != self.num_dims:
            raise ConfigError(f"the flow maps {self.x_shape} to {shape}: not a bijection")
        self.register_buffer("base_loc", torch.zeros(shape))

    @property
    def latent_shape(self) -> Tuple[int, ...]:
        return tuple(self.base_loc.shape)

    def base(self, temperature: float = 1.0) -> dist.TorchDistribution:
        """The base distribution p(z), its scale multiplied by ``temperature``."""
        scale = torch.full_like(self.base_loc, float(temperature))
        if self.base_name == "logistic":
            d = dist.Logistic(self.base_loc, scale)
        else:
            d = dist.Normal(self.base_loc, scale)
        return d.to_event(len(self.latent_shape))

    def distribution(self, temperature: float = 1.0) -> dist.TransformedDistribution:
        """p_θ(y) over images ``(C, H, W)``: the base pushed through ``f⁻¹`` and P."""
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        parts = [self.transform().inv, *preprocessing(self.preprocess, self.alpha)]
        return dist.TransformedDistribution(self.base(temperature), parts)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_θ(x) in nats, shape ``x.shape[:-3]``."""
        return self.distribution().log_prob(self.check_x(x))

    # ------------------------------------------------------------------ Pyro program
    def model(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> None:
        """p_θ(x) for a mini-batch ``x`` of shape (B, C, H, W); ``kl_scale`` is accepted
        for the common signature and ignored (there is no latent to weight)."""
        self.check_x(x)
        pyro.module(self.pyro_prefix, self)
        with data_plate(x, num_data):
            pyro.sample("x", self.distribution(), obs=x)

    def guide(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> None:
        """The empty guide: a flow has no latent sample site."""
        self.check_x(x)

    # ------------------------------------------------------------------ conveniences
    @property
    def num_dims(self) -> int:
        return int(math.prod(self.x_shape))

    def check_x(self, x: Tensor) -> Tensor:
        """Raise a clear error unless ``x`` has shape (B, *x_shape)."""
        return check_images(x, self.x_shape)

    def _parts(self) -> Tuple[Transform, Transform]:
        pre = ComposeTransform(preprocessing(self.preprocess, self.alpha))
        return pre, self.transform()

    def encode(self, x: Tensor) -> Tensor:
        """z = f_θ(P⁻¹(x)): images (…, C, H, W) in [0, 1) to latents (…, *latent_shape)."""
        pre, flow = self._parts()
        return flow(pre.inv(x))

    def decode(self, z: Tensor) -> Tensor:
        """x = P(f_θ⁻¹(z)): latents to images."""
        pre, flow = self._parts()
        return pre(flow.inv(z))

    @torch.no_grad()
    def generate(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples of p_θ at ``temperature`` (z ~ N(0, T² I)), clamped to [0, 1]."""
        return self.distribution(temperature).sample((n,)).clamp(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The round trip ``decode(encode(x))`` — equal to ``x`` up to rounding; a visual
        check of invertibility."""
        return self.decode(self.encode(self.check_x(x)).clone()).clamp(0.0, 1.0)


class EmptyGuide(nn.Module):
    """The guide object of a flow model in the training loop and checkpoints: no parameters,
    no sample sites, the common signature ``guide(x, num_data=None, kl_scale=1.0)``."""

    def __init__(self) -> None:
        super().__init__()
        self.spec: Dict[str, Any] = {"name": "empty"}

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> None:
        return None


def register_flow_model(name: str):
    """Class decorator: register a :class:`FlowModel` subclass under ``name``."""

    def decorator(cls: type) -> type:
        cls.registry_name = name
        return FLOW_MODELS.register(name)(cls)

    return decorator


def model_kind(name: str) -> str:
    """``"vae"`` if ``name`` is in :data:`~pyro_vae.models.MODELS`, ``"flow"`` if it is in
    :data:`FLOW_MODELS`; otherwise one :class:`ConfigError` listing both registries.

    Example:
        >>> model_kind("dense"), model_kind("realnvp")
        ('vae', 'flow')
    """
    vae, flow = name in MODELS, name in FLOW_MODELS
    if vae and flow:  # a registration bug, not a user error
        raise ValueError(f"model name {name!r} is registered both as a VAE and as a flow model")
    if vae:
        return "vae"
    if flow:
        return "flow"
    raise ConfigError(
        f"unknown model {name!r}; valid models: {', '.join(MODELS.names())} (VAEs), "
        f"{', '.join(FLOW_MODELS.names())} (density flows)"
    )


def build_flow_model(name: str, x_shape: Sequence[int], **options: Any) -> FlowModel:
    """Build a registered density flow.

    Args:
        name: ``nice``, ``realnvp`` or ``glow``; unknown names raise listing the valid ones.
        x_shape: image shape ``(C, H, W)``, e.g. ``data.x_shape``.
        **options: model options (e.g. ``hidden=16``); unknown keys raise.

    Example:
        >>> flow = build_flow_model("realnvp", (1, 8, 8), num_scales=2, hidden=8)
        >>> flow.log_prob(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3])
    """
    cls = FLOW_MODELS.get(name)
    if len(tuple(x_shape)) != 3 or any(int(s) < 1 for s in x_shape):
        raise ConfigError(f"x_shape must be (C, H, W) with positive sizes, got {tuple(x_shape)}")
    check_options(cls.__init__, options, f"flow model {name!r}", skip=2)
    x_shape = tuple(int(s) for s in x_shape)
    flow = cls(x_shape, **options)
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, x_shape, **options)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop(next(iter(sig.parameters)))  # self
    flow.spec = {"name": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}
    return flow


def build_flow_guide(flow: FlowModel, spec: Optional[Dict[str, Any]] = None) -> EmptyGuide:
    """The guide of a flow model; ``spec`` (from a checkpoint) must be ``{"name": "empty"}``."""
    if spec is not None and dict(spec) != {"name": "empty"}:
        raise ConfigError(
            f"a flow model has no latent variable, so no guide; got guide {spec!r}"
        )
    return EmptyGuide()
