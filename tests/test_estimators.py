"""The ELBO, IWAE and mini-batch estimators against the closed forms of a linear-Gaussian VAE.

Model: z ~ N(0, I_3), x | z ~ N(W z + b, 0.5² I_6) with W = Q diag(s), Q orthonormal, so the
exact posterior is a diagonal Gaussian (inside the guide family). Everything is float64.
"""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vae.infer.evaluate import evaluate, log_weights
from pyro_vae import build_guide, build_vae

D, Z, SIGMA = 6, 3, 0.5


@pytest.fixture
def lg():
    """A linear-Gaussian VAE with its encoder set to the exact posterior."""
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(1)
        vae = build_vae("linear", x_shape=(1, 1, D), z_dim=Z, likelihood="gaussian")
        q, _ = torch.linalg.qr(torch.randn(D, Z, generator=g))
        with torch.no_grad():
            vae.decoder.net[0].weight.copy_(q * torch.tensor([2.0, 1.0, 0.5]))
            vae.decoder.net[0].bias.copy_(torch.randn(D, generator=g))
            lik = vae.likelihood
            lik.raw_scale.fill_(math.log(math.expm1(SIGMA - lik.min_scale)))
        assert torch.allclose(lik.scale, torch.full_like(lik.scale, SIGMA))
        vae.set_exact_guide()
        yield vae
    finally:
        torch.set_default_dtype(torch.float32)


def data_from(vae, n, seed=2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, Z, generator=g)
    x = z @ vae.weight.T + vae.bias + SIGMA * torch.randn(n, D, generator=g)
    return x.reshape(n, 1, 1, D).detach()


def perturb(vae, loc_shift=0.3, scale_factor=1.3):
    """Move the guide away from the exact posterior (mean shifted, scale inflated)."""
    with torch.no_grad():
        head = vae.encoder.head
        head.bias[:Z] += loc_shift
        sd = torch.nn.functional.softplus(head.bias[Z:]) + vae.encoder.min_scale
        target = sd * scale_factor - vae.encoder.min_scale
        head.bias[Z:] = target + torch.log(-torch.expm1(-target))


def gaussian_kl(q_loc, q_scale, post):
    """KL(N(q_loc, diag q_scale²) || post) in closed form, per example."""
    q = torch.distributions.MultivariateNormal(q_loc, scale_tril=torch.diag_embed(q_scale))
    return torch.distributions.kl_divergence(q, post)


def test_exact_posterior_closed_form_matches_the_encoder(lg):
    x = data_from(lg, 5)
    post = lg.exact_posterior(x)
    loc, scale = lg.encoder.loc_scale(lg.encoder.features(x))
    assert torch.allclose(loc, post.loc, atol=1e-10)
    assert torch.allclose(torch.diag_embed(scale**2), post.covariance_matrix, atol=1e-10)


def test_exact_guide_makes_every_weight_equal_log_px(lg):
    """With q = p(z|x), log w = log p(x) for every sample: ELBO = IWAE = log p(x) exactly."""
    x = data_from(lg, 7)
    lw = log_weights(lg, lg.guide, x, num_samples=50).log_w
    exact = lg.exact_log_prob(x).detach()
    assert lw.shape == (50, 7)
    assert torch.allclose(lw, exact.expand(50, 7), atol=1e-9)
    result = evaluate(lg, lg.guide, x, num_samples=100, max_rows=64)  # several chunks
    assert result["elbo"] == pytest.approx(float(exact.mean()), abs=1e-9)
    assert result["nll"] == pytest.approx(-float(exact.mean()), abs=1e-9)


def test_elbo_estimate_equals_log_px_minus_kl(lg):
    """E_q[log w] = log p(x) − KL(q || p(z|x)), checked to 4 Monte-Carlo standard errors."""
    perturb(lg)
    x = data_from(lg, 4)
    loc, scale = lg.encoder.loc_scale(lg.encoder.features(x))
    expected = lg.exact_log_prob(x) - gaussian_kl(loc, scale, lg.exact_posterior(x))
    lw = log_weights(lg, lg.guide, x, num_samples=20000).log_w.detach()
    est, se = lw.mean(0), lw.std(0) / math.sqrt(lw.shape[0])
    assert torch.all((est - expected).abs() < 4 * se), (est, expected, se)
    # and the gap is real: this guide is measurably worse than the exact posterior
    assert torch.all(expected < lg.exact_log_prob(x) - 0.05)


def test_iwae_bounds_and_convergence(lg):
    perturb(lg)
    x = data_from(lg, 8)
    exact = lg.exact_log_prob(x).detach()
    lw = log_weights(lg, lg.guide, x, num_samples=5000).log_w.detach()
    iwae = torch.logsumexp(lw, 0) - math.log(5000)
    elbo = lw.mean(0)
    # Relative standard deviation of the weights, estimated from the same draws: the IWAE
    # estimate's MC standard deviation is about rel_sd / sqrt(k), its bias about rel_sd² / 2k.
    w = torch.exp(lw - torch.logsumexp(lw, 0) + math.log(5000))
    rel_sd = w.std(0)
    mc = rel_sd / math.sqrt(5000)
    assert torch.all(mc < 0.03)  # so the tolerance below stays small (4 sd ≈ 0.1 nats)
    assert torch.all((iwae - exact).abs() < 4 * mc + rel_sd**2 / 5000 + 1e-3), (iwae - exact, mc)
    assert torch.all(elbo < exact)  # ELBO ≤ log p(x): the gap is KL ≥ 0.05 >> MC error
    # IWAE_k increases with k (on average over examples)
    small = torch.logsumexp(lw[:10], 0) - math.log(10)
    assert float(elbo.mean()) < float(small.mean()) < float(iwae.mean())


def test_evaluate_matches_log_weights(lg):
    perturb(lg)
    x = data_from(lg, 6)
    r = evaluate(lg, lg.guide, x, num_samples=4000, max_rows=1000, seed=0)
    exact = float(lg.exact_log_prob(x).detach().mean())
    assert r["iwae"] == pytest.approx(exact, abs=0.02)
    assert r["elbo"] < r["iwae"]
    assert r["kl"] > 0 and r["rec"] < 0
    assert r["elbo"] == pytest.approx(r["rec"] - r["kl"], abs=1e-9)
    # the same seed gives the same numbers
    assert evaluate(lg, lg.guide, x, num_samples=4000, max_rows=1000, seed=0)["iwae"] == r["iwae"]


def test_minibatch_estimator_is_unbiased_for_the_full_data_elbo(lg):
    """E over mini-batches and samples of the scaled Trace_ELBO loss = −Σ_n ELBO_n."""
    perturb(lg)
    n, m = 20, 5
    x = data_from(lg, n)
    loc, scale = lg.encoder.loc_scale(lg.encoder.features(x))
    with torch.no_grad():
        full_elbo = float((lg.exact_log_prob(x) - gaussian_kl(loc, scale, lg.exact_posterior(x))).sum())
    elbo = Trace_ELBO(num_particles=1, max_plate_nesting=1)
    g = torch.Generator().manual_seed(5)
    losses = []
    with torch.no_grad():
        for _ in range(3000):
            idx = torch.randperm(n, generator=g)[:m]
            losses.append(elbo.loss(lg.model, lg.guide, x[idx], num_data=n))
    losses = torch.tensor(losses)
    se = float(losses.std()) / math.sqrt(len(losses))
    assert abs(float(losses.mean()) + full_elbo) < 4 * se, (float(losses.mean()), -full_elbo, se)


def test_vectorized_particles_broadcast_and_are_exact_with_exact_guide(lg):
    x = data_from(lg, 5)
    elbo = Trace_ELBO(num_particles=7, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(lg.model, lg.guide, x)
    assert loss == pytest.approx(-float(lg.exact_log_prob(x).detach().sum()), abs=1e-8)
    # and the latent sites really carry a particle dimension
    with pyro.plate("particles", 7, dim=-2):
        tr = poutine.trace(lg.guide).get_trace(x)
    assert tr.nodes["z"]["value"].shape == (7, 5, Z)


def test_plate_scale_and_kl_scale_reach_the_sites(lg):
    x = data_from(lg, 4)
    guide_tr = poutine.trace(lg.guide).get_trace(x, num_data=40, kl_scale=0.25)
    model_tr = poutine.trace(poutine.replay(lg.model, guide_tr)).get_trace(x, num_data=40, kl_scale=0.25)
    assert model_tr.nodes["x"]["scale"] == pytest.approx(10.0)
    assert model_tr.nodes["z"]["scale"] == pytest.approx(2.5)
    assert guide_tr.nodes["z"]["scale"] == pytest.approx(2.5)


def test_guides_from_registry_agree_with_vae_guide(lg):
    x = data_from(lg, 3)
    guide = build_guide("gaussian", lg)
    pyro.set_rng_seed(3)
    a = poutine.trace(guide).get_trace(x).nodes["z"]["value"]
    pyro.set_rng_seed(3)
    b = poutine.trace(lg.guide).get_trace(x).nodes["z"]["value"]
    assert torch.equal(a, b)
