r"""NICE's additive coupling layer (Dinh et al. 2014, arXiv:1410.8516), plain and conditional.

With a split :math:`\mathbf{x} = (\mathbf{x}_{1:d}, \mathbf{x}_{d+1:D})`,

.. math::

    \mathbf{y}_{1:d} = \mathbf{x}_{1:d}, \qquad
    \mathbf{y}_{d+1:D} = \mathbf{x}_{d+1:D} + m(\mathbf{x}_{1:d}\,[, \mathbf{c}]),

where :math:`m` is any network (of a context :math:`\mathbf{c}` too, for the conditional
version). The Jacobian is unit lower-triangular, so :math:`\log|\det J| = 0` — the layer
preserves volume — and the inverse is exact: :math:`\mathbf{x}_{d+1:D} = \mathbf{y}_{d+1:D}
- m(\mathbf{y}_{1:d})`. Unlike planar, radial or Sylvester flows it can score any value,
not only its own samples. Stack layers with permutations between them so that every
coordinate is transformed. Pyro has the *affine* coupling of RealNVP
(:class:`~pyro.distributions.transforms.AffineCoupling`) but no additive one; this module
follows its layout (a ``TransformModule`` holding the hypernet, a
``ConditionalTransformModule`` whose ``condition`` binds the context, two factories).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from pyro.nn import ConditionalDenseNN, DenseNN
from torch import Tensor


class AdditiveCoupling(TransformModule):
    r"""Additive coupling :math:`\mathbf{y}_{d+1:D} = \mathbf{x}_{d+1:D} + m(\mathbf{x}_{1:d})`.

    Args:
        split_dim: d, the number of coordinates passed through unchanged.
        hypernet: a callable ``x[..., :d] → shift`` of shape ``(..., D - d)``; an
            ``nn.Module`` is registered as a submodule.

    Example:
        >>> import torch
        >>> t = additive_coupling(4, hidden_dims=[8])
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(t.inv(t(x)), x)
        True

    References:
        Dinh, Krueger & Bengio, NICE: Non-linear Independent Components Estimation,
        arXiv:1410.8516.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    def __init__(self, split_dim: int, hypernet: Callable[[Tensor], Tensor]) -> None:
        super().__init__(cache_size=1)
        self.split_dim = split_dim
        self.nn = hypernet

    def _call(self, x: Tensor) -> Tensor:
        x1, x2 = x[..., : self.split_dim], x[..., self.split_dim :]
        return torch.cat([x1, x2 + self.nn(x1)], dim=-1)

    def _inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[..., : self.split_dim], y[..., self.split_dim :]
        return torch.cat([y1, y2 - self.nn(y1)], dim=-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


class ConditionalAdditiveCoupling(ConditionalTransformModule):
    r"""Conditional additive coupling: the shift :math:`m(\mathbf{x}_{1:d}, \mathbf{c})` also
    sees a context :math:`\mathbf{c}` (e.g. the encoder features of a VAE guide).

    Args:
        split_dim: d, the number of coordinates passed through unchanged.
        hypernet: a module called as ``hypernet(x[..., :d], context=c)`` returning the
            shift (Pyro's :class:`~pyro.nn.ConditionalDenseNN` with one output of
            ``D - d``); it must broadcast the context over extra leading dimensions of
            ``x`` (particles), as Pyro's networks do.

    Example:
        >>> import torch
        >>> t = conditional_additive_coupling(4, context_dim=3, hidden_dims=[8])
        >>> t.condition(torch.randn(5, 3))(torch.randn(2, 5, 4)).shape   # particles × batch
        torch.Size([2, 5, 4])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, split_dim: int, hypernet: torch.nn.Module) -> None:
        super().__init__()
        self.split_dim = split_dim
        self.nn = hypernet

    def condition(self, context: Tensor) -> AdditiveCoupling:
        return AdditiveCoupling(self.split_dim, partial(self.nn, context=context))

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Zero the hypernet's last layer: the shift is 0 and the layer the identity."""
        self.nn.layers[-1].weight.zero_()
        self.nn.layers[-1].bias.zero_()


def _split(input_dim: int, split_dim: Optional[int]) -> int:
    split = input_dim // 2 if split_dim is None else int(split_dim)
    if not 0 < split < input_dim:
        raise ValueError(f"split_dim must be in [1, {input_dim - 1}], got {split}")
    return split


def additive_coupling(
    input_dim: int, hidden_dims: Optional[Sequence[int]] = None, split_dim: Optional[int] = None
) -> AdditiveCoupling:
    """An :class:`AdditiveCoupling` with a dense shift network (``[10 D]`` hidden by default)."""
    split = _split(input_dim, split_dim)
    hidden = [10 * input_dim] if hidden_dims is None else list(hidden_dims)
    return AdditiveCoupling(split, DenseNN(split, hidden, param_dims=[input_dim - split]))


def conditional_additive_coupling(
    input_dim: int,
    context_dim: int,
    hidden_dims: Optional[Sequence[int]] = None,
    split_dim: Optional[int] = None,
) -> ConditionalAdditiveCoupling:
    """A :class:`ConditionalAdditiveCoupling` with a dense shift network of ``(x_{1:d}, c)``.

    Args:
        input_dim: D.
        context_dim: dimension of the context.
        hidden_dims: hidden widths (default ``[10 D]``, as Pyro's affine coupling).
        split_dim: d (default ``D // 2``).
    """
    split = _split(input_dim, split_dim)
    hidden = [10 * input_dim] if hidden_dims is None else list(hidden_dims)
    net = ConditionalDenseNN(split, context_dim, hidden, param_dims=[input_dim - split])
    return ConditionalAdditiveCoupling(split, net)
