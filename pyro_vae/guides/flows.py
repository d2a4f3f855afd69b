r"""Flow guides: q_φ(z | x) = a diagonal Gaussian pushed through K conditional flow steps.

.. math::

    \mathbf{z}_0 \sim \mathcal{N}\big(\mu_\phi(x), \operatorname{diag}\sigma_\phi(x)^2\big),
    \qquad \mathbf{z} = \mathbf{z}_K = f_K \circ \dots \circ f_1(\mathbf{z}_0;\, h),
    \qquad \log q(\mathbf{z}_K \mid x) = \log q(\mathbf{z}_0 \mid x)
    - \sum_{k=1}^{K} \log\left|\det \frac{\partial f_k}{\partial \mathbf{z}_{k-1}}\right|,

where :math:`h = ` ``vae.encoder.features(x)`` is the encoder's feature vector, the context
every flow step conditions on (Rezende & Mohamed 2015, arXiv:1505.05770; Kingma et al.
2016, arXiv:1606.04934). The base is the VAE's own Gaussian head, so a flow guide at the
identity *is* the Gaussian guide; every step starts at (or, for ``spline``, within 10⁻³ of)
the identity.

In Pyro terms the guide samples site ``"z"`` from
``dist.TransformedDistribution(base, [t.condition(h) for t in self.flows])`` through
:meth:`Guide.forward <pyro_vae.guides.base.Guide.forward>` (a
:class:`~pyro_vae.guides.base.JointGuide`); ``self.flows`` holds Pyro
``ConditionalTransformModule`` s and is registered with ``pyro.module`` through the guide,
never through a conditioned transform, which is rebuilt at every call so nothing goes stale.

Every flow guide is one row of :data:`STEPS` — a factory of one step at the identity,
default hypernet widths, the smallest z_dim it works for, and how K steps are arranged —
whose :meth:`FlowSteps.guide` is registered under its name in
:data:`~pyro_vae.guides.base.GUIDES`. Its real, annotated signature is what the registry
checks options against: ``num_flows`` (the CLI's ``--flows K``) and ``hidden_dims``, and for
a row whose steps take options of their own (:class:`SylvesterSteps`, :class:`SplineSteps`)
those too. The guide itself is the VAE's to build, ``vae.flow_guide(row, ...)``: a
:class:`FlowGuide` for a VAE of one latent site; for one of several (``hvae``) every layer
gets its own flow of the same kind (an IAF per layer for ``iaf``, as in Kingma et al. 2016),
made by :meth:`FlowSteps.steps`. The rows:

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
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

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
from ..nets.hypernet import start_at
from ..transforms import conditional_additive_coupling, conditional_planar, conditional_sylvester
from .base import GUIDES, Guide, JointGuide

#: Most steps of a flow guide (10⁶ took minutes just to build; beyond tens of steps a guide
#: hardly improves on mnist5k, docs/benchmarks.md).
MAX_FLOWS = 1000

class FlowGuide(JointGuide):
    """The encoder's Gaussian pushed through ``flows``, conditional steps f_1, …, f_K.

    Each step is a Pyro ``ConditionalTransformModule`` mapping the encoder features ``h``
    of shape (B, h_dim) to a transform of z; steps broadcast over leading (particle)
    dimensions of z.

    Args:
        vae: the VAE whose encoder gives the base distribution and the context h.
        flows: the conditional steps, applied in order.
    """

    def __init__(self, vae: nn.Module, flows: Sequence[ConditionalTransformModule]) -> None:
        super().__init__(vae)
        self.flows = nn.ModuleList(flows)

    def conditioned_flows(self, h: Tensor) -> List[Transform]:
        """Fresh transforms f_1(·; h), ..., f_K(·; h) for features ``h`` (B, h_dim)."""
        return [t.condition(h) for t in self.flows]

    def _distribution(self, x: Tensor, y: Optional[Tensor] = None) -> dist.TransformedDistribution:
        """q_φ(z | x) (q_φ(z | x, y) given labels), batch shape (B,), event shape (z_dim,)."""
        encoder = self.vae.encoder
        h = encoder.features(x, y)
        return dist.TransformedDistribution(encoder.base(h), self.conditioned_flows(h))

    def _location(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The encoder mean μ_φ(x) pushed through the flows (B, z_dim)."""
        encoder = self.vae.encoder
        h = encoder.features(x, y)
        z, _ = encoder.loc_scale(h)
        for t in self.conditioned_flows(h):
            z = t(z)
        return z

    def extra_repr(self) -> str:
        return f"num_flows={self.spec.get('num_flows', len(self.flows))}"


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


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class FlowSteps:
    """One kind of flow guide: how to make its steps, its defaults, and (:meth:`guide`, the
    entry of :data:`~pyro_vae.guides.base.GUIDES`) the options its guide takes. A row whose
    steps take options of their own declares them in its own :meth:`guide`, a subclass's.

    Attributes:
        name: the registered name.
        make: ``make(z_dim, context_dim, hidden_dims, step, **options)`` → one step at the
            identity; ``step`` is the step's index k (for ``layout="one"``: the number of
            steps K, all held by the one module).
        hidden: default hypernet widths for a z_dim.
        min_z_dim: the smallest z_dim it works for.
        min_width: hidden widths must be ≥ this multiple of z_dim (autoregressive nets: 1).
        layout: ``"chain"`` (K steps), ``"couplings"`` (K couplings, the coordinate order
            reversed between them so both halves are transformed) or ``"one"`` (one module).
    """

    name: str
    make: Callable[..., ConditionalTransformModule]
    hidden: Callable[[int], List[int]]
    min_z_dim: int = 1
    min_width: int = 0
    layout: str = "chain"

    def guide(self, vae: nn.Module, num_flows: int = 4,
              hidden_dims: Optional[Sequence[int]] = None) -> Guide:
        """The registered factory of this row's guide, whose parameters after ``vae`` are the
        options the registry checks: what ``vae.flow_guide`` builds from the row (a
        :class:`FlowGuide`, or the VAE's own kind)."""
        return vae.flow_guide(self, num_flows, hidden_dims)

    def steps(self, d: int, context: int, num_flows: int, hidden_dims: Optional[Sequence[int]],
              **options: Any) -> List[ConditionalTransformModule]:
        """The K = ``num_flows`` steps of one flow of a ``d``-dimensional latent conditioned on
        ``context`` features, each at the identity, arranged as :attr:`layout` says
        (``hidden_dims=None``: :attr:`hidden` of ``d``; ``options``: the factory's own)."""
        if not 1 <= num_flows <= MAX_FLOWS:
            raise ConfigError(f"num_flows must be a positive integer up to {MAX_FLOWS}, got {num_flows!r}",
                              params=("num_flows",))
        if d < self.min_z_dim:
            raise ConfigError(f"the {self.name} guide needs z_dim ≥ {self.min_z_dim}, got {d}", params=("model.z_dim",))
        hidden = self.hidden(d) if hidden_dims is None else list(hidden_dims)
        least = max(1, self.min_width * d)
        if any(h < least for h in hidden):
            raise ConfigError(f"hidden_dims of the {self.name} guide must be integers ≥ {least}, "
                              f"got {hidden}", params=("hidden_dims",))
        if self.layout == "one":
            return [self.make(d, context, hidden, num_flows, **options)]
        steps: List[ConditionalTransformModule] = []
        for k in range(num_flows):
            if k > 0 and self.layout == "couplings":
                steps.append(_reverse(d))
            steps.append(self.make(d, context, hidden, k, **options))
        if self.layout == "couplings" and num_flows % 2 == 0:
            steps.append(_reverse(d))  # restore the order: the whole flow starts at the identity
        return steps


def _reverse(dim: int) -> ConditionalPermute:
    return ConditionalPermute(torch.arange(dim - 1, -1, -1))


def _planar(d: int, context: int, hidden: List[int], step: int) -> ConditionalTransformModule:
    t = conditional_planar(d, context, hidden)
    t.reset_to_identity()  # u = 0
    return t


def _radial(d: int, context: int, hidden: List[int], step: int) -> ConditionalTransformModule:
    # (z₀, α', β') from h; α = softplus(α'), β = −α + softplus(β'): α' = β' = 0 gives β = 0
    t = conditional_radial(d, context, hidden)
    start_at(t.nn, [None, 0.0, 0.0], torch.zeros(1, context))
    return t


def _iaf(d: int, context: int, hidden: List[int], step: int) -> ConditionalTransformModule:
    # (μ, log σ) = (0, 0): z ↦ z; each step has its own random variable order (Pyro's default)
    t = conditional_affine_autoregressive(d, context, hidden)
    start_at(t.nn, [0.0, 0.0], torch.zeros(1, d), context=torch.zeros(1, context))
    return t


def _realnvp(d: int, context: int, hidden: List[int], step: int) -> ConditionalTransformModule:
    # (s, t) = (0, 0) for the second half, whatever the first half and h
    t = conditional_affine_coupling(d, context, hidden)
    start_at(t.nn, [0.0, 0.0], torch.zeros(1, d // 2), context=torch.zeros(1, context))
    return t


def _nice(d: int, context: int, hidden: List[int], step: int) -> ConditionalTransformModule:
    t = conditional_additive_coupling(d, context, hidden)
    t.reset_to_identity()  # shift 0
    return t


def _householder(d: int, context: int, hidden: List[int], step: int) -> ConditionalTransformModule:
    # a reflection is never the identity, but two equal ones cancel: the K vectors start
    # independent of h and equal in pairs (v₁ = v₂ = e₁, v₃ = v₄ = e₂, …), so with an even K
    # the flow starts at the identity (with an odd K, at one reflection)
    count = step
    t = conditional_householder(d, context, hidden, count_transforms=count)
    eye = torch.eye(d)
    start_at(t.nn, [eye[(k // 2) % d] for k in range(count)], torch.zeros(1, context))
    return t


def _sylvester(d: int, context: int, hidden: List[int], step: int, variant: str,
               num_ortho: Optional[int], num_householder: int) -> ConditionalTransformModule:
    # the steps start at R = 0, the identity (see pyro_vae.transforms.sylvester), which also
    # checks the options; triangular steps alternate between the identity and the reversal as their Q
    return conditional_sylvester(d, context, variant=variant, hidden_dims=hidden, num_ortho=num_ortho,
                                 num_householder=num_householder,
                                 reverse=(variant == "triangular" and step % 2 == 1))


class SylvesterSteps(FlowSteps):
    """The Sylvester row, whose :meth:`guide` also takes the options of every step:

    * ``variant``: how Q stays orthogonal — ``orthogonal`` (M free columns made
      orthonormal), ``householder`` (a product of reflections) or ``triangular`` (the
      identity or the reversal, alternating);
    * ``num_ortho``: M of the orthogonal variant (``None``: max(1, z_dim // 2), the paper's
      ratio; M = z_dim costs ~3× more per step on a CPU at z_dim = 32);
    * ``num_householder``: reflections per Q of the householder variant.
    """

    def guide(self, vae: nn.Module, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None,
              variant: str = "orthogonal", num_ortho: Optional[int] = None,
              num_householder: int = 8) -> Guide:
        return vae.flow_guide(self, num_flows, hidden_dims, variant=variant, num_ortho=num_ortho,
                              num_householder=num_householder)


#: softplus⁻¹(1 − 2·10⁻³): Pyro adds 10⁻³ to inner knot derivatives and pins the two end
#: knots at 1 − 10⁻³, so this makes every derivative 1 − 10⁻³ — the closest Pyro's spline
#: gets to the identity (|f(z) − z| ≲ 10⁻³ · bin width).
_SPLINE_D0 = math.log(math.expm1(1.0 - 2e-3))


def _spline(d: int, context: int, hidden: List[int], step: int, count_bins: int,
            bound: float) -> ConditionalTransformModule:
    if count_bins < 2:
        raise ConfigError(f"count_bins must be an integer ≥ 2, got {count_bins!r}")
    if not bound > 0:
        raise ConfigError(f"bound must be a positive number, got {bound!r}")
    # uniform bins (widths and heights), inner knot slopes 1 − 10⁻³, λ = 1/2
    t = conditional_spline_autoregressive(d, context, hidden, count_bins=count_bins,
                                          bound=float(bound), order="linear")
    start_at(t.nn, [0.0, 0.0, _SPLINE_D0, 0.0], torch.zeros(1, d), context=torch.zeros(1, context))
    return t


class SplineSteps(FlowSteps):
    """The spline row, whose :meth:`guide` also takes the options of every step:
    ``count_bins``, the bins of each spline, and ``bound``, the half-width of the box where
    the splines act (the identity outside it): choose it to cover the posterior means.
    """

    def guide(self, vae: nn.Module, num_flows: int = 4, hidden_dims: Optional[Sequence[int]] = None,
              count_bins: int = 8, bound: float = 5.0) -> Guide:
        return vae.flow_guide(self, num_flows, hidden_dims, count_bins=count_bins, bound=bound)


#: Every flow guide, in the order ``pyro-vae list`` shows them; the options of each are the
#: parameters of its row's :meth:`~FlowSteps.guide` after ``vae``.
STEPS = [
    FlowSteps("planar", _planar, lambda d: [10 * d, 10 * d]),
    FlowSteps("radial", _radial, lambda d: [10 * d, 10 * d]),
    FlowSteps("iaf", _iaf, lambda d: [10 * d], min_z_dim=2, min_width=1),
    FlowSteps("realnvp", _realnvp, lambda d: [10 * d], min_z_dim=2, layout="couplings"),
    FlowSteps("nice", _nice, lambda d: [10 * d], min_z_dim=2, layout="couplings"),
    FlowSteps("householder", _householder, lambda d: [10 * d, 10 * d], min_z_dim=2, layout="one"),
    SylvesterSteps("sylvester", _sylvester, lambda d: []),
    SplineSteps("spline", _spline, lambda d: [10 * d, 10 * d], min_z_dim=2, min_width=1),
]
for _steps in STEPS:
    GUIDES.register(_steps.name)(_steps.guide)
