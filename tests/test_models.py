"""The VAE contract for every registered model: sites, shapes, particles, SVI, save/load."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from pyro_vae.infer.evaluate import evaluate
from pyro_vae import GUIDES, LIKELIHOODS, MODELS, ConfigError, DataError, build_guide, build_likelihood, build_vae

SMALL = {
    "dense": {"hidden": (32,)},
    "linear": {},
    "conv": {"channels": (4, 8), "hidden": 32},
    "resnet": {"channels": (4, 8), "blocks": 1, "hidden": 32},
    "hvae": {"channels": (4, 8), "blocks": 1, "hidden": 32, "mid": 16},
    "pixel": {"channels": (4, 8), "hidden": 32, "pixel_channels": 8, "pixel_layers": 2, "kernel": 3,
              "cond_channels": 4},
    "ssvae": {"hidden_dims": (32,), "num_classes": 10},
}


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
    assert sum(vae.latent_sites.values()) == vae.z_dim
    for site, d in vae.latent_sites.items():  # "z" (4,), or "z_2" (4,), "z_1" (4,) for hvae
        assert guide_tr.nodes[site]["value"].shape == (5, d) and d == 4
        assert model_tr.nodes[site]["fn"].event_shape == (4,)
    latent = [n for n, s in model_tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
              and n != "data"]
    # in sampling order, nothing else — but a label the model sums out ("y" of the ssvae),
    # which the guide samples when no label is given
    label = ["y"] if vae.label_is_latent else []
    assert latent == label + list(vae.latent_sites)
    for site in label:
        assert guide_tr.nodes[site]["value"].shape == (5,) and guide_tr.nodes[site]["infer"]["enumerate"] == "parallel"
    assert model_tr.nodes["x"]["fn"].event_shape == x_shape
    assert model_tr.nodes["x"]["fn"].batch_shape == (5,)
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


@pytest.mark.parametrize("name", MODELS.names())
def test_images_follow_the_dtype_of_a_converted_model(name):
    """``check_x`` reads the parameters' dtype at each call: nothing cached goes stale when
    the model is converted."""
    vae = make(name)
    x = binary_batch(2)
    for dtype in (torch.float64, torch.float32, torch.float64):
        vae.to(dtype)
        assert vae.param_dtype == dtype and vae.check_x(x).dtype == dtype
        assert vae.guide(x).dtype == dtype and vae.model(x).dtype == dtype


def test_unknown_names_and_options_are_refused():
    with pytest.raises(ConfigError, match="valid models: conv, dense"):
        build_vae("dens", x_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="valid likelihoods: bernoulli, gaussian"):
        build_vae("dense", x_shape=(1, 28, 28), likelihood="poisson")
    with pytest.raises(ConfigError, match="unknown option hiden .* valid options: z_dim, likelihood, hidden_dims, activation"):
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
                        "likelihood": "bernoulli", "hidden_dims": [512, 256], "activation": "elu", "dropout": 0.0}
    assert vae.prior.spec == {"name": "normal", "conditional": False}


def data_for(likelihood, n, x_shape):
    """A batch in the format ``likelihood`` models: {0, 1}, 8-bit levels or dequantized."""
    lik = build_likelihood(likelihood, x_shape)
    if lik.binary:
        return binary_batch(n, x_shape)
    levels = torch.randint(0, 256, (n, *x_shape)).float()
    return (levels + torch.rand_like(levels)) / 256 if lik.dequantize else levels / 255


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_every_likelihood_at_an_odd_image_size(name, likelihood):
    """Shapes come from x_shape: (3, 9, 7) goes 9 → 5 → 3 and back in the conv models."""
    x_shape = (3, 9, 7)
    if name == "pixel" and build_likelihood(likelihood, x_shape).dequantize:
        with pytest.raises(ConfigError, match="discrete per-pixel likelihood"):
            make(name, x_shape, likelihood=likelihood)
        return
    vae = make(name, x_shape, likelihood=likelihood)
    x = data_for(likelihood, 4, x_shape)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    with pyro.validation_enabled(True):  # also checks x lies in the likelihood's support
        loss = elbo.loss(vae.model, vae.guide, x)
    assert torch.isfinite(torch.tensor(loss))
    d = vae.decoder.distribution(decoder_input(vae, torch.randn(2, 3, vae.z_dim)))
    assert d.batch_shape == (2, 3) and d.event_shape == x_shape
    assert vae.generate(3).shape == (3, *x_shape)
    assert vae.decoder.distribution(decoder_input(vae, torch.randn(2, vae.z_dim))).sample().shape == (2, *x_shape)


def decoder_input(vae, z):
    """What the decoder network reads for latents z (..., z_dim): with a label (class 1)
    appended for a VAE that takes labels."""
    labels = None if vae.num_classes is None else torch.ones(z.shape[:-1], dtype=torch.long)
    return vae.labelled(vae.decoder_input(z), labels)


@pytest.mark.parametrize("name", MODELS.names())
def test_decoder_maps_each_leading_index_to_its_own_z(name):
    """Conv decoders fold (particles, batch) into one batch: the fold must keep the order."""
    vae = make(name)
    z = decoder_input(vae, torch.randn(3, 5, vae.z_dim))
    out = vae.decoder(z)
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        assert torch.allclose(out[i, j], vae.decoder(z[i, j : j + 1])[0], atol=1e-5)
    with torch.no_grad():  # evaluation may run in chunks; same numbers
        assert torch.allclose(vae.decoder(z), out, atol=1e-5)


@pytest.mark.parametrize("name", MODELS.names())
def test_checkpoint_round_trip_gives_identical_log_likelihoods(name, tmp_path):
    """Save, rebuild from the recorded spec (options through JSON) and reload the weights."""
    from inference.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint

    vae = make(name, likelihood="bernoulli")
    guide = build_guide("gaussian", vae)
    svi = SVI(vae.model, guide, ClippedAdam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    x = binary_batch(8)
    for _ in range(3):  # move away from the initialisation (zero-initialised branches)
        svi.step(x)
    save_checkpoint(str(tmp_path / "c.pt"), vae, guide)
    other, other_guide = build_from_checkpoint(load_checkpoint(str(tmp_path / "c.pt")))
    assert other.spec == vae.spec and type(other) is type(vae)
    a = evaluate(vae, guide, x, num_samples=32, seed=3)
    b = evaluate(other, other_guide, x, num_samples=32, seed=3)
    assert a["iwae"] == b["iwae"] and a["elbo"] == b["elbo"]


@pytest.mark.parametrize("name", ["conv", "resnet"])
def test_conv_options_are_validated_and_recorded(name):
    vae = build_vae(name, x_shape=(1, 28, 28), z_dim=4, channels=[3, 5], hidden=16)
    assert vae.spec["channels"] == [3, 5] and vae.spec["hidden"] == 16
    assert vae.encoder.trunk.shapes == [(1, 28, 28), (3, 14, 14), (5, 7, 7)]
    with pytest.raises(ConfigError, match="channels"):
        build_vae(name, x_shape=(1, 28, 28), channels=[])
    with pytest.raises(ConfigError, match="valid options: z_dim, likelihood, channels"):
        build_vae(name, x_shape=(1, 28, 28), chanels=[3])


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("guide_name", GUIDES.names())
def test_every_guide_works_with_every_model(name, guide_name):
    """Guides condition on ``encoder.features``: conv and ResNet trunks must serve them too."""
    vae = make(name)
    guide = build_guide(guide_name, vae, **({} if guide_name == "gaussian" else {"num_flows": 2}))
    x = binary_batch(4)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(vae.model, guide, ClippedAdam({"lr": 1e-3}), elbo)
    assert math.isfinite(svi.step(x, num_data=40))
    result = evaluate(vae, guide, x, num_samples=8, seed=0)
    assert math.isfinite(result["iwae"]) and result["iwae"] >= result["elbo"] - 1e-4
