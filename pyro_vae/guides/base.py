"""The guide contract: q_φ(z | x) as a Pyro program, swappable by name without touching the model.

Every guide is a :class:`Guide`, whose one entry point Pyro calls, :meth:`Guide.forward`,
checks ``x`` once and runs the guide's core, :meth:`Guide.sample` — the latent sites,
sampled inside the same ``"data"`` plate and ``poutine.scale`` as the model::

    def forward(self, x, num_data=None, kl_scale=1.0, y=None):
        x, y = self.check_x(x), self.check_y(y, len(x))
        with pyro.plate("data", N, subsample_size=B), poutine.scale(scale=kl_scale):
            return self.sample(x, y)   # the joint latent z, (B, z_dim); sample(x) without labels

``y`` are the images' labels, for a VAE that takes them: q(z | x, y) conditions on them
(through the encoder's features, :meth:`~pyro_vae.models.base.Encoder.features`); the
semi-supervised VAE's guide samples site ``"y"`` ~ q(y | x) where they are not given.

``sample`` is the core rather than a distribution because not every q(z | x) is one
distribution: the hierarchical VAE's q(z_l | x, z_{>l}) depends on the layers sampled above
it, so its guide (:class:`~pyro_vae.models.hvae.HierarchicalGuide`) has a ``sample`` and
no single ``distribution`` — and no method of the contract that it must refuse. A guide
whose q of the joint latent *is* one distribution is a :class:`JointGuide`: it says what q
is, :meth:`JointGuide.distribution` (batch shape (B,), event shape (z_dim,)), and samples
it as site ``"z"`` (the local guides of :mod:`.local` cut it into a model's several sites).
Whoever needs that distribution (the posterior analysis) asks whether a guide is a
:class:`JointGuide`.

The public methods (``forward``, ``location``, ``reconstruct``, ``distribution``) check
``x`` once and call the methods a subclass implements (``sample``, ``_location``,
``_distribution``), which take the checked ``x``: the pattern of
``torch.distributions.Transform``, whose ``__call__`` wraps the ``_call`` of a subclass.

Which guide a name builds is the VAE's to say: the ``gaussian`` entry of :data:`GUIDES`
returns ``vae.gaussian_guide()`` (``vae.guide`` itself) and the flow guides of
:mod:`pyro_vae.guides.flows` ``vae.flow_guide(...)``, so a VAE of several latent sites builds its own kind.
:class:`GaussianGuide` (the single-site VAE's ``vae.guide``), flow guides (:mod:`pyro_vae.guides.flows`)
and the non-amortized local guides of the posterior analysis (:mod:`.local`) are
:class:`JointGuide` s.
"""

from __future__ import annotations

import abc
import inspect
import itertools
from typing import Any, Dict, List, Optional

import pyro
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..plates import data_plate, kl_scaled, register, uses_param_store
from ..registry import Registry

#: The guides by name; a guide from outside pyro-vae is a class checked by :func:`check_guide_class`.
GUIDES: Registry[Any] = Registry("guide", accept=lambda obj, name: check_guide_class(obj, name))

_instance_counter = itertools.count()


class Guide(nn.Module, abc.ABC):
    """Base class of guides: ``guide(x, num_data=None, kl_scale=1.0)`` samples the latent sites.

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

    def check_y(self, y: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """The labels ``y`` of ``batch`` images checked against what the VAE takes (a local
        guide, fitted to fixed images, ignores them)."""
        return self.vae.check_y(y, batch) if self.vae is not None else None

    def register(self) -> None:
        """Register the encoder and this guide's own parameters with Pyro's param store."""
        if self.vae is not None:
            self.vae._register("encoder", self.vae.encoder)
        if any(True for _ in self.parameters()):
            register(self.pyro_prefix, self)

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
                y: Optional[Tensor] = None) -> Tensor:
        """Sample the latent sites ~ q_φ(z | x) (q_φ(z | x, y) given labels) for a mini-batch
        x (B, C, H, W) of ``num_data``; returns the joint latent z (B, z_dim)."""
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        if uses_param_store():
            self.register()
        with data_plate(x, num_data), kl_scaled(kl_scale):
            return self.sample(x) if y is None else self.sample(x, y)

    @abc.abstractmethod
    def sample(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The latent sites, sampled inside the caller's plate and scale for the checked
        images ``x`` (and labels ``y``); returns the joint latent z (B, z_dim) (see the
        module docstring). The labels are passed only where there are some: a guide of
        VAEs without labels may implement ``sample(x)``."""

    def local_parameters(self) -> List[nn.Parameter]:
        """What a per-image copy of this guide frees (:func:`~pyro_vae.infer.gaps.local_guide`):
        the bias of the encoder's Gaussian head, which spans every (μ, σ) of the base, and the
        guide's own parameters (e.g. flows)."""
        params = list(self.parameters())
        head = getattr(getattr(self.vae, "encoder", None), "head", None)
        if getattr(head, "bias", None) is not None:
            params.append(head.bias)
        return params

    def location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """A deterministic summary z of q_φ(z | x) (of q_φ(z | x, y) given labels), (B, z_dim):
        see :meth:`_location`."""
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        return self._location(x) if y is None else self._location(x, y)

    def _location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """:meth:`location` of checked images: the encoder mean μ_φ(x) here; flow guides push
        it through their flows."""
        encoder = self.vae.encoder
        loc, _ = encoder.loc_scale(encoder.features(x, y))
        return loc

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """``vae.decode`` (the mean of p_θ(x | z), or a sample) at z = :meth:`location` (x)
        (given the labels ``y``, for a VAE that takes them)."""
        return self.vae.decode(self.location(x, y), y)


class JointGuide(Guide):
    """A guide whose q_φ(z | x) of the joint latent is one distribution, sampled as site ``"z"``.

    Subclasses implement :meth:`_distribution`; :meth:`distribution` is the public, checked
    call of it.
    """

    def distribution(self, x: Tensor, y: Optional[Tensor] = None) -> "pyro.distributions.TorchDistribution":
        """q_φ(z | x) (q_φ(z | x, y) given labels) with batch shape (B,) and event shape (z_dim,)."""
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        return self._distribution(x) if y is None else self._distribution(x, y)

    @abc.abstractmethod
    def _distribution(self, x: Tensor, y: Optional[Tensor] = None) -> "pyro.distributions.TorchDistribution":
        """:meth:`distribution` of checked images (and labels)."""

    def sample(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Site ``"z"`` ~ q_φ(z | x, y)."""
        return pyro.sample("z", self._distribution(x) if y is None else self._distribution(x, y))


class GaussianGuide(JointGuide):
    """q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²): the VAE's encoder; a single-site ``vae.guide`` is one."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__(vae)

    def _distribution(self, x: Tensor, y: Optional[Tensor] = None):
        return self.vae.encoder(x, y)


def check_guide_class(cls: Any, name: str) -> type:
    """``cls`` if it meets the guide contract — a :class:`Guide` subclass that implements
    ``sample`` (or a :class:`JointGuide` that implements ``_distribution``), built as
    ``cls(vae, **options)`` — else one :class:`ConfigError` naming what it lacks.

    Example:
        >>> check_guide_class(dict, "my.py:Guide")
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: guide 'my.py:Guide' is no subclass of pyro_vae.Guide: a guide samples the latent sites in sample(x) (subclass pyro_vae.Guide) or is one distribution, _distribution(x) (subclass pyro_vae.guides.JointGuide)
    """
    what = f"guide {name!r}"
    if not isinstance(cls, type) or not issubclass(cls, Guide):
        it_is = "no subclass of pyro_vae.Guide" if isinstance(cls, type) else f"a {type(cls).__name__}, not a class"
        raise ConfigError(f"{what} is {it_is}: a guide samples the latent sites in sample(x) (subclass pyro_vae.Guide) or is one "
                          "distribution, _distribution(x) (subclass pyro_vae.guides.JointGuide)", params=("guide",))
    abstract = sorted(getattr(cls, "__abstractmethods__", ()))
    if abstract:
        raise ConfigError(f"{what} lacks {', '.join(abstract)} of the guide contract: implement "
                          f"{'it' if len(abstract) == 1 else 'them'}", params=("guide",))
    params = list(inspect.signature(cls).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD,
                                             params[0].VAR_POSITIONAL):
        raise ConfigError(f"{what} has a constructor without a first parameter for the VAE: a guide is built "
                          "as Guide(vae, **options)", params=("guide",))
    return cls


@GUIDES.register("gaussian")
def gaussian(vae: nn.Module) -> Guide:
    """The VAE's amortized Gaussian guide, ``vae.gaussian_guide()``: ``vae.guide`` itself."""
    return vae.gaussian_guide()


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
        >>> build_guide("gaussian", vae) is vae.guide, vae.guide.spec
        (True, {'name': 'gaussian'})
    """
    if not (isinstance(vae, nn.Module) and getattr(vae, "has_latent", False) and hasattr(vae, "encoder")):
        raise ConfigError(f"a guide is built for a VAE (e.g. build_vae(...)), got {type(vae).__name__}"
                          + (": a density flow has no latent variable" if isinstance(vae, nn.Module) else ""))
    return GUIDES.build(name, vae, **options)
