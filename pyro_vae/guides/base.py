"""The guide contract: q_φ(z | x) as a Pyro program, swappable by name without touching the model.

Every guide is a :class:`Guide`: a subclass says *what* q is — :meth:`Guide.distribution`,
a distribution with batch shape (B,) and event shape (z_dim,) — and the one concrete
:meth:`Guide.forward` samples it as site ``"z"`` inside the same ``"data"`` plate and
``poutine.scale`` as the model::

    def forward(self, x, num_data=None, kl_scale=1.0):
        with pyro.plate("data", N, subsample_size=B), poutine.scale(scale=kl_scale):
            return pyro.sample("z", self.distribution(x))

A guide of a VAE with several latent sites (the hierarchical VAE's, where q(z_l | x, z_>l)
depends on the layers sampled before it) overrides :meth:`Guide.sample` instead, the one
step inside the plate; everything else stays.

The VAE's own amortized Gaussian guide is an instance (``vae.guide``, a
:class:`GaussianGuide`); flow guides (:mod:`.flows`) and the non-amortized local guides of
the posterior analysis (:mod:`.local`) are subclasses.
"""

from __future__ import annotations

import abc
import itertools
from typing import Any, Dict, List, Optional

import pyro
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..plates import data_plate, kl_scaled, register
from ..registry import Registry

GUIDES: Registry[Any] = Registry("guide")

_instance_counter = itertools.count()


class Guide(nn.Module, abc.ABC):
    """Base class of guides: ``guide(x, num_data=None, kl_scale=1.0)`` samples site ``"z"``.

    An amortized guide *references* its VAE (it is not a submodule), so
    ``guide.state_dict()`` holds only the guide's own parameters (e.g. flows) while the
    encoder's live in the VAE; it conditions on the VAE's encoder features
    ``h = vae.encoder.features(x)``. A non-amortized guide has no VAE (``vae=None``).

    Args:
        vae: the VAE whose encoder the guide uses, or ``None``.
    """

    registry_name: str = ""

    def __init__(self, vae: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.__dict__["vae"] = vae  # bypass nn.Module registration on purpose (see above)
        owner = vae.pyro_prefix if vae is not None else "local"
        self.pyro_prefix = f"{owner}.{type(self).__name__}{next(_instance_counter)}"
        #: What the guide was built from; recorded in checkpoints.
        self.spec: Dict[str, Any] = {}

    def check_x(self, x: Tensor) -> Tensor:
        """``x`` checked against the VAE's image shape (a local guide checks the batch)."""
        return self.vae.check_x(x) if self.vae is not None else x

    def register(self) -> None:
        """Register the encoder and this guide's own parameters with Pyro's param store."""
        if self.vae is not None:
            self.vae._register("encoder", self.vae.encoder)
        if any(True for _ in self.parameters()):
            register(self.pyro_prefix, self)

    @abc.abstractmethod
    def distribution(self, x: Tensor) -> "pyro.distributions.TorchDistribution":
        """q_φ(z | x) with batch shape (B,) and event shape (z_dim,)."""

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        """Sample site ``"z"`` ~ q_φ(z | x) for a mini-batch x (B, C, H, W) of ``num_data``."""
        x = self.check_x(x)
        self.register()
        with data_plate(x, num_data), kl_scaled(kl_scale):
            return self.sample(x)

    def sample(self, x: Tensor) -> Tensor:
        """The latent sites, inside the caller's plate and scale: ``"z"`` ~ :meth:`distribution`
        here; a guide of several sites samples each of them (and returns the joint z)."""
        return pyro.sample("z", self.distribution(x))

    def local_parameters(self) -> List[nn.Parameter]:
        """What a per-image copy of this guide frees (:func:`~pyro_vae.infer.gaps.local_guide`):
        the bias of the encoder's Gaussian head, which spans every (μ, σ) of the base, and the
        guide's own parameters (e.g. flows)."""
        params = list(self.parameters())
        head = getattr(getattr(self.vae, "encoder", None), "head", None)
        if getattr(head, "bias", None) is not None:
            params.append(head.bias)
        return params
    def location(self, x: Tensor) -> Tensor:
        """A deterministic summary z of q_φ(z | x), (B, z_dim): the encoder mean μ_φ(x) here;
        flow guides push it through their flows."""
        encoder = self.vae.encoder
        loc, _ = encoder.loc_scale(encoder.features(self.check_x(x)))
        return loc

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``vae.decode`` (the mean of p_θ(x | z), or a sample) at z = :meth:`location` (x)."""
        return self.vae.decode(self.location(x))


@GUIDES.register("gaussian")
class GaussianGuide(Guide):
    """q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²): the VAE's encoder; ``vae.guide`` is one."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__(vae)

    def distribution(self, x: Tensor):
        return self.vae.encoder(self.check_x(x))


def build_guide(name: str, vae: nn.Module, **options: Any) -> Guide:
    """Build a registered guide for ``vae``.

    Args:
        name: guide name (``gaussian``, ...); unknown names raise listing the valid ones.
        vae: the VAE whose encoder the guide conditions on.
        **options: guide-specific options (e.g. ``num_flows``); unknown keys and wrong
            types raise, naming the option.

    Example:
        >>> from pyro_vae import build_vae
        >>> vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=4, hidden_dims=(32,))
        >>> build_guide("gaussian", vae).spec
        {'name': 'gaussian'}
    """
    if not (isinstance(vae, nn.Module) and getattr(vae, "has_latent", False) and hasattr(vae, "encoder")):
        raise ConfigError(f"a guide is built for a VAE (e.g. build_vae(...)), got {type(vae).__name__}"
                          + (": a density flow has no latent variable" if isinstance(vae, nn.Module) else ""))
    layered = getattr(vae, "flow_guide", None)  # a VAE of several latent sites: its own guide
    if name == "gaussian" and layered is not None:
        GUIDES.options(name, options)  # the same checks: the Gaussian guide has no options
        guide = layered(None)
        guide.spec = {"name": "gaussian"}
        return guide
    return GUIDES.build(name, vae, **options)
