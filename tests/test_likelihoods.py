"""Likelihoods: normalisation over their finite supports, sampling against log_prob, the
discretized logistic against an independent float64 reference, shapes, support checks."""

import itertools
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from scipy import stats

from pyro_vae import LIKELIHOODS, ConfigError, build_likelihood
from pyro_vae.distributions import DiscretizedLogisticMixture, num_coeffs

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # the data convention: x = k / 255


def random_mixture(k=3, c=1, h=1, w=1, batch=(), scale=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return DiscretizedLogisticMixture(
        logits=randn(*batch, k, h, w),
        locs=0.6 * randn(*batch, k, c, h, w),
        log_scales=math.log(scale) + 0.5 * randn(*batch, k, c, h, w),
        coeffs=0.5 * randn(*batch, k, num_coeffs(c), h, w),
    )


def all_images(c):
    """Every 8-bit image of shape (c, 1, 1): (256^c, c, 1, 1)."""
    grids = torch.meshgrid(*([LEVELS] * c), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1).reshape(-1, c, 1, 1)


# ---------------------------------------------------------------------- normalisation
def test_logistic_sums_to_one_per_grey_pixel_including_extreme_parameters():
    # 8 parameter settings, one per batch entry: ordinary, tiny and huge scales, locations
    # far outside [-1, 1] (all mass in an edge bin) and exactly on a level.
    locs = torch.tensor([0.0, -0.3, 0.7, -5.0, 5.0, 2 * 100 / 255 - 1, 0.1, -1.0], dtype=torch.float64)
    log_scales = torch.tensor([0.0, -3.0, -7.0, -2.0, -2.0, -10.0, 3.0, -5.0], dtype=torch.float64)
    d = DiscretizedLogisticMixture(
        logits=torch.zeros(8, 1, 1, 1, dtype=torch.float64),
        locs=locs.reshape(8, 1, 1, 1, 1),
        log_scales=log_scales.reshape(8, 1, 1, 1, 1),
    )
    lp = d.log_prob(LEVELS.reshape(256, 1, 1, 1, 1))  # (256, 8)
    assert lp.shape == (256, 8) and torch.isfinite(lp).all()
    # a telescoping sum of CDF differences: exact up to float64 rounding of 256 terms
    assert torch.allclose(lp.exp().sum(0), torch.ones(8, dtype=torch.float64), atol=1e-12)
    # where the location is far outside, the edge bins hold (almost) everything
    assert lp[0, 3] > -1e-9 and lp[255, 4] > -1e-9
    assert lp[100, 5] > -1e-6  # a tiny scale centred on level 100


def test_logistic_mixture_sums_to_one_in_float32():
    d = random_mixture(k=4, batch=(5,), dtype=torch.float32)
    total = d.log_prob(LEVELS.float().reshape(256, 1, 1, 1, 1)).exp().sum(0)
    assert torch.allclose(total, torch.ones(5), atol=1e-5)  # 256 float32 terms


def test_logistic_sums_to_one_over_all_two_channel_images():
    """The full joint of 2 channels (65,536 images): exercises the channel coefficient."""
    d = random_mixture(k=3, c=2, seed=1)
    assert d.coeffs.abs().min() > 0
    total = d.log_prob(all_images(2)).exp().sum()
    assert abs(float(total) - 1.0) < 1e-10


def test_logistic_sums_to_one_over_a_small_image():
    """All 65,536 images of shape (1, 1, 2): the per-pixel log-probabilities add up right."""
    d = random_mixture(k=2, c=1, h=1, w=2, seed=2)
    grids = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    x = torch.stack([g.reshape(-1) for g in grids], -1).reshape(-1, 1, 1, 2)
    assert abs(float(d.log_prob(x).exp().sum()) - 1.0) < 1e-10


def test_bernoulli_sums_to_one_over_all_binary_images():
    lik = build_likelihood("bernoulli", (1, 2, 2))
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).reshape(16, 1, 2, 2)
    logits = torch.randn(1, 2, 2)
    assert torch.allclose(lik(logits).log_prob(x).exp().sum(), torch.tensor(1.0), atol=1e-6)


# ---------------------------------------------------------------------- against a reference
def reference_log_prob(d, x):
    """Independent float64 reference: scipy's logistic CDF, explicit channel order R, G|R, B|R,G."""
    logits, locs, log_scales, coeffs = (t.detach().numpy() for t in (d.logits, d.locs, d.log_scales, d.coeffs))
    k_comp, c_dim, h_dim, w_dim = locs.shape
    pairs = [(c, j) for c in range(c_dim) for j in range(c)]  # (1,0), (2,0), (2,1)
    out = np.zeros(len(x))
    for n, img in enumerate(x.numpy()):
        total = 0.0
        for h, w in itertools.product(range(h_dim), range(w_dim)):
            levels = np.round(img[:, h, w] * 255)
            y = 2 * levels / 255 - 1
            log_pi = logits[:, h, w] - np.logaddexp.reduce(logits[:, h, w])
            per_comp = []
            for k in range(k_comp):
                lp = log_pi[k]
                for c in range(c_dim):
                    mu = locs[k, c, h, w] + sum(coeffs[k, i, h, w] * y[j] for i, (cc, j) in enumerate(pairs) if cc == c)
                    s = math.exp(log_scales[k, c, h, w])
                    hi, lo = y[c] + 1 / 255, y[c] - 1 / 255
                    if y[c] < mu:  # lower tail: difference of CDFs is accurate
                        p = (1.0 if levels[c] == 255 else stats.logistic.cdf(hi, mu, s)) - (
                            0.0 if levels[c] == 0 else stats.logistic.cdf(lo, mu, s))
                    else:  # upper tail: difference of survival functions
                        p = (1.0 if levels[c] == 0 else stats.logistic.sf(lo, mu, s)) - (
                            0.0 if levels[c] == 255 else stats.logistic.sf(hi, mu, s))
                    lp += math.log(p)
                per_comp.append(lp)
            total += np.logaddexp.reduce(per_comp)
        out[n] = total
    return torch.from_numpy(out)


def test_logistic_matches_an_independent_reference_in_colour():
    d = random_mixture(k=3, c=3, h=2, w=2, scale=0.1, seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 2, 2), generator=g).double() / 255
    x[0] = 0.0  # both edge bins appear
    x[1] = 1.0
    # moderate scales keep the naive CDF difference of the reference accurate to ~1e-12
    assert torch.allclose(d.log_prob(x), reference_log_prob(d, x), rtol=1e-9, atol=1e-9)


def test_logistic_log_prob_is_finite_with_gradients_at_extreme_scales():
    lik = build_likelihood("logistic", (1, 1, 1), num_mixtures=1)
    for raw_log_scale in (-30.0, -7.0, 6.0):
        for loc in (-3.0, 0.0, 0.5, 3.0):
            params = torch.tensor([0.0, loc, raw_log_scale]).reshape(3, 1, 1).requires_grad_()
            lp = lik(params).log_prob(LEVELS.float().reshape(256, 1, 1, 1))
            assert torch.isfinite(lp).all(), (raw_log_scale, loc)
            lp.sum().backward()
            assert torch.isfinite(params.grad).all(), (raw_log_scale, loc)


# ---------------------------------------------------------------------- sampling
def chi_square_p_value(observed, expected):
    """Pearson's test with cells of expected count < 5 pooled (the usual validity rule)."""
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    statistic = ((obs - exp) ** 2 / exp).sum()
    return stats.chi2.sf(statistic, len(obs) - 1)


def test_logistic_samples_follow_log_prob_grey():
    torch.manual_seed(0)
    d = random_mixture(k=3, scale=0.3, seed=4)
    n = 100_000
    x = d.sample((n,))
    assert x.shape == (n, 1, 1, 1)
    counts = np.bincount(torch.round(x.reshape(-1) * 255).long().numpy(), minlength=256)
    probs = d.log_prob(LEVELS.reshape(256, 1, 1, 1)).exp().numpy()
    # fixed seed, so deterministic; a correct sampler fails this with probability 1e-3
    assert chi_square_p_value(counts, n * probs) > 1e-3


def test_logistic_samples_follow_log_prob_colour():
    """Joint of (R, G, B) on a box of 40³ levels fixed in advance, plus the cell "outside"."""
    torch.manual_seed(1)
    y = lambda level: 2 * level / 255 - 1  # noqa: E731  (level → the [-1, 1] scale)
    d = DiscretizedLogisticMixture(
        logits=torch.tensor([0.3, -0.2], dtype=torch.float64).reshape(2, 1, 1),
        locs=torch.tensor([[y(122), y(126), y(131)], [y(133), y(128), y(124)]],
                          dtype=torch.float64).reshape(2, 3, 1, 1),
        log_scales=torch.full((2, 3, 1, 1), math.log(0.01), dtype=torch.float64),  # 1.3 levels
        coeffs=torch.tensor([[0.3, -0.2, 0.4], [-0.4, 0.5, 0.2]], dtype=torch.float64).reshape(2, 3, 1, 1),
    )
    lo, hi = 108, 148
    grids = torch.meshgrid(*[torch.arange(lo, hi, dtype=torch.float64)] * 3, indexing="ij")
    box = torch.stack([g.reshape(-1) for g in grids], -1)  # (40³, 3) levels
    probs = d.log_prob(box.reshape(-1, 3, 1, 1) / 255).exp().numpy()
    outside = 1.0 - probs.sum()
    assert 0 <= outside < 1e-3  # the box holds nearly all the mass (a check of the setup)
    n = 50_000
    levels = torch.round(d.sample((n,)).reshape(n, 3) * 255).long()
    inside = ((levels >= lo) & (levels < hi)).all(-1)
    index = ((levels[inside] - lo) * torch.tensor([40 * 40, 40, 1])).sum(-1)
    counts = np.bincount(index.numpy(), minlength=len(box))
    observed = np.append(counts, int((~inside).sum()))
    expected = n * np.append(probs, outside)
    assert chi_square_p_value(observed, expected) > 1e-3


def test_logistic_samples_condition_on_the_discretized_earlier_channel():
    """log_prob conditions G on the *level* of R; so must sample (PixelCNN++'s sampler used
    the continuous R). R sits at level 100.4 with a tiny scale, so it is always level 100;
    G's mean is then m + y(100) (level 150.3 → 150), not m + y(100.4) (150.7 → 151)."""
    y = lambda level: 2 * level / 255 - 1  # noqa: E731
    d = DiscretizedLogisticMixture(
        logits=torch.zeros(1, 1, 1, dtype=torch.float64),
        locs=torch.tensor([y(100.4), y(150.3) - y(100)], dtype=torch.float64).reshape(1, 2, 1, 1),
        log_scales=torch.full((1, 2, 1, 1), -12.0, dtype=torch.float64),
        coeffs=torch.ones(1, 1, 1, 1, dtype=torch.float64),
    )
    x = torch.round(d.sample((100,)) * 255).reshape(100, 2)
    assert (x == torch.tensor([100.0, 150.0])).all()
    assert d.log_prob(torch.tensor([100.0, 150.0]).reshape(2, 1, 1) / 255) > -1e-6


def one_pixel(d, b, h, w, channels=slice(None)):
    """The distribution of pixel (h, w) of batch entry b, as a (C, 1, 1) image."""
    return DiscretizedLogisticMixture(
        d.logits[b, :, h : h + 1, w : w + 1], d.locs[b, :, channels, h : h + 1, w : w + 1],
        d.log_scales[b, :, channels, h : h + 1, w : w + 1],
    )


def test_logistic_mean_is_within_half_a_level_of_the_expected_level():
    """``mean`` is E[clamp(Y, −1, 1)] in closed form; rounding moves a value by ≤ 1/510."""
    d = random_mixture(k=3, c=1, h=2, w=3, batch=(2,), scale=0.05, seed=6)
    worst = 0.0
    for b, h, w in itertools.product(range(2), range(2), range(3)):
        p = one_pixel(d, b, h, w).log_prob(LEVELS.reshape(256, 1, 1, 1)).exp()
        worst = max(worst, float((d.mean[b, 0, h, w] - (p * LEVELS).sum()).abs()))
    assert worst <= 1 / 510


def test_logistic_mean_closed_form_matches_numerical_integration():
    """E[clamp(Y, −1, 1)] of one logistic against scipy's quadrature of the clamped variable."""
    from scipy import integrate

    for mu, s in [(0.2, 0.3), (-0.9, 0.05), (1.4, 0.5), (0.0, 3.0)]:
        d = DiscretizedLogisticMixture(
            torch.zeros(1, 1, 1, dtype=torch.float64),
            torch.full((1, 1, 1, 1), mu, dtype=torch.float64),
            torch.full((1, 1, 1, 1), math.log(s), dtype=torch.float64),
        )
        inside, _ = integrate.quad(lambda t: t * stats.logistic.pdf(t, mu, s), -1, 1, epsabs=1e-12)
        clamped = inside - stats.logistic.cdf(-1, mu, s) + stats.logistic.sf(1, mu, s)
        assert float(d.mean) == pytest.approx((clamped + 1) / 2, abs=1e-9)


def test_logistic_mean_of_independent_colour_channels_is_each_channels_mean():
    d = random_mixture(k=2, c=3, seed=7, batch=(1,))
    d.coeffs = torch.zeros_like(d.coeffs)  # independent channels: the plug-in rule is exact
    for c in range(3):  # marginal of channel c: a one-channel mixture with the same weights
        assert torch.allclose(d.mean[0, c], one_pixel(d, 0, 0, 0, slice(c, c + 1)).mean[0], atol=1e-12)


# ---------------------------------------------------------------------- shapes and Pyro
def test_logistic_broadcasts_over_leading_dimensions():
    lik = build_likelihood("logistic", (3, 4, 5), num_mixtures=2)
    assert lik.param_shape == (2 * 10, 4, 5)  # 10 K channels for RGB, as in PixelCNN++
    params = torch.randn(3, 7, *lik.param_shape)  # particles × batch
    d = lik(params)
    assert d.batch_shape == (3, 7) and d.event_shape == (3, 4, 5)
    x = torch.randint(0, 256, (7, 3, 4, 5)).float() / 255
    lp = d.log_prob(x)
    assert lp.shape == (3, 7)
    assert torch.allclose(lp[2, 4], lik(params[2, 4]).log_prob(x[4]), atol=1e-5)
    assert d.sample((2,)).shape == (2, 3, 7, 3, 4, 5)
    assert d.expand((4, 3, 7)).log_prob(x).shape == (4, 3, 7)
    assert lik.mean(params).shape == (3, 7, 3, 4, 5)
    assert build_likelihood("logistic", (1, 28, 28)).param_shape == (15, 28, 28)


def test_logistic_in_a_pyro_model_checks_its_support():
    lik = build_likelihood("logistic", (1, 2, 2), num_mixtures=2)
    params = torch.zeros(3, *lik.param_shape)

    def model(x):
        with pyro.plate("data", 3):
            pyro.sample("x", lik(params), obs=x)

    levels = torch.randint(0, 256, (3, 1, 2, 2)).float() / 255
    with pyro.validation_enabled(True):
        tr = poutine.trace(model).get_trace(levels)
        assert tr.log_prob_sum().isfinite()
        off_lattice = poutine.trace(model).get_trace(levels + 0.3 / 255)  # not 8-bit levels
        with pytest.raises(ValueError, match="support"):
            off_lattice.log_prob_sum()


def test_bits_per_dim_of_a_discrete_likelihood_has_no_dequantization_term():
    d = 784
    logistic = build_likelihood("logistic", (1, 28, 28))
    gaussian = build_likelihood("gaussian", (1, 28, 28))
    assert logistic.dequantize is False and gaussian.dequantize is True
    assert logistic.bits_per_dim(d * math.log(256)) == pytest.approx(8.0)
    assert gaussian.bits_per_dim(0.0) == pytest.approx(8.0)  # density 1 on [0,1): 8 bits


def test_data_compatibility_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="logistic likelihood models grey levels, but the data are binarized"):
        build_likelihood("logistic", (1, 28, 28)).check_data(binary=True)
    with pytest.raises(ConfigError, match=r"grey levels \(gaussian, logistic\)"):
        build_likelihood("bernoulli", (1, 28, 28)).check_data(binary=False)
    build_likelihood("logistic", (1, 28, 28)).check_data(binary=False)
    with pytest.raises(ConfigError, match="num_mixtures"):
        build_likelihood("logistic", (1, 28, 28), num_mixtures=0)
    assert "logistic" in LIKELIHOODS


@pytest.mark.parametrize("name", ["bernoulli", "logistic"])
def test_the_pixelcnn_likelihood_checks_its_input_once_per_call(name, monkeypatch):
    """Under Pyro's validation the autoregressive likelihood checks the images against the
    per-pixel likelihood's support once, not once more inside that likelihood."""
    from pyro_vae.distributions import BernoulliImages
    from pyro_vae.nets.pixelcnn import GatedPixelCNN
    from pyro_vae.pixel_likelihood import PixelCNNDistribution

    lik = build_likelihood(name, (1, 3, 3), **({"num_mixtures": 2} if name == "logistic" else {}))
    net = GatedPixelCNN(1, lik.param_shape[0], cond_channels=2, channels=8, layers=2, kernel=3)
    calls = []
    for cls in (PixelCNNDistribution, BernoulliImages, DiscretizedLogisticMixture):
        def counted(self, value, original=cls._validate_sample):
            calls.append(type(self).__name__)
            return original(self, value)

        monkeypatch.setattr(cls, "_validate_sample", counted)
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.5))
    with pyro.validation_enabled(True):
        d = PixelCNNDistribution(net, torch.zeros(4, 2, 3, 3), lik)
        assert d.log_prob(x).shape == (4,)
        assert calls == ["PixelCNNDistribution"]
        with pytest.raises(ValueError, match="support"):
            d.log_prob(x + 0.3)  # neither binary nor 8-bit levels
