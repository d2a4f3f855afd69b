"""The transforms Pyro lacks (pyro_vae.transforms), checked against autograd and closed forms."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from pyro_vae.transforms import (
    ConditionalSylvester,
    ConditionedPlanar,
    Sylvester,
    additive_coupling,
    conditional_additive_coupling,
    conditional_planar,
)
from pyro_vae.transforms.sylvester import VARIANTS, householder_product, orthonormalize



def log_det_by_autograd(transform, x):
    """log|det ∂y/∂x| per row of x (N, D), from a fresh call per row (no cache involved)."""
    return torch.stack([torch.linalg.slogdet(jacobian(transform, row)).logabsdet for row in x])


@pytest.mark.parametrize("variant", VARIANTS)
def test_sylvester_log_det_matches_autograd_in_float64(variant):
    t = Sylvester(4, variant=variant, num_householder=3).double()
    with torch.no_grad():  # away from the identity init, with |R_mm R̃_mm| up to ~0.9
        for p in t.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(5, 4, dtype=torch.float64)
    y = t(x)
    expected = log_det_by_autograd(lambda v: t(v.unsqueeze(0)).squeeze(0), x)
    # x is a new tensor for each autograd call, so log_abs_det_jacobian must recompute
    assert torch.allclose(t.log_abs_det_jacobian(x, y), expected, atol=1e-10)
    assert t.log_abs_det_jacobian(x, y).abs().max() > 1e-2  # the check is not vacuous


def test_sylvester_starts_at_the_identity_and_cannot_invert_foreign_values():
    t = Sylvester(3)
    x = torch.randn(4, 3)
    assert torch.equal(t(x), x)
    assert torch.equal(t.log_abs_det_jacobian(x, t(x)), torch.zeros(4))
    c = ConditionalSylvester(3, context_dim=2)
    ct = c.condition(torch.randn(4, 2))
    assert torch.equal(ct(x), x)
    y = ct(x)
    assert ct.inv(y) is x  # its own sample: found in the cache
    with pytest.raises(KeyError, match="no analytic inverse"):
        ct.inv(y.clone())


def test_orthonormalize_and_householder_product_are_orthogonal():
    a = torch.randn(6, 5, 3, dtype=torch.float64)
    q = orthonormalize(a)
    assert torch.allclose(q.transpose(-1, -2) @ q, torch.eye(3, dtype=torch.float64), atol=1e-12)
    # same column span as a: projecting a onto span(q) leaves it unchanged
    assert torch.allclose(q @ (q.transpose(-1, -2) @ a), a, atol=1e-12)
    # unique (positive diagonal of R), so a smooth function of a: scaling a keeps q
    assert torch.allclose(orthonormalize(2.0 * a), q, atol=1e-12)
    v = torch.randn(6, 3, 4, dtype=torch.float64)
    h = householder_product(v)
    assert torch.allclose(h.transpose(-1, -2) @ h, torch.eye(4, dtype=torch.float64), atol=1e-12)
    # one reflection maps v to -v
    h1 = householder_product(v[:, :1])
    assert torch.allclose((h1 @ v[:, 0].unsqueeze(-1)).squeeze(-1), -v[:, 0], atol=1e-12)


def test_additive_coupling_is_exactly_invertible_and_volume_preserving():
    t = additive_coupling(5, hidden_dims=[16], split_dim=2).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    y = t(x)
    assert torch.equal(y[:, :2], x[:, :2]) and not torch.allclose(y, x)
    assert torch.allclose(t.inv(y.clone()), x, atol=1e-12)  # no cache needed
    expected = log_det_by_autograd(lambda v: t(v.unsqueeze(0)).squeeze(0), x)
    assert torch.allclose(expected, torch.zeros(7, dtype=torch.float64), atol=1e-12)
    assert torch.equal(t.log_abs_det_jacobian(x, y), torch.zeros(7, dtype=torch.float64))
    c = conditional_additive_coupling(5, context_dim=3, hidden_dims=[16])
    c.reset_to_identity()
    x = torch.randn(2, 7, 5)
    assert torch.equal(c.condition(torch.randn(7, 3))(x), x)
    with pytest.raises(ValueError, match="split_dim"):
        additive_coupling(5, split_dim=5)


def test_planar_reparametrisation_is_identity_at_zero_and_keeps_invertibility():
    t = ConditionedPlanar(None)
    # float64: in float32, -1 + softplus(a) rounds to exactly -1 once a < -17 (Pyro's too)
    w = torch.randn(1000, 6, dtype=torch.float64)
    u = 3.0 * torch.randn(1000, 6, dtype=torch.float64)
    u_hat = t.u_hat(u, w)
    # invertibility condition of Rezende & Mohamed: wᵀû > -1, with wᵀû = m(wᵀu)
    wu_hat = (w * u_hat).sum(-1)
    assert (wu_hat > -1).all()
    assert torch.allclose(wu_hat, -1 + torch.nn.functional.softplus((w * u).sum(-1) + math.log(math.e - 1)),
                          atol=1e-12)
    assert torch.equal(t.u_hat(torch.zeros_like(w), w), torch.zeros_like(w))  # u = 0 → identity
    c = conditional_planar(6, context_dim=2, hidden_dims=[8])
    c.reset_to_identity()
    x = torch.randn(4, 6)
    assert torch.allclose(c.condition(torch.randn(4, 2))(x), x, atol=0)
