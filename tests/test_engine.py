"""The training engine (Pyro's ELBOModule + a torch optimizer) against SVI: the same loss on
the same batch and noise, the same parameters after the same steps, no host round trips in
the loss, no global param store."""

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import build_guide, build_vae, load_dataset
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.elbo import FreeBitsTrace_ELBO, SyncFreeTrace_ELBO, make_elbo
from pyro_vae.infer.optim import FusedClippedAdam
from pyro_vae.infer.trainer import Trainer


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k", train_size=256, test_size=32)


def make(guide="gaussian", prior="normal", **options):
    pyro.set_rng_seed(0)
    vae = build_vae("dense", (1, 28, 28), z_dim=4, hidden_dims=(32,), prior=prior)
    return vae, (vae.guide if guide == "gaussian" else build_guide(guide, vae, **options))


@pytest.mark.parametrize("guide, prior, particles, free_bits", [
    ("gaussian", "normal", 1, 0.0),
    ("iaf", "normal", 1, 0.0),
    ("gaussian", "realnvp", 3, 0.0),
    ("sylvester", "normal", 2, 0.5),
])
def test_the_engine_and_svi_give_the_same_loss_on_the_same_batch_and_noise(data, guide, prior, particles,
                                                                            free_bits):
    vae, q = make(guide, prior)
    config = TrainConfig(particles=particles, free_bits=free_bits)
    x = next(data.batches("train", 64))
    kwargs = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    svi_elbo = FreeBitsTrace_ELBO(free_bits=free_bits, **kwargs) if free_bits else Trace_ELBO(**kwargs)
    pyro.set_rng_seed(5)
    svi_loss = SVI(vae.model, q, FusedClippedAdam({"lr": 0.0}), svi_elbo).evaluate_loss(x, num_data=256)
    module = make_elbo(config)(vae, q)  # Pyro's ELBOModule
    pyro.set_rng_seed(5)
    with pyro.settings.context(module_local_params=True):
        engine_loss = module(x, num_data=256)
    assert isinstance(module, torch.nn.Module) and engine_loss.requires_grad
    assert float(engine_loss.detach()) == pytest.approx(svi_loss, rel=1e-6)


def test_the_engine_takes_the_same_steps_as_svi(data):
    """Three steps of Trainer.step and of SVI.step with FusedClippedAdam (the same ClippedAdam
    algorithm) from the same parameters and noise end at the same parameters."""
    batches = [x for x, _ in zip(data.batches("train", 64, generator=torch.Generator().manual_seed(0)), range(3))]
    vae_a, _ = make()
    vae_b, _ = make()
    config = TrainConfig(lr=1e-2)
    trainer = Trainer(vae_a, vae_a.guide, data, config)
    svi = SVI(vae_b.model, vae_b.guide,
              FusedClippedAdam({"lr": 1e-2, "clip_norm": config.clip_norm * len(data)},
                               params=list(vae_b.parameters())),
              Trace_ELBO(max_plate_nesting=1))
    for i, x in enumerate(batches):
        pyro.set_rng_seed(100 + i)
        with pyro.settings.context(module_local_params=True):
            a = trainer.step(x)
        pyro.set_rng_seed(100 + i)
        b = svi.step(x, num_data=len(data))
        assert float(a) == pytest.approx(b, rel=1e-6)
    for (name, p), q in zip(vae_a.named_parameters(), vae_b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_the_loss_never_leaves_the_device_and_the_param_store_stays_empty(data, monkeypatch):
    vae, q = make("iaf")
    x = next(data.batches("train", 16))
    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    pyro.clear_param_store()
    with pyro.settings.context(module_local_params=True):
        loss = SyncFreeTrace_ELBO(max_plate_nesting=1)(vae, q)(x, num_data=256)
        loss.backward()
    assert calls == []  # Trace_ELBO would have called .item() once per site and once more
    assert len(pyro.get_param_store()) == 0  # parameters live in the modules


def test_an_epoch_reports_and_shares_the_data_order(data):
    vae, q = make()
    trainer = Trainer(vae, q, data, TrainConfig(batch_size=64, seed=3))
    state = trainer.data_rng.get_state()
    metrics = trainer.train_epoch()
    assert metrics["steps"] == 4 and metrics["epoch"] == 1
    # the data order comes from the trainer's own generator, seeded by the run's seed
    assert not torch.equal(state, trainer.data_rng.get_state())
    again = torch.Generator(device=trainer.device).manual_seed(3)
    assert torch.equal(state, again.get_state())


def test_the_trainer_takes_any_model_and_refuses_bf16_where_networks_compute_log_densities():
    """``Trainer(model=…)``: a density flow is trained like a VAE; bfloat16 is refused for it,
    in the library's words (the parameter, not a command-line flag)."""
    from pyro_vae import ConfigError, build_flow_model

    grey = load_dataset("mnist5k", train_size=64, test_size=8, binarize="none")
    flow = build_flow_model("nice", grey.x_shape, couplings=1, hidden_dims=(8,))
    trainer = Trainer(model=flow, guide=flow.guide, data=grey, config=TrainConfig(batch_size=32))
    assert trainer.model is flow and trainer.train_epoch()["steps"] == 2
    with pytest.raises(ConfigError, match=r"^precision='bf16' is refused for the nice model") as err:
        Trainer(flow, flow.guide, grey, TrainConfig(precision="bf16"))
    assert err.value.params == ("precision",)
