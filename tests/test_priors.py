"""The learned RealNVP prior p_θ(z) with every registered model and guide."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_vae.build import build_model_and_guide
from pyro_vae.infer.evaluate import evaluate
from pyro_vae import GUIDES, MODELS, ConfigError, build_guide, build_vae
from pyro_vae.priors import RealNVPPrior

SMALL = {"dense": {"hidden": (32,)}, "ssvae": {"hidden_dims": (32,), "num_classes": 10}}


def make(name, prior="realnvp", z_dim=4):
    return build_vae(name, x_shape=(1, 28, 28), z_dim=z_dim, likelihood="bernoulli", prior=prior,
                     **SMALL.get(name, {}))


def binary_batch(n=5):
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3))


@pytest.mark.parametrize("model", MODELS.names())
@pytest.mark.parametrize("guide", GUIDES.names())
def test_realnvp_prior_with_every_model_and_guide(model, guide):
    vae = make(model)
    q = build_guide(guide, vae)
    x = binary_batch()
    # particles: the prior scores the guide's z of shape (L, B, z_dim) — values it never sampled
    with pyro.plate("particles", 3, dim=-2):
        guide_tr = poutine.trace(q).get_trace(x)
        model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    site = model_tr.nodes[next(iter(vae.latent_sites))]  # the prior scores the (top) latent
    assert site["value"].shape == (3, 5, 4) and site["fn"].event_shape == (4,)
    assert site["fn"].log_prob(site["value"]).shape == (3, 5)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert torch.isfinite(torch.tensor(elbo.loss(vae.model, q, x, num_data=50)))
    # the prior is trained jointly: SVI moves its parameters
    before = [p.detach().clone() for p in vae.prior.parameters()]
    svi = SVI(vae.model, q, ClippedAdam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    for _ in range(3):
        svi.step(x)
    assert any(not torch.equal(a, b) for a, b in zip(before, vae.prior.parameters()))
    result = evaluate(vae, q, x, num_samples=8, seed=0)
    assert all(torch.isfinite(torch.tensor(result[k])) for k in ("elbo", "iwae", "kl"))


def test_a_new_realnvp_prior_is_the_standard_normal_and_gives_the_same_elbo():
    """Zero-initialised couplings: at the start the flow prior is N(0, I), so the Monte Carlo
    KL of the evaluation equals the standard-normal prior's on the same samples."""
    z = torch.randn(7, 3, 6)
    flow, normal = RealNVPPrior(6)(), make("dense", prior="normal", z_dim=6).prior()
    assert torch.allclose(flow.log_prob(z), normal.log_prob(z), atol=1e-6)
    a, b = make("dense", prior="normal"), make("dense")
    b.load_state_dict({**b.state_dict(), **a.state_dict()})  # same encoder / decoder
    x = binary_batch(4)
    ra, rb = evaluate(a, a.guide, x, num_samples=16, seed=3), evaluate(b, b.guide, x, num_samples=16, seed=3)
    assert rb["kl"] == pytest.approx(ra["kl"], abs=1e-4) and rb["iwae"] == pytest.approx(ra["iwae"], abs=1e-4)


def test_realnvp_prior_survives_a_checkpoint_round_trip():
    vae = make("dense")
    with torch.no_grad():
        for p in vae.prior.parameters():
            p.add_(0.1 * torch.randn_like(p))
    guide = build_guide("gaussian", vae)
    assert vae.prior.spec["name"] == "realnvp" and "prior" not in vae.spec
    other, other_guide = build_model_and_guide(vae.spec, guide.spec, vae.prior.spec)
    other.load_state_dict(vae.state_dict())
    x = binary_batch(4)
    a = evaluate(vae, guide, x, num_samples=16, seed=1)
    b = evaluate(other, other_guide, x, num_samples=16, seed=1)
    assert a["iwae"] == b["iwae"] and a["kl"] == b["kl"]


def test_realnvp_prior_needs_two_dimensions():
    with pytest.raises(ConfigError, match="z_dim ≥ 2"):
        make("dense", z_dim=1)
