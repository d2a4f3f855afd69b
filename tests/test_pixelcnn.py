"""The gated PixelCNN and its autoregressive distribution: exact properties on tiny images."""

import itertools

import pytest
import torch
from scipy import stats

from pyro_vae.likelihoods import build_likelihood
from pyro_vae.nets.pixelcnn import GatedPixelCNN
from pyro_vae.pixel_likelihood import PixelCNNDistribution


def randomized(net: GatedPixelCNN, scale: float = 0.5) -> GatedPixelCNN:
    """Perturb every parameter so that no dependency is hidden by a zero weight."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


@pytest.mark.parametrize("layers, kernel", [(1, 3), (3, 3), (2, 5)])
def test_autoregressive_property_and_no_blind_spot(layers, kernel):
    """The parameters of pixel (r, c) depend on exactly the pixels the design says.

    With L layers and half = k // 2 that is row r, columns c − L·half − 1 … c − 1 (the
    horizontal stack) and rows r − 1 − L·half … r − 1, columns c − L·half … c + L·half (the
    vertical stack, a full rectangle: no blind spot up and to the right). In particular
    nothing at or after (r, c) in raster order, i.e. d params(i) / d x_j = 0 for j ≥ i.
    """
    torch.manual_seed(0)
    h, w = 7, 8
    net = randomized(GatedPixelCNN(2, 3, cond_channels=2, channels=8, layers=layers, kernel=kernel)).double()
    x = torch.randn(1, 2, h, w, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, h, w, dtype=torch.float64)
    out = net(x, s)
    reach = layers * (kernel // 2)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for r, c in itertools.product(range(h), range(w)):
        (g,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
        seen = g[0].abs().sum(0) > 0
        left = (rows == r) & (cols >= c - reach - 1) & (cols <= c - 1)
        above = (rows >= r - 1 - reach) & (rows <= r - 1) & ((cols - c).abs() <= reach)
        assert torch.equal(seen, left | above), (r, c)
        assert not seen[rows * w + cols >= r * w + c].any()


def tiny(cond_channels=3, seed=0, channels=8, layers=3):
    torch.manual_seed(seed)
    lik = build_likelihood("bernoulli", (1, 3, 3))
    net = randomized(GatedPixelCNN(1, 1, cond_channels, channels=channels, layers=layers, kernel=3), 1.0)
    return lik, net


def all_binary_images(h=3, w=3):
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=h * w)), dtype=torch.float64)
    return bits.reshape(-1, 1, h, w)


def test_exact_normalisation_on_3x3_binary_images():
    """Σ over all 512 binary 3×3 images of p(x | s) = 1 within 1e-6, in float64."""
    lik, net = tiny()
    net = net.double()
    s = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    d = PixelCNNDistribution(net, s, lik)
    images = all_binary_images()[:, None]  # (512, 1, 1, 3, 3): broadcast against batch (2,)
    log_p = d.log_prob(images)
    assert log_p.shape == (512, 2)
    total = torch.logsumexp(log_p, dim=0).exp()
    assert torch.allclose(total, torch.ones(2, dtype=torch.float64), atol=1e-6), total


@pytest.mark.parametrize("cache", [True, False])
def test_samples_follow_exp_log_prob(cache):
    """Chi-square test of 40,000 samples against the exact probabilities of all 512 images."""
    lik, net = tiny(seed=1)
    s = torch.randn(1, 3, 3, 3)
    d = PixelCNNDistribution(net, s[0], lik, cache=cache)
    images = all_binary_images().float()
    probs = d.log_prob(images).detach().exp().double()
    probs = probs / probs.sum()  # float32 round-off only
    torch.manual_seed(2)
    n = 40_000
    x = d.sample((n,))
    codes = (x.reshape(n, 9) * (2 ** torch.arange(8, -1, -1))).sum(1).long()
    counts = torch.bincount(codes, minlength=512).double()
    expected = probs * n
    # pool the rare images so every bin expects ≥ 5 (the chi-square approximation's rule)
    order = torch.argsort(expected)
    keep = expected[order] >= 5
    pooled_obs = torch.cat([counts[order][keep], counts[order][~keep].sum().reshape(1)])
    pooled_exp = torch.cat([expected[order][keep], expected[order][~keep].sum().reshape(1)])
    result = stats.chisquare(pooled_obs.numpy(), pooled_exp.numpy())
    assert result.pvalue > 1e-3, result  # fixed seed; a real mismatch gives p ≈ 0


def test_cached_sampling_equals_the_naive_sampler():
    """The fast sampler (windows, cached conditioning) draws exactly what the naive one draws."""
    torch.manual_seed(3)
    net = randomized(GatedPixelCNN(1, 1, cond_channels=2, channels=8, layers=4, kernel=5), 0.3)
    s = torch.randn(5, 2, 9, 11)
    draw = lambda p: torch.bernoulli(torch.sigmoid(p))  # noqa: E731
    torch.manual_seed(4)
    fast = net.sample(s, (1, 9, 11), draw, cache=True)
    torch.manual_seed(4)
    slow = net.sample(s, (1, 9, 11), draw, cache=False)
    assert torch.equal(fast, slow)


def test_log_prob_broadcasts_over_particles():
    lik, net = tiny()
    cond = torch.randn(4, 2, 3, 3, 3)  # (particles, batch, S, H, W)
    d = PixelCNNDistribution(net, cond, lik)
    x = torch.bernoulli(torch.full((2, 1, 3, 3), 0.5))
    lp = d.log_prob(x)
    assert lp.shape == (4, 2)
    one = PixelCNNDistribution(net, cond[1, 0], lik).log_prob(x[0])
    assert torch.allclose(lp[1, 0], one)
    assert d.expand((4, 2)).batch_shape == (4, 2)
    assert d.sample().shape == (4, 2, 1, 3, 3)


@pytest.mark.parametrize("x_shape", [(1, 1, 2), (2, 1, 1)])
def test_exact_normalisation_with_the_discretized_logistic(x_shape):
    """8-bit data: Σ over all 256² images of p(x | s) = 1 (two pixels in raster order, or the
    two channels of one pixel in their conditional order), in float64."""
    torch.manual_seed(5)
    lik = build_likelihood("logistic", x_shape, num_mixtures=2)
    net = randomized(GatedPixelCNN(x_shape[0], lik.param_shape[0], 2, channels=8, layers=2, kernel=3), 0.5).double()
    s = torch.randn(2, *x_shape[1:], dtype=torch.float64)
    d = PixelCNNDistribution(net, s, lik)
    levels = torch.arange(256, dtype=torch.float64) / 255
    grid = torch.cartesian_prod(levels, levels).reshape(-1, *x_shape)
    with torch.no_grad():
        total = torch.logsumexp(d.log_prob(grid), 0).exp()
    assert abs(float(total) - 1.0) < 1e-6, float(total)
