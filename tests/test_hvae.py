"""Several latent sites: a two-layer linear-Gaussian VAE against its closed forms, and the
hierarchical VAE (``--model hvae``): top-down dependence, parameters registered once, free
bits per layer, latent usage per layer, the command line from a run directory.

The linear-Gaussian model (float64):

    z_2 ~ N(0, I_2),  z_1 | z_2 ~ N(A z_2, s₁² I_2),  x | z_1 ~ N(W z_1 + b, s² I_4),

with A diagonal and W = Q diag(w) (orthonormal Q), so that the exact posterior factorises as
p(z_2 | x) p(z_1 | x, z_2) with diagonal covariances: inside the family of its guide
q(z_2 | x) q(z_1 | x, z_2) (linear means, free diagonal scales). Everything is Gaussian, so
log p(x) and the ELBO of any guide have closed forms.
"""

import json
import math
import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from inference.cli import main
from pyro_vae import ConfigError, build_guide, build_vae
from pyro_vae.guides.base import Guide
from pyro_vae.guides.local import LocalGaussianGuide
from pyro_vae.infer.elbo import FreeBitsTrace_ELBO, IWAE_ELBO
from pyro_vae.infer.evaluate import evaluate, log_weights
from pyro_vae.infer.gaps import local_guide
from pyro_vae.infer.usage import latent_usage
from pyro_vae.likelihoods import build_likelihood
from pyro_vae.models.base import VAE, Decoder, Encoder

D, Z, S1, S = 4, 2, 0.7, 0.5


class TwoLayerGuide(Guide):
    """q(z_2 | x) = N(M₂ x + c₂, diag σ₂²), q(z_1 | x, z_2) = N(C z_2 + M₁ x + c₁, diag σ₁²)."""

    def __init__(self, vae):
        super().__init__(vae)
        self.m2, self.c2 = nn.Parameter(torch.zeros(Z, D)), nn.Parameter(torch.zeros(Z))
        self.m1, self.c1 = nn.Parameter(torch.zeros(Z, D)), nn.Parameter(torch.zeros(Z))
        self.cz = nn.Parameter(torch.zeros(Z, Z))
        self.log_s2, self.log_s1 = nn.Parameter(torch.zeros(Z)), nn.Parameter(torch.zeros(Z))

    def q2(self, x):
        return dist.Normal(x.flatten(1) @ self.m2.T + self.c2, self.log_s2.exp()).to_event(1)

    def q1(self, x, z2):
        return dist.Normal(z2 @ self.cz.T + x.flatten(1) @ self.m1.T + self.c1, self.log_s1.exp()).to_event(1)

    def sample(self, x):
        z2 = pyro.sample("z_2", self.q2(x))
        z1 = pyro.sample("z_1", self.q1(x, z2))
        return self.vae.join_latents({"z_2": z2, "z_1": z1})


class TwoLayerLinear(VAE):
    """The model of the module docstring, with sites "z_2", "z_1", "x" (a VAE of two sites)."""

    def __init__(self):
        lik = build_likelihood("gaussian", (1, 1, D))
        net = nn.Sequential(nn.Linear(Z, D), nn.Unflatten(-1, (1, 1, D)))
        super().__init__((1, 1, D), 2 * Z, Encoder(nn.Flatten(1), D, Z), Decoder(net, lik))
        self.a = torch.tensor([1.5, 0.8])
        self.decoder_net = net[0]
        self.guide = TwoLayerGuide(self)

    @property
    def latent_sites(self):
        return {"z_2": Z, "z_1": Z}

    def latents(self):
        z2 = pyro.sample("z_2", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
        z1 = pyro.sample("z_1", dist.Normal(z2 * self.a, S1).to_event(1))
        return z1

    def decoder_input(self, z):
        return z[..., Z:]

    def check_values(self, x):
        """A linear-Gaussian model of real vectors: any finite value is in its support."""

    # closed forms ---------------------------------------------------------------------
    def joint(self):
        """Mean and covariance of (z_2, z_1, x) under the model."""
        A, W, b = torch.diag(self.a), self.decoder_net.weight, self.decoder_net.bias
        c22 = torch.eye(Z)
        c11 = A @ A.T + S1**2 * torch.eye(Z)
        cov = torch.zeros(2 * Z + D, 2 * Z + D)
        cov[:Z, :Z], cov[Z:2 * Z, Z:2 * Z] = c22, c11
        cov[Z:2 * Z, :Z], cov[:Z, Z:2 * Z] = A, A.T
        cov[2 * Z:, 2 * Z:] = W @ c11 @ W.T + S**2 * torch.eye(D)
        cov[2 * Z:, Z:2 * Z], cov[2 * Z:, :Z] = W @ c11, W @ A
        cov[Z:2 * Z, 2 * Z:], cov[:Z, 2 * Z:] = (W @ c11).T, (W @ A).T
        return torch.cat([torch.zeros(2 * Z), b]), cov

    def exact_log_px(self, x):
        mean, cov = self.joint()
        return dist.MultivariateNormal(mean[2 * Z:], cov[2 * Z:, 2 * Z:]).log_prob(x.flatten(1))

    def exact_elbo(self, x):
        """E_q[log p(x, z)] + H[q]: q(z_2, z_1 | x) is Gaussian, p(z, x) is Gaussian."""
        g = self.guide
        xf = x.flatten(1)
        m2 = xf @ g.m2.T + g.c2
        m1 = m2 @ g.cz.T + xf @ g.m1.T + g.c1
        s2, s1 = torch.diag(g.log_s2.exp() ** 2), torch.diag(g.log_s1.exp() ** 2)
        sq = torch.cat([torch.cat([s2, s2 @ g.cz.T], 1), torch.cat([g.cz @ s2, g.cz @ s2 @ g.cz.T + s1], 1)])
        mean, cov = self.joint()
        v = torch.cat([m2, m1, xf], -1)
        big = torch.zeros(2 * Z + D, 2 * Z + D)
        big[:2 * Z, :2 * Z] = sq
        expected = dist.MultivariateNormal(mean, cov).log_prob(v) - 0.5 * torch.trace(torch.linalg.solve(cov, big))
        return expected + dist.MultivariateNormal(torch.zeros(2 * Z), sq).entropy()

    def set_exact_guide(self):
        """q = p(z_2 | x) p(z_1 | x, z_2), in closed form (linear-Gaussian regression)."""
        mean, cov = self.joint()
        g, W, b = self.guide, self.decoder_net.weight, self.decoder_net.bias
        with torch.no_grad():
            k = cov[:Z, 2 * Z:] @ torch.linalg.inv(cov[2 * Z:, 2 * Z:])   # E[z_2 | x] = k (x − b)
            post2 = cov[:Z, :Z] - k @ cov[2 * Z:, :Z]
            g.m2.copy_(k), g.c2.copy_(-k @ b), g.log_s2.copy_(post2.diagonal().sqrt().log())
            prec1 = torch.eye(Z) / S1**2 + W.T @ W / S**2                  # p(z_1 | z_2, x)
            cov1 = torch.linalg.inv(prec1)
            g.cz.copy_(cov1 @ torch.diag(self.a) / S1**2)
            g.m1.copy_(cov1 @ W.T / S**2), g.c1.copy_(-cov1 @ W.T @ b / S**2)
            g.log_s1.copy_(cov1.diagonal().sqrt().log())
        assert torch.allclose(post2, torch.diag(post2.diagonal()), atol=1e-10)  # inside the family
        assert torch.allclose(cov1, torch.diag(cov1.diagonal()), atol=1e-10)


@pytest.fixture
def lin2():
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(4)
        vae = TwoLayerLinear()
        q, _ = torch.linalg.qr(torch.randn(D, Z, generator=g))
        with torch.no_grad():
            vae.decoder_net.weight.copy_(q * torch.tensor([2.0, 0.7]))
            vae.decoder_net.bias.copy_(torch.randn(D, generator=g))
            lik = vae.likelihood
            lik.raw_scale.fill_(math.log(math.expm1(S - lik.min_scale)))
        vae.set_exact_guide()
        yield vae
    finally:
        torch.set_default_dtype(torch.float32)


def data_from(n, seed=2):
    return torch.randn(n, 1, 1, D, generator=torch.Generator().manual_seed(seed)) * 2


def perturb(vae):
    with torch.no_grad():
        vae.guide.c2.add_(0.4)
        vae.guide.log_s1.add_(0.3)
        vae.guide.cz.mul_(0.5)


def test_exact_guide_makes_every_weight_log_px_over_both_sites(lin2):
    x = data_from(6)
    lw = log_weights(lin2, lin2.guide, x, num_samples=40)
    assert set(lw.latents) == {"z_2", "z_1"} and lw.latents["z_1"].shape == (40, 6, Z)
    exact = lin2.exact_log_px(x).detach()
    assert torch.allclose(lw.log_w, exact.expand(40, 6), atol=1e-9)
    assert torch.allclose(lin2.exact_elbo(x).detach(), exact, atol=1e-9)  # closed forms agree


def test_hierarchical_elbo_against_its_closed_form(lin2):
    perturb(lin2)
    x = data_from(4)
    expected = lin2.exact_elbo(x).detach()
    assert torch.all(expected < lin2.exact_log_px(x).detach() - 0.05)  # a real gap
    lw = log_weights(lin2, lin2.guide, x, num_samples=20000).log_w.detach()
    est, se = lw.mean(0), lw.std(0) / math.sqrt(lw.shape[0])
    assert torch.all((est - expected).abs() < 4 * se), (est, expected, se)
    # Pyro's Trace_ELBO on the same program: the vectorized estimator has the same mean
    loss = Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1).loss(
        lin2.model, lin2.guide, x)
    assert -loss == pytest.approx(float(expected.sum()), abs=4 * float(lw.std(0).sum()) / math.sqrt(4000))


def test_iwae_over_both_sites_converges_to_log_px(lin2):
    perturb(lin2)
    x = data_from(5)
    exact = float(lin2.exact_log_px(x).detach().mean())
    large = evaluate(lin2, lin2.guide, x, num_samples=5000, max_rows=4000, seed=0)
    assert large["iwae"] == pytest.approx(exact, abs=0.02)
    assert large["elbo"] < exact - 0.05  # the same draws averaged: the ELBO stays below
    assert large["elbo"] == pytest.approx(float(lin2.exact_elbo(x).detach().mean()), abs=0.05)


def test_iwae_objective_over_both_sites_is_the_evaluation_bound(lin2):
    perturb(lin2)
    x = data_from(5)
    pyro.set_rng_seed(1)
    loss = IWAE_ELBO(num_particles=8).loss(lin2.model, lin2.guide, x)
    pyro.set_rng_seed(1)
    lw = log_weights(lin2, lin2.guide, x, num_samples=8).log_w.detach()
    assert loss == pytest.approx(-float((torch.logsumexp(lw, 0) - math.log(8)).sum()), abs=1e-9)


def test_latent_usage_per_site_adds_up_to_the_total_kl(lin2):
    perturb(lin2)
    x = data_from(300, seed=5)
    usage = latent_usage(lin2, lin2.guide, x, num_samples=512)
    assert list(usage["sites"]) == ["z_2", "z_1"] and usage["method"] == "exact"
    assert len(usage["kl_per_dim"]) == 2 * Z and len(usage["activity"]) == 2 * Z
    # Σ_l E_q KL(q(z_l | x, z_>l) ‖ p(z_l | z_>l)) = E_q[log q(z | x) − log p(z)]
    lw = log_weights(lin2, lin2.guide, x, num_samples=512)
    mc = float((lw.log_qz - lw.log_pz).detach().mean())
    assert usage["kl_total"] == pytest.approx(mc, abs=0.05)
    assert usage["kl_total"] == pytest.approx(sum(s["kl_total"] for s in usage["sites"].values()))


# ------------------------------------------------------------------------- hvae
def hvae(levels=2, **options):
    return build_vae("hvae", x_shape=(1, 28, 28), z_dim=3, levels=levels, channels=[4, 8], hidden=24,
                     mid=12, **options)


def batch(n=4):
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3))


@torch.no_grad()
def perturb_all(module, scale=0.3):
    for p in module.parameters():
        p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("guide", ["gaussian", "iaf"])
def test_the_guide_of_a_layer_depends_on_the_layers_above(guide):
    vae = hvae(levels=3)
    q = vae.make_guide({"name": guide, "num_flows": 2} if guide == "iaf" else None)
    perturb_all(vae)
    perturb_all(q)
    x = batch(4)
    locs = []
    for value in (torch.zeros(4, 3), torch.full((4, 3), 2.0)):
        tr = poutine.trace(poutine.condition(q, data={"z_3": value})).get_trace(x)
        z2 = tr.nodes["z_2"]
        locs.append(z2["fn"].base_dist.base_dist.loc if guide == "iaf" else z2["fn"].base_dist.loc)
        model = poutine.trace(poutine.condition(vae.model, data={"z_3": value})).get_trace(x)
        locs.append(model.nodes["z_2"]["fn"].base_dist.loc)  # the prior p(z_2 | z_3) too
    assert not torch.allclose(locs[0], locs[2]) and not torch.allclose(locs[1], locs[3])
    assert list(vae.latent_sites) == ["z_3", "z_2", "z_1"]


def test_the_top_down_path_is_registered_once_by_the_model():
    vae = hvae()
    pyro.clear_param_store()
    Trace_ELBO(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, batch())
    store = pyro.get_param_store()
    names = list(store.keys())
    assert any(".top_down$$$" in n for n in names) and any(".encoder$$$" in n for n in names)
    ids = [id(store[n]) for n in names]
    assert len(ids) == len(set(ids))  # no tensor under two names
    assert {id(p) for p in vae.parameters()} == set(ids)  # every parameter, once


def test_free_bits_act_per_layer():
    """A collapsed top layer (q(z_2 | x) = p(z_2)) is charged λ nats per dimension, while a
    busy bottom layer (KL ≫ λ in every dimension) is charged nothing extra."""
    vae = hvae()
    with torch.no_grad():
        top, bottom = vae.encoder.heads[0][-1], vae.encoder.heads[1][-1]
        top.weight.zero_(), top.bias.zero_()
        top.bias[3:] = math.log(math.expm1(1.0 - 1e-4))   # σ = 1: q(z_2 | x) = N(0, I) = p(z_2)
        bottom.bias[:3] = 6.0                            # μ = 6: KL per dimension ≥ 18 nats
    x, lam = batch(5), 0.5
    torch.manual_seed(1)
    elbo_loss = Trace_ELBO(max_plate_nesting=1).loss(vae.model, vae.guide, x, num_data=50)
    torch.manual_seed(1)
    fb_loss = FreeBitsTrace_ELBO(free_bits=lam, max_plate_nesting=1).loss(vae.model, vae.guide, x, num_data=50)
    assert fb_loss - elbo_loss == pytest.approx(50 * 3 * lam, rel=1e-4)   # N · d_2 · λ


def test_latent_usage_and_local_guides_per_layer():
    vae = hvae()
    perturb_all(vae)
    x = batch(20)
    usage = latent_usage(vae, vae.guide, x, num_samples=16)
    assert list(usage["sites"]) == ["z_2", "z_1"] and len(usage["activity"]) == 6
    assert all(s["method"] == "exact" and s["dims"] == 3 for s in usage["sites"].values())
    local, method = local_guide(vae, vae.guide, x[:1])
    assert method == "copy"  # several sites: a per-image copy of the hierarchical guide
    free = [p for p in local.local_parameters() if p.requires_grad]
    assert len(free) == 2 and all(p.shape == (6,) for p in free)  # one head bias per layer
    with pytest.raises(ConfigError, match="diagonal Normal"):  # a distribution per layer
        local_guide(vae, vae.guide, x[:1], "gaussian")
    # a guide that is one diagonal Normal of the joint latent gives a local Gaussian, cut
    # into the model's sites like it
    joint = LocalGaussianGuide(torch.zeros(1, 6), torch.ones(1, 6), vae.latent_sites)
    local, method = local_guide(vae, joint, x[:1])
    assert method == "gaussian" and local.sites == vae.latent_sites
    assert {"z_2", "z_1"} <= set(poutine.trace(local).get_trace(x[:1]).nodes)


def test_every_flow_guide_is_a_flow_per_layer():
    vae = hvae()
    guide = build_guide("realnvp", vae, num_flows=2)
    assert len(guide.flows) == 2 and guide.spec["name"] == "realnvp"
    x = batch(3)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(vae.model, guide, x))
    assert guide.location(x).shape == (3, 6)


def test_cli_trains_evaluates_samples_resumes_and_analyses_an_hvae(tmp_path, capsys):
    run = str(tmp_path / "h")
    quick = ["--train-size", "200", "--test-size", "40", "--iwae-samples", "20", "--no-progress",
             "--batch-size", "50", "--z-dim", "3", "--set", "hidden=24", "--set", "mid=12",
             "--set", "channels=[4,8]", "--set", "levels=3"]
    assert main(["train", "--model", "hvae", "--epochs", "1", "--out", run, *quick]) == 0
    trained = json.load(open(os.path.join(run, "eval.json")))
    assert list(trained["latent_sites"]) == ["z_3", "z_2", "z_1"]
    assert all(set(v) == {"dims", "kl", "active_units"} for v in trained["latent_sites"].values())
    assert "z_3: KL" in capsys.readouterr().out
    assert main(["evaluate", run, "--iwae-samples", "20", "--no-progress"]) == 0
    assert json.load(open(os.path.join(run, "eval.json")))["nll"] == trained["nll"]
    assert main(["sample", run, "--n", "4"]) == 0
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--no-progress"]) == 0
    assert main(["posterior", run, "--index", "0", "--chains", "2", "--draws", "10", "--warmup", "10",
                 "--iwae-samples", "20", "--local-steps", "20", "--no-progress"]) == 0
    import arviz as az

    nuts = az.from_netcdf(os.path.join(run, "posterior", "nuts.nc"))
    assert {"z", "z_3", "z_2", "z_1"} <= set(nuts.posterior.data_vars)
    assert nuts.posterior["z"].sizes["z_dim"] == 9
    assert main(["train", "--model", "hvae", "--prior", "vamp", "--out", str(tmp_path / "v"), *quick]) == 2
    assert "single-latent" in capsys.readouterr().err
