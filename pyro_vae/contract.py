"""The model contract: what the application may ask of everything ``pyro-vae train --model``
builds — a VAE (:class:`~pyro_vae.models.base.VAE`) or a density flow
(:class:`~pyro_vae.flows.base.FlowModel`).

A :class:`Model` is an ``nn.Module`` and a Pyro program:

* ``model(x, num_data=None, kl_scale=1.0, y=None)`` — the generative model, observing ``"x"``
  inside the ``"data"`` plate (:mod:`pyro_vae.plates`), and the images' labels ``y`` where the
  model takes labels (:attr:`Model.num_classes`: a conditional VAE needs them, the
  semi-supervised VAE sums out those it is not given);
* ``guide`` — its default guide, a callable with the same signature and the model's latent
  sites (``vae.guide``, the amortized Gaussian; a density flow's is empty), and
  :meth:`Model.make_guide` to build another one from a spec;
* ``has_latent`` — whether there is a latent variable at all (a density flow has none, so
  its likelihood is exact and "IWAE" with k = 1 is log p(x));
* ``generate(n, y=None)``, ``reconstruct(x, guide, y=None)`` — images in [0, 1] to look at;
* the data contract: ``dequantize`` (a continuous density over dequantized grey levels),
  ``check_data(binary)``, ``bits_per_dim(nll)``.

A class written outside pyro-vae (named by import path or registered by an installed
package, :mod:`pyro_vae.plugins`) is held to the same contract by :func:`check_model_class`:
a subclass of :class:`Model` that implements its abstract members, has the members the latent
tools use if it has a latent (:data:`LATENT_MEMBERS`, which :class:`~pyro_vae.models.base.VAE`
provides) and a constructor ``(x_shape, **options)`` — a VAE's with ``z_dim`` and ``likelihood``.

What the command line uses for a model unless told otherwise (epochs, binarization, the k
of its IWAE estimates) is the application's policy, not part of the contract
(:func:`inference.config.defaults_for`).
"""

from __future__ import annotations

import abc
import inspect
import itertools
import math
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .plates import check_finite, check_images, check_labels, check_range, validating

_instance_counter = itertools.count()


def _first_parameter(module: nn.Module) -> Optional[nn.Parameter]:
    """``next(module.parameters(), None)`` without the prefixed names and the set of seen
    tensors that make that generator cost ~7 µs to its first item (this runs at every model
    and guide call: ~1 µs), by reading the module tree's own dicts in the same order."""
    for param in module._parameters.values():
        if param is not None:
            return param
    for child in module._modules.values():
        found = None if child is None else _first_parameter(child)
        if found is not None:
            return found
    return None


class Model(nn.Module, abc.ABC):
    """Base class of everything ``pyro-vae train --model`` builds.

    Args:
        x_shape: image shape ``(C, H, W)``.
    """

    #: Name under which the class is registered (set by the registry).
    registry_name: ClassVar[str] = ""
    #: Whether the model has latent sample sites (False for a density flow).
    has_latent: ClassVar[bool] = True
    #: Whether ``--precision bf16`` is safe: the networks may run in bfloat16 because every
    #: log-density is computed from their outputs in float32 (not so for a density flow,
    #: whose log-determinants and inverses are the network, nor an autoregressive decoder).
    supports_bf16: ClassVar[bool] = False
    #: Upper bound on samples × images per decoder pass of the IWAE evaluation (memory and,
    #: on a CPU, cache); an expensive decoder lowers it.
    max_eval_rows: ClassVar[int] = 20_000
    #: Whether the label is a random variable of the model — p(y), and q(y | x) in the guide
    #: (the semi-supervised VAE, which sums out the labels it is not given). Otherwise a model
    #: that takes labels (a conditional VAE) needs the label of every image.
    label_is_latent: ClassVar[bool] = False

    def __init__(self, x_shape) -> None:
        super().__init__()
        self.x_shape: Tuple[int, ...] = tuple(int(s) for s in x_shape)
        # Pyro's param store is global: a unique prefix keeps two models in one process
        # (e.g. several guides compared in a loop) from sharing parameters by name.
        self.pyro_prefix = f"{type(self).__name__}{next(_instance_counter)}"
        #: What the model was built from (``{"name": ..., **options}``); set by the builder and
        #: recorded in checkpoints, so the model can be rebuilt from it.
        self.spec: Dict[str, Any] = {}
        #: Number of classes of the label ``y`` the model takes (``None``: it takes none).
        self.num_classes: Optional[int] = None

    @property
    def param_dtype(self) -> Optional[torch.dtype]:
        """The dtype of the parameters (the first one's; ``None`` without any), which
        :meth:`check_x` converts images to."""
        param = _first_parameter(self)
        return None if param is None else param.dtype

    @property
    def num_dims(self) -> int:
        """Number of dimensions D of one image (C·H·W), the denominator of bits/dim."""
        return int(math.prod(self.x_shape))

    def check_x(self, x: Tensor, values: Optional[bool] = None) -> Tensor:
        """``x`` as images ``(B, *x_shape)`` in the model's dtype (see
        :func:`~pyro_vae.plates.check_images`); else one clear :class:`DataError`.

        Args:
            x: the images.
            values: also scan the values — finite, in the likelihood's support
                (:meth:`check_values`) — which costs a pass over ``x``. ``None``: when
                Pyro's validation is on (it is off in the training engine, which checked its
                data once when they were loaded); the public entry points pass ``True``.
        """
        x = check_images(x, self.x_shape, self.param_dtype)
        if values or (values is None and validating()):
            self.check_values(check_finite(x))
        return x

    def check_y(self, y: Optional[Tensor], batch: int, values: Optional[bool] = None) -> Optional[Tensor]:
        """The labels ``y`` of a batch of ``batch`` images, checked against what the model
        takes (:func:`~pyro_vae.plates.check_labels`; the values, an O(B) scan, as for
        :meth:`check_x`); ``None`` where the model takes no label or sums it out."""
        if y is None:
            if self.num_classes is not None and not self.label_is_latent:
                raise ConfigError("a conditional VAE needs the label y of every image (y=…)", params=("y",))
            return None
        if self.num_classes is None:
            raise ConfigError(f"the {self.spec.get('name') or type(self).__name__} model takes no labels "
                              "(build it with num_classes=… for a conditional VAE)", params=("y",))
        return check_labels(y, batch, self.num_classes, values=values or (values is None and validating()))

    def check_values(self, x: Tensor) -> None:
        """Refuse finite images outside the model's support with a :class:`DataError`
        (default: grey levels in [0, 1])."""
        check_range(x)

    def check_guide(self, guide: nn.Module) -> None:
        """Refuse a guide built for another model: it would condition on that model's
        encoder, which this model's training never updates (nor evaluates)."""
        owner = getattr(guide, "vae", None)
        if owner is not None and owner is not self:
            raise ConfigError("the guide was built for another model (it uses that model's encoder); "
                              "build it for this one, e.g. build_guide(name, vae)")

    # ------------------------------------------------------------------ data contract
    @property
    @abc.abstractmethod
    def dequantize(self) -> bool:
        """Whether the model is a continuous density fitted to dequantized grey levels."""

    @abc.abstractmethod
    def check_data(self, binary: bool) -> None:
        """Refuse (with a ConfigError) data the model is not defined on."""

    @abc.abstractmethod
    def bits_per_dim(self, nll: float) -> float:
        """Bits per dimension of ``nll`` nats per example."""

    # ------------------------------------------------------------------ Pyro program
    @abc.abstractmethod
    def model(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
              y: Optional[Tensor] = None):
        """The generative model for a mini-batch ``x`` of ``num_data`` examples (and their
        labels ``y``, for a model that takes labels)."""

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
                y: Optional[Tensor] = None):
        """The Pyro model, so that the module itself stands for it: ``Trace_ELBO()(model,
        guide)`` is then an ``ELBOModule`` whose parameters are the model's and the guide's."""
        return self.model(x, num_data, kl_scale, y)

    @abc.abstractmethod
    def make_guide(self, spec: Optional[Mapping[str, Any]] = None) -> nn.Module:
        """A guide for this model from ``{"name": ..., **options}`` (``None``: the default)."""

    # ------------------------------------------------------------------ images
    @abc.abstractmethod
    def generate(self, n: int, temperature: Optional[float] = None, y: Optional[Tensor] = None) -> Tensor:
        """``n`` images of the model, in [0, 1] (of the classes ``y``, (n,), for a model that
        takes labels)."""

    @abc.abstractmethod
    def reconstruct(self, x: Tensor, guide: Optional[nn.Module] = None, y: Optional[Tensor] = None) -> Tensor:
        """Reconstructions of ``x`` through ``guide`` (the default guide when ``None``)."""


#: What the tools that look at the latent space ask of a model with a latent variable
#: (guides, the IWAE evaluation, latent usage, NUTS, interpolations): the members of
#: :class:`~pyro_vae.models.base.VAE` beyond :class:`Model`.
LATENT_MEMBERS = ("latent_sites", "latents", "latent_model", "split_latents", "join_latents", "decode",
                  "gaussian_guide", "flow_guide")
#: The members every model offers the application (the abstract ones of :class:`Model`).
MODEL_MEMBERS = ("model", "make_guide", "generate", "reconstruct", "dequantize", "check_data", "bits_per_dim")


def check_model_class(cls: Any, name: str, latent: Optional[bool] = None) -> Type[Model]:
    """``cls`` if it meets the model contract; else one :class:`ConfigError` naming what it
    lacks. ``latent``: it must (True) or must not (False) have a latent variable.

    Example:
        >>> from torch import nn
        >>> class Net(nn.Module):
        ...     def model(self, x): ...
        ...     def guide(self, x): ...
        >>> check_model_class(Net, "my.py:Net")
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: model 'my.py:Net' does not meet the model contract: it is no subclass of pyro_vae.Model and lacks make_guide, generate, reconstruct, dequantize, check_data, bits_per_dim; subclass pyro_vae.VAE (a VAE: an Encoder and a Decoder) or pyro_vae.Model
    """
    what = f"model {name!r}"

    def refuse(text: str) -> ConfigError:
        return ConfigError(f"{what} {text}", params=("model",))

    if not isinstance(cls, type):
        raise refuse(f"is a {type(cls).__name__}, not a class: name a subclass of pyro_vae.VAE or pyro_vae.Model")
    if not issubclass(cls, Model):
        missing = [m for m in MODEL_MEMBERS if not hasattr(cls, m)]
        lacks = f" and lacks {', '.join(missing)}" if missing else ""
        raise refuse(f"does not meet the model contract: it is no subclass of pyro_vae.Model{lacks}; subclass "
                     "pyro_vae.VAE (a VAE: an Encoder and a Decoder) or pyro_vae.Model")
    abstract = [m for m in MODEL_MEMBERS if m in getattr(cls, "__abstractmethods__", ())]
    abstract += sorted(set(getattr(cls, "__abstractmethods__", ())) - set(abstract))
    if abstract:
        raise refuse(f"lacks {', '.join(abstract)} of the model contract (pyro_vae.Model): implement "
                     f"{'it' if len(abstract) == 1 else 'them'}")
    if latent is not None and cls.has_latent != latent:
        raise refuse("has a latent variable: build it as a VAE (build_vae)" if cls.has_latent else
                     "is a density flow (has_latent is False): build it with build_flow_model")
    if cls.has_latent:
        missing = [m for m in LATENT_MEMBERS if not hasattr(cls, m)]
        if missing:
            raise refuse(f"has a latent variable but lacks {', '.join(missing)}, which the latent tools use "
                         "(guides, IWAE, latent usage, NUTS): subclass pyro_vae.VAE, which has them")
    params = list(inspect.signature(cls).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    names = {p.name for p in params[1:]}
    keywords = any(p.kind is p.VAR_KEYWORD for p in params)
    missing = [] if params and params[0].kind in positional else ["x_shape (first)"]
    missing += [p for p in (("z_dim", "likelihood") if cls.has_latent else ()) if p not in names and not keywords]
    if missing:
        how = "(x_shape, z_dim=…, likelihood=…, **options)" if cls.has_latent else "(x_shape, **options)"
        raise refuse(f"has a constructor without the parameter{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(missing)}: a {'VAE' if cls.has_latent else 'density flow'} is built as {how}")
    return cls
