"""Priors p_θ(z): modules whose ``forward()`` returns a distribution with event shape (z_dim,).

A prior with parameters (a learned flow prior, say) is registered with Pyro by the model
(``VAE.register_prior``) and trained jointly with the VAE; the KL term of the ELBO is then
estimated by Monte Carlo, which is what ``Trace_ELBO`` does for every prior anyway: the
ELBO's ``log p_θ(z) − log q_φ(z | x)`` is evaluated at the guide's sample z, so no closed
form is needed (and none exists for a flow prior). The evaluation's ``kl`` is the same
Monte Carlo average.

Every prior's distribution broadcasts over leading (particle) dimensions and scores any
z — in particular the guide's samples, which it never produced — so flow priors use only
transforms with an exact inverse.

Every prior is called with the label ``y`` of the images (``None`` where the VAE takes no
labels): the unconditional priors are p(z) whatever y; the normal prior with
``conditional=True`` is a learned p(z | y) of a VAE that takes labels.

A prior that needs the VAE it belongs to (the VampPrior scores z under the VAE's encoder; the
conditional prior reads its number of classes) has an ``attach(vae)`` method, which :meth:`VAE.set_prior <pyro_vae.models.base.VAE.set_prior>`
calls: the VAE hands itself to the prior, so this module never imports the models.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import pyro.distributions as dist
from pyro.distributions import constraints
import torch
from pyro.distributions.transforms import AffineCoupling, Permute
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import ConfigError
from .nets.coupling import DenseCouplingNet
from .options import check_ranges
from .registry import Registry

PRIORS: Registry[type] = Registry("prior")


_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
#: softplus⁻¹(1): a raw scale of σ = 1.
SOFTPLUS_ONE = math.log(math.expm1(1.0))


class StandardNormal(dist.Normal):
    """``Normal(0, 1)`` whose ``log_prob`` skips the location and scale: −z²/2 − log √(2π),
    the same numbers as ``Normal.log_prob`` at loc 0 and scale 1 (the subtraction of 0 and the
    division by 1 are exact) in three operations instead of eight, on every training step.
    Build it only with zeros and ones (as :class:`StandardNormalPrior` does); it is a
    ``Normal`` for everything else (sampling, KL divergences, expanding)."""

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return -(value**2) / 2 - _LOG_SQRT_2PI


@PRIORS.register("normal")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I); with ``conditional=True`` a learned p(z | y) = N(μ_y, diag σ_y²), one
    Gaussian per class of the label of a VAE that takes labels (Sohn et al. 2015's conditional
    prior network, here a table: the label is its only input), started at N(0, I).

    Args:
        z_dim: latent dimension.
        conditional: learn p(z | y) (needs a VAE built with ``num_classes``).
    """

    def __init__(self, z_dim: int, conditional: bool = False):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        self.conditional = bool(conditional)
        self.class_loc: Optional[nn.Parameter] = None
        self.class_scale: Optional[nn.Parameter] = None

    def attach(self, vae: nn.Module) -> None:
        """A conditional prior takes the VAE's number of classes: one Gaussian per class."""
        if not self.conditional:
            return
        if vae.num_classes is None:
            raise ConfigError("the conditional normal prior p(z | y) needs a VAE that takes labels "
                              "(a conditional VAE, or the ssvae model)", params=("conditional",))
        self.class_loc = nn.Parameter(torch.zeros(vae.num_classes, len(self.loc)))
        self.class_scale = nn.Parameter(torch.full((vae.num_classes, len(self.loc)), SOFTPLUS_ONE))

    def forward(self, y: Optional[Tensor] = None) -> dist.TorchDistribution:
        if not self.conditional:
            return StandardNormal(self.loc, self.scale).to_event(1)
        if y is None or self.class_loc is None:
            raise ConfigError("the conditional prior p(z | y) needs the label y", params=("y",))
        return dist.Normal(self.class_loc[y], F.softplus(self.class_scale[y])).to_event(1)


@PRIORS.register("realnvp", aliases={"hidden": "hidden_dims"})
class RealNVPPrior(nn.Module):
    r"""p_θ(z): a RealNVP-transformed N(0, I), learned jointly with the VAE.

    z = g_K ∘ … ∘ g_1(ε), ε ~ N(0, I), with affine couplings (Pyro's ``AffineCoupling``)
    :math:`g(ε)_b = ε_b \odot e^{s(ε_a)} + t(ε_a)` conditioned by MLPs
    (:class:`~pyro_vae.nets.coupling.DenseCouplingNet`, log-scales softly bounded to
    (−2, 2) per layer), the vector reversed between layers so each half is transformed in
    turn. Sampling runs the couplings forward; scoring the guide's z runs them backward
    *exactly* (a coupling inverts in closed form), so ``log_prob`` is right for values the
    prior never sampled, with any leading dimensions. The last layer of each MLP starts at
    zero: a new prior is N(0, I) and the VAE starts where the standard-normal one does.

    Args:
        z_dim: latent dimension (≥ 2: a coupling needs two halves).
        num_couplings: number of coupling layers.
        hidden_dims: hidden widths of each coupling MLP (copied).

    Example:
        >>> prior = RealNVPPrior(4)
        >>> prior().log_prob(torch.zeros(3, 5, 4)).shape   # particles × batch
        torch.Size([3, 5])

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP, arXiv:1605.08803;
        flow priors in VAEs: Chen et al., Variational Lossy Autoencoder, arXiv:1611.02731.
    """

    def __init__(self, z_dim: int, num_couplings: int = 4, hidden_dims: Sequence[int] = (64, 64)):
        super().__init__()
        if z_dim < 2:
            raise ConfigError(f"the realnvp prior needs z_dim ≥ 2, got {z_dim}", params=("z_dim",))
        check_ranges({"num_couplings": num_couplings, "hidden_dims": list(hidden_dims)}, {
            "num_couplings": (num_couplings >= 1, "≥ 1"),
            "hidden_dims": (bool(hidden_dims) and min(hidden_dims) >= 1, "non-empty, each ≥ 1"),
        }, "options of the realnvp prior")
        half = z_dim // 2
        self.couplings = nn.ModuleList(
            AffineCoupling(half, DenseCouplingNet(half, z_dim - half, [int(h) for h in hidden_dims]))
            for _ in range(num_couplings)
        )
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        self.register_buffer("reverse", torch.arange(z_dim - 1, -1, -1))

    def forward(self, y: Optional[Tensor] = None) -> dist.TorchDistribution:
        """p_θ(z) (the same for every label ``y``)."""
        # built per call from the modules, with their caches cleared, so that it never
        # holds stale parameters nor recalls an inverse computed before the last update
        for coupling in self.couplings:
            coupling._cached_x_y = None, None
            coupling._cached_log_scale = None
        parts = []
        for i, coupling in enumerate(self.couplings):
            if i:
                parts.append(Permute(self.reverse))
            parts.append(coupling)
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, parts)


#: Largest number of VampPrior pseudo-inputs.
MAX_COMPONENTS = 10_000


class GaussianMixture(dist.MixtureSameFamily):
    """A mixture of diagonal Gaussians whose support says what it is — the real vectors —
    rather than a mixture-of-supports constraint that ``biject_to`` cannot map (which NUTS
    and every transform to unconstrained space need)."""

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self):
        return constraints.real_vector


@PRIORS.register("vamp")
class VampPrior(nn.Module):
    r"""The VampPrior: p_λ(z) = (1/K) Σ_k q_φ(z | u_k), the VAE's own encoder Gaussian at K
    learned pseudo-inputs u_k (Tomczak & Welling 2018, arXiv:1705.07120).

    The pseudo-inputs are images (K, C, H, W) in [0, 1] — parameters passed through a hard
    tanh, started at N(0.05, 0.01²) as in the paper's code — trained jointly with the VAE. The
    prior is a ``MixtureSameFamily`` of K diagonal Gaussians, built per call from the
    encoder's current weights (``vae.encoder.loc_scale``), so it follows the encoder as it
    learns and its log-density of any z (the guide's samples, with leading particle
    dimensions) is exact: log p(z) = logsumexp_k log N(z; μ_φ(u_k), σ_φ(u_k)²) − log K. The
    encoder is reached through :meth:`attach` (the VAE hands itself over when it takes the
    prior); it is not a submodule here, so its weights are saved and registered once, by the
    VAE. For single-latent VAEs (``dense``, ``conv``, ``resnet``, ``pixel``, ``linear``).

    Args:
        z_dim: latent dimension.
        components: K, the number of pseudo-inputs. The paper's 500 were for MNIST's 50,000
            images; 200 is the best of 50, 100, 200 and 500 on mnist5k's validation split
            (IWAE NLL 91.61 against 92.41, 92.56 and 92.24, with weight decay 0.1:
            docs/benchmarks.md, "Generalization").

    Example:
        >>> from pyro_vae import build_vae
        >>> vae = build_vae("dense", (1, 28, 28), z_dim=4, hidden_dims=(16,),
        ...                 prior={"name": "vamp", "components": 10})
        >>> vae.prior.pseudo_inputs.shape, vae.prior().log_prob(torch.zeros(3, 5, 4)).shape
        (torch.Size([10, 1, 28, 28]), torch.Size([3, 5]))
    """

    def __init__(self, z_dim: int, components: int = 200) -> None:
        super().__init__()
        if not 1 <= components <= MAX_COMPONENTS:  # K pseudo-images are parameters, and each
            # step runs the encoder over all K
            raise ConfigError(f"the vamp prior needs components from 1 to {MAX_COMPONENTS}, got {components}",
                              params=("components",))
        self.z_dim = int(z_dim)
        self.components = int(components)
        self.pseudo_inputs: Optional[nn.Parameter] = None

    def attach(self, vae: nn.Module) -> None:
        """Take the VAE whose encoder q_φ(z | u) the mixture uses; create the pseudo-inputs."""
        if len(vae.latent_sites) != 1:
            raise ConfigError(f"the vamp prior is for single-latent VAEs; {vae.spec.get('name', 'this model')!r} "
                              f"has {len(vae.latent_sites)} latent layers (use the normal or realnvp prior)",
                              params=("prior",))
        self.__dict__["vae"] = vae  # not a submodule: the encoder belongs to the VAE
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(self.components, *vae.x_shape))

    def forward(self, y: Optional[Tensor] = None) -> dist.TorchDistribution:
        """p_λ(z) (the same for every label ``y``)."""
        if self.pseudo_inputs is None:
            raise ConfigError("the vamp prior needs a VAE: build it with build_vae(..., prior='vamp')")
        encoder = self.vae.encoder
        u = F.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        loc, scale = encoder.loc_scale(encoder.features(u))  # (K, z_dim) each
        mixing = dist.Categorical(logits=torch.zeros_like(loc[:, 0]))
        return GaussianMixture(mixing, dist.Normal(loc, scale).to_event(1))


def build_prior(prior: Union[str, Mapping[str, Any]], z_dim: int) -> nn.Module:
    """Build a registered prior for a ``z_dim``-dimensional latent from its name or its spec
    ``{"name": ..., **options}`` (options checked against the constructor, like a model's);
    ``prior.spec`` records it."""
    options = {"name": prior} if isinstance(prior, str) else dict(prior)
    return PRIORS.build(options.pop("name", None), z_dim, **options)
