"""The VampPrior: its log-density against a brute-force mixture, its gradients, and its
place in a VAE (every single-latent model, checkpoints, refused by the hierarchical VAE)."""

import math

import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_vae import MODELS, ConfigError, build_vae
from pyro_vae.build import build_model_and_guide
from pyro_vae.infer.evaluate import evaluate
from pyro_vae.priors import VampPrior

SMALL = {"dense": {"hidden": (16,)}, "conv": {"channels": (4, 8), "hidden": 16},
         "ssvae": {"hidden_dims": (16,), "num_classes": 10},
         "resnet": {"channels": (4, 8), "hidden": 16}, "linear": {},
         "pixel": {"channels": (4, 8), "hidden": 16, "pixel_channels": 4, "pixel_layers": 1, "kernel": 3,
                   "cond_channels": 2}}


def make(name="dense", k=7):
    return build_vae(name, x_shape=(1, 28, 28), z_dim=4, likelihood="bernoulli",
                     prior={"name": "vamp", "components": k}, **SMALL.get(name, {}))


def test_log_density_is_the_brute_force_mixture_of_the_encoder_gaussians():
    torch.set_default_dtype(torch.float64)
    try:
        vae = make(k=5)
        with torch.no_grad():
            vae.prior.pseudo_inputs.uniform_(-0.2, 1.2)       # some outside [0, 1]: clipped
        z = 2 * torch.randn(3, 6, 4)
        got = vae.prior().log_prob(z)
        u = vae.prior.pseudo_inputs.clamp(0, 1)
        terms = []
        for k in range(5):  # one encoder pass per pseudo-input, one Gaussian per component
            loc, scale = vae.encoder.loc_scale(vae.encoder.features(u[k : k + 1]))
            terms.append(sum(math.log(1 / (s * math.sqrt(2 * math.pi))) - 0.5 * ((z[..., j] - m) / s) ** 2
                             for j, (m, s) in enumerate(zip(loc[0].tolist(), scale[0].tolist()))))
        brute = torch.logsumexp(torch.stack(terms), 0) - math.log(5)
        assert got.shape == (3, 6) and torch.allclose(got, brute, atol=1e-10)
        # and it is a density: ∫ p = 1 by Monte Carlo, E_p[1/p · q_ref] with its own draws
        draws = vae.prior().sample((20000,))
        ref = dist.Normal(0.0, 3.0).expand([4]).to_event(1)
        mass = (ref.log_prob(draws) - vae.prior().log_prob(draws)).exp()
        assert draws.shape == (20000, 4) and mass.mean().item() < 2  # finite importance ratio
    finally:
        torch.set_default_dtype(torch.float32)


def test_the_model_trains_pseudo_inputs_and_encoder_through_the_prior():
    vae = make()
    x = torch.bernoulli(torch.full((8, 1, 28, 28), 0.3))
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert vae.prior.pseudo_inputs.grad is not None and vae.prior.pseudo_inputs.grad.abs().sum() > 0
    before = vae.prior.pseudo_inputs.detach().clone()
    svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    for _ in range(3):
        svi.step(x)
    assert not torch.equal(before, vae.prior.pseudo_inputs)
    assert [k for k in vae.state_dict() if k.startswith("prior.")] == ["prior.pseudo_inputs"]


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n != "hvae"])
def test_every_single_latent_model_takes_the_vamp_prior(name):
    vae = make(name)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3))
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(vae.model, vae.guide, x, num_data=30))
    assert vae.generate(2).shape == (2, 1, 28, 28)


def test_checkpoint_round_trip_and_refusals():
    vae = make()
    with torch.no_grad():
        vae.prior.pseudo_inputs.add_(0.3 * torch.randn_like(vae.prior.pseudo_inputs))
    other, guide = build_model_and_guide(vae.spec, None, vae.prior.spec)
    other.load_state_dict(vae.state_dict())
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    a, b = evaluate(vae, vae.guide, x, num_samples=16, seed=1), evaluate(other, guide, x, num_samples=16, seed=1)
    assert a["iwae"] == b["iwae"] and vae.prior.spec == {"name": "vamp", "components": 7}
    with pytest.raises(ConfigError, match="single-latent"):
        build_vae("hvae", x_shape=(1, 28, 28), prior="vamp")
    with pytest.raises(ConfigError, match="components"):
        make(k=0)
    with pytest.raises(ConfigError, match="needs a VAE"):
        VampPrior(4)()


def test_nuts_runs_on_the_mixture_prior():
    """NUTS maps every latent to unconstrained space (biject_to of its support): the
    mixture's support must be the real vectors, not a mixture-of-supports constraint."""
    from pyro_vae.infer.nuts import NUTSConfig, nuts_posterior

    vae = make(k=3)
    assert vae.prior().support.event_dim == 1
    x = torch.bernoulli(torch.full((1, 1, 28, 28), 0.3))
    data = nuts_posterior(vae, x, NUTSConfig(chains=2, draws=4, warmup=4))
    assert torch.isfinite(torch.as_tensor(data.posterior["z"].values)).all()
