"""Free bits against a direct computation on a linear-Gaussian VAE."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vae.infer.elbo import FreeBitsTrace_ELBO
from pyro_vae import build_vae


@pytest.fixture
def setup():
    torch.manual_seed(0)
    vae = build_vae("linear", x_shape=(1, 1, 6), z_dim=3, likelihood="gaussian")
    x = torch.randn(8, 1, 1, 6)
    return vae, x


def test_zero_free_bits_is_trace_elbo(setup):
    vae, x = setup
    pyro.set_rng_seed(1)
    a = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x, num_data=80)
    pyro.set_rng_seed(1)
    b = FreeBitsTrace_ELBO(0.0).differentiable_loss(vae.model, vae.guide, x, num_data=80)
    assert torch.equal(a, b)


@pytest.mark.parametrize("particles", [1, 4])
def test_free_bits_objective_matches_direct_computation(setup, particles):
    """loss = −Σ_n log p(x_n|z_n)·N/B + N·Σ_j max(λ, mean_n KL_nj), KL from the same samples."""
    vae, x = setup
    lam, n_data = 0.8, 80
    elbo = FreeBitsTrace_ELBO(lam, num_particles=particles, vectorize_particles=particles > 1,
                              max_plate_nesting=1)
    pyro.set_rng_seed(2)
    loss = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=n_data)
    # the same draws, recomputed by hand
    pyro.set_rng_seed(2)
    with pyro.plate("num_particles_vectorized", particles, dim=-2) if particles > 1 else torch.no_grad():
        guide_tr = poutine.trace(vae.guide).get_trace(x, num_data=n_data)
        model_tr = poutine.trace(poutine.replay(vae.model, guide_tr)).get_trace(x, num_data=n_data)
    z = guide_tr.nodes["z"]["value"]
    q = guide_tr.nodes["z"]["fn"]
    while not hasattr(q, "reinterpreted_batch_ndims"):
        q = q.base_dist
    kl = q.base_dist.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)  # (..., B, d)
    rec = model_tr.nodes["x"]["fn"].log_prob(x)
    expected = (-rec.sum() * n_data / 8 + n_data * particles * kl.reshape(-1, 3).mean(0).clamp(min=lam).sum()) / particles
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_free_bits_remove_the_kl_gradient_below_the_floor(setup):
    """With λ above every dimension's KL, the encoder's σ-head gets only the reconstruction gradient."""
    vae, x = setup
    head = vae.encoder.head

    def grad_of(loss_fn):
        vae.zero_grad()
        pyro.set_rng_seed(3)
        loss_fn().backward()
        return head.bias.grad[3:].clone()  # the σ half of the head

    big = grad_of(lambda: FreeBitsTrace_ELBO(1e6).differentiable_loss(vae.model, vae.guide, x))

    def rec_only():
        guide_tr = poutine.trace(vae.guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(vae.model, guide_tr)).get_trace(x)
        return -model_tr.nodes["x"]["fn"].log_prob(x).sum()

    assert torch.allclose(big, grad_of(rec_only), atol=1e-5)
    plain = grad_of(lambda: Trace_ELBO().differentiable_loss(vae.model, vae.guide, x))
    assert not torch.allclose(big, plain, atol=1e-3)  # the KL gradient was really there


def test_non_factorised_guides_use_one_group_per_site(setup):
    """A full-covariance guide: the floor applies to the site's total KL (λ · dim)."""
    vae, x = setup
    tril = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.7, 0.0], [-0.3, 0.2, 0.4]])

    def guide(x, num_data=None, kl_scale=1.0):
        loc = vae.encoder.loc_scale(vae.encoder.features(x))[0].detach()
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", pyro.distributions.MultivariateNormal(loc, scale_tril=tril))

    lam = 10.0  # far above the total KL, so the objective is −rec + B·3·λ
    pyro.set_rng_seed(4)
    loss = FreeBitsTrace_ELBO(lam).differentiable_loss(vae.model, guide, x)
    pyro.set_rng_seed(4)
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, guide_tr)).get_trace(x)
    z = guide_tr.nodes["z"]["value"]
    kl = guide_tr.nodes["z"]["fn"].log_prob(z) - model_tr.nodes["z"]["fn"].log_prob(z)
    assert kl.mean() < 3 * lam
    expected = -model_tr.nodes["x"]["fn"].log_prob(x).sum() + 8 * 3 * lam
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_loss_and_grads_and_differentiable_loss_agree(setup):
    """All three entry points report the free-bits objective for the same samples."""
    vae, x = setup
    elbo = FreeBitsTrace_ELBO(2.0)
    values = []
    for method in ("loss", "loss_and_grads", "differentiable_loss"):
        pyro.set_rng_seed(3)
        values.append(float(getattr(elbo, method)(vae.model, vae.guide, x, num_data=80)))
    pyro.set_rng_seed(3)
    plain = Trace_ELBO().loss(vae.model, vae.guide, x, num_data=80)
    assert values[0] == pytest.approx(values[1], rel=1e-6) and values[0] == pytest.approx(values[2], rel=1e-6)
    assert values[0] > plain + 1.0  # a floor of 2 nats per dimension costs something here


def test_the_meanfield_elbo_takes_the_kl_in_closed_form(setup):
    """−loss = (N/B) Σ_n [log p(x_n | z_n) − KL(q(z | x_n) ‖ N(0, I))], the KL of two
    Gaussians in closed form, log p at the same draw; warm-up β scales the KL alone."""
    from pyro_vae.infer.elbo import SyncFreeTraceMeanField_ELBO

    vae, x = setup
    n_data, beta = 80, 0.3
    pyro.set_rng_seed(3)
    loss = SyncFreeTraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x, num_data=n_data,
                                                             kl_scale=beta)
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(vae.guide).get_trace(x, num_data=n_data, kl_scale=beta)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, num_data=n_data,
                                                                                        kl_scale=beta)
    q = guide_trace.nodes["z"]["fn"]
    loc, scale = q.base_dist.loc, q.base_dist.scale
    kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum(-1)  # KL(N(μ, σ²) ‖ N(0, 1))
    rec = model_trace.nodes["x"]["fn"].log_prob(x)
    expected = -(n_data / len(x)) * (rec - beta * kl).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)


def test_the_meanfield_and_trace_estimators_estimate_the_same_elbo(setup):
    """Same bound: the Monte-Carlo KL of Trace_ELBO averages to the closed form (2,000
    vectorized particles; the difference is a few standard errors of the Monte-Carlo mean)."""
    from pyro_vae.infer.elbo import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO

    vae, x = setup
    kwargs = dict(num_particles=2000, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(4)
    trace = SyncFreeTrace_ELBO(**kwargs).differentiable_loss(vae.model, vae.guide, x, num_data=8)
    pyro.set_rng_seed(4)
    meanfield = SyncFreeTraceMeanField_ELBO(**kwargs).differentiable_loss(vae.model, vae.guide, x, num_data=8)
    assert float(trace) == pytest.approx(float(meanfield), abs=0.05 * 8)
