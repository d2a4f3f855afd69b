"""Honest model selection and regularisation in the library: the validation split, early
stopping on a scripted sequence, the moving average against its closed form, decoupled
weight decay against torch's AdamW, dropout off in evaluation, skipped updates."""

import copy

import numpy as np
import pytest
import torch

from pyro_vae import ConfigError, DataError, build_guide, build_vae, load_dataset
from pyro_vae.build import check_specs
from pyro_vae.data_settings import VALID_SPLIT_SEED
from pyro_vae.infer import trainer as trainer_module
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.evaluate import evaluate
from pyro_vae.infer.optim import ClippedAdamW
from pyro_vae.infer.selection import EarlyStopping, WeightAverage
from pyro_vae.infer.trainer import Trainer
from pyro_vae.models import MODELS


# ---------------------------------------------------------------------- the validation split
def test_the_validation_split_is_disjoint_deterministic_and_independent_of_the_seed():
    full = load_dataset("mnist5k")
    a = load_dataset("mnist5k", valid_fraction=0.1, seed=0)
    b = load_dataset("mnist5k", valid_fraction=0.1, seed=7)
    assert (len(a.train), len(a.valid), len(a.test)) == (3600, 400, 1000)
    assert torch.equal(a.valid, b.valid) and torch.equal(a.train, b.train)  # whatever the seed
    # the two parts are the training split, cut in two by the fixed shuffle: disjoint, complete
    order = np.random.default_rng(VALID_SPLIT_SEED).permutation(4000)
    valid_idx, train_idx = np.sort(order[:400]), np.sort(order[400:])
    assert torch.equal(a.valid, full.train[valid_idx]) and torch.equal(a.train, full.train[train_idx])
    assert not set(valid_idx) & set(train_idx)
    assert torch.equal(a.labels("valid"), full.train_labels[valid_idx])
    assert torch.equal(a.test, full.test)  # the test split is untouched
    # the evaluation noise of the validation split is fixed (by the data's seed)
    assert torch.equal(a.eval_data("valid"), load_dataset("mnist5k", valid_fraction=0.1).eval_data("valid"))
    assert "valid" not in full.splits
    with pytest.raises(DataError, match="no valid split"):
        full.eval_data("valid")


def test_a_source_with_its_own_validation_split_keeps_it(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "three.npz"
    images = rng.random((30, 1, 4, 4)).astype(np.float32)
    np.savez(path, train=images[:20], valid=images[20:25], test=images[25:])
    data = load_dataset(str(path), binarize="none", valid_fraction=0.1)
    assert (len(data.train), len(data.valid), len(data.test)) == (20, 5, 5)
    assert data.source["valid_split"] == "the source's own"
    assert load_dataset(str(path), binarize="none").splits == ("train", "test")  # 0: none


@pytest.mark.parametrize("fraction, train_size", [(0.0001, None), (0.5, 3), (0.999, 100), (1.0, None), (-0.1, None)])
def test_a_fraction_that_leaves_too_few_images_is_refused(fraction, train_size):
    with pytest.raises(ConfigError, match="valid_fraction"):
        load_dataset("mnist5k", valid_fraction=fraction, train_size=train_size)


# ---------------------------------------------------------------------- early stopping
def test_early_stopping_stops_at_the_right_epoch_of_a_scripted_sequence():
    values = [-10, -8, -9, -7, -7.5, -7.2, -7.0, -7.1, -6.0]
    stop = EarlyStopping(patience=3)
    stopped_at = None
    for epoch, value in enumerate(values, 1):
        stop.update(epoch, value)
        if stop.stopped:
            stopped_at = epoch
            break
    # best −7 at epoch 4; epochs 5, 6 and 7 (−7.0 ties, no improvement) → stop after epoch 7
    assert (stop.best_epoch, stop.best, stopped_at) == (4, -7.0, 7)
    again = EarlyStopping(patience=3)
    again.load_state_dict(stop.state_dict())
    assert again.stopped and again.stale == 3
    assert not EarlyStopping(None).stopped


def _tiny(train_size=96, **config):
    data = load_dataset("mnist5k", train_size=train_size, test_size=8, valid_fraction=0.25)
    torch.manual_seed(0)
    vae = build_vae("dense", data.x_shape, z_dim=2, hidden_dims=(8,))
    return Trainer(vae, build_guide("gaussian", vae), data, TrainConfig(batch_size=32, **config))


def test_the_trainer_stops_where_the_scripted_validation_elbo_says(monkeypatch):
    script = iter([-9.0, -5.0, -6.0, -4.5, -4.0, -4.5, -4.2, -8.0, -1.0])
    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: {"elbo": next(script), "rec": 0.0, "kl": 0.0})
    trainer = _tiny(patience=2)
    epochs = []
    while not trainer.stopped:
        epochs.append(trainer.train_epoch())
    # best −4.0 at epoch 5; epochs 6 and 7 do not improve: patience 2 stops after epoch 7
    assert [m["epoch"] for m in epochs] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["best_epoch"] for m in epochs] == [1, 2, 2, 4, 5, 5, 5]
    assert "test_elbo" not in epochs[-1]


def test_patience_without_a_validation_split_is_refused():
    data = load_dataset("mnist5k", train_size=32, test_size=8)
    vae = build_vae("dense", data.x_shape, z_dim=2, hidden_dims=(8,))
    with pytest.raises(ConfigError, match="patience needs a validation split"):
        Trainer(vae, vae.guide, data, TrainConfig(patience=3))


# ---------------------------------------------------------------------- the moving average
def test_the_moving_average_follows_its_closed_form():
    """θ̄_t = β^(t−1) θ_1 + Σ_{s=2..t} (1 − β) β^(t−s) θ_s: the first update copies θ."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    guide = torch.nn.Linear(2, 1).double()
    beta = 0.9
    average = WeightAverage(model, guide, beta)
    history = []
    for _ in range(6):
        with torch.no_grad():
            for p in list(model.parameters()) + list(guide.parameters()):
                p.add_(torch.randn_like(p))
        history.append([p.detach().clone() for p in list(model.parameters()) + list(guide.parameters())])
        average.update()
    t = len(history)
    for i, p in enumerate(list(average.model.parameters()) + list(average.guide.parameters())):
        expected = beta ** (t - 1) * history[0][i] + sum((1 - beta) * beta ** (t - s) * history[s - 1][i]
                                                         for s in range(2, t + 1))
        torch.testing.assert_close(p, expected, rtol=1e-12, atol=1e-12)
    assert average.updates == 6
    copy_ = WeightAverage(model, guide, beta)
    copy_.load_state_dict(average.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(copy_.model.parameters(), average.model.parameters()))


def test_the_moving_average_is_torchs_averaged_model_bit_for_bit():
    """WeightAverage.update (one fused lerp over lists gathered once) against torch's own
    AveragedModel with get_ema_multi_avg_fn: the same floats after every step, buffers
    copied."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    guide = torch.nn.Linear(4, 2)
    ours = WeightAverage(model, guide, 0.97)
    trained = torch.nn.ModuleDict({"model": model, "guide": guide})
    theirs = AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(0.97))
    for _ in range(5):
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        ours.update()
        theirs.update_parameters(trained)
        for a, b in zip(list(ours.model.state_dict().values()) + list(ours.guide.state_dict().values()),
                        theirs.module.state_dict().values()):
            assert torch.equal(a, b)
    assert ours.updates == int(theirs.n_averaged) == 5


def test_the_averaged_guide_is_the_averaged_models():
    vae = build_vae("dense", (1, 28, 28), z_dim=2, hidden_dims=(8,))
    average = WeightAverage(vae, vae.guide, 0.99)
    assert average.guide.vae is average.model and average.model is not vae


# ---------------------------------------------------------------------- decoupled weight decay
def test_decoupled_weight_decay_follows_torch_adamw_on_a_toy_problem():
    """No clipping, no learning-rate decay and eps = 0 (Pyro's ClippedAdam adds eps outside
    the bias correction, torch's inside): the very same algorithm, in float64."""
    torch.manual_seed(0)
    target = torch.randn(5, dtype=torch.float64)
    start = torch.randn(5, dtype=torch.float64)
    trajectories = []
    for make in (lambda p: torch.optim.AdamW([p], lr=0.05, weight_decay=0.3, eps=0.0),
                 lambda p: ClippedAdamW([p], lr=0.05, weight_decay=0.3, eps=0.0, clip_norm=1e9)):
        w = torch.nn.Parameter(start.clone())
        opt = make(w)
        path = []
        for _ in range(50):
            loss = ((w - target) ** 2).sum() + (w ** 4).sum() * 0.01
            loss.backward()
            opt.step()
            opt.zero_grad()
            path.append(w.detach().clone())
        trajectories.append(torch.stack(path))
    torch.testing.assert_close(trajectories[1], trajectories[0], rtol=1e-10, atol=1e-12)
    # and the decay is real: without it the path is another
    w = torch.nn.Parameter(start.clone())
    opt = ClippedAdamW([w], lr=0.05, eps=0.0, clip_norm=1e9)
    ((w - target) ** 2).sum().backward()
    opt.step()
    assert not torch.allclose(w.detach(), trajectories[0][0])


@pytest.mark.parametrize("bad", [dict(weight_decay=-0.1), dict(weight_decay=1e4), dict(patience=0),
                                 dict(ema=-0.5), dict(ema=1.0), dict(skip_threshold=0.0)])
def test_bad_selection_settings_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrainConfig(**bad)


# ---------------------------------------------------------------------- dropout
@pytest.mark.parametrize("name", list(MODELS))
def test_every_vae_takes_dropout_and_evaluation_turns_it_off(name):
    likelihood = "gaussian" if name == "linear" else "bernoulli"
    torch.manual_seed(0)
    labels = {"num_classes": 3} if MODELS.get(name).label_is_latent else {}  # the ssvae's label is a latent
    vae = build_vae(name, (1, 16, 16), z_dim=2, likelihood=likelihood, dropout=0.5, **labels)
    assert vae.spec["dropout"] == 0.5
    x = torch.rand(4, 1, 16, 16) if name == "linear" else torch.bernoulli(torch.full((4, 1, 16, 16), 0.4))
    z = torch.randn(4, vae.z_dim)
    y = torch.tensor([0, 1, 2, 0]) if labels else None

    def decoded():
        return vae.decoder(vae.labelled(vae.decoder_input(z), y))

    vae.train()
    assert not torch.equal(decoded(), decoded())  # dropout on
    vae.eval()
    assert torch.equal(decoded(), decoded())
    vae.train()
    a = evaluate(vae, vae.guide, x, num_samples=3, seed=1)  # evaluation switches dropout off itself
    b = evaluate(vae, vae.guide, x, num_samples=3, seed=1)
    assert a["elbo"] == b["elbo"] and vae.training  # and leaves the mode as it was


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, True])
def test_a_dropout_outside_zero_to_one_is_refused_before_anything_is_built(p):
    with pytest.raises(ConfigError, match="dropout"):
        check_specs({"name": "dense", "dropout": p})


def test_the_ssvae_classifier_takes_its_own_dropout_and_the_vae_keeps_its_own():
    def dropouts(module):
        return sorted({m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)})

    for network in ("dense", "conv"):
        vae = build_vae("ssvae", (1, 16, 16), z_dim=2, network=network, dropout=0.1, classifier_dropout=0.3,
                        num_classes=3)
        assert vae.spec["classifier_dropout"] == 0.3
        assert dropouts(vae.classifier_trunk) == [0.3]
        assert dropouts(vae.encoder) == dropouts(vae.decoder) == [0.1]
        same = build_vae("ssvae", (1, 16, 16), z_dim=2, network=network, dropout=0.2, num_classes=3)
        assert dropouts(same.classifier_trunk) == [0.2]  # None: the VAE's


@pytest.mark.parametrize("p", [-0.1, 1.0, True])
def test_a_classifier_dropout_outside_zero_to_one_is_refused_before_anything_is_built(p):
    with pytest.raises(ConfigError, match="classifier_dropout") as err:
        check_specs({"name": "ssvae", "classifier_dropout": p})
    assert err.value.params == ("model.classifier_dropout",)


# ---------------------------------------------------------------------- skipped updates
def test_updates_above_the_threshold_are_skipped_and_counted():
    trainer = _tiny(skip_threshold=1e-6)  # every gradient is larger: nothing moves
    before = copy.deepcopy(trainer.model.state_dict())
    m = trainer.train_epoch()
    assert m["skipped"] == m["steps"] == 3 and trainer.skipped == 3
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer = _tiny(skip_threshold=1e6)  # none is
    m = trainer.train_epoch()
    assert m["skipped"] == 0
