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

With ``num_data=N`` the plate scales the log-densities by N / B, so ``Trace_ELBO`` returns an
unbiased estimate of the *full-data* ELBO from a mini-batch (the M-sized mini-batch estimator
of Kingma & Welling 2013, arXiv:1312.6114). Every tensor op broadcasts over leading
dimensions, so ``Trace_ELBO(num_particles=L, vectorize_particles=True)`` (the L-sample
estimator) and the vectorized IWAE evaluation work unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, DataError
from ..likelihoods import Likelihood
from ..priors import StandardNormalPrior, build_prior
from ..registry import Registry

MODELS: Registry[type] = Registry("model")

_instance_counter = itertools.count()


def check_images(x: Tensor, x_shape: Tuple[int, ...]) -> Tensor:
    """``x`` if it is a tensor of shape (B, *x_shape); else a :class:`DataError` naming both."""
    if not isinstance(x, Tensor) or x.dim() != len(x_shape) + 1 or tuple(x.shape[1:]) != tuple(x_shape):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"expected images of shape (B, {', '.join(map(str, x_shape))}), got {shape}")
    return x


def data_plate(x: Tensor, num_data: Optional[int]) -> pyro.plate:
    """The ``"data"`` plate over a mini-batch ``x`` drawn from ``num_data`` examples.

    With ``num_data=None`` the plate covers just the batch (no rescaling).
    """
    batch = x.shape[0]
    size = batch if num_data is None else int(num_data)
    if size < batch:
        raise ConfigError(f"num_data={size} is smaller than the mini-batch ({batch})")
    # Pyro draws random subsample indices when size > batch; only the N / B scale is used.
    return pyro.plate("data", size, subsample_size=batch, dim=-1, device=x.device)


def kl_scaled(kl_scale: float):
    """Scale the latent site (KL warm-up / β) with ``poutine.scale``; a no-op at 1."""
    if kl_scale == 1.0:
        return contextlib.nullcontext()
    return poutine.scale(scale=kl_scale)


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

    def features(self, x: Tensor) -> Tensor:
        """Encoder features ``h`` of shape (B, h_dim), the context of flow guides."""
        return self.trunk(x)

    def loc_scale(self, h: Tensor) -> Tuple[Tensor, Tensor]:
        """Mean μ and standard deviation σ, each (B, z_dim)."""
        loc, raw = self.head(h).chunk(2, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def base(self, h: Tensor) -> dist.TorchDistribution:
        """The diagonal Gaussian N(μ, σ²) with batch shape (B,) and event shape (z_dim,)."""
        loc, scale = self.loc_scale(h)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: Tensor) -> dist.TorchDistribution:
        return self.base(self.features(x))


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
        return self.likelihood(self.net(z))


class VAE(nn.Module):
    """Base class of every VAE: a Pyro model and an amortized diagonal-Gaussian guide.

    Subclasses build ``encoder`` (an :class:`Encoder`) and ``decoder`` (a :class:`Decoder`)
    from ``x_shape``; everything probabilistic lives here.

    Args:
        x_shape: image shape ``(C, H, W)``.
        z_dim: latent dimension.
        encoder: the recognition network.
        decoder: the generative network and likelihood.
        prior: module returning p(z); a standard Normal by default.
    """

    #: Name under which the class is registered (set by :func:`register_model`).
    registry_name: str = ""

    def __init__(
        self,
        x_shape: Sequence[int],
        z_dim: int,
        encoder: Encoder,
        decoder: Decoder,
        prior: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.x_shape: Tuple[int, ...] = tuple(int(s) for s in x_shape)
        self.z_dim = int(z_dim)
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior if prior is not None else StandardNormalPrior(z_dim)
        # Pyro's param store is global: a unique prefix keeps two VAEs in one process
        # (e.g. several guides compared in a loop) from sharing parameters by name.
        self.pyro_prefix = f"{type(self).__name__}{next(_instance_counter)}"
        #: The arguments :func:`build_vae` was called with; recorded in checkpoints.
        self.spec: Dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def likelihood(self) -> Likelihood:
        return self.decoder.likelihood

    @property
    def num_dims(self) -> int:
        return int(math.prod(self.x_shape))

    def check_x(self, x: Tensor) -> Tensor:
        """Raise a clear error unless ``x`` has shape (B, *x_shape)."""
        return check_images(x, self.x_shape)

    def _register(self, name: str, module: nn.Module) -> None:
        pyro.module(f"{self.pyro_prefix}.{name}", module)

    def register_prior(self) -> None:
        if any(True for _ in self.prior.parameters()):
            self._register("prior", self.prior)

    # ------------------------------------------------------------------ Pyro program
    def model(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        """p_θ(z) p_θ(x | z) for a mini-batch ``x`` of shape (B, C, H, W).

        Args:
            x: observed images.
            num_data: size N of the dataset the batch was drawn from (scales by N / B).
            kl_scale: weight β of the latent site (KL warm-up); 1 is the true ELBO.

        Returns:
            the latent sample ``z``.
        """
        self.check_x(x)
        self._register("decoder", self.decoder)
        self.register_prior()
        with data_plate(x, num_data):
            with kl_scaled(kl_scale):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.decoder.distribution(z), obs=x)
        return z

    def guide(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        """q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²), amortized over the batch."""
        self.check_x(x)
        self._register("encoder", self.encoder)
        with data_plate(x, num_data):
            with kl_scaled(kl_scale):
                return pyro.sample("z", self.encoder(x))

    # ------------------------------------------------------------------ conveniences
    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """:meth:`decode` at z = μ_φ(x): reconstructions in [0, 1]."""
        loc, _ = self.encoder.loc_scale(self.encoder.features(self.check_x(x)))
        return self.decode(loc)

    @torch.no_grad()
    def generate(self, n: int) -> Tensor:
        """:meth:`decode` of ``n`` draws z ~ p(z), in [0, 1]."""
        return self.decode(self.prior().sample((n,)))

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """An image of p(x | z) to look at, in [0, 1]: its mean for a factorised decoder.

        Args:
            z: latent codes (..., z_dim).

        Returns:
            images (..., C, H, W). Autoregressive decoders override this (their mean has no
            closed form) and draw a sample instead.
        """
        return self.likelihood.mean(self.decoder(z))


def register_model(name: str):
    """Class decorator: register a VAE subclass under ``name`` in :data:`MODELS`."""

    def decorator(cls: type) -> type:
        cls.registry_name = name
        return MODELS.register(name)(cls)

    return decorator


def check_options(fn, options: Dict[str, Any], what: str, skip: int = 0) -> None:
    """Raise :class:`ConfigError` naming the valid keys if ``options`` has an unknown one."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {what}; "
            f"valid options: {', '.join(valid)}"
        )


def build_vae(
    name: str,
    x_shape: Sequence[int],
    z_dim: int = 32,
    likelihood: str = "bernoulli",
    prior: str = "normal",
    **options: Any,
) -> VAE:
    """Build a registered VAE.

    Args:
        name: model name (``dense``, ...); unknown names raise listing the valid ones.
        x_shape: image shape ``(C, H, W)``, e.g. ``data.x_shape``.
        z_dim: latent dimension.
        likelihood: likelihood name (``bernoulli``, ``gaussian``, ...).
        prior: prior name (``normal``, ...); every model takes every prior.
        **options: model-specific options (e.g. ``hidden=(512, 512)`` for ``dense``);
            unknown keys raise.

    Example:
        >>> vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=8, hidden=(64,))
        >>> vae.z_dim, vae.x_shape
        (8, (1, 28, 28))
    """
    cls = MODELS.get(name)
    if len(tuple(x_shape)) != 3 or any(int(s) < 1 for s in x_shape):
        raise ConfigError(f"x_shape must be (C, H, W) with positive sizes, got {tuple(x_shape)}")
    if int(z_dim) < 1:
        raise ConfigError(f"z_dim must be positive, got {z_dim}")
    check_options(cls.__init__, options, f"model {name!r}", skip=4)
    prior_module = build_prior(prior, int(z_dim))
    vae = cls(tuple(x_shape), int(z_dim), likelihood, **options)
    vae.prior = prior_module
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, tuple(x_shape), int(z_dim), likelihood, **options)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop(next(iter(sig.parameters)))  # self
    vae.spec = {"name": name, **{k: _jsonable(v) for k, v in args.items()}, "prior": prior}
    return vae


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
