"""The captured and the compiled training step (pyro_vae.infer.compiled): the Pyro program
captured once and replayed — the engine's default step — is the eager step to the bit, for
every model and guide; compiled by torch.compile it gives the eager step's loss and
gradients on the same batch and noise; one that cannot be captured trains eagerly after one
line; and `pyro-vae train --compile` / `--no-capture` train the same run as the default."""

import json
import os

import pyro
import pytest
import torch

from pyro_vae import FLOW_MODELS, GUIDES, MODELS, build_guide, build_vae
from pyro_vae.flows import build_flow_model
from pyro_vae.infer.compiled import CompiledLoss, simplify
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.elbo import make_elbo
from pyro_vae.infer.trainer import Trainer
from torch.fx.experimental.proxy_tensor import make_fx
from test_flows import SMALL as SMALL_FLOWS
from test_models import SMALL as SMALL_VAES

X_SHAPE = (1, 8, 8)


def _loss_and_grads(loss, x, seed):
    torch.manual_seed(seed)
    value = loss(x, num_data=12, kl_scale=0.5)
    params = list(loss.parameters())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return value.detach(), grads


def _same_as_eager(model, guide, config=TrainConfig(), binary=True, compile=True):
    """The compiled (or, ``compile=False``, replayed) module's loss and gradients against
    the eager module's, same noise: the replay to the bit."""
    torch.set_num_threads(1)
    x = (torch.rand(6, *X_SHAPE) < 0.5).float() if binary else torch.rand(6, *X_SHAPE)
    loss = make_elbo(config)(model, guide)
    notices = []
    compiled = CompiledLoss(loss, log=notices.append, compile=compile)
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        compiled(x, num_data=12, kl_scale=0.5)  # the first call of a key is eager
        eager, eager_grads = _loss_and_grads(loss, x, seed=3)
        value, grads = _loss_and_grads(compiled, x, seed=3)
    assert not notices, notices  # it did compile
    assert len(compiled.graphs) == 1 and compiled.failed is None
    if not compile:
        assert torch.equal(value, eager)
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, eager_grads))
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
@pytest.mark.parametrize("compile", [True, False])
@pytest.mark.parametrize("name", FLOW_MODELS.names())
def test_every_density_flow_compiles_and_replays_to_the_eager_step(name, compile):
    pyro.set_rng_seed(0)
    flow = build_flow_model(name, X_SHAPE, **SMALL_FLOWS.get(name, {}))
    x = torch.rand(6, *X_SHAPE)
    flow(x)  # ActNorm's data-dependent initialisation happens eagerly, before any capture
    _same_as_eager(flow, flow.guide, binary=False, compile=compile)


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


def _train_steps(name, guide, capture, config=None, steps=4):
    """``steps`` engine steps of a small VAE on 8×8 images at KL weight 0.3: the losses and
    the parameters after them."""
    from pyro_vae.data import ImageDataset

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    data = ImageDataset("tiny", (torch.rand(48, *X_SHAPE, generator=gen) < 0.4).float(),
                        (torch.rand(16, *X_SHAPE, generator=gen) < 0.4).float(), binarize="static")
    vae, g = _vae(name, guide)
    notices = []
    trainer = Trainer(vae, g, data, TrainConfig(batch_size=16, capture=capture, **(config or {})),
                      log=notices.append)
    losses, batches = [], list(data.batches("train", 16))
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for i in range(steps):
            losses.append(trainer.step(batches[i % len(batches)], kl_scale=0.3))
    assert not notices, notices
    return torch.stack(losses), [p.detach().clone() for p in list(vae.parameters()) + list(g.parameters())]


def _replay_is_eager(name, guide="gaussian", config=None):
    eager_losses, eager_params = _train_steps(name, guide, capture=False, config=config)
    losses, params = _train_steps(name, guide, capture=True, config=config)
    assert torch.equal(losses, eager_losses)  # to the bit: the same kernels in the same order
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params))


@pytest.mark.parametrize("config", [None, {"elbo": "meanfield"}, {"objective": "iwae", "particles": 3},
                                    {"free_bits": 0.3}])
def test_the_default_step_replays_the_captured_program_to_the_bit(config):
    """Four steps (the first of a key eager, then a capture replayed) give the losses and
    parameters of four steps that run Pyro's handlers each time, exactly — so a resumed run,
    whose first step of each key is eager again, stays exact."""
    _replay_is_eager("dense", config=config)


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in MODELS.names() if m not in ("dense", "ssvae")])
def test_every_vae_replays_its_captured_program_to_the_bit(name):
    _replay_is_eager(name)


@pytest.mark.slow
@pytest.mark.parametrize("guide", [g for g in GUIDES.names() if g != "gaussian"])
def test_every_guide_replays_its_captured_program_to_the_bit(guide):
    _replay_is_eager("dense", guide)


class _StopGradient(torch.nn.Module):
    """A loss with a gradient stop, as a surrogate loss or a score-function term uses one:
    d/dw [w · stop(w) · Σx] = stop(w) · Σx (twice that without the stop)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, x, num_data=None, kl_scale=1.0):
        return self.w * self.w.detach() * x.sum()


@pytest.mark.parametrize("compile", [False, True])
def test_a_detach_stays_a_gradient_stop_in_the_captured_step(compile):
    """A capture after dispatch records ``detach`` as ``alias``, through which gradients flow:
    the captured step must be taken before dispatch, where it stays a stop."""
    loss = CompiledLoss(_StopGradient(), compile=compile)
    x = torch.ones(2)
    grads = []
    for _ in range(3):  # eager, captured, captured
        loss.zero_grad()
        loss(x).backward()
        grads.append(float(loss.loss.w.grad))
    assert loss.failed is None and len(loss.graphs) == 1
    assert grads == [6.0, 6.0, 6.0]  # stop(w) · Σx = 3 · 2; not 12


def test_simplify_drops_identities_and_unused_operations_and_keeps_the_values():
    def f(x, w):
        unused = torch.arange(5)  # noqa: F841 - an operation whose result nothing reads
        y = (x * w + 0.0).expand(3, 4) * 1.0
        a, b = torch.broadcast_tensors(y, x)
        return (a - 0).div(1).sum() + b.sum()

    x, w = torch.rand(3, 4), torch.rand(3, 4, requires_grad=True)
    graph = make_fx(f, pre_dispatch=True)(x, w)
    before = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    simplify(graph)
    after = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    aten = torch.ops.aten
    assert aten.arange.default in before and aten.arange.default not in after
    assert after.count(aten.add.Tensor) == 1 and aten.expand.default not in after
    assert aten.div.Tensor not in after and aten.broadcast_tensors.default not in after
    assert after == [aten.mul.Tensor, aten.sum.default, aten.sum.default, aten.add.Tensor]
    value, = torch.autograd.grad(graph(x, w), w)
    want, = torch.autograd.grad(f(x, w), w)
    assert torch.equal(graph(x, w), f(x, w)) and torch.equal(value, want)


def test_train_without_capture_is_the_default_run_to_the_bit(tmp_path, capsys):
    """`pyro-vae train --no-capture` (Pyro's handlers at every step) and the default
    (captured, replayed, checked against the program at the start of every epoch): the same
    metrics, exactly, and no check finds a difference; config.json records the choice."""
    from inference.cli import main

    quick = ["--train-size", "64", "--test-size", "16", "--z-dim", "2", "--set", "hidden_dims=[8]",
             "--iwae-samples", "4", "--no-progress", "--epochs", "3", "--batch-size", "24", "--no-tensorboard",
             "--kl-warmup", "2"]
    runs = {}
    for name, flags in (("captured", []), ("eager", ["--no-capture"])):
        assert main(["train", "--out", str(tmp_path / name), *quick, *flags]) == 0
        runs[name] = [{k: v for k, v in json.loads(line).items() if "seconds" not in k and k != "time"}
                      for line in open(os.path.join(tmp_path, name, "metrics.jsonl"))]
    assert json.load(open(tmp_path / "eager" / "config.json"))["train"]["capture"] is False
    assert runs["captured"] == runs["eager"]
    assert "capture:" not in capsys.readouterr().out


class _Annealed(torch.nn.Module):
    """A loss that reads Python state the guard cannot see: a temperature attribute that a
    user's schedule changes between epochs."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))
        self.temperature = 1.0

    def forward(self, x, num_data=None, kl_scale=1.0):
        return self.w * (x + torch.randn_like(x)).sum() * self.temperature


def test_a_check_at_each_epoch_finds_python_state_the_graph_has_baked_in_and_trains_eagerly():
    notices = []
    module = _Annealed()
    captured = CompiledLoss(module, log=notices.append, compile=False)
    x = torch.ones(4)

    def step():
        state = torch.get_rng_state()
        got = captured(x)
        torch.set_rng_state(state)
        return got, module(x)  # the eager program on the same noise

    for _ in range(3):  # eager, captured, replayed
        got, want = step()
        assert torch.equal(got, want)
    for epoch in range(1, 6):  # checked at epochs 1, 2, 4 (nothing changed, no notice); not at 3, 5
        captured.verify_next()
        assert captured._check == (epoch in (1, 2, 4))
        got, want = step()
        assert torch.equal(got, want) and not notices
    module.temperature = 0.5  # the schedule moves on; the graph still multiplies by 1.0
    got, want = step()
    assert not torch.equal(got, want)  # unchecked, the replay is stale: what the check is for
    captured.verify_next()  # epoch 6: due because an attribute changed
    assert captured._check
    for _ in range(3):  # checked: eager on the replay's noise, and eager from then on
        got, want = step()
        assert torch.equal(got, want)
    assert len(notices) == 1 and "has changed since the capture" in notices[0] and "at every step" in notices[0]
    assert captured.failed and all(g is None for g in captured.graphs.values())


class _BatchNormLoss(torch.nn.Module):
    """A user's loss with a buffer updated in place at every step (BatchNorm's running
    statistics)."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3)
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x, num_data=None, kl_scale=1.0):
        return (self.norm(x) * self.w).pow(2).sum()


@pytest.mark.parametrize("compile", [False, True])
def test_a_buffer_updated_in_place_is_updated_by_every_captured_step_not_by_a_capture_or_check(compile):
    torch.manual_seed(0)
    batches = [torch.randn(5, 3) for _ in range(4)]
    eager, module = _BatchNormLoss(), _BatchNormLoss()
    captured = CompiledLoss(module, compile=compile)
    for i, x in enumerate(batches):  # eager, captured, captured and checked, captured
        if i == 2:
            captured.verify_next()
            assert captured._check  # the check runs the program aside: it updates no statistics
        eager(x).backward()
        captured(x).backward()
    assert captured.failed is None and len(captured.graphs) == 1
    assert int(module.norm.num_batches_tracked) == int(eager.norm.num_batches_tracked) == 4
    torch.testing.assert_close(module.norm.running_mean, eager.norm.running_mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(module.norm.running_var, eager.norm.running_var, rtol=1e-6, atol=0)
    torch.testing.assert_close(module.w.grad, eager.w.grad, rtol=1e-5, atol=0)
    if not compile:  # the replay: the same kernels, to the bit
        assert torch.equal(module.norm.running_mean, eager.norm.running_mean) and torch.equal(module.w.grad, eager.w.grad)
