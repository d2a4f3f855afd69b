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
(:func:`~pyro_vae.build.model_class` looks a name up in both).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import ComposeTransform, Transform

from ..contract import Model, check_model_class
from ..data import LEVELS
from ..errors import ConfigError
from ..infer.config import check_temperature
from ..options import check_choice
from ..plates import check_images, check_range, check_shape, data_plate, register
from ..registry import Registry
from .transforms import clear_caches, preprocessing

#: The density flows; one from outside pyro-vae is checked against the model contract without
#: a latent variable (import paths and entry points are shared with the VAEs: group ``model``).
FLOW_MODELS: Registry[type] = Registry("flow model", group="model",
                                       accept=lambda cls, name: check_model_class(cls, name, latent=False))

BASES = ("normal", "logistic")


class FlowModel(Model):
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

    has_latent = False

    def __init__(
        self,
        x_shape: Sequence[int],
        preprocess: str = "logit",
        alpha: float = 0.05,
        base: str = "normal",
    ) -> None:
        super().__init__(x_shape)
        check_choice(base, BASES, "base distribution", "base", valid="bases")
        preprocessing(preprocess, alpha)  # validates
        self.preprocess = preprocess
        self.alpha = float(alpha)
        self.base_name = base
        self.guide = EmptyGuide(self.x_shape)

    # ------------------------------------------------------------------ data contract
    @property
    def dequantize(self) -> bool:
        """A density over dequantized grey levels ``(k + u) / 256``."""
        return True

    def check_data(self, binary: bool) -> None:
        if binary:
            self.refuse_binary()

    @staticmethod
    def refuse_binary() -> None:
        raise ConfigError(
            "flow models are densities over dequantized grey levels, but the data are "
            "binarized; use binarize='none'", params=("binarize",)
        )

    def check_values(self, x: Tensor) -> None:
        """Refuse values outside the support of the density: the logit preprocessing's cube
        (−α/(1−2α), (1−α)/(1−2α)) ⊃ [0, 1) (:func:`~pyro_vae.flows.transforms.preprocessing`);
        the other preprocessings reach every real value."""
        if self.preprocess != "logit":
            return
        lo, hi = -self.alpha / (1 - 2 * self.alpha), (1 - self.alpha) / (1 - 2 * self.alpha)
        check_range(x, support=(lo, hi))

    def bits_per_dim(self, nll: float) -> float:
        """Bits/dim of the 8-bit images: ``nll + D log 256`` over ``D ln 2`` (the density of
        dequantized data bounds the discrete one, Theis et al. 2016, arXiv:1511.01844)."""
        d = self.num_dims
        return (nll + d * math.log(LEVELS)) / (d * math.log(2.0))

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
        check_temperature(temperature)
        parts = [self.transform().inv, *preprocessing(self.preprocess, self.alpha)]
        return dist.TransformedDistribution(self.base(temperature), parts)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_θ(x) in nats, shape ``x.shape[:-3]``."""
        return self.distribution().log_prob(self.check_x(x))

    # ------------------------------------------------------------------ Pyro program
    def model(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
              y: Optional[Tensor] = None) -> None:
        """p_θ(x) for a mini-batch ``x`` of shape (B, C, H, W); ``kl_scale`` is accepted
        for the common signature and ignored (there is no latent to weight), and labels
        ``y`` are refused (a density flow takes none)."""
        x = self.check_x(x)
        self.check_y(y, len(x))
        register(self.pyro_prefix, self)
        with data_plate(x, num_data):
            pyro.sample("x", self.distribution(), obs=x)

    def make_guide(self, spec: Optional[Mapping[str, Any]] = None) -> "EmptyGuide":
        """The empty guide; ``spec`` (e.g. from a checkpoint) must be ``{"name": "empty"}``."""
        if spec is not None and dict(spec) != {"name": "empty"}:
            raise ConfigError(f"a flow model has no latent variable, so no guide; got guide {dict(spec)!r}",
                              params=("guide",))
        return self.guide

    # ------------------------------------------------------------------ conveniences
    def _parts(self) -> Tuple[Transform, Transform]:
        pre = ComposeTransform(preprocessing(self.preprocess, self.alpha))
        return pre, self.transform()

    def encode(self, x: Tensor) -> Tensor:
        """z = f_θ(P⁻¹(x)): images ``(…, C, H, W)`` in [0, 1) to latents ``(…, *latent_shape)``."""
        pre, flow = self._parts()
        return flow(pre.inv(x))

    def decode(self, z: Tensor) -> Tensor:
        """x = P(f_θ⁻¹(z)): latents to images."""
        pre, flow = self._parts()
        return pre(flow.inv(z))

    @torch.no_grad()
    def generate(self, n: int, temperature: Optional[float] = None, y: Optional[Tensor] = None) -> Tensor:
        """``n`` samples of p_θ at ``temperature`` (z ~ N(0, T² I), default T = 1), clamped
        to [0, 1] (labels ``y`` are refused)."""
        self.check_y(y, n)
        return self.distribution(1.0 if temperature is None else temperature).sample((n,)).clamp(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, guide: Optional[nn.Module] = None, y: Optional[Tensor] = None) -> Tensor:
        """The round trip ``decode(encode(x))`` — equal to ``x`` up to rounding; a visual
        check of invertibility (labels ``y`` are refused)."""
        self.check_y(y, len(x))
        return self.decode(self.encode(self.check_x(x)).clone()).clamp(0.0, 1.0)


class EmptyGuide(nn.Module):
    """The guide of a model without latent variables (``flow.guide``): no parameters, no
    sample sites, the common signature ``guide(x, num_data=None, kl_scale=1.0)``."""

    def __init__(self, x_shape: Sequence[int]) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.spec: Dict[str, Any] = {"name": "empty"}

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
                y: Optional[Tensor] = None) -> None:
        check_images(x, self.x_shape)


def build_flow_model(name: str, x_shape: Sequence[int], **options: Any) -> FlowModel:
    """Build a registered density flow.

    Args:
        name: ``nice``, ``realnvp`` or ``glow``; unknown names raise listing the valid ones.
        x_shape: image shape ``(C, H, W)``, e.g. ``data.x_shape``.
        **options: model options (e.g. ``hidden_channels=16``); unknown keys and wrong types
            raise, naming the option.

    Example:
        >>> flow = build_flow_model("realnvp", (1, 8, 8), num_scales=2, hidden_channels=8)
        >>> flow.log_prob(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3])
    """
    x_shape = check_shape(x_shape)
    flow = FLOW_MODELS.build(name, x_shape, **options)
    flow.spec = {"name": flow.spec["name"], "x_shape": list(x_shape), **{k: v for k, v in flow.spec.items() if k != "name"}}
    return flow
