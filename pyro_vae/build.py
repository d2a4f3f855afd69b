"""Build a model by name — a VAE or a density flow — and its guide, from the specs a run
records (``{"name": ..., **options}``)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

from torch import nn

from .contract import Model
from .errors import ConfigError
from .flows import FLOW_MODELS, build_flow_model
from .guides import GUIDES
from .likelihoods import build_likelihood
from .models import MODELS, build_vae
from .nets.mlp import check_dropout
from .plates import check_z_dim
from .priors import PRIORS


def model_class(name: str) -> type:
    """The class registered as ``name`` among the VAEs or the density flows; otherwise one
    :class:`ConfigError` listing both registries.

    Example:
        >>> model_class("dense").has_latent, model_class("realnvp").has_latent
        (True, False)
    """
    vae, flow = name in MODELS, name in FLOW_MODELS
    if vae and flow:  # a registration bug, not a user error
        raise ValueError(f"model name {name!r} is registered both as a VAE and as a flow model")
    if vae:
        return MODELS.get(name)
    if flow:
        return FLOW_MODELS.get(name)
    raise ConfigError(
        f"unknown model {name!r}; valid models: {', '.join(MODELS.names())} (VAEs), "
        f"{', '.join(FLOW_MODELS.names())} (density flows)", params=("model",)
    )


def check_specs(
    model: Mapping[str, Any],
    guide: Optional[Mapping[str, Any]] = None,
    prior: Optional[Mapping[str, Any]] = None,
    binary: Optional[bool] = None,
) -> None:
    """Check the specs a model, its guide and its prior would be built from — names, option
    names and types, and whether the likelihood takes ``binary`` data — without building
    anything and without an image shape, so that a command finds these mistakes before it
    loads any data. What depends on the image shape is checked when the model is built.

    Example:
        >>> check_specs({"name": "dense", "hidden_dims": [64]}, binary=False)
        Traceback (most recent call last):
        ...
        pyro_vae.errors.ConfigError: the bernoulli likelihood needs binary data; ...
    """
    options = dict(model)
    name = options.pop("name", None)
    options.pop("x_shape", None)
    cls = model_class(name)
    if not cls.has_latent:
        FLOW_MODELS.options(name, options)
        if binary:
            cls.refuse_binary()
        return
    bound = MODELS.options(name, options)
    check_z_dim(bound["z_dim"])
    if "dropout" in bound:  # every VAE's option, whose range needs no image shape
        with MODELS.scoped():
            check_dropout(bound["dropout"])
    if binary is not None:
        build_likelihood(bound["likelihood"], (1, 1, 1)).check_data(binary)
    if prior is not None:
        prior_options = dict(prior)
        PRIORS.options(prior_options.pop("name", None), prior_options)
    if guide is not None:
        guide_options = dict(guide)
        GUIDES.options(guide_options.pop("name", None), guide_options)


def build_model(
    spec: Mapping[str, Any],
    prior: Optional[Mapping[str, Any]] = None,
    x_shape: Optional[Sequence[int]] = None,
) -> Model:
    """A model from its spec ``{"name": ..., "x_shape": ..., **options}``.

    Args:
        spec: the model's name and options (``x_shape`` may come separately).
        prior: a VAE's prior spec (``None``: N(0, I)); a flow takes none.
        x_shape: image shape, overriding any in ``spec``.
    """
    options = dict(spec)
    name = options.pop("name", None)
    cls = model_class(name)
    if x_shape is not None:
        options["x_shape"] = tuple(x_shape)
    if "x_shape" not in options:
        raise ConfigError(f"the spec of model {name!r} gives no x_shape", params=("x_shape",))
    shape = options.pop("x_shape")
    if not cls.has_latent:
        if prior is not None:
            raise ConfigError(f"the density flow {name!r} has no latent variable, so no prior", params=("prior",))
        return build_flow_model(name, shape, **options)
    return build_vae(name, shape, prior=prior or "normal", **options)


def build_model_and_guide(
    model: Mapping[str, Any],
    guide: Optional[Mapping[str, Any]] = None,
    prior: Optional[Mapping[str, Any]] = None,
    x_shape: Optional[Sequence[int]] = None,
) -> Tuple[Model, nn.Module]:
    """A model (see :func:`build_model`) and the guide ``model.make_guide(guide)``."""
    built = build_model(model, prior, x_shape)
    return built, built.make_guide(guide)
