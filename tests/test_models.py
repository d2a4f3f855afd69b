"""The VAE contract for every registered model: sites, shapes, particles, SVI, save/load."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from inference.evaluate import evaluate
from pyro_vae import MODELS, ConfigError, DataError, build_guide, build_vae

SMALL = {"dense": {"hidden": (32,)}, "linear": {}}


def make(name, x_shape=(1, 28, 28), likelihood="bernoulli", z_dim=4):
    return build_vae(name, x_shape=x_shape, z_dim=z_dim, likelihood=likelihood, **SMALL.get(name, {}))


def binary_batch(n=6, x_shape=(1, 28, 28)):
    return torch.bernoulli(torch.full((n, *x_shape), 0.3))


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("x_shape", [(1, 28, 28), (3, 32, 32)])
def test_sites_and_shapes(name, x_shape):
    vae = make(name, x_shape)
    x = binary_batch(5, x_shape)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, guide_tr)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (5, 4)
    assert model_tr.nodes["x"]["fn"].event_shape == x_shape
    assert model_tr.nodes["x"]["fn"].batch_shape == (5,)
    assert model_tr.nodes["z"]["fn"].event_shape == (4,)
    assert vae.generate(3).shape == (3, *x_shape)
    assert vae.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("name", MODELS.names())
def test_vectorized_particles(name):
    vae = make(name)
    x = binary_batch(5)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(vae.model, vae.guide, x, num_data=50)
    assert torch.isfinite(torch.tensor(loss))
    with pyro.plate("particles", 3, dim=-2):
        tr = poutine.trace(poutine.replay(vae.model, poutine.trace(vae.guide).get_trace(x))).get_trace(x)
    assert tr.nodes["x"]["fn"].batch_shape == (3, 5)


@pytest.mark.parametrize("name", MODELS.names())
def test_seeded_svi_lowers_the_loss(name, small_data):
    vae = make(name, likelihood="bernoulli")
    svi = SVI(vae.model, vae.guide, ClippedAdam({"lr": 3e-3}), Trace_ELBO(max_plate_nesting=1))
    x = small_data.eval_data("train")[:128]
    before = evaluate(vae, vae.guide, x, num_samples=4, seed=0)["elbo"]
    for _ in range(60):
        svi.step(x)
    after = evaluate(vae, vae.guide, x, num_samples=4, seed=0)["elbo"]
    # untrained: ~ -540 nats (p = 1/2 per pixel); 60 Adam steps gain far more than 20
    assert after > before + 20, (before, after)


@pytest.mark.parametrize("name", MODELS.names())
def test_state_dict_round_trip_gives_identical_log_likelihoods(name):
    vae = make(name)
    x = binary_batch(4)
    other = make(name)
    other.load_state_dict(vae.state_dict())
    a = evaluate(vae, vae.guide, x, num_samples=16, seed=1)
    b = evaluate(other, other.guide, x, num_samples=16, seed=1)
    assert a["iwae"] == b["iwae"] and a["elbo"] == b["elbo"]


def test_wrong_shape_is_refused_clearly(tiny_vae):
    with pytest.raises(DataError, match=r"expected images of shape \(B, 1, 28, 28\), got \(3, 784\)"):
        tiny_vae.model(torch.zeros(3, 784))
    with pytest.raises(DataError):
        tiny_vae.guide(torch.zeros(3, 1, 32, 32))


def test_unknown_names_and_options_are_refused():
    with pytest.raises(ConfigError, match="valid models: dense"):
        build_vae("dens", x_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="valid likelihoods: bernoulli, gaussian"):
        build_vae("dense", x_shape=(1, 28, 28), likelihood="poisson")
    with pytest.raises(ConfigError, match="unknown option hiden .* valid options: hidden, activation"):
        build_vae("dense", x_shape=(1, 28, 28), hiden=(3,))
    with pytest.raises(ConfigError, match="valid guides: gaussian"):
        build_guide("gausian", make("dense"))
    with pytest.raises(ConfigError, match="valid priors: normal"):
        build_vae("dense", x_shape=(1, 28, 28), prior="flow")
    with pytest.raises(ConfigError, match="z_dim"):
        build_vae("dense", x_shape=(1, 28, 28), z_dim=0)


def test_two_models_in_one_process_do_not_share_parameters():
    a, b = make("dense"), make("dense")
    x = binary_batch(4)
    svi = SVI(a.model, a.guide, ClippedAdam({"lr": 1e-2}), Trace_ELBO())
    before = [p.clone() for p in b.parameters()]
    svi.step(x)
    svi_b = SVI(b.model, b.guide, ClippedAdam({"lr": 1e-2}), Trace_ELBO())
    svi_b.step(x)
    names = [n for n in pyro.get_param_store().keys()]
    assert any(n.startswith(a.pyro_prefix + ".") for n in names)
    assert any(n.startswith(b.pyro_prefix + ".") for n in names)
    assert all(not torch.equal(p, q) for p, q in zip(before, b.parameters()))


def test_spec_records_defaults():
    vae = build_vae("dense", x_shape=(1, 28, 28))
    assert vae.spec == {"name": "dense", "x_shape": [1, 28, 28], "z_dim": 32,
                        "likelihood": "bernoulli", "hidden": [512, 256], "activation": "elu",
                        "prior": "normal"}
