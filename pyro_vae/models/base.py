"""The VAE contract: a Pyro ``model(x)`` and an amortized Gaussian ``guide(x)``.

Every VAE in pyro-vae is an ``nn.Module`` holding

* an :class:`Encoder` — a feature trunk ``x → h`` and a Gaussian head
  ``h → (μ_φ(x), σ_φ(x))`` — so that any guide (Gaussian or flow) can condition on ``h``;
* a :class:`Decoder` — a network ``z → params`` and a :class:`~pyro_vae.likelihoods.Likelihood`
  turning those params into p_θ(x | z);
* a prior p_θ(z) (standard Normal here; learned flow priors plug in the same slot).

The generative model is written once::

    with pyro.plate("data", N, subsample_size=B):          # mini-batch of B out of N
        z = pyro.sample("z", p(z))                           # latent, event (z_dim,)
        pyro.sample("x", p(x | z), obs=x)                   # image, event (C, H, W)

A VAE that takes labels (``build_vae(..., num_classes=C)``: the conditional VAE of Sohn et al.
2015, or the semi-supervised VAE of :mod:`.ssvae`) sees the label ``y`` of each image as an input
of the guide q(z | x, y) and of the decoder p(x | z, y) (:meth:`VAE.condition_on_labels`)::

    with pyro.plate("data", N, subsample_size=B):
        z = pyro.sample("z", p(z))                           # or a learned p(z | y)
        pyro.sample("x", p(x | z, y), obs=x)

The latent part of the program is :meth:`VAE.latents` (one site ``"z"`` here; a
hierarchical VAE samples ``"z_L"``, …, ``"z_1"`` there), so a VAE with several latent sites
overrides that one method and keeps ``model``. Every latent site has event shape (d,); the
*joint* latent is their concatenation in sampling order (:attr:`VAE.latent_sites`,
:meth:`VAE.split_latents`), the flat ``z`` that decoding, traversals and NUTS summaries use.

With ``num_data=N`` the plate scales the log-densities by N / B, so ``Trace_ELBO`` returns an
unbiased estimate of the *full-data* ELBO from a mini-batch (the M-sized mini-batch estimator
of Kingma & Welling 2013, arXiv:1312.6114). Every tensor op broadcasts over leading
dimensions, so ``Trace_ELBO(num_particles=L, vectorize_particles=True)`` (the L-sample
estimator) and the vectorized IWAE evaluation work unchanged.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn
from torch.nn import functional as F

from ..contract import Model, check_model_class
from ..errors import ConfigError
from ..guides.base import GaussianGuide, Guide, build_guide
from ..guides.flows import FlowGuide, FlowSteps
from ..likelihoods import Likelihood
from ..nets.labels import widen_input, with_label
from ..options import check_int
from ..plates import (check_shape, check_z_dim, data_plate, full_precision, kl_scaled, register,
                      uses_param_store)
from ..priors import StandardNormalPrior, build_prior
from ..registry import Registry

#: The VAEs; a VAE from outside pyro-vae (an import path, an installed package's entry point)
#: is checked against the model contract with a latent variable.
MODELS: Registry[type] = Registry("model", accept=lambda cls, name: check_model_class(cls, name, latent=True))


class Encoder(nn.Module):
    """q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²), built from a feature trunk and a linear head.

    Args:
        trunk: network ``x (B, C, H, W) → h (B, h_dim)``.
        h_dim: width of ``h``.
        z_dim: latent dimension.
        min_scale: lower bound on σ for numerical safety.
    """

    def __init__(self, trunk: nn.Module, h_dim: int, z_dim: int, min_scale: float = 1e-4):
        super().__init__()
        self.trunk = trunk
        self.h_dim = h_dim
        self.z_dim = z_dim
        self.min_scale = min_scale
        self.head = nn.Linear(h_dim, 2 * z_dim)
        #: e_y, added to the features of an image of label y (a VAE that takes labels)
        self.labels: Optional[nn.Embedding] = None

    def condition(self, num_classes: int) -> None:
        """Condition the features on a label of ``num_classes`` classes (see :meth:`features`)."""
        self.labels = nn.Embedding(num_classes, self.h_dim)

    def features(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Encoder features ``h`` of shape (B, h_dim), the context of flow guides; given the
        labels ``y`` (a VAE that takes labels), h(x) + e_y — for the linear Gaussian head the
        same as appending one-hot(y) to h — broadcast over the leading dims of ``y`` (the
        C values of an enumerated label, (C, 1): then (C, B, h_dim))."""
        h = self.trunk(x)
        return h if y is None else h + self.labels(y)

    def loc_scale(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean μ and standard deviation σ, each (B, z_dim)."""
        loc, raw = full_precision(self.head(h)).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def base(self, h: Tensor) -> dist.TorchDistribution:
        """The diagonal Gaussian N(μ, σ²) with batch shape (B,) and event shape (z_dim,)."""
        loc, scale = self.loc_scale(h)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> dist.TorchDistribution:
        return self.base(self.features(x, y))


class Decoder(nn.Module):
    """p_θ(x | z): a network ``z → params`` followed by a likelihood.

    The network must accept ``z`` of shape ``(..., z_dim)`` with any leading dimensions and
    return params of shape ``(..., *likelihood.param_shape)``.
    """

    def __init__(self, net: nn.Module, likelihood: Likelihood):
        super().__init__()
        self.net = net
        self.likelihood = likelihood

    def forward(self, z: Tensor) -> Tensor:
        """Likelihood parameters for ``z`` (e.g. Bernoulli logits)."""
        return self.net(z)

    def distribution(self, z: Tensor) -> dist.TorchDistribution:
        """p_θ(x | z) with event shape ``x_shape``."""
        return self.likelihood(full_precision(self.net(z)))


class VAE(Model):
    """Base class of every VAE: a Pyro model and an amortized diagonal-Gaussian guide.

    Subclasses build ``encoder`` (an :class:`Encoder`) and ``decoder`` (a :class:`Decoder`)
    from ``x_shape``; everything probabilistic lives here.

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        encoder: the recognition network.
        decoder: the generative network and likelihood.
        prior: module returning p(z); a standard Normal by default.

    Attributes:
        guide: the amortized Gaussian guide q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²), a
            :class:`~pyro_vae.guides.base.GaussianGuide` — call it as ``vae.guide(x)``.
    """

    supports_bf16 = True

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int,
        encoder: Encoder,
        decoder: Decoder,
        prior: Optional[nn.Module] = None,
    ) -> None:
        super().__init__(x_shape)
        self.z_dim = int(z_dim)
        self.encoder = encoder
        self.decoder = decoder
        self.set_prior(prior if prior is not None else StandardNormalPrior(z_dim))
        self.guide = GaussianGuide(self)
        self.guide.spec = {"name": "gaussian"}

    def condition_on_labels(self, num_classes: int) -> None:
        """Make this VAE take a label y of ``num_classes`` classes — the conditional VAE of Sohn
        et al. 2015 — as an input of the guide, q(z | x, y) with features h(x) + e_y
        (:meth:`Encoder.features`, so every guide conditions on it), and of the decoder,
        p(x | z, y) with one-hot(y) appended to its input (:meth:`labelled`; its first dense
        layer widened, :func:`~pyro_vae.nets.labels.widen_input`). A conditional prior
        p(z | y) (``normal`` with ``conditional=True``) learns per-class Gaussians besides.
        Call it before the prior is set and the guides are built (``build_vae`` does)."""
        self.num_classes = check_int(num_classes, "num_classes", 2)
        self.encoder.condition(self.num_classes)
        widen_input(self.decoder.net, self.z_dim, self.num_classes)

    def set_prior(self, prior: nn.Module) -> None:
        """Use ``prior`` as p(z); a prior that needs the VAE (the VampPrior scores z under the
        encoder) gets it through its ``attach(vae)``, so priors never import models."""
        self.prior = prior
        attach = getattr(prior, "attach", None)
        if attach is not None:
            attach(self)

    @property
    def prior_dim(self) -> int:
        """Dimension of the latent site the prior module scores (``z_dim`` here; the top
        layer of a hierarchical VAE)."""
        return self.z_dim

    # ------------------------------------------------------------------ latent sites
    @property
    def latent_sites(self) -> Dict[str, int]:
        """Latent site names → event sizes, in the order the model samples them; the joint
        latent z (``z_dim`` = their sum) is their concatenation in this order."""
        return {"z": self.z_dim}

    def split_latents(self, z: Tensor) -> Dict[str, Tensor]:
        """The joint latent (..., z_dim) as ``{site: (..., d_site)}``."""
        sizes = self.latent_sites
        return dict(zip(sizes, z.split(list(sizes.values()), dim=-1)))

    def join_latents(self, values: Mapping[str, Tensor]) -> Tensor:
        """``{site: (..., d_site)}`` as the joint latent (..., z_dim), broadcasting leading dims."""
        parts = [values[name] for name in self.latent_sites]
        shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return torch.cat([p.expand(*shape, p.shape[-1]) for p in parts], dim=-1)

    # ------------------------------------------------------------------ data contract
    @property
    def likelihood(self) -> Likelihood:
        return self.decoder.likelihood

    @property
    def dequantize(self) -> bool:
        return self.likelihood.dequantize

    def check_data(self, binary: bool) -> None:
        self.likelihood.check_data(binary)

    def bits_per_dim(self, nll: float) -> float:
        return self.likelihood.bits_per_dim(nll)

    def check_values(self, x: Tensor) -> None:
        self.likelihood.check_values(x)

    def _register(self, name: str, module: nn.Module) -> None:
        register(f"{self.pyro_prefix}.{name}", module)

    def register_prior(self) -> None:
        if any(True for _ in self.prior.parameters()):
            self._register("prior", self.prior)

    # ------------------------------------------------------------------ Pyro program
    def label_site(self, y: Optional[Tensor]) -> Optional[Tensor]:
        """The label the rest of the program is conditioned on: ``y`` as given here (a
        conditional VAE observes it as an input); the semi-supervised VAE samples its site
        ``"y"`` ~ p(y), observed where ``y`` is given."""
        return y

    def labelled(self, h: Tensor, y: Optional[Tensor]) -> Tensor:
        """The decoder's input for latents ``h`` and labels ``y``: [h, one_hot(y)] for a VAE
        that takes labels (broadcast over the leading dims of both), h itself otherwise."""
        if self.num_classes is None:
            return h
        if y is None:
            raise ConfigError("this VAE's decoder needs the label y", params=("y",))
        return with_label(h, y, self.num_classes)

    def latents_of(self, y: Optional[Tensor]) -> Tensor:
        """:meth:`latents` given the labels ``y``; without labels ``latents()``, so that a VAE
        without labels may override ``latents(self)`` alone."""
        return self.latents() if y is None else self.latents(y)

    def prior_of(self, y: Optional[Tensor]):
        """The prior module's distribution given the labels ``y`` (``prior()`` without them,
        the call of a prior that takes no labels)."""
        return self.prior() if y is None else self.prior(y)

    def latents(self, y: Optional[Tensor] = None) -> Tensor:
        """The latent sites drawn from p_θ(z) (p_θ(z | y) for a conditional prior) inside the
        caller's ``"data"`` plate; returns what the decoder network takes (here z itself,
        (..., z_dim))."""
        z = pyro.sample("z", self.prior_of(y))
        if z.shape[-1] != self.z_dim:  # replayed from a guide of another VAE
            raise ConfigError(f"the guide drew z of dimension {z.shape[-1]}, but this VAE's z_dim is "
                              f"{self.z_dim}: the guide was built for another model")
        return z

    def decoder_input(self, z: Tensor) -> Tensor:
        """What the decoder network takes for a joint latent z (..., z_dim): z itself here;
        a hierarchical VAE runs its top-down path."""
        return z

    def register_model(self) -> None:
        """Register the generative networks (decoder, learned prior) with Pyro."""
        self._register("decoder", self.decoder)
        self.register_prior()

    def model(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
              y: Optional[Tensor] = None) -> Tensor:
        """p_θ(z) p_θ(x | z) for a mini-batch ``x`` of shape (B, C, H, W) (p_θ(z | y)
        p_θ(x | z, y) given labels, for a VAE that takes them).

        Args:
            x: observed images.
            num_data: size N of the dataset the batch was drawn from (scales by N / B).
            kl_scale: weight β of the latent sites (KL warm-up, β-VAE); 1 is the true ELBO.
            y: the images' labels (B,), for a VAE that takes labels.

        Returns:
            the decoder's input (the latent sample ``z`` for a single-latent VAE).
        """
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        if uses_param_store():
            self.register_model()
        with data_plate(x, num_data):
            with kl_scaled(kl_scale):
                y = self.label_site(y)
                h = self.latents_of(y)
            pyro.sample("x", self.decoder.distribution(self.labelled(h, y)), obs=x)
        return h

    def latent_model(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0,
                     y: Optional[Tensor] = None) -> Tensor:
        """:meth:`model` without the observation: only p_θ(z) (every latent site), in the same
        plate — replayed against a guide it gives each site's prior p(z_l | z_{>l}) without
        running the decoder (:func:`~pyro_vae.infer.usage.latent_usage`)."""
        x = self.check_x(x)
        y = self.check_y(y, len(x))
        if uses_param_store():
            self.register_model()
        with data_plate(x, num_data), kl_scaled(kl_scale):
            return self.latents_of(self.label_site(y))

    def make_guide(self, spec: Optional[Mapping[str, Any]] = None) -> Guide:
        """A registered guide from ``{"name": ..., **options}`` (``None``: ``{"name":
        "gaussian"}``, which is ``vae.guide``)."""
        options = dict(spec if spec is not None else {"name": "gaussian"})
        return build_guide(options.pop("name", None), self, **options)

    # ------------------------------------------------------------------ guides by kind
    # A registered guide asks the VAE to build it (double dispatch), so that a VAE of several
    # latent sites builds its own kind by overriding these (the hierarchical VAE: its own
    # `vae.guide`, and `flow_guide`) and no guide asks which VAE it was given.
    def gaussian_guide(self) -> Guide:
        """The ``gaussian`` guide: ``vae.guide`` itself, the one instance — it has no
        parameters of its own, and checkpoints and the trainer know the default guide by
        identity."""
        return self.guide

    def flow_guide(self, steps: FlowSteps, num_flows: int, hidden_dims: Optional[Sequence[int]],
                   **options: Any) -> Guide:
        """The guide of the flow-guide row ``steps`` (:data:`~pyro_vae.guides.flows.STEPS`):
        the encoder's Gaussian pushed through ``num_flows`` steps conditioned on its features
        (``options``: the row's own, e.g. Sylvester's ``variant``)."""
        return FlowGuide(self, steps.steps(self.z_dim, int(self.encoder.h_dim), num_flows, hidden_dims,
                                           **options))

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def reconstruct(self, x: Tensor, guide: Optional[Guide] = None, y: Optional[Tensor] = None) -> Tensor:
        """:meth:`decode` at the guide's location of q(z | x) (the encoder mean μ_φ(x) for
        the Gaussian guide; of q(z | x, y) given labels): reconstructions in [0, 1]."""
        return (guide if guide is not None else self.guide).reconstruct(x, y)

    def _prior_draw(self, y: Optional[Tensor]) -> Optional[Tensor]:
        """The label and latent sites of the model, drawn from the prior; returns the label."""
        y = self.label_site(y)
        self.latents_of(y)
        return y

    @torch.no_grad()
    def generate(self, n: int, temperature: Optional[float] = None, y: Optional[Tensor] = None) -> Tensor:
        """:meth:`decode` of ``n`` draws z ~ p(z), in [0, 1] (of z ~ p(z | y), for the labels
        ``y`` (n,), for a VAE that takes labels; the semi-supervised VAE draws y ~ p(y) when
        not given)."""
        if temperature is not None:
            raise ConfigError("a temperature applies to density flows (nice, realnvp, glow) only")
        y = self.check_y(y, n, values=True)
        with pyro.plate("data", n):
            trace = poutine.trace(self._prior_draw).get_trace(y)
        z = self.join_latents({k: trace.nodes[k]["value"] for k in self.latent_sites})
        return self.decode(z, trace.nodes["_RETURN"]["value"])

    @torch.no_grad()
    def decode(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """An image of p(x | z) (of p(x | z, y) given labels) to look at, in [0, 1]: its mean
        for a factorised decoder.

        Args:
            z: joint latent codes (..., z_dim).
            y: their labels (...), for a VAE that takes labels.

        Returns:
            images (..., C, H, W). Autoregressive decoders override this (their mean has no
            closed form) and draw a sample instead.
        """
        return self.likelihood.mean(self.decoder(self.labelled(self.decoder_input(z), y)))


def build_vae(
    name: str,
    x_shape: Sequence[int],
    z_dim: int = 32,
    likelihood: str = "bernoulli",
    prior: Union[str, Mapping[str, Any]] = "normal",
    num_classes: Optional[int] = None,
    **options: Any,
) -> VAE:
    """Build a registered VAE.

    Args:
        name: model name (``dense``, ...); unknown names raise listing the valid ones.
        x_shape: image shape ``(C, H, W)``, e.g. ``data.x_shape``.
        z_dim: latent dimension.
        likelihood: likelihood name (``bernoulli``, ``gaussian``, ...).
        prior: prior name (``normal``, ...) or spec ``{"name": ..., **options}``; every
            model takes every prior.
        num_classes: the number of classes of a label y the VAE takes (a conditional VAE,
            :meth:`VAE.condition_on_labels`; the ``ssvae`` model needs it); ``None``: none.
        **options: model-specific options (e.g. ``hidden_dims=(512, 256)`` for ``dense``);
            unknown keys and wrong types raise, naming the option.

    Returns:
        the VAE; ``vae.spec`` (and ``vae.prior.spec``) record what it was built from.

    Example:
        >>> vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=8, hidden_dims=(64,))
        >>> vae.z_dim, vae.x_shape
        (8, (1, 28, 28))
    """
    x_shape = check_shape(x_shape)
    options = MODELS.options(name, {"z_dim": z_dim, "likelihood": likelihood, **options})
    check_z_dim(options["z_dim"])
    if num_classes is None and MODELS.get(name).label_is_latent:
        raise ConfigError(f"the {name} model needs num_classes, the number of classes of its label",
                          params=("num_classes",))
    vae = MODELS.build(name, x_shape, **options)
    if num_classes is not None:
        vae.condition_on_labels(num_classes)
    vae.set_prior(build_prior(prior, vae.prior_dim))
    vae.spec = {"name": vae.spec["name"], "x_shape": list(x_shape), **{k: v for k, v in vae.spec.items() if k != "name"},
                **({} if num_classes is None else {"num_classes": vae.num_classes})}
    return vae
