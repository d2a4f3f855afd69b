r"""Sylvester normalizing flows (van den Berg et al. 2018, arXiv:1803.05649), amortized.

One Sylvester step maps :math:`\mathbf{x} \in \mathbb{R}^D` to

.. math::

    \mathbf{y} = \mathbf{x} + Q R \, h\big(\tilde{R} Q^T \mathbf{x} + \mathbf{b}\big),

with :math:`Q \in \mathbb{R}^{D \times M}` (:math:`M \le D`) having orthonormal columns,
:math:`R, \tilde{R} \in \mathbb{R}^{M \times M}` upper triangular,
:math:`\mathbf{b} \in \mathbb{R}^M` and :math:`h = \tanh`. Sylvester's determinant identity
:math:`\det(I_D + AB) = \det(I_M + BA)` and :math:`Q^T Q = I_M` give

.. math::

    \log\left|\det \frac{\partial \mathbf{y}}{\partial \mathbf{x}}\right|
    = \sum_{m=1}^{M} \log\left|1 + h'\big((\tilde{R} Q^T \mathbf{x} + \mathbf{b})_m\big)
      \, R_{mm} \tilde{R}_{mm}\right|,

since :math:`\tilde R R` is upper triangular. The map is invertible when
:math:`R_{mm}\tilde{R}_{mm} > -1/\lVert h' \rVert_\infty = -1`; as in the paper the diagonals
are :math:`\tanh` of free parameters, so :math:`R_{mm}\tilde{R}_{mm} \in (-1, 1)`. A planar
flow is the case :math:`M = 1`; Sylvester flows remove its single-unit bottleneck.

Three ways of keeping :math:`Q` orthogonal (section 3 of the paper), chosen by ``variant``:

* ``"orthogonal"`` (O-SNF): :math:`Q` from M free columns made orthonormal. The paper
  iterates Björck–Bowie's scheme :math:`Q \leftarrow Q(I + \tfrac12(I - Q^T Q))`; here the
  reduced QR decomposition (``torch.linalg.qr``, differentiable) gives an exactly
  orthonormal :math:`Q` instead, with signs fixed so that it is unique and smooth.
* ``"householder"`` (H-SNF): :math:`Q = H_1 \cdots H_K` with Householder reflections
  :math:`H_k = I - 2\mathbf{v}_k\mathbf{v}_k^T / \lVert\mathbf{v}_k\rVert^2`; :math:`M = D`.
* ``"triangular"`` (T-SNF): :math:`Q` is the identity or the reversal permutation (pass
  ``reverse=True`` on alternate steps), so :math:`R, \tilde{R}` alternate between upper
  and lower triangular; :math:`M = D`.

In a VAE guide every parameter comes from the encoder features (amortization): the paper
maps them linearly to :math:`R, \tilde R, \mathbf{b}, Q` per step, and so does
:class:`ConditionalSylvester` by default. As in the paper, one full :math:`M\times M`
matrix supplies the strict upper triangle of :math:`R` and, transposed, of :math:`\tilde R`.

There is no analytic inverse: a Sylvester flow scores only the samples it produced itself,
through the transform cache (``cache_size=1``; pyro issue #2718). That is all an ELBO or an
IWAE estimate with the flow as the guide needs. Pyro's own
:class:`pyro.distributions.transforms.Sylvester` is the non-amortized Householder variety
only; this module adds the orthogonal and triangular variants and the conditional form.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform

from ..nets import MLP
from ..errors import ConfigError
from ..options import check_choice

VARIANTS = ("orthogonal", "householder", "triangular")

SylvesterParams = Tuple[Tensor, Tensor, Tensor, Tensor]


def orthonormalize(a: Tensor) -> Tensor:
    """Orthonormal columns spanning those of ``a`` (..., D, M), M ≤ D, by a reduced QR.

    The signs are fixed so that R has a positive diagonal, which makes the factorization
    unique and Q a smooth function of ``a`` (where ``a`` has full column rank).
    """
    q, r = torch.linalg.qr(a, mode="reduced")
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return q * sign.unsqueeze(-2)


def householder_product(v: Tensor) -> Tensor:
    """:math:`Q = H_1 \\cdots H_K` for reflection vectors ``v`` (..., K, D); returns (..., D, D)."""
    v = v / torch.linalg.norm(v, dim=-1, keepdim=True)
    d = v.shape[-1]
    q = torch.eye(d, dtype=v.dtype, device=v.device).expand(v.shape[:-2] + (d, d))
    for k in range(v.shape[-2]):
        vk = v[..., k, :]
        q = q - 2.0 * (q @ vk.unsqueeze(-1)) * vk.unsqueeze(-2)  # Q ← Q H_k
    return q


class ConditionedSylvester(Transform):
    r"""The math of one Sylvester step, :math:`\mathbf{y} = \mathbf{x} + QR\tanh(\tilde RQ^T\mathbf{x} + \mathbf{b})`.

    Args:
        params: ``(Q, R, R̃, b)`` of shapes ``(..., D, M)``, ``(..., M, M)``,
            ``(..., M, M)``, ``(..., M)`` — or a callable returning them, evaluated at each
            call so that nothing goes stale. Their batch dimensions broadcast against
            those of ``x`` (e.g. ``x`` of shape (L, B, D) with parameters for (B,)).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params: Union[SylvesterParams, Callable[[], SylvesterParams]]) -> None:
        super().__init__(cache_size=1)
        self._params = params
        self._cached_logDetJ: Optional[Tensor] = None

    def _call(self, x: Tensor) -> Tensor:
        q, r, r_tilde, b = self._params() if callable(self._params) else self._params
        # Row-vector form: (Q^T x)^T = x^T Q, and so on; unsqueeze(-2) makes x a (1, D) matrix.
        qtx = x.unsqueeze(-2) @ q                                       # (..., 1, M)
        pre = (qtx @ r_tilde.transpose(-1, -2)).squeeze(-2) + b         # R̃ Q^T x + b
        act = torch.tanh(pre)
        step = (act.unsqueeze(-2) @ r.transpose(-1, -2)) @ q.transpose(-1, -2)  # (Q R act)^T
        diag = torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(r_tilde, dim1=-2, dim2=-1)
        self._cached_logDetJ = torch.log1p((1.0 - act.pow(2)) * diag).sum(-1)
        return x + step.squeeze(-2)

    def _inverse(self, y: Tensor) -> Tensor:
        raise KeyError(
            "ConditionedSylvester has no analytic inverse: it can only score the samples it "
            "produced itself (found through the cache)"
        )

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old:
            self(x)  # recompute (and re-cache) y and the log-determinant for this x
        return self._cached_logDetJ


class _SylvesterParametrization(nn.Module):
    """Maps unconstrained tensors to ``(Q, R, R̃, b)``; shared by the plain and the
    conditional transform. Unconstrained inputs, each with arbitrary batch dimensions:

    * ``full`` (..., M, M): strict upper triangle → R, strict lower triangle (transposed) → R̃;
    * ``r_diag``, ``r_tilde_diag`` (..., M): diagonals through tanh, so R_mm R̃_mm ∈ (−1, 1);
    * ``b`` (..., M);
    * ``q_raw``: (..., D, M) columns (orthogonal), (..., K, D) reflections (householder),
      nothing (triangular).
    """

    def __init__(
        self,
        input_dim: int,
        variant: str = "orthogonal",
        num_ortho: Optional[int] = None,
        num_householder: int = 8,
        reverse: bool = False,
    ) -> None:
        super().__init__()
        check_choice(variant, VARIANTS, "Sylvester variant", "variant", valid="variants")
        if variant != "orthogonal":
            m = input_dim
        else:  # the paper's ratio: M = 32 orthonormal columns for a 64-dimensional z
            m = max(1, input_dim // 2) if num_ortho is None else int(num_ortho)
        if not 1 <= m <= input_dim:
            raise ConfigError(f"num_ortho must be an integer in [1, z_dim={input_dim}], got {num_ortho!r}",
                              params=("num_ortho",))
        if num_householder < 1:
            raise ConfigError(f"num_householder must be a positive integer, got {num_householder!r}",
                              params=("num_householder",))
        self.input_dim, self.variant, self.num_ortho = input_dim, variant, m
        self.num_householder = int(num_householder)
        self.reverse = bool(reverse)
        self.register_buffer("triu", torch.triu(torch.ones(m, m), diagonal=1))
        if variant == "triangular":
            eye = torch.eye(input_dim)
            self.register_buffer("perm", eye.flip(-1) if reverse else eye)

    @property
    def q_shape(self) -> Tuple[int, ...]:
        if self.variant == "orthogonal":
            return (self.input_dim, self.num_ortho)
        if self.variant == "householder":
            return (self.num_householder, self.input_dim)
        return (0,)

    def forward(self, full: Tensor, r_diag: Tensor, r_tilde_diag: Tensor, b: Tensor,
                q_raw: Optional[Tensor]) -> SylvesterParams:
        r = full * self.triu + torch.diag_embed(torch.tanh(r_diag))
        r_tilde = full.transpose(-1, -2) * self.triu + torch.diag_embed(torch.tanh(r_tilde_diag))
        if self.variant == "orthogonal":
            q = orthonormalize(q_raw)
        elif self.variant == "householder":
            q = householder_product(q_raw)
        else:
            q = self.perm.to(full.dtype)
        return q, r, r_tilde, b


class Sylvester(ConditionedSylvester, TransformModule):
    r"""A Sylvester step with free (non-amortized) parameters, for density estimation or
    non-amortized guides. See the module docstring for the equations and variants.

    Initialised at the identity (:math:`R = 0`), with small random :math:`\tilde R`,
    :math:`\mathbf{b}` and random :math:`Q`.

    Args:
        input_dim: D.
        variant: ``orthogonal``, ``householder`` or ``triangular``.
        num_ortho: M, orthonormal columns of Q (orthogonal variant; default D // 2).
        num_householder: reflections per Q (householder variant).
        reverse: use the reversal permutation as Q (triangular variant).

    Example:
        >>> import torch
        >>> t = Sylvester(4)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(t(x), x)                      # starts at the identity
        True

    References:
        van den Berg, Hasenclever, Tomczak & Welling, Sylvester Normalizing Flows for
        Variational Inference, UAI 2018, arXiv:1803.05649.
    """

    def __init__(self, input_dim: int, variant: str = "orthogonal", num_ortho: Optional[int] = None,
                 num_householder: int = 8, reverse: bool = False) -> None:
        super().__init__(self._params)
        self.param_map = _SylvesterParametrization(input_dim, variant, num_ortho, num_householder, reverse)
        m = self.param_map.num_ortho
        self.full = nn.Parameter(torch.empty(m, m))
        self.r_diag = nn.Parameter(torch.empty(m))
        self.r_tilde_diag = nn.Parameter(torch.empty(m))
        self.b = nn.Parameter(torch.empty(m))
        self.q_raw = nn.Parameter(torch.empty(self.param_map.q_shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            # strict upper triangle (→ R) and diag(R) zero: the identity; R̃ small, as Pyro's
            self.full.uniform_(-0.01, 0.01).mul_(1.0 - self.param_map.triu)
            self.r_diag.zero_()
            self.r_tilde_diag.uniform_(-0.01, 0.01)
            self.b.uniform_(-0.01, 0.01)
            self.q_raw.normal_()

    def _params(self) -> SylvesterParams:
        q_raw = self.q_raw if self.param_map.variant != "triangular" else None
        return self.param_map(self.full, self.r_diag, self.r_tilde_diag, self.b, q_raw)


class ConditionalSylvester(ConditionalTransformModule):
    r"""An amortized Sylvester step: :math:`Q, R, \tilde R, \mathbf{b}` are functions of a
    context :math:`\mathbf{c}` (the encoder features in a VAE guide).

    ``condition(c)`` returns a fresh :class:`ConditionedSylvester` whose parameters have the
    batch shape of ``c``; they broadcast over extra leading (particle) dimensions of ``x``.
    The hypernet is linear in ``c`` by default, as in the paper; ``hidden_dims`` adds an
    MLP (ReLU) in front. Its last layer is initialised so that :math:`R = 0`: the step starts
    at the identity, with a non-zero gradient for :math:`R` because
    :math:`\tanh(\tilde R Q^T\mathbf{x} + \mathbf{b}) \ne 0`.

    Args:
        input_dim: D.
        context_dim: dimension of the context.
        variant: ``orthogonal``, ``householder`` or ``triangular``.
        hidden_dims: hidden widths of the hypernet (default: none, a linear map).
        num_ortho: M (orthogonal variant; default D // 2, the paper's M = 32 for D = 64).
        num_householder: reflections per step (householder variant).
        reverse: Q is the reversal permutation (triangular variant, alternate steps).

    Example:
        >>> import torch
        >>> t = ConditionalSylvester(4, context_dim=6, variant="householder", num_householder=2)
        >>> c, x = torch.randn(5, 6), torch.randn(3, 5, 4)      # context (B,), x (L, B)
        >>> t.condition(c)(x).shape
        torch.Size([3, 5, 4])

    References:
        van den Berg, Hasenclever, Tomczak & Welling, Sylvester Normalizing Flows for
        Variational Inference, UAI 2018, arXiv:1803.05649.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, context_dim: int, variant: str = "orthogonal",
                 hidden_dims: Sequence[int] = (), num_ortho: Optional[int] = None,
                 num_householder: int = 8, reverse: bool = False) -> None:
        super().__init__()
        self.param_map = _SylvesterParametrization(input_dim, variant, num_ortho, num_householder, reverse)
        m = self.param_map.num_ortho
        q_numel = 0 if variant == "triangular" else int(torch.Size(self.param_map.q_shape).numel())
        # full M×M (its diagonal is unused: the diagonals of R and R̃ have their own heads),
        # diag(R), diag(R̃), b, and Q's raw parameters
        self.param_dims = [m * m, m, m, m, q_numel]
        self.nn = MLP(context_dim, list(hidden_dims), sum(self.param_dims), act="relu")
        self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Zero the rows of the last layer that produce R (its strict upper triangle and
        diagonal), so that R = 0 and the step is the identity; the rest keeps its random
        initialisation."""
        last = self.nn[-1]
        m = self.param_map.num_ortho
        upper = self.param_map.triu.reshape(-1).bool()
        rows = torch.cat([upper, torch.ones(m, dtype=torch.bool),
                          torch.zeros(sum(self.param_dims) - m * m - m, dtype=torch.bool)])
        last.weight[rows] = 0.0
        last.bias[rows] = 0.0

    def _params(self, context: Tensor) -> SylvesterParams:
        m = self.param_map.num_ortho
        full, r_diag, r_tilde_diag, b, q_raw = self.nn(context).split(self.param_dims, dim=-1)
        batch = context.shape[:-1]
        full = full.reshape(batch + (m, m))
        q_raw = None if self.param_map.variant == "triangular" else q_raw.reshape(batch + self.param_map.q_shape)
        return self.param_map(full, r_diag, r_tilde_diag, b, q_raw)

    def condition(self, context: Tensor) -> ConditionedSylvester:
        return ConditionedSylvester(partial(self._params, context))


def sylvester(input_dim: int, **kwargs) -> Sylvester:
    """A :class:`Sylvester` step (keyword arguments as its constructor)."""
    return Sylvester(input_dim, **kwargs)


def conditional_sylvester(input_dim: int, context_dim: int, **kwargs) -> ConditionalSylvester:
    """A :class:`ConditionalSylvester` step (keyword arguments as its constructor)."""
    return ConditionalSylvester(input_dim, context_dim, **kwargs)
