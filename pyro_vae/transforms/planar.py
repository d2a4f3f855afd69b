r"""Planar flow whose zero parameter ``u = 0`` is the identity.

Pyro's :class:`~pyro.distributions.transforms.ConditionalPlanar` computes

.. math::

    \mathbf{y} = \mathbf{x} + \hat{\mathbf{u}}\tanh(\mathbf{w}^T\mathbf{x} + b),\qquad
    \hat{\mathbf{u}} = \mathbf{u} + \big(m(\mathbf{w}^T\mathbf{u}) - \mathbf{w}^T\mathbf{u}\big)
    \frac{\mathbf{w}}{\lVert\mathbf{w}\rVert^2},

with :math:`m(a) = -1 + \operatorname{softplus}(a)`, so that
:math:`\mathbf{w}^T\hat{\mathbf{u}} = m(\mathbf{w}^T\mathbf{u}) > -1` and the map is
invertible (Rezende & Mohamed 2015, arXiv:1505.05770, appendix A.1). With that :math:`m`,
:math:`\hat{\mathbf{u}} \ne 0` for *every* ``u`` (``m(a) = a`` has no root at ``a = 0``), so
Pyro's planar flow can never start at the identity. Here
:math:`m(a) = -1 + \operatorname{softplus}(a + \log(e - 1))`: still smooth, increasing and
:math:`> -1`, but :math:`m(0) = 0`, so :math:`\mathbf{u} = 0 \Rightarrow \hat{\mathbf{u}} = 0`
and the flow is exactly the identity while :math:`\mathbf{w}, b` stay free (and the gradient
with respect to ``u`` is :math:`\tanh(\mathbf{w}^T\mathbf{x} + b) \ne 0`). Everything else —
the log-determinant :math:`\log|1 + \hat{\mathbf{u}}^T\psi(\mathbf{x})|`, the cache that lets
the flow score its own samples — is Pyro's.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from pyro.distributions.transforms.planar import ConditionalPlanar as _PyroConditionalPlanar
from pyro.distributions.transforms.planar import ConditionedPlanar as _PyroConditionedPlanar
from pyro.nn import DenseNN
from torch import Tensor

#: softplus(_SHIFT) = 1, hence m(0) = -1 + softplus(0 + _SHIFT) = 0.
_SHIFT = math.log(math.e - 1.0)


class ConditionedPlanar(_PyroConditionedPlanar):
    """Pyro's conditioned planar transform with :math:`m(0) = 0` (see the module docstring).

    Like Pyro's, it has no analytic inverse: it scores only the samples it produced itself,
    through the transform cache (``cache_size=1``, pyro issue #2718).
    """

    def u_hat(self, u: Tensor, w: Tensor) -> Tensor:
        alpha = (u * w).sum(dim=-1, keepdim=True)
        m_alpha = -1.0 + F.softplus(alpha + _SHIFT)
        return u + (m_alpha - alpha) * w / w.pow(2).sum(dim=-1, keepdim=True)


class ConditionalPlanar(_PyroConditionalPlanar):
    r"""Conditional planar flow; ``nn(context)`` returns :math:`(b, \mathbf{u}, \mathbf{w})`
    of shapes ``(..., 1)``, ``(..., D)``, ``(..., D)``.

    Example:
        >>> import torch
        >>> t = conditional_planar(input_dim=3, context_dim=5, hidden_dims=[8])
        >>> t.condition(torch.randn(4, 5))(torch.randn(4, 3)).shape
        torch.Size([4, 3])

    References:
        Rezende & Mohamed, Variational Inference with Normalizing Flows, ICML 2015,
        arXiv:1505.05770.
    """

    def condition(self, context: Tensor) -> ConditionedPlanar:
        return ConditionedPlanar(partial(self._params, context))

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Zero the ``u`` rows of the hypernet's last layer: ``u = 0``, the identity."""
        last = self.nn.layers[-1]
        u_rows = self.nn.param_slices[1]
        last.weight[u_rows] = 0.0
        last.bias[u_rows] = 0.0


def conditional_planar(
    input_dim: int, context_dim: int, hidden_dims: Optional[Sequence[int]] = None
) -> ConditionalPlanar:
    """A :class:`ConditionalPlanar` with a dense hypernet ``context → (b, u, w)``.

    Args:
        input_dim: D, the dimension of the transformed variable.
        context_dim: dimension of the context.
        hidden_dims: hidden widths of the hypernet (default ``[10 D, 10 D]``, Pyro's).
    """
    hidden = [10 * input_dim] * 2 if hidden_dims is None else list(hidden_dims)
    return ConditionalPlanar(DenseNN(context_dim, hidden, param_dims=[1, input_dim, input_dim]))
