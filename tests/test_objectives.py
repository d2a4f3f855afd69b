"""The training objectives: the IWAE bound (``--objective iwae``) against the ELBO and the
evaluation's IWAE-k on the same draws, with the subsampled plate; ``make_elbo``; the flags."""

import json
import math
import os

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from inference.cli import main
from pyro_vae import ConfigError, build_vae
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.elbo import FreeBitsTrace_ELBO, IWAE_ELBO, SyncFreeTrace_ELBO, make_elbo
from pyro_vae.infer.evaluate import log_weights


def setup():
    vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=4, hidden=(16,))
    return vae, torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))


@pytest.mark.parametrize("name", ["dense", "hvae"])
def test_iwae_at_k_1_is_the_elbo_and_above_it_for_k_gt_1_on_the_same_draws(name):
    vae = build_vae(name, x_shape=(1, 28, 28), z_dim=4, **({"hidden": (16,)} if name == "dense" else
                                                           {"hidden": 16, "mid": 8, "channels": [4, 4]}))
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))
    for kl_scale in (1.0, 0.3):  # KL warm-up's β reaches the latent sites of both
        pyro.set_rng_seed(0)
        elbo = Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x, num_data=60, kl_scale=kl_scale)
        pyro.set_rng_seed(0)
        iwae = IWAE_ELBO(num_particles=1).loss(vae.model, vae.guide, x, num_data=60, kl_scale=kl_scale)
        assert iwae == pytest.approx(elbo, rel=1e-6)
    for k in (2, 7):
        pyro.set_rng_seed(k)  # the vectorized particles draw the same z in both
        elbo = Trace_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1).loss(
            vae.model, vae.guide, x, num_data=60)
        pyro.set_rng_seed(k)
        iwae = IWAE_ELBO(num_particles=k).loss(vae.model, vae.guide, x, num_data=60)
        assert -iwae > -elbo  # log-mean-exp ≥ mean, strictly for unequal weights


def test_iwae_objective_is_the_evaluation_bound_scaled_by_n_over_b():
    vae, x = setup()
    pyro.set_rng_seed(3)
    loss = IWAE_ELBO(num_particles=5).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        lw = log_weights(vae, vae.guide, x, 5).log_w
    bound = torch.logsumexp(lw, 0) - math.log(5)            # IWAE-5 of each image
    assert loss == pytest.approx(-float(bound.sum()), rel=1e-6)
    # with a subsampled plate the per-image bounds are scaled by N / B (not the weights)
    torch.manual_seed(4)
    scaled = torch.stack([IWAE_ELBO(num_particles=5).differentiable_loss(vae.model, vae.guide, x, num_data=60)
                          for _ in range(400)]).detach()
    torch.manual_seed(4)
    unscaled = torch.stack([IWAE_ELBO(num_particles=5).differentiable_loss(vae.model, vae.guide, x)
                            for _ in range(400)]).detach()
    se = math.sqrt(float(scaled.var() / 400 + 100 * unscaled.var() / 400))
    assert float(scaled.mean()) == pytest.approx(10 * float(unscaled.mean()), abs=4 * se)


def test_iwae_objective_trains_as_an_elbo_module():
    vae, x = setup()
    module = make_elbo(TrainConfig(objective="iwae", particles=4))(vae.model, vae.guide)
    optim = torch.optim.Adam(vae.parameters(), lr=1e-2)  # model, guide: methods of the VAE
    before = module(x).item()
    for _ in range(30):
        optim.zero_grad()
        loss = module(x)
        loss.backward()
        optim.step()
    assert all(p.grad is not None for p in vae.encoder.parameters())
    assert module(x).item() < before - 50


def test_make_elbo_and_the_refusals():
    assert isinstance(make_elbo(TrainConfig()), Trace_ELBO)
    assert isinstance(make_elbo(TrainConfig(free_bits=0.1)), FreeBitsTrace_ELBO)
    assert isinstance(make_elbo(TrainConfig()), SyncFreeTrace_ELBO)  # the engine's: no host syncs
    iwae = make_elbo(TrainConfig(objective="iwae", particles=5))
    assert isinstance(iwae, IWAE_ELBO) and iwae.num_particles == 5 and iwae.vectorize_particles
    with pytest.raises(ConfigError, match="valid objectives: elbo, iwae") as err:
        TrainConfig(objective="renyi")
    assert err.value.params == ("objective",)
    # refused where the settings are defined (make_elbo trusts a TrainConfig), in the
    # library's own words: parameters, not command-line flags
    with pytest.raises(ConfigError, match=r"^objective='iwae' cannot be combined with free_bits > 0$") as err:
        TrainConfig(objective="iwae", particles=5, free_bits=0.5)
    assert err.value.params == ("objective", "free_bits")
    with pytest.raises(ConfigError, match=r"^objective='iwae' needs particles = K ≥ 2") as err:
        TrainConfig(objective="iwae")
    assert err.value.params == ("objective", "particles")


def test_cli_records_the_objective_in_config_and_metrics(tmp_path):
    run = str(tmp_path / "iwae")
    quick = ["--train-size", "200", "--test-size", "40", "--set", "hidden=[32]", "--z-dim", "4",
             "--iwae-samples", "20", "--no-progress", "--batch-size", "50"]
    assert main(["train", "--objective", "iwae", "--particles", "3", "--epochs", "1", "--out", run, *quick]) == 0
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["train"]["objective"] == "iwae" and config["train"]["particles"] == 3
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert metrics[0]["objective"] == "iwae-3"
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--objective", "elbo"]) == 2
    assert main(["train", "--model", "realnvp", "--objective", "iwae", "--out", str(tmp_path / "f")]) == 2
