"""Posterior analysis against closed forms of the linear-Gaussian VAE, and end to end.

Model: z ~ N(0, I_3), x | z ~ N(W z + b, 0.5² I_6), float64. With W = Q diag(s), Q
orthonormal, the exact posterior is diagonal (inside the guide family); with a generic W
it is correlated, and then everything the analysis estimates has a closed form:

* p(z | x) = N(μ, Λ⁻¹) with precision Λ = I + Wᵀ W / σ²;
* the best diagonal Gaussian (the locally optimal guide q*) is N(μ, diag(1 / Λ_jj)), so
  approximation gap = KL(q* ‖ p) = ½ (Σ_j log Λ_jj − log det Λ);
* for any diagonal q, ELBO[q] = log p(x) − KL(q ‖ p(z|x)).
"""

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys

import arviz as az
import numpy as np
import pyro
import pytest
import torch

from inference.cli import main
from inference.io import atomic_netcdf
from inference.posterior import format_gaps
from pyro_vae.guides.local import LocalGaussianGuide
from pyro_vae.infer.context import frozen
from pyro_vae.infer.gaps import LocalFitConfig, fit_local_guide, inference_gaps
from pyro_vae.infer.nuts import NUTSConfig, guide_posterior, nuts_diagnostics, nuts_posterior, psis_khat
from pyro_vae.infer.usage import latent_usage
from pyro_vae import ConfigError, build_guide, build_vae
from pyro_vae.infer import config as settings

D, Z, SIGMA = 6, 3, 0.5


@contextlib.contextmanager
def float64():
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch.float32)


def linear_vae(weight, seed=1):
    """A linear-Gaussian VAE with decoder weight ``weight`` (D, Z), noise sd SIGMA."""
    g = torch.Generator().manual_seed(seed)
    vae = build_vae("linear", x_shape=(1, 1, D), z_dim=Z, likelihood="gaussian")
    with torch.no_grad():
        vae.decoder.net[0].weight.copy_(weight)
        vae.decoder.net[0].bias.copy_(torch.randn(D, generator=g))
        lik = vae.likelihood
        lik.raw_scale.fill_(math.log(math.expm1(SIGMA - lik.min_scale)))
    return vae


def diagonal_vae(scales=(2.0, 1.0, 0.5)):
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(D, Z, generator=g))
    vae = linear_vae(q * torch.tensor(scales))
    vae.set_exact_guide()
    return vae


def correlated_vae():
    """Posterior correlations up to −0.75; KL(q* ‖ p) = 0.48 nats (seed chosen for that)."""
    g = torch.Generator().manual_seed(3)
    vae = linear_vae(torch.randn(D, Z, generator=g) * torch.tensor([1.0, 0.7, 0.4]))
    set_head(vae, vae.exact_posterior(torch.zeros(1, 1, 1, D)), loc_shift=0.0)
    return vae


def set_head(vae, post, loc_shift=0.3, scale_factor=1.0):
    """Amortized guide: the exact posterior mean (+ loc_shift) and sd sqrt(Σ_jj) · factor."""
    w, prec_x = vae.weight, 1.0 / vae.noise_var()
    cov = post.covariance_matrix[0]
    a = cov @ w.T * prec_x
    sd = torch.sqrt(torch.diagonal(cov)) * scale_factor
    with torch.no_grad():
        head = vae.encoder.head
        head.weight.zero_()
        head.weight[:Z] = a
        head.bias.zero_()
        head.bias[:Z] = -a @ vae.bias + loc_shift
        target = sd - vae.encoder.min_scale
        head.bias[Z:] = target + torch.log(-torch.expm1(-target))


def data_from(vae, n, seed=2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, Z, generator=g)
    x = z @ vae.weight.T + vae.bias + SIGMA * torch.randn(n, D, generator=g)
    return x.reshape(n, 1, 1, D).detach()


def diagonal_kl_optimum(post):
    """KL(q* ‖ p) for the best diagonal Gaussian q*: ½ (Σ log Λ_jj − log det Λ), per image."""
    prec = torch.linalg.inv(post.covariance_matrix)
    return 0.5 * (torch.log(torch.diagonal(prec, dim1=-2, dim2=-1)).sum(-1) - torch.logdet(prec))


def kl_to_posterior(loc, scale, post):
    q = torch.distributions.MultivariateNormal(loc, scale_tril=torch.diag_embed(scale))
    return torch.distributions.kl_divergence(q, post)


# ---------------------------------------------------------------------- NUTS
@pytest.fixture(scope="module")
def nuts_run():
    """NUTS on two images of the correlated model (run once for the module)."""
    pyro.clear_param_store()
    with float64():
        vae = correlated_vae()
        x = data_from(vae, 2)
        params = [p.detach().clone() for p in vae.parameters()]
        idata = nuts_posterior(vae, x, NUTSConfig(chains=2, draws=300, warmup=150, seed=0),
                               examples=[5, 7])
    # read here: the autouse fixture clears the store before each test
    store = list(pyro.get_param_store().keys())
    return vae, x, idata, (params, store)


def test_nuts_matches_the_exact_posterior(nuts_run):
    """Means and covariances of the draws agree with N(μ, Σ) within 4 Monte-Carlo errors.

    Each checked quantity is the average of a function f of the draws (z_j, or the centred
    product (z_j − μ_j)(z_k − μ_k)); ArviZ's ``mcse`` gives its Monte-Carlo standard error
    from the chains' effective sample size, so 4 × MCSE is a 4-sigma band per quantity
    (30 quantities: a false alarm has probability ≈ 30 × 6e-5).
    """
    vae, x, idata, _ = nuts_run
    post = vae.exact_posterior(x)
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "example", "z_dim") and z.shape == (2, 300, 2, Z)
    strong = 0
    for i, index in enumerate([5, 7]):
        draws = z.sel(example=index).values  # (chain, draw, Z)
        mu, cov = post.loc[i].detach().numpy(), post.covariance_matrix[i].detach().numpy()
        for j in range(Z):
            mcse = az.mcse(draws[..., j])
            assert abs(draws[..., j].mean() - mu[j]) < 4 * mcse, (index, j)
            for k in range(j, Z):
                prod = (draws[..., j] - mu[j]) * (draws[..., k] - mu[k])
                assert abs(prod.mean() - cov[j, k]) < 4 * az.mcse(prod), (index, j, k)
                if j != k and abs(cov[j, k]) > 4 * az.mcse(prod):
                    strong += 1
    # the correlations are large enough that a diagonal answer would fail the check above
    assert strong >= 2


def test_nuts_diagnostics_are_finite_and_good(nuts_run):
    _, _, idata, _ = nuts_run
    rows = nuts_diagnostics(idata)
    assert [r["example"] for r in rows] == [5, 7]
    for r in rows:
        assert np.isfinite([r["min_ess_bulk"], r["min_ess_tail"], r["max_r_hat"]]).all()
        assert r["min_ess_bulk"] > 100 and r["max_r_hat"] < 1.05 and r["divergences"] == 0
    summary = az.summary(idata, var_names=["z"])
    assert len(summary) == 2 * Z and np.isfinite(summary[["ess_bulk", "ess_tail", "r_hat"]].values).all()


def test_nuts_trains_nothing(nuts_run):
    """The decoder is frozen: weights unchanged, flags restored, the param store untouched."""
    vae, _, _, (before, store) = nuts_run
    for p, q in zip(vae.parameters(), before):
        assert torch.equal(p, q) and p.requires_grad
    assert vae.training
    assert store == []


def test_netcdf_round_trip(nuts_run, tmp_path):
    vae, x, idata, _ = nuts_run
    with float64():
        guide_idata = guide_posterior(vae, vae.guide, x, num_draws=50, examples=[5, 7])
    for name, data, groups in (
        ("nuts.nc", idata, {"posterior", "sample_stats", "log_likelihood", "observed_data"}),
        ("guide.nc", guide_idata, {"posterior", "sample_stats", "log_likelihood", "observed_data"}),
    ):
        path = atomic_netcdf(data, str(tmp_path / name))
        back = az.from_netcdf(path)
        assert set(back.groups()) == groups
        assert back.posterior["z"].dims == ("chain", "draw", "example", "z_dim")
        assert back.posterior["example"].values.tolist() == [5, 7]
        assert back.observed_data["x"].dims == ("example", "channel", "row", "column")
        assert back.log_likelihood["x"].dims == ("chain", "draw", "example")
        np.testing.assert_allclose(back.posterior["z"].values, data.posterior["z"].values)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# ---------------------------------------------------------------------- guide draws
def test_guide_draws_of_the_exact_guide():
    """q = p(z|x): every log weight is log p(x), and the draws have the posterior moments."""
    with float64():
        vae = diagonal_vae()
        x = data_from(vae, 3)
        idata = guide_posterior(vae, build_guide("gaussian", vae), x, num_draws=4000)
        post = vae.exact_posterior(x)
    lw = idata.sample_stats["log_weight"].values  # (1, S, B)
    np.testing.assert_allclose(lw, np.broadcast_to(vae.exact_log_prob(x).detach().numpy(), lw.shape),
                               atol=1e-9)
    z = idata.posterior["z"].values[0]  # (S, B, Z), independent draws
    sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().detach().numpy()
    se = sd / math.sqrt(len(z))  # standard error of a mean of S independent draws
    assert (abs(z.mean(0) - post.loc.detach().numpy()) < 4 * se).all()
    # sample sd: relative standard error ≈ 1 / sqrt(2 S)
    assert (abs(z.std(0) / sd - 1) < 4 / math.sqrt(2 * len(z))).all()


def test_psis_khat_separates_good_and_bad_proposals():
    """k̂ is small for the exact posterior perturbed slightly, large for a far too narrow q."""
    with float64():
        vae = correlated_vae()
        x = data_from(vae, 2)
        post = vae.exact_posterior(x)
        set_head(vae, post, loc_shift=0.0, scale_factor=1.5)  # wider than p: bounded weights
        wide = psis_khat(guide_posterior(vae, vae.guide, x, num_draws=2000))
        set_head(vae, post, loc_shift=0.0, scale_factor=0.3)  # much narrower: heavy tails
        narrow = psis_khat(guide_posterior(vae, vae.guide, x, num_draws=2000))
    assert all(k < 0.5 for k in wide.values()), wide
    assert all(k > 0.7 for k in narrow.values()), narrow


# ---------------------------------------------------------------------- gaps
def test_exact_guide_has_no_gaps():
    with float64():
        vae = diagonal_vae()
        x = data_from(vae, 2)
        gaps = inference_gaps(vae, vae.guide, x, iwae_samples=500,
                              local=LocalFitConfig(max_steps=600), examples=[3, 4])
        exact = vae.exact_log_prob(x).detach()
    for row, lp in zip(gaps["examples"], exact):
        # every importance weight of the exact guide is p(x): no Monte-Carlo error at all
        assert row["elbo_amortized"] == pytest.approx(float(lp), abs=1e-9)
        assert row["iwae_amortized"] == pytest.approx(float(lp), abs=1e-9)
        assert row["iwae_amortized_khat"] == 0.0 and row["iwae_amortized_se"] < 1e-6
        # IWAE-500 with q* (a hair off p(z|x)) as proposal: error ~ 1e-4; log_px is the max
        assert row["log_px"] == pytest.approx(float(lp), abs=0.005)
        # q* starts at the optimum; SGD noise may move it by a little (KL is quadratic there)
        assert abs(row["approximation_gap"]) < 0.01 and abs(row["amortization_gap"]) < 0.01
        assert row["approximation_gap"] + row["amortization_gap"] == pytest.approx(row["inference_gap"])
    assert gaps["mean"]["inference_gap"] == pytest.approx(0.0, abs=0.005)
    assert [r["example"] for r in gaps["examples"]] == [3, 4]
    assert "approx. gap" in format_gaps(gaps)


@pytest.mark.parametrize("method", ["gaussian", "copy"])
def test_local_fit_reaches_the_best_diagonal_gaussian(method):
    """q* of both constructions is N(μ, diag(1/Λ_jj)), the closed-form optimum.

    Tolerance 0.02 on means and sds: the posterior sds are 0.1–0.4, and at the optimum the
    ELBO is flat to second order, so a 0.02 error costs < 0.01 nats.
    """
    with float64():
        vae = correlated_vae()
        x = data_from(vae, 1)
        post = vae.exact_posterior(x)
        set_head(vae, post, loc_shift=0.3, scale_factor=1.3)
        q_star, info = fit_local_guide(vae, vae.guide, x, LocalFitConfig(method=method))
        q = q_star.distribution(x)
        prec = torch.linalg.inv(post.covariance_matrix)[0].detach()
    assert info["method"] == method and info["converged"], info
    assert isinstance(q_star, LocalGaussianGuide) == (method == "gaussian")
    np.testing.assert_allclose(q.mean[0].detach(), post.loc[0].detach(), atol=0.02)
    np.testing.assert_allclose(q.stddev[0].detach(), 1 / torch.diagonal(prec).sqrt(), atol=0.02)
    # the copy trained its own encoder, never the original one
    assert not any(p.requires_grad for p in q_star.parameters())


def exact_reference(vae, x, examples, draws=4000, seed=0):
    """Exact posterior draws in the layout of a NUTS InferenceData (1 chain)."""
    g = torch.Generator().manual_seed(seed)
    post = vae.exact_posterior(x)
    eps = torch.randn(draws, len(x), Z, generator=g)
    z = post.loc + (post.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    return az.from_dict(posterior={"z": z.detach().numpy()[None]}, dims={"z": ["example", "z_dim"]},
                        coords={"example": list(examples)})


def test_gaps_match_the_closed_forms():
    """Correlated posterior, amortized guide off by 0.3 in the mean and 1.3× in the sd."""
    with float64():
        vae = correlated_vae()
        x = data_from(vae, 2)
        post = vae.exact_posterior(x)
        set_head(vae, post, loc_shift=0.3, scale_factor=1.3)
        loc, scale = vae.encoder.loc_scale(vae.encoder.features(x))
        before = [p.detach().clone() for p in vae.parameters()]
        gaps = inference_gaps(vae, vae.guide, x, iwae_samples=5000, examples=[0, 1],
                              reference=exact_reference(vae, x, [0, 1]))
        log_px = vae.exact_log_prob(x).detach()
        approx_gap = diagonal_kl_optimum(post).detach()
        amort_kl = kl_to_posterior(loc, scale, post).detach()
    assert (approx_gap > 0.4).all()  # the family really costs something here
    for row, lp, ag, kl in zip(gaps["examples"], log_px, approx_gap, amort_kl):
        se_a, se_l = row["elbo_amortized_se"], row["elbo_local_se"]
        # ELBO[q] = log p(x) − KL(q ‖ p): 4 standard errors of the k-sample average
        assert row["elbo_amortized"] == pytest.approx(float(lp - kl), abs=4 * se_a)
        # q* is optimal up to the SVI tolerance (≤ 0.01 nats, see the test above)
        assert row["elbo_local"] == pytest.approx(float(lp - ag), abs=4 * se_l + 0.01)
        # The Student-t fitted to posterior draws is a reliable proposal (bounded weights,
        # small k̂); log p(x) is within 4 of its standard errors.
        assert row["iwae_reference_khat"] < 0.5
        assert row["log_px_from"] in ("reference", "amortized")
        se_px = row[f"iwae_{row['log_px_from']}_se"]
        assert se_px < 0.03
        assert row["log_px"] == pytest.approx(float(lp), abs=4 * se_px)
        assert row["approximation_gap"] == pytest.approx(float(ag), abs=4 * (se_l + se_px) + 0.01)
        assert row["amortization_gap"] == pytest.approx(float(kl - ag), abs=4 * (se_a + se_l) + 0.01)
        assert row["amortization_gap"] > 0.1
    for p, q in zip(vae.parameters(), before):  # the amortized guide itself is untouched
        assert torch.equal(p, q)
    assert list(pyro.get_param_store().keys()) == []


def test_gaps_of_a_briefly_trained_model_are_non_negative(small_data):
    from pyro_vae.infer.trainer import TrainConfig, Trainer

    vae = build_vae("dense", small_data.x_shape, z_dim=4, hidden=(64,))
    guide = build_guide("gaussian", vae)
    trainer = Trainer(vae, guide, small_data, TrainConfig(epochs=3, batch_size=32))
    for _ in range(3):
        trainer.train_epoch()
    x = small_data.eval_data("test")[:2]
    gaps = inference_gaps(vae, guide, x, iwae_samples=1000, local=LocalFitConfig(max_steps=500))
    for row in gaps["examples"]:
        se_a, se_l = row["elbo_amortized_se"], row["elbo_local_se"]
        # 4 standard errors of the ELBO averages; the IWAE-1000 estimate's own error is
        # below them (it is at least the ELBO of the same draws up to their spread).
        assert row["approximation_gap"] > -4 * se_l
        assert row["amortization_gap"] > -4 * math.hypot(se_a, se_l)
        assert row["log_px"] >= row["elbo_amortized"]


def test_frozen_restores_flags_and_modes(tiny_vae):
    next(tiny_vae.parameters()).requires_grad_(False)
    flags = [p.requires_grad for p in tiny_vae.parameters()]
    with frozen(tiny_vae, tiny_vae.guide, None):
        assert not any(p.requires_grad for p in tiny_vae.parameters())
        assert not tiny_vae.training
    assert [p.requires_grad for p in tiny_vae.parameters()] == flags and tiny_vae.training


# ---------------------------------------------------------------------- the settings
def test_the_settings_are_one_torch_free_dataclass_each():
    """NUTSConfig and LocalFitConfig live beside TrainConfig, importable without torch (the
    command line derives the posterior flags from them) and, as before, from nuts.py and
    gaps.py."""
    assert NUTSConfig is settings.NUTSConfig and LocalFitConfig is settings.LocalFitConfig
    code = ("import sys\n"
            "from pyro_vae.infer.config import LocalFitConfig, NUTSConfig\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_posterior_flags_and_their_defaults_are_declared_once():
    cli = {f.metadata.get("flag") or "--" + f.name.replace("_", "-"): f.default
           for cls in (NUTSConfig, LocalFitConfig) for f in dataclasses.fields(cls) if f.metadata["cli"]}
    assert cli == {"--chains": 4, "--draws": 500, "--warmup": 500, "--max-tree-depth": 10, "--jit": False,
                   "--local-method": "auto", "--local-steps": 3000, "--local-lr": 0.01}
    assert not {f.name: f for f in dataclasses.fields(NUTSConfig)}["seed"].metadata["cli"]  # shared


@pytest.mark.parametrize("build, params, fragment", [
    (lambda: NUTSConfig(chains=1), ("chains",), "chains=1 (must be ≥ 2, for R-hat, and ≤ 64)"),
    (lambda: NUTSConfig(draws=0, warmup=-1), ("draws", "warmup"), "draws=0"),
    (lambda: LocalFitConfig(lr=-1.0), ("lr",), "lr=-1.0 (must be > 0)"),
    (lambda: LocalFitConfig(method="newton"), ("method",), "unknown local-guide method 'newton'"),
    (lambda: NUTSConfig(chains="4"), ("chains",), "must be an integer"),
])
def test_the_settings_check_their_ranges_and_name_the_parameters(build, params, fragment):
    with pytest.raises(ConfigError) as err:
        build()
    assert fragment in str(err.value) and err.value.params == params


def test_iwae_samples_of_the_gaps_must_be_positive(tiny_vae):
    with pytest.raises(ConfigError, match="iwae_samples must be an integer ≥ 1, got 0") as err:
        inference_gaps(tiny_vae, tiny_vae.guide, torch.zeros(1, *tiny_vae.x_shape), iwae_samples=0)
    assert err.value.params == ("iwae_samples",)


# ---------------------------------------------------------------------- latent usage
def test_latent_usage_exact_and_sampled_agree_on_active_units():
    """Dimension 2 has decoder scale 0.005: its posterior is the prior, so it is inactive."""
    with float64():
        vae = diagonal_vae(scales=(2.0, 1.0, 0.005))
        x = data_from(vae, 2000)
        exact = latent_usage(vae, vae.guide, x)
        identity_flow = build_guide("realnvp", vae)  # starts exactly at the Gaussian guide
        sampled = latent_usage(vae, identity_flow, x, num_samples=64)
        post = vae.exact_posterior(x)
    mu, sd = post.loc.detach(), post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().detach()
    kl = (0.5 * (mu**2 + sd**2 - 1) - sd.log()).mean(0)  # KL(N(μ, σ²) ‖ N(0, 1)) per dim
    assert exact["method"] == "exact" and sampled["method"] == "moment-matched"
    np.testing.assert_allclose(exact["kl_per_dim"], kl, rtol=1e-9)
    np.testing.assert_allclose(exact["activity"], mu.var(0), rtol=1e-9)
    assert exact["active"] == [True, True, False] and exact["active_units"] == 2
    assert sampled["active"] == [True, True, False] and sampled["active_units"] == 2
    # sampled moments: 64 draws per image, 2000 images — errors of a few 1e-3
    np.testing.assert_allclose(sampled["activity"], exact["activity"], atol=0.01)
    np.testing.assert_allclose(sampled["kl_per_dim"], exact["kl_per_dim"], atol=0.02)
    assert abs(sampled["activity"][2]) < 0.002


# ---------------------------------------------------------------------- the command
def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def z2_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "z2")
    assert main(["train", "--epochs", "2", "--out", run, "--train-size", "200", "--test-size",
                 "40", "--set", "hidden=[32]", "--z-dim", "2", "--iwae-samples", "10",
                 "--no-progress", "--batch-size", "50"]) == 0
    return run


def test_posterior_command_writes_everything(z2_run, capsys):
    code, out, err = run_cli(capsys, "posterior", z2_run, "--index", "0", "3", "--chains", "2",
                             "--draws", "40", "--warmup", "40", "--iwae-samples", "200",
                             "--local-steps", "300", "--no-progress")
    assert code == 0, err
    assert "approx. gap" in out and "R-hat" in out and "active units" in out
    post = os.path.join(z2_run, "posterior")
    for name in ("nuts.nc", "guide.nc", "nuts_summary.csv", "gaps.json", "diagnostics.json",
                 "latent_usage.json", "marginals_0.png", "marginals_3.png", "traversal_0.png",
                 "traversal_3.png", "manifold.png", "latent_means.png"):
        assert os.path.isfile(os.path.join(post, name)), name
    nuts = az.from_netcdf(os.path.join(post, "nuts.nc"))
    assert nuts.posterior["z"].shape == (2, 40, 2, 2)
    assert nuts.posterior["example"].values.tolist() == [0, 3]
    gaps = json.load(open(os.path.join(post, "gaps.json")))
    assert [r["example"] for r in gaps["examples"]] == [0, 3] and gaps["iwae_samples"] == 200
    diag = json.load(open(os.path.join(post, "diagnostics.json")))["examples"]
    assert all(np.isfinite([r["min_ess_bulk"], r["max_r_hat"], r["psis_khat"]]).all() for r in diag)
    usage = json.load(open(os.path.join(post, "latent_usage.json")))
    assert usage["num_examples"] == 40 and len(usage["kl_per_dim"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--index", "40"], "40 is out of range"),
    (["--index", "-1"], "out of range"),
    (["--index", "1", "1"], "distinct"),
    (["--chains", "1"], "chains"),
    (["--draws", "0"], "draws"),
    (["--local-method", "newton"], "unknown local-guide method"),
    (["--split", "validation"], "unknown split"),
])
def test_posterior_command_refuses_bad_input(z2_run, capsys, args, message):
    code, out, err = run_cli(capsys, "posterior", z2_run, "--no-progress", *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_posterior_command_on_a_missing_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "posterior", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
