"""Build a model by name — a VAE or a density flow — and its guide, from the specs a run
records (``{"name": ..., **options}``).

A VAE's spec may say that it takes labels: ``"num_classes": C`` (what a built model records),
or ``"condition": "label"`` (a conditional VAE whose number of classes comes from the data,
``build_model(..., num_classes=data.num_classes)``); the semi-supervised ``ssvae`` always
takes them (:func:`needs_labels`)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from . import plugins
from .contract import Model, check_model_class
from .datasets import DATASETS
from .errors import ConfigError
from .flows import FLOW_MODELS, build_flow_model
from .guides import GUIDES
from .likelihoods import build_likelihood
from .models import MODELS, build_vae
from .data_settings import check_condition
from .nets.mlp import check_dropout
from .plates import check_z_dim
from .priors import PRIORS


def _label_options(options: dict, cls: type, name: str) -> bool:
    """Pop the label keys of a model spec's ``options`` (``condition``, ``num_classes``) and
    say whether the model takes labels; ``condition`` is checked, and refused for a model
    that has no latent or that takes its label already."""
    condition = check_condition(options.pop("condition", None))
    if condition is not None:
        if not cls.has_latent or cls.label_is_latent:
            what = "it has no latent variable" if not cls.has_latent else "its label is a latent variable already"
            raise ConfigError(f"condition={condition!r} does not apply to the {name} model: {what}",
                              params=("condition",))
    return condition is not None or cls.label_is_latent or options.get("num_classes") is not None


def needs_labels(spec: Mapping[str, Any]) -> bool:
    """Whether the model of ``spec`` takes labels (then its data must have them)."""
    options = dict(spec)
    return _label_options(options, model_class(options.get("name")), options.get("name"))


def model_class(name: str) -> type:
    """The class registered as ``name`` among the VAEs or the density flows — or one from
    outside pyro-vae that an import path (``package.module:Class``, ``file.py:Class``) or
    an installed package's entry point names, checked against the model contract
    (:func:`~pyro_vae.contract.check_model_class`); otherwise one :class:`ConfigError`
    listing both registries.

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
    found = plugins.resolve("model", name)
    if found is not None:
        return check_model_class(found[0], plugins.display_name(name))
    installed = f", {', '.join(MODELS.installed())} (installed packages)" if MODELS.installed() else ""
    raise ConfigError(
        f"unknown model {name!r}; valid models: {', '.join(MODELS.names())} (VAEs), "
        f"{', '.join(FLOW_MODELS.names())} (density flows){installed}, or an import path "
        "(package.module:Class, file.py:Class)", params=("model",)
    )


def code_sources(model: Mapping[str, Any], guide: Optional[Mapping[str, Any]] = None,
                 dataset: Optional[str] = None) -> Dict[str, plugins.Source]:
    """Where the code of the model, guide and dataset came from, for those that come from
    outside pyro-vae (``{"model": Source, ...}``; built-in ones are left out)."""
    guide_name = (guide or {}).get("name")
    names = (("model", model["name"], model["name"] in MODELS or model["name"] in FLOW_MODELS),
             ("guide", guide_name, guide_name in GUIDES), ("dataset", dataset, dataset in DATASETS))
    out = {}
    for kind, name, builtin in names:
        found = None if name is None or builtin else plugins.resolve(kind, name)
        if found is not None:
            out[kind] = found[1]
    return out


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
    _label_options(options, cls, name)
    options.pop("num_classes", None)
    if not cls.has_latent:
        FLOW_MODELS.options(name, options)
        if binary:
            cls.refuse_binary()
        return
    bound = MODELS.options(name, options)
    check_z_dim(bound["z_dim"])
    with MODELS.scoped():  # every VAE's option (and the SS-VAE's classifier's), whose range needs no image shape
        for key in ("dropout", "classifier_dropout"):
            if bound.get(key) is not None:
                check_dropout(bound[key], key)
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
    num_classes: Optional[int] = None,
) -> Model:
    """A model from its spec ``{"name": ..., "x_shape": ..., **options}``.

    Args:
        spec: the model's name and options (``x_shape`` may come separately).
        prior: a VAE's prior spec (``None``: N(0, I)); a flow takes none.
        x_shape: image shape, overriding any in ``spec``.
        num_classes: the data's number of classes, for a model that takes labels and whose
            spec does not record it.
    """
    options = dict(spec)
    name = options.pop("name", None)
    cls = model_class(name)
    if _label_options(options, cls, name):
        options["num_classes"] = options.get("num_classes") or num_classes
        if options["num_classes"] is None:
            raise ConfigError(f"the {name} model takes labels: it needs num_classes, the data's number of classes",
                              params=("num_classes",))
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
    num_classes: Optional[int] = None,
) -> Tuple[Model, nn.Module]:
    """A model (see :func:`build_model`) and the guide ``model.make_guide(guide)``."""
    built = build_model(model, prior, x_shape, num_classes)
    return built, built.make_guide(guide)
