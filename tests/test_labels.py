"""Labels in the model: the semi-supervised VAE's enumeration against a brute-force sum over the
classes, its objective's parts and scales, the labelled subset, the classifier's accuracy, the
conditional VAE and its conditional prior, and the β of the KL terms."""

import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from torch import nn
from sklearn.metrics import accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion

from pyro_vae import ConfigError, DataError, build_vae, load_dataset
from pyro_vae.guides.base import JointGuide
from pyro_vae.infer.config import TrainConfig
from pyro_vae.infer.elbo import make_elbo
from pyro_vae.infer.evaluate import evaluate, per_image
from pyro_vae.infer.labels import LabelledLoss, classification, confusion_matrix, label_posterior, predict
from pyro_vae.infer.trainer import Trainer
from pyro_vae.labels import keep_labels, pick_labelled, split_labelled
from pyro_vae.models.ssvae import SemiSupervisedGuide
from pyro_vae.nets.shift import random_shift

C = 10


class DeltaGuide(JointGuide):
    """q(z | x, y) = δ(μ_φ(x, y)): the ELBO becomes a deterministic function of the weights."""

    def _distribution(self, x, y=None):
        encoder = self.vae.encoder
        return dist.Delta(encoder.loc_scale(encoder.features(x, y))[0], event_dim=1)


def tiny_ssvae(**options):
    return build_vae("ssvae", (1, 28, 28), z_dim=3, num_classes=C, hidden_dims=(16,), **options).double()


def binary(n):
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3, dtype=torch.float64))


def brute_force_elbo(vae, x, beta=1.0):
    """Σ_n Σ_y q(y | x_n) [log p(x_n | z, y) + β (log p(y) + log p(z) − log q(y | x_n))] at
    z = μ(x_n, y), by hand: one decoder pass per class."""
    q = vae.label_posterior(x).probs
    total = 0.0
    for c in range(C):
        y = torch.full((len(x),), c)
        z = vae.encoder.loc_scale(vae.encoder.features(x, y))[0]
        prior = vae.prior().log_prob(z) + math.log(1 / C) - torch.log(q[:, c])
        total = total + q[:, c] * (vae.decoder.distribution(vae.labelled(z, y)).log_prob(x) + beta * prior)
    return total.sum()


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_enumeration_is_the_elbo_summed_over_the_ten_labels_by_hand(beta):
    torch.manual_seed(0)
    vae = tiny_ssvae()
    guide = SemiSupervisedGuide(vae, DeltaGuide(vae))
    x = binary(5)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(vae.model, guide, x, num_data=20, kl_scale=beta)
    expected = -brute_force_elbo(vae, x, beta) * 20 / 5  # the plate's N / B
    assert torch.allclose(loss, expected, rtol=1e-12), (float(loss), float(expected))
    # and the gradients of the enumerated ELBO are those of the sum
    params = [p for p in list(vae.parameters()) if p.requires_grad]
    g1 = torch.autograd.grad(loss, params, allow_unused=True)
    g2 = torch.autograd.grad(expected, params, allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, rtol=1e-9, atol=1e-9))


def test_the_trained_elbo_is_tracenum_with_the_label_enumerated_in_parallel():
    elbo = make_elbo(TrainConfig(), enumerate=True)
    assert isinstance(elbo, TraceEnum_ELBO) and elbo.max_plate_nesting == 1
    vae = tiny_ssvae()
    x = binary(4)
    with pyro.poutine.trace() as tr, pyro.poutine.enum(first_available_dim=-2):
        vae.guide(x)
    y = tr.trace.nodes["y"]
    assert y["infer"]["enumerate"] == "parallel" and y["value"].shape == (C, 1)  # left of the data plate
    assert tr.trace.nodes["z"]["value"].shape == (C, 4, 3)
    with pytest.raises(ConfigError, match="enumeration"):
        TrainConfig(objective="iwae", particles=2).check_enumeration("ssvae")
    with pytest.raises(ConfigError, match="free_bits"):
        TrainConfig(free_bits=0.1).check_enumeration("ssvae")


def test_the_classification_term_is_alpha_times_the_mean_log_q_over_the_labelled_images():
    """α · (1/N_l) Σ log q(y | x) of Kingma et al.: a batch of B_l of N_l labelled images, its
    plate N_l / B_l, the site's scale α / N_l."""
    torch.manual_seed(1)
    vae = tiny_ssvae()
    loss = LabelledLoss(make_elbo(TrainConfig(), enumerate=True), vae, vae.guide, alpha=40.0, num_labelled=50)
    x, y = binary(5), torch.arange(5)
    term = loss.classification.differentiable_loss(vae.classifier_model, lambda *a, **k: None, x, y,
                                                   num_data=50, scale=loss.scale)
    log_q = vae.label_posterior(x).log_prob(y).sum()
    assert torch.allclose(term, -40.0 / 50 * (50 / 5) * log_q, rtol=1e-12)
    assert tiny_ssvae(alpha=40.0).label_alpha(4000) == 40.0 and vae.label_alpha(4000) == pytest.approx(400.0)  # 0.1 N


def test_a_step_adds_the_unlabelled_the_labelled_and_the_classification_parts():
    torch.manual_seed(2)
    vae = tiny_ssvae()
    guide = SemiSupervisedGuide(vae, DeltaGuide(vae))
    elbo = make_elbo(TrainConfig(), enumerate=True)
    loss = LabelledLoss(elbo, vae, guide, alpha=10.0, num_labelled=30)
    xu, xl, yl = binary(6), binary(3), torch.tensor([1, 4, 9])
    weighted, total = loss([(xu, None, 60, 0.5), (xl, yl, 30, 2.0)])
    unlabelled = elbo.differentiable_loss(vae.model, guide, xu, num_data=60)
    labelled = elbo.differentiable_loss(vae.model, guide, xl, num_data=30, y=yl)
    classify = -10.0 / 30 * 30 / 3 * vae.label_posterior(xl).log_prob(yl).sum()
    assert torch.allclose(total, unlabelled + labelled + classify)
    assert torch.allclose(weighted, 0.5 * unlabelled + 2.0 * (labelled + classify))
    # λ weighs the labelled images' ELBO (not the classification term): 1 is J^α
    _, heavier = LabelledLoss(elbo, vae, guide, alpha=10.0, num_labelled=30, labelled_weight=3.0)(
        [(xu, None, 60, 0.5), (xl, yl, 30, 2.0)])
    assert torch.allclose(heavier, unlabelled + 3.0 * labelled + classify)
    # a labelled image: log p(y) + the conditional VAE's ELBO, y observed in the model
    z = vae.encoder.loc_scale(vae.encoder.features(xl, yl))[0]
    by_hand = (vae.decoder.distribution(vae.labelled(z, yl)).log_prob(xl) + vae.prior().log_prob(z)
               + math.log(1 / C)).sum() * 30 / 3
    assert torch.allclose(labelled, -by_hand)


def test_a_random_shift_moves_each_image_by_one_offset_of_the_range_and_draws_them_all():
    torch.manual_seed(3)
    x = torch.rand(40, 3, 1, 7, 6)
    moved = random_shift(x, 2)
    assert moved.shape == x.shape and random_shift(x, 0) is x
    padded = torch.nn.functional.pad(x.reshape(-1, 1, 7, 6), (2, 2, 2, 2))
    seen = set()
    for image, out in zip(padded, moved.reshape(-1, 1, 7, 6)):  # brute force: every window of the padded image
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(image[:, dy:dy + 7, dx:dx + 6], out)]
        assert len(found) == 1
        seen.add(found[0])
    assert len(seen) == 25  # 120 images: each of the 25 offsets drawn (the chance of missing one: ~25 · e^-4.8)
    with pytest.raises(ConfigError, match="shift"):
        random_shift(x, 1.5)


def test_the_classifier_shift_moves_the_classification_terms_images_in_training_only():
    vae = tiny_ssvae(classifier_shift=3)
    x, y = binary(6), torch.arange(6)

    def log_q(train):
        vae.train(train)
        torch.manual_seed(5)
        trace = pyro.poutine.trace(vae.classifier_model).get_trace(x, y)
        return trace.nodes["y"]["fn"].log_prob(y)

    torch.manual_seed(5)
    expected = vae.label_posterior(random_shift(x, 3)).log_prob(y)
    assert torch.equal(log_q(True), expected)
    assert torch.equal(log_q(False), vae.label_posterior(x).log_prob(y))
    assert not torch.equal(log_q(True), log_q(False))
    # the ELBO's terms see the images as they are: the model and the guide of both VAEs agree
    plain = tiny_ssvae()
    plain.load_state_dict(vae.state_dict())
    for v in (vae, plain):
        v.train()
    elbo = make_elbo(TrainConfig(), enumerate=True)
    losses = []
    for v in (vae, plain):
        torch.manual_seed(6)
        losses.append(elbo.differentiable_loss(v.model, v.guide, x, num_data=6))
    assert torch.equal(*losses)


def test_the_classifier_can_have_residual_blocks_of_its_own():
    from pyro_vae.nets.resnet import ResBlock, ResNetEncoderTrunk

    vae = build_vae("ssvae", (1, 16, 16), z_dim=2, network="conv", channels=[4, 8], hidden=8, classifier_blocks=2,
                    num_classes=3)
    assert isinstance(vae.classifier_trunk, ResNetEncoderTrunk)
    assert sum(isinstance(m, ResBlock) for m in vae.classifier_trunk.modules()) == 4  # 2 stages × 2
    assert not any(isinstance(m, ResBlock) for m in vae.encoder.modules())  # the VAE's own trunk is unchanged
    assert vae.classify(torch.zeros(2, 1, 16, 16)).probs.shape == (2, 3) and vae.spec["classifier_blocks"] == 2
    with pytest.raises(ConfigError, match="classifier_blocks is an option of a conv classifier"):
        tiny_ssvae(classifier_blocks=1)
    for bad in (dict(classifier_blocks=-1), dict(classifier_shift=28), dict(classifier_shift=-1)):
        with pytest.raises(ConfigError, match="must be an integer"):
            tiny_ssvae(**bad)


def test_the_classifier_can_have_a_network_of_its_own():
    from pyro_vae.nets.conv import ConvEncoderTrunk
    from pyro_vae.nets.resnet import ResNetEncoderTrunk

    vae = tiny_ssvae(classifier_network="conv", channels=[4, 8], hidden=8, classifier_dropout=0.25)
    assert isinstance(vae.classifier_trunk, ConvEncoderTrunk)
    assert not any(isinstance(m, nn.Conv2d) for m in (*vae.encoder.modules(), *vae.decoder.modules()))
    assert vae.classifier_head.in_features == 8 and vae.encoder.h_dim == 16  # each part its own width
    x = binary(5)
    assert vae.classify(x).probs.shape == (5, C) and vae.spec["classifier_network"] == "conv"
    torch.manual_seed(1)
    loss = make_elbo(TrainConfig(), enumerate=True).differentiable_loss(vae.model, vae.guide, x, num_data=5)
    loss.backward()  # the unlabelled images' enumerated term reaches the conv classifier
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.classifier_trunk.parameters())
    res = tiny_ssvae(classifier_network="conv", channels=[4, 8], hidden=8, classifier_blocks=1)
    assert isinstance(res.classifier_trunk, ResNetEncoderTrunk)
    # the other way round: the conv VAE with a dense classifier
    mixed = build_vae("ssvae", (1, 28, 28), z_dim=3, num_classes=C, network="conv", channels=[4, 8], hidden=8,
                      classifier_network="dense", hidden_dims=(12,))
    assert mixed.classifier_head.in_features == 12 and isinstance(mixed.encoder.trunk, ConvEncoderTrunk)
    for bad, message in ((dict(classifier_network="mlp"),
                          "unknown classifier network 'mlp'; valid classifier networks: dense, conv, shared"),
                         (dict(channels=[4]), "channels and hidden are options of a conv network"),
                         (dict(classifier_network="dense", classifier_blocks=1),
                          "classifier_blocks is an option of a conv classifier"),
                         (dict(classifier_network="shared", channels=[4]), "channels and hidden are options"),
                         (dict(classifier_network="shared", classifier_blocks=1),
                          "classifier_blocks is an option of a conv classifier of its own")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            tiny_ssvae(**bad)
    with pytest.raises(ConfigError, match="hidden_dims is an option of a dense network"):
        build_vae("ssvae", (1, 28, 28), z_dim=3, num_classes=C, network="conv", hidden_dims=(12,))


def test_a_shared_classifier_trunk_is_the_encoders_and_learns_from_both_terms():
    vae = tiny_ssvae(classifier_network="shared", classifier_dropout=0.5)
    assert vae.classifier_trunk.trunk is vae.encoder.trunk and vae.classifier_head.in_features == 16
    own = [p for name, p in vae.named_parameters() if name.startswith("classifier_trunk")]
    assert own == []  # named once, under the encoder: one set of weights for the optimizer and the average
    x, y = binary(4), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    vae.eval()  # the classifier's dropout, after the shared trunk, is off in evaluation
    assert torch.equal(vae.classify(x).probs, vae.classify(x).probs)
    vae.train()
    weight = next(vae.encoder.trunk.parameters())
    unlabelled = make_elbo(TrainConfig(), enumerate=True).differentiable_loss(vae.model, vae.guide, x, num_data=4)
    (g_elbo,) = torch.autograd.grad(unlabelled, weight)
    labelled = Trace_ELBO().differentiable_loss(vae.classifier_model, lambda *a, **k: None, x, y, num_data=4)
    (g_class,) = torch.autograd.grad(labelled, weight)
    assert g_elbo.abs().sum() > 0 and g_class.abs().sum() > 0 and not torch.allclose(g_elbo, g_class)
    state = vae.state_dict()
    fresh = tiny_ssvae(classifier_network="shared", classifier_dropout=0.5)
    fresh.load_state_dict(state)  # the trunk's weights, under both names, load back into one module
    assert fresh.classifier_trunk.trunk is fresh.encoder.trunk
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), vae.parameters()))


def test_the_labelled_subset_is_balanced_deterministic_and_from_whatever_train_is():
    labels = torch.arange(1000) % C
    a, b = pick_labelled(labels, 7, seed=3), pick_labelled(labels, 7, seed=3)
    assert torch.equal(a, b) and len(a) == 70 and torch.equal(a, a.sort().values)
    assert torch.bincount(labels[a], minlength=C).tolist() == [7] * C
    assert not torch.equal(a, pick_labelled(labels, 7, seed=4))
    with pytest.raises(ConfigError, match="labels_per_class=101 is more than the 100 training images of class 0"):
        pick_labelled(labels, 101)
    data = load_dataset("mnist5k", train_size=500, test_size=10)
    kept = keep_labels(data, 5)
    labelled, unlabelled = split_labelled(data)
    assert torch.equal(labelled, kept) and len(unlabelled) == 450
    assert torch.bincount(data.train_labels[kept], minlength=C).tolist() == [5] * C
    assert keep_labels(data, "all") is None and len(split_labelled(data)[0]) == 500
    with pytest.raises(ConfigError, match="labels_per_class"):
        keep_labels(data, 0)


def test_the_accuracy_is_sklearns_and_the_confusion_matrix_too(small_data):
    torch.manual_seed(3)
    vae = build_vae("ssvae", small_data.x_shape, z_dim=3, num_classes=C, hidden_dims=(16,))
    x, y = small_data.eval_data("test"), small_data.test_labels
    result = classification(vae, x, y)
    predicted = predict(vae, x, batch_size=7)  # in batches: the same answer
    assert torch.equal(predicted, vae.classify(x).probs.argmax(-1))
    assert result["accuracy"] == pytest.approx(accuracy_score(y.numpy(), predicted.numpy()), abs=1e-12)
    assert result["confusion"] == sk_confusion(y.numpy(), predicted.numpy(), labels=list(range(C))).tolist()
    assert confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist() == [[1, 1], [0, 1]]
    with pytest.raises(DataError, match=r"labels must be classes 0..9, got values in \[0, 12\]"):
        classification(vae, x[:2], torch.tensor([0, 12]))


def test_the_bounds_of_the_ssvae_are_of_p_x_with_the_label_summed_out():
    """IWAE = log Σ_y exp(IWAE(x, y)) (log p(y) included), ELBO = Σ_y q(y|x)(ELBO(x, y) − log q(y|x)),
    the same draws for both, so IWAE ≥ ELBO image by image; p(y | x) from the same estimates."""
    torch.manual_seed(4)
    vae = tiny_ssvae()
    x = binary(3)
    with torch.no_grad():
        torch.manual_seed(5)
        summed = per_image(vae, vae.guide, x, 6)
        torch.manual_seed(5)
        each = [per_image(vae, vae.guide, x, 6, y=torch.full((3,), c)) for c in range(C)]
    q = vae.label_posterior(x).probs
    iwae = torch.logsumexp(torch.stack([e["iwae"] for e in each], -1), -1)
    elbo = sum(q[:, c] * (each[c]["elbo"] - q[:, c].log()) for c in range(C))
    assert torch.allclose(summed["iwae"], iwae) and torch.allclose(summed["elbo"], elbo.double())
    assert (summed["iwae"] >= summed["elbo"]).all()
    found = label_posterior(vae, vae.guide, x, num_samples=6)
    assert torch.allclose(found["p"].sum(-1), torch.ones(3, dtype=torch.float64))
    assert found["q"].shape == (3, C) and (found["kl_p_q"] >= -1e-9).all()
    assert torch.allclose(found["log_px"], torch.logsumexp(found["log_px_y"] + math.log(1 / C), -1))


def test_the_conditional_vae_and_its_conditional_prior():
    torch.manual_seed(6)
    vae = build_vae("conv", (1, 28, 28), z_dim=4, num_classes=C, channels=(4, 8), hidden=16,
                    prior={"name": "normal", "conditional": True})
    x, y = binary(4).float(), torch.tensor([0, 3, 3, 9])
    assert vae.spec["num_classes"] == C and vae.prior.spec == {"name": "normal", "conditional": True}
    z = vae.guide(x, y=y)
    assert z.shape == (4, 4)
    # the label reaches the guide, the prior and the decoder
    other = torch.tensor([1, 1, 1, 1])
    assert not torch.allclose(vae.guide.location(x, y), vae.guide.location(x, other))
    with torch.no_grad():
        vae.prior.class_loc[3] += 1.0
    assert torch.allclose(vae.prior(y).mean[1], torch.ones(4)) and torch.allclose(vae.prior(y).mean[0], torch.zeros(4))
    assert vae.generate(6, y=torch.arange(6)).shape == (6, 1, 28, 28)
    assert vae.reconstruct(x, y=y).shape == x.shape
    result = evaluate(vae, vae.guide, x, num_samples=5, y=y)
    assert result["iwae"] >= result["elbo"] - 1e-4
    for call in (lambda: vae.model(x), lambda: vae.guide(x), lambda: vae.generate(2)):
        with pytest.raises(ConfigError, match="needs the label y"):
            call()
    with pytest.raises(DataError, match=r"shape \(4,\)"):
        vae.model(x, y=torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="takes no labels"):
        build_vae("dense", (1, 28, 28), z_dim=2, hidden_dims=(8,)).model(x, y=y)
    with pytest.raises(ConfigError, match="conditional normal prior"):
        build_vae("dense", (1, 28, 28), z_dim=2, hidden_dims=(8,), prior={"name": "normal", "conditional": True})
    with pytest.raises(ConfigError, match="needs num_classes"):
        build_vae("ssvae", (1, 28, 28), z_dim=2)


def test_beta_scales_the_kl_terms_and_records_itself():
    config = TrainConfig(beta=4.0, kl_warmup=3)
    assert [config.kl_scale(e) for e in range(5)] == [1.0, 2.0, 3.0, 4.0, 4.0]
    assert TrainConfig(beta=0.5).kl_scale(0) == 0.5 and TrainConfig.from_dict({"epochs": 1}).beta == 1.0
    for bad in (0.0, -1.0, 2000.0):
        with pytest.raises(ConfigError, match="beta"):
            TrainConfig(beta=bad)


def test_training_reports_the_accuracy_and_refuses_what_it_cannot_use(small_data):
    data = load_dataset("mnist5k", train_size=200, test_size=20, valid_fraction=0.1)
    keep_labels(data, 3)  # of the 180 training images: 30 labelled, 150 not
    vae = build_vae("ssvae", data.x_shape, z_dim=2, num_classes=C, hidden_dims=(8,))
    trainer = Trainer(vae, vae.guide, data, TrainConfig(batch_size=64))
    metrics = trainer.train_epoch()
    # the classifier is judged on the validation labels; the test split is not read
    assert 0 <= metrics["valid_accuracy"] <= 1 and metrics["steps"] == math.ceil(150 / 64)
    assert not any(key.startswith("test") for key in metrics)
    cvae = build_vae("dense", data.x_shape, z_dim=2, num_classes=C, hidden_dims=(8,))
    with pytest.raises(ConfigError, match="every image"):  # a conditional VAE and a few labels
        Trainer(cvae, cvae.guide, data, TrainConfig())
    unlabelled = load_dataset("mnist5k", train_size=200, test_size=20)
    unlabelled._labels = {"train": None, "test": None}
    with pytest.raises(DataError, match="needs labelled data, but mnist5k has no labels"):
        Trainer(vae, vae.guide, unlabelled, TrainConfig())
