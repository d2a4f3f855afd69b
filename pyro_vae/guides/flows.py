r"""Flow guides: q_φ(z | x) = a diagonal Gaussian pushed through K conditional flow steps.

.. math::

    \mathbf{z}_0 \sim \mathcal{N}\big(\mu_\phi(x), \operatorname{diag}\sigma_\phi(x)^2\big),
    \qquad \mathbf{z} = \mathbf{z}_K = f_K \circ \dots \circ f_1(\mathbf{z}_0;\, h),
    \qquad \log q(\mathbf{z}_K \mid x) = \log q(\mathbf{z}_0 \mid x)
    - \sum_{k=1}^{K} \log\left|\det \frac{\partial f_k}{\partial \mathbf{z}_{k-1}}\right|,

where :math:`h = ` ``vae.encoder.features(x)`` is the encoder's feature vector, the context
every flow step conditions on (Rezende & Mohamed 2015, arXiv:1505.05770; Kingma et al.
2016, arXiv:1606.04934). The base is the VAE's own Gaussian head, so a flow guide at the
identity *is* the Gaussian guide; every step's last layer is initialised so that the step
starts at (or, for ``spline``, within 10⁻³ of) the identity.

In Pyro terms the guide samples site ``"z"`` from
``dist.TransformedDistribution(base, [t.condition(h) for t in self.flows])`` inside the
same ``"data"`` plate and ``poutine.scale`` as ``VAE.guide``; ``self.flows`` holds Pyro
``ConditionalTransformModule`` s and is registered with ``pyro.module`` through the guide,
never through a conditioned transform, which is rebuilt at every call so nothing goes stale.

Registered names (each takes ``num_flows``, the CLI's ``--flows K``):

=============== ============================================================================
``planar``      planar steps (arXiv:1505.05770); Pyro's, reparametrised to start at identity
``radial``      radial steps (arXiv:1505.05770), Pyro's ``ConditionalRadial``
``iaf``         inverse autoregressive flow (arXiv:1606.04934), Pyro's conditional affine
                autoregressive transform (samples in one pass)
``realnvp``     affine coupling (arXiv:1605.08803) with the halves swapped between steps
``nice``        additive, volume-preserving coupling (arXiv:1410.8516), halves swapped
``householder`` K Householder reflections (Tomczak & Welling 2016, arXiv:1611.09630)
``sylvester``   Sylvester steps (arXiv:1803.05649), ``variant`` = ``orthogonal`` (default),
                ``householder`` or ``triangular``
``spline``      neural spline IAF: monotone rational-linear splines whose knots come from a
                conditional autoregressive network (arXiv:1906.04032, arXiv:2001.05168)
=============== ============================================================================

Planar, radial, Sylvester, IAF and spline steps have no cheap (or no) inverse: they score
only the samples they produced, through Pyro's transform cache (``cache_size=1``, pyro
issue #2718). The ELBO and the IWAE estimate only ever score the guide's own samples, so
that is all they need; scoring a foreign ``z`` under ``q`` raises (planar, radial,
Sylvester) or is slow (IAF, spline: D sequential passes).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import (
    Permute,
    conditional_affine_autoregressive,
    conditional_affine_coupling,
    conditional_householder,
    conditional_radial,
    conditional_spline_autoregressive,
)
from torch import Tensor, nn
from torch.distributions import Transform

from ..errors import ConfigError
from ..models.base import VAE, data_plate, kl_scaled
from ..transforms import conditional_additive_coupling, conditional_planar, conditional_sylvester
from ..transforms.sylvester import VARIANTS
from .base import Guide, register_guide


class FlowGuide(Guide):
    """Base class of flow guides: the encoder's Gaussian pushed through ``flows``.

    Subclasses build the list of conditional steps (Pyro ``ConditionalTransformModule`` s,
    each mapping the encoder features ``h`` of shape (B, h_dim) to a transform of z) and
    pass it here. Steps must broadcast over extra leading (particle) dimensions of z.

    Args:
        vae: the VAE whose encoder gives the base distribution and the context h.
        flows: the conditional steps f_1, ..., f_K, applied in order.
    """

    def __init__(self, vae: VAE, flows: Sequence[ConditionalTransformModule]) -> None:
        super().__init__(vae)
        self.flows = nn.ModuleList(flows)

    def conditioned_flows(self, h: Tensor) -> List[Transform]:
        """Fresh transforms f_1(·; h), ..., f_K(·; h) for features ``h`` (B, h_dim)."""
        return [t.condition(h) for t in self.flows]

    def distribution(self, x: Tensor) -> dist.TransformedDistribution:
        """q_φ(z | x), batch shape (B,), event shape (z_dim,)."""
        encoder = self.vae.encoder
        h = encoder.features(self.vae.check_x(x))
        return dist.TransformedDistribution(encoder.base(h), self.conditioned_flows(h))

    def location(self, x: Tensor) -> Tensor:
        """The encoder mean μ_φ(x) pushed through the flows (B, z_dim)."""
        encoder = self.vae.encoder
        h = encoder.features(self.vae.check_x(x))
        z, _ = encoder.loc_scale(h)
        for t in self.conditioned_flows(h):
            z = t(z)
        return z

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        """Sample site ``"z"`` ~ q_φ(z | x) for a mini-batch x (B, C, H, W) of ``num_data``."""
        self.vae.check_x(x)
        self.register()
        with data_plate(x, num_data):
            with kl_scaled(kl_scale):
                return pyro.sample("z", self.distribution(x))

    def extra_repr(self) -> str:
        return f"num_flows={len(self.flows)}"


# ---------------------------------------------------------------------------- helpers
def _check_num_flows(num_flows: int) -> int:
    if isinstance(num_flows, bool) or not isinstance(num_flows, int) or num_flows < 1:
        raise ConfigError(f"num_flows must be a positive integer, got {num_flows!r}")
    return num_flows


def _hidden(hidden_dims: Optional[Sequence[int]], default: List[int], at_least: int = 1) -> List[int]:
    """Validated hidden widths of a hypernet (a copy; ``default`` when None)."""
    if hidden_dims is None:
        return list(default)
    if isinstance(hidden_dims, int):
        hidden_dims = [hidden_dims]
    hidden = list(hidden_dims)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < at_least for h in hidden):
        raise ConfigError(f"hidden_dims must be a list of integers ≥ {at_least}, got {hidden_dims!r}")
    return hidden


@torch.no_grad()
def _zero(linear: nn.Linear, rows=slice(None)) -> None:
    """Zero the weights and biases of ``rows`` of a last layer: those outputs start at 0."""
    linear.weight[rows] = 0.0
    linear.bias[rows] = 0.0


class ConditionalPermute(ConditionalTransformModule):
    """A fixed permutation of z as a conditional step (the context is ignored).

    Holds the permutation as a buffer, so it moves with ``.to(device)`` and is saved in
    ``state_dict``; ``condition`` returns Pyro's :class:`~pyro.distributions.transforms.Permute`.
    """

    bijective = True

    def __init__(self, permutation: Tensor) -> None:
        super().__init__()
        self.register_buffer("permutation", permutation.long())

    def condition(self, context: Tensor) -> Permute:
        return Permute(self.permutation)


def _reverse(dim: int) -> ConditionalPermute:
    return ConditionalPermute(torch.arange(dim - 1, -1, -1))


def _couplings(make, num_flows: int, z_dim: int) -> List[ConditionalTransformModule]:
    """Coupling steps with the coordinate order reversed between them. Coupling k leaves
    z_{1:d} unchanged and transforms the rest; reversing makes the next step transform the
    other side. A final reversal is added when needed so that the order is restored and the
    whole flow is the identity when every coupling is."""
    steps: List[ConditionalTransformModule] = []
    for k in range(num_flows):
        if k > 0:
            steps.append(_reverse(z_dim))
        steps.append(make())
    if (num_flows - 1) % 2 == 1:
        steps.append(_reverse(z_dim))
    return steps


def _context(vae: VAE) -> int:
    return int(vae.encoder.h_dim)


def _check_z_dim(vae: VAE, name: str, minimum: int = 2) -> None:
    if vae.z_dim < minimum:
        raise ConfigError(f"the {name} guide needs z_dim ≥ {minimum}, got {vae.z_dim}")


# ---------------------------------------------------------------------------- guides
@register_guide("planar")
class PlanarGuide(FlowGuide):
    r"""K planar steps :math:`z \mapsto z + \hat u \tanh(w^T z + b)`, (b, u, w) from h.

    Args:
        vae: the VAE.
        num_flows: K.
        hidden_dims: hidden widths of each step's hypernet h → (b, u, w) (default
            ``[10 z_dim, 10 z_dim]``).
    """

    def __init__(self, vae: VAE, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        hidden = _hidden(hidden_dims, [10 * d, 10 * d])
        steps = []
        for _ in range(k):
            step = conditional_planar(d, _context(vae), hidden)
            step.reset_to_identity()  # u = 0
            steps.append(step)
        super().__init__(vae, steps)


@register_guide("radial")
class RadialGuide(FlowGuide):
    r"""K radial steps :math:`z \mapsto z + \beta h(\alpha, r)(z - z_0)` (Pyro's
    ``ConditionalRadial``), with (z_0, α', β') from h; α = softplus(α'), β = −α + softplus(β').

    The α' and β' outputs start equal and independent of h, so β = 0: the identity.

    Args:
        vae: the VAE.
        num_flows: K.
        hidden_dims: hidden widths of each hypernet (default ``[10 z_dim, 10 z_dim]``).
    """

    def __init__(self, vae: VAE, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        hidden = _hidden(hidden_dims, [10 * d, 10 * d])
        steps = []
        for _ in range(k):
            step = conditional_radial(d, _context(vae), hidden)
            last = step.nn.layers[-1]
            alpha, beta = step.nn.param_slices[1], step.nn.param_slices[2]
            with torch.no_grad():
                last.weight[alpha] = 0.0
                last.weight[beta] = 0.0
                last.bias[beta] = last.bias[alpha]  # softplus(β') = softplus(α') ⇒ β = 0
            steps.append(step)
        super().__init__(vae, steps)


@register_guide("iaf")
class IAFGuide(FlowGuide):
    r"""Inverse autoregressive flow: K steps :math:`z_i \mapsto \sigma_i z_i + \mu_i` with
    (μ_i, log σ_i) from a MADE network of (z_{<i}, h) — Pyro's
    ``ConditionalAffineAutoregressive``, in the direction that samples in one pass and scores
    its own samples through the cache. Each step has its own random variable order (Pyro's
    default; saved with the weights). Zero-initialised last layers give μ = 0, σ = 1.

    Args:
        vae: the VAE.
        num_flows: K.
        hidden_dims: hidden widths of each MADE (default ``[10 z_dim]``; each ≥ z_dim).
    """

    def __init__(self, vae: VAE, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        _check_z_dim(vae, "iaf")
        hidden = _hidden(hidden_dims, [10 * d], at_least=d)
        steps = []
        for _ in range(k):
            step = conditional_affine_autoregressive(d, _context(vae), hidden)
            _zero(step.nn.layers[-1])
            steps.append(step)
        super().__init__(vae, steps)


@register_guide("realnvp")
class RealNVPGuide(FlowGuide):
    r"""RealNVP: K affine couplings :math:`z_{d+1:D} \mapsto e^{s} \odot z_{d+1:D} + t`,
    (s, t) from (z_{1:d}, h) (Pyro's ``ConditionalAffineCoupling``), with the coordinate
    order reversed between couplings so both halves are transformed.

    Args:
        vae: the VAE.
        num_flows: K, the number of couplings.
        hidden_dims: hidden widths of each coupling network (default ``[10 z_dim]``).
    """

    def __init__(self, vae: VAE, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        _check_z_dim(vae, "realnvp")
        hidden = _hidden(hidden_dims, [10 * d])

        def make():
            step = conditional_affine_coupling(d, _context(vae), hidden)
            _zero(step.nn.layers[-1])  # s = t = 0
            return step

        super().__init__(vae, _couplings(make, k, d))


@register_guide("nice")
class NICEGuide(FlowGuide):
    r"""NICE: K additive couplings :math:`z_{d+1:D} \mapsto z_{d+1:D} + m(z_{1:d}, h)`,
    volume preserving (log-det 0), with the order reversed between couplings. The scale
    comes only from the base Gaussian; the couplings shape it.

    Args:
        vae: the VAE.
        num_flows: K, the number of couplings.
        hidden_dims: hidden widths of each shift network (default ``[10 z_dim]``).
    """

    def __init__(self, vae: VAE, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        _check_z_dim(vae, "nice")
        hidden = _hidden(hidden_dims, [10 * d])

        def make():
            step = conditional_additive_coupling(d, _context(vae), hidden)
            step.reset_to_identity()
            return step

        super().__init__(vae, _couplings(make, k, d))


@register_guide("householder")
class HouseholderGuide(FlowGuide):
    r"""Householder flow: z ↦ H_K ⋯ H_1 z with :math:`H_k = I - 2 v_k v_k^T/\lVert v_k\rVert^2`
    and the v_k from h (Pyro's ``ConditionalHouseholder``, one hypernet for all K). Volume
    preserving: it rotates/reflects the base Gaussian into a full-covariance one.

    A reflection is never the identity, but two equal ones cancel: the vectors start
    independent of x and equal in pairs (v_1 = v_2, v_3 = v_4, …), so with an even K the flow
    starts at the identity (with an odd K, at one reflection).

    Args:
        vae: the VAE.
        num_flows: K, the number of reflections.
        hidden_dims: hidden widths of the hypernet (default ``[10 z_dim, 10 z_dim]``).
    """

    def __init__(self, vae: VAE, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        _check_z_dim(vae, "householder")
        hidden = _hidden(hidden_dims, [10 * d, 10 * d])
        step = conditional_householder(d, _context(vae), hidden, count_transforms=k)
        last = step.nn.layers[-1]
        with torch.no_grad():
            last.weight.zero_()
            for i in range(0, k - 1, 2):
                last.bias[(i + 1) * d : (i + 2) * d] = last.bias[i * d : (i + 1) * d]
        super().__init__(vae, [step])

    def extra_repr(self) -> str:
        return f"num_reflections={self.flows[0].count_transforms}"


@register_guide("sylvester")
class SylvesterGuide(FlowGuide):
    r"""Sylvester flow: K steps :math:`z \mapsto z + QR\tanh(\tilde R Q^T z + b)` with every
    parameter a linear function of h, as in van den Berg et al. 2018 (arXiv:1803.05649);
    see :mod:`pyro_vae.transforms.sylvester`.

    Args:
        vae: the VAE.
        num_flows: K.
        variant: how Q is kept orthogonal — ``orthogonal`` (O-SNF: M orthonormal columns),
            ``householder`` (H-SNF: a product of ``num_householder`` reflections) or
            ``triangular`` (T-SNF: identity / reversal permutation on alternate steps).
        num_ortho: M for the orthogonal variant (default z_dim // 2, the paper's ratio;
            M = z_dim costs ~3× more per step on a CPU at z_dim = 32).
        num_householder: reflections per step for the householder variant.
        hidden_dims: hidden widths in front of the linear heads (default none: linear in h).
    """

    def __init__(
        self,
        vae: VAE,
        num_flows: int = 4,
        variant: str = "orthogonal",
        num_ortho: Optional[int] = None,
        num_householder: int = 8,
        hidden_dims: Optional[Sequence[int]] = None,
    ) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        if variant not in VARIANTS:
            raise ConfigError(f"unknown Sylvester variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
        if num_ortho is not None and (not isinstance(num_ortho, int) or not 1 <= num_ortho <= d):
            raise ConfigError(f"num_ortho must be an integer in [1, z_dim={d}], got {num_ortho!r}")
        if not isinstance(num_householder, int) or num_householder < 1:
            raise ConfigError(f"num_householder must be a positive integer, got {num_householder!r}")
        hidden = _hidden(hidden_dims, [])
        steps = [
            conditional_sylvester(d, _context(vae), variant=variant, hidden_dims=hidden,
                                  num_ortho=num_ortho, num_householder=num_householder,
                                  reverse=(variant == "triangular" and i % 2 == 1))
            for i in range(k)
        ]
        super().__init__(vae, steps)


#: softplus⁻¹(1 − 2·10⁻³): Pyro adds 10⁻³ to inner knot derivatives and pins the two end
#: knots at 1 − 10⁻³, so this makes every derivative 1 − 10⁻³ — the closest Pyro's spline
#: gets to the identity (|f(z) − z| ≲ 10⁻³ · bin width).
_SPLINE_D0 = math.log(math.expm1(1.0 - 2e-3))


@register_guide("spline")
class SplineGuide(FlowGuide):
    r"""Neural spline IAF: K steps applying to each z_i a monotone rational-linear spline on
    [−bound, bound] (identity outside) whose bins, knot derivatives and λ come from a MADE
    network of (z_{<i}, h) — Pyro's ``ConditionalSplineAutoregressive`` (Durkan et al. 2019,
    arXiv:1906.04032; Dolatabadi et al. 2020, arXiv:2001.05168). Samples in one pass.

    Initialised with uniform bins and unit-slope knots: within 10⁻³ of the identity (Pyro's
    spline pins its end-knot slopes at 1 − 10⁻³, so it cannot be exactly the identity).

    Args:
        vae: the VAE.
        num_flows: K.
        count_bins: spline segments per coordinate.
        bound: half-width of the box where the splines act (z is standardised by nothing:
            choose it to cover the posterior means).
        hidden_dims: hidden widths of each MADE (default ``[10 z_dim, 10 z_dim]``; each ≥ z_dim).
    """

    def __init__(
        self,
        vae: VAE,
        num_flows: int = 4,
        count_bins: int = 8,
        bound: float = 5.0,
        hidden_dims: Optional[Sequence[int]] = None,
    ) -> None:
        k, d = _check_num_flows(num_flows), vae.z_dim
        _check_z_dim(vae, "spline")
        if not isinstance(count_bins, int) or count_bins < 2:
            raise ConfigError(f"count_bins must be an integer ≥ 2, got {count_bins!r}")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
            raise ConfigError(f"bound must be a positive number, got {bound!r}")
        hidden = _hidden(hidden_dims, [10 * d, 10 * d], at_least=d)
        steps = []
        for _ in range(k):
            step = conditional_spline_autoregressive(
                d, _context(vae), hidden, count_bins=count_bins, bound=float(bound), order="linear"
            )
            last = step.nn.layers[-1]
            _zero(last)
            # ARN outputs are laid out (param row p, coordinate i) → p·d + i; rows 2K … 3K−2
            # are the inner knot derivatives.
            with torch.no_grad():
                last.bias[2 * count_bins * d : (3 * count_bins - 1) * d] = _SPLINE_D0
            steps.append(step)
        super().__init__(vae, steps)
