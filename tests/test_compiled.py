"""The compiled training step (pyro_vae.infer.compiled): the Pyro program captured once and
compiled by torch.compile gives the eager step's loss and gradients on the same batch and
noise, for every model and guide that compiles; one that cannot be compiled trains eagerly
after one line; and `pyro-vae train --compile` trains the same run as eager."""

import json
import os

import pyro
import pytest
import torch

from pyro_vae import FLOW_MODELS, GUIDES, MODELS, build_guide, build_vae
from pyro_vae.flows import build_flow_model
from pyro_vae.infer.compiled import CompiledLoss
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.elbo import make_elbo
from test_flows import SMALL as SMALL_FLOWS
from test_models import SMALL as SMALL_VAES

X_SHAPE = (1, 8, 8)


def _loss_and_grads(loss, x, seed):
    torch.manual_seed(seed)
    value = loss(x, num_data=12, kl_scale=0.5)
    params = list(loss.parameters())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return value.detach(), grads


def _same_as_eager(model, guide, config=TrainConfig(), binary=True):
    """The compiled module's loss and gradients against the eager module's, same noise."""
    torch.set_num_threads(1)
    x = (torch.rand(6, *X_SHAPE) < 0.5).float() if binary else torch.rand(6, *X_SHAPE)
    loss = make_elbo(config)(model, guide)
    notices = []
    compiled = CompiledLoss(loss, log=notices.append)
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        compiled(x, num_data=12, kl_scale=0.5)  # the first call of a key is eager
        eager, eager_grads = _loss_and_grads(loss, x, seed=3)
        value, grads = _loss_and_grads(compiled, x, seed=3)
    assert not notices, notices  # it did compile
    assert len(compiled.graphs) == 1 and compiled.failed is None
    # inductor fuses and reorders float32 sums: the loss (hundreds of nats) to ~1e-6 relative
    torch.testing.assert_close(value, eager, rtol=1e-5, atol=1e-3)
    for a, b in zip(grads, eager_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _vae(name, guide="gaussian"):
    pyro.set_rng_seed(0)
    vae = build_vae(name, X_SHAPE, z_dim=4, **SMALL_VAES.get(name, {}))
    return vae, build_guide(guide, vae)


def test_the_compiled_step_is_the_eager_step():
    _same_as_eager(*_vae("dense"))


def test_the_compiled_step_of_a_flow_guide_and_the_meanfield_elbo():
    _same_as_eager(*_vae("dense", "iaf"), config=TrainConfig(elbo="meanfield"))


@pytest.mark.slow
@pytest.mark.parametrize("guide", [g for g in GUIDES.names() if g != "gaussian"])
def test_every_guide_compiles_to_the_eager_step(guide):
    _same_as_eager(*_vae("dense", guide))


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in MODELS.names() if m not in ("dense", "ssvae")])
def test_every_vae_compiles_to_the_eager_step(name):
    _same_as_eager(*_vae(name))


def test_a_guide_that_draws_without_rsample_trains_eagerly_after_one_line():
    """The semi-supervised VAE's guide draws the label from q(y | x) under a plain trace: a
    score-function site, which is not captured — one line, then the eager loss and gradients
    exactly (its training enumerates y, and its labelled step is eager anyway)."""
    vae, guide = _vae("ssvae")
    loss = make_elbo(TrainConfig())(vae, guide)
    notices = []
    compiled = CompiledLoss(loss, log=notices.append)
    x = (torch.rand(6, *X_SHAPE) < 0.5).float()
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        compiled(x, num_data=12, kl_scale=0.5)  # eager: the first call of a key
        eager, eager_grads = _loss_and_grads(loss, x, seed=3)
        value, grads = _loss_and_grads(compiled, x, seed=3)
    assert len(notices) == 1 and "draws 'y' without reparameterization" in notices[0], notices
    assert compiled.failed and not compiled.graphs
    assert torch.equal(value, eager)
    for a, b in zip(grads, eager_grads):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", FLOW_MODELS.names())
def test_every_density_flow_compiles_to_the_eager_step(name):
    pyro.set_rng_seed(0)
    flow = build_flow_model(name, X_SHAPE, **SMALL_FLOWS.get(name, {}))
    x = torch.rand(6, *X_SHAPE)
    flow(x)  # ActNorm's data-dependent initialisation happens eagerly, before any capture
    _same_as_eager(flow, flow.guide, binary=False)


class _DataDependent(torch.nn.Module):
    """A loss whose Python branches on a value: a captured graph cannot hold it."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x, num_data=None, kl_scale=1.0):
        return self.w * x.sum() if x.sum().item() > 0 else -self.w * x.sum()


def test_a_step_that_cannot_be_compiled_trains_eagerly_after_one_line():
    notices = []
    loss = CompiledLoss(_DataDependent(), log=notices.append)
    x = torch.ones(3, 2)
    assert [float(loss(x)) for _ in range(3)] == [6.0] * 3
    assert len(notices) == 1 and "could not be compiled" in notices[0] and loss.failed
    assert float(loss(-x)) == 6.0  # eager from then on, every branch right


def test_a_new_guard_key_captures_a_new_graph():
    """A smaller last batch is a new key (a new graph); a KL weight below 1 is one more, and
    every other weight of a warm-up reuses it: the weight is an input of the graph."""
    vae, guide = _vae("dense")
    compiled = CompiledLoss(make_elbo(TrainConfig())(vae, guide))
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for n, beta in ((6, 1.0), (6, 1.0), (4, 1.0), (4, 1.0), (6, 0.5), (6, 0.25), (6, 0.75)):
            compiled(torch.ones(n, *X_SHAPE), num_data=12, kl_scale=beta)
    captured = [key for key, graph in compiled.graphs.items() if graph is not None]
    assert len(compiled.graphs) == 3 and len(captured) == 3


@pytest.mark.parametrize("beta", [0.25, 0.6])
def test_the_weights_of_a_warm_up_share_one_graph_and_each_is_the_eager_loss(beta):
    """The graph captured at one KL weight, run at another, gives the eager loss there (same
    noise, same gradients up to float reassociation)."""
    vae, guide = _vae("dense")
    loss = make_elbo(TrainConfig())(vae, guide)
    compiled = CompiledLoss(loss)
    x = torch.rand(6, *X_SHAPE).round()
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for first in (0.1, 0.1):  # eager, then captured at 0.1
            compiled(x, num_data=12, kl_scale=first)
        torch.manual_seed(3)
        got = compiled(x, num_data=12, kl_scale=beta)
        got_grads = torch.autograd.grad(got, list(loss.parameters()))
        torch.manual_seed(3)
        want = loss(x, num_data=12, kl_scale=beta)
        want_grads = torch.autograd.grad(want, list(loss.parameters()))
    assert sum(g is not None for g in compiled.graphs.values()) == 1
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5)


def test_train_with_compile_is_the_eager_run(tmp_path):
    """Two epochs of the tiny dense VAE compiled and eager: the same noise, so the same run
    up to float reassociation (the metrics agree to 1e-3 nats)."""
    from inference.cli import main

    quick = ["--train-size", "64", "--test-size", "16", "--z-dim", "2", "--set", "hidden_dims=[8]",
             "--iwae-samples", "4", "--no-progress", "--epochs", "2", "--batch-size", "32", "--no-tensorboard"]
    runs = {}
    for name, flags in (("eager", []), ("compiled", ["--compile"])):
        assert main(["train", "--out", str(tmp_path / name), *quick, *flags]) == 0
        runs[name] = [json.loads(line) for line in open(os.path.join(tmp_path, name, "metrics.jsonl"))]
    config = json.load(open(tmp_path / "compiled" / "config.json"))
    assert config["train"]["compile"] is True
    for a, b in zip(runs["eager"], runs["compiled"]):
        for key in ("train_loss", "valid_elbo"):
            assert a[key] == pytest.approx(b[key], abs=1e-3), key
