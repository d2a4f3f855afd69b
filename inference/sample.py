"""``pyro-vae sample``: a grid of images drawn from a trained model, or the path decoded
between two test images (``--interpolate I J``)."""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from pyro_vae.errors import ConfigError
from pyro_vae.infer.usage import posterior_means
from pyro_vae.options import check_int, check_positive
from pyro_vae.priors import StandardNormalPrior

from .config import MAX_SAMPLES
from .plots import save_grid
from .rundir import check_run_output, load_data, load_run


def sample_run(
    run_dir: str,
    n: int = 64,
    out: Optional[str] = None,
    seed: int = 0,
    device: str = "cpu",
    temperature: Optional[float] = None,
) -> str:
    """Write a grid of ``n`` images decoded from z ~ p(z) (for a flow model: samples at
    ``temperature``, z ~ N(0, T² I)) to ``out`` (default ``RUN_DIR/samples.png``); return
    the file's path. ``out`` must be a writable ``.png`` path and no file of a run other
    than this run's ``samples.png``."""
    check_int(n, "--n", 1, MAX_SAMPLES)
    if temperature is not None:
        check_positive(temperature, "--temperature")
    out = out or os.path.join(run_dir, "samples.png")
    check_run_output(out, run_dir)
    model, _, _, _ = load_run(run_dir, device=device)
    if temperature is not None and model.has_latent:
        raise ConfigError("--temperature applies to flow models (nice, realnvp, glow) only")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images = model.generate(n, temperature)
    save_grid(images, out, nrow=max(1, int(round(n**0.5))))
    return out


def interpolate(a: Tensor, b: Tensor, steps: int, spherical: bool) -> Tensor:
    """``steps`` points from ``a`` to ``b`` (vectors of one size), both included:
    spherical (slerp, White 2016, arXiv:1609.04468 — it keeps the norm that Gaussian codes
    concentrate at, where a straight line passes through the improbable centre) or linear.

    Example:
        >>> interpolate(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 3, spherical=True)
        tensor([[1.0000, 0.0000],
                [0.7071, 0.7071],
                [0.0000, 1.0000]])
    """
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).unsqueeze(-1)
    if spherical:
        cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1.0, 1.0))
        if omega > 1e-4:  # (nearly) parallel codes: the straight line is the same path
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return (1 - t) * a + t * b


@torch.no_grad()
def interpolate_run(
    run_dir: str,
    i: int,
    j: int,
    steps: int = 10,
    out: Optional[str] = None,
    seed: int = 0,
    device: str = "cpu",
) -> str:
    """Decode the path between test images ``i`` and ``j``; write it as one row (image i,
    ``steps`` decoded points, image j) and return the file's path.

    A VAE goes from the posterior mean E_q[z | x_i] to E_q[z | x_j] (the guide's; sampled
    for a flow guide), spherically for the standard Normal prior and linearly for a learned
    one, and decodes each point (the mean of p(x | z); a draw for the pixel model). A
    density flow goes between its latents z = f(x), which are N(0, I) under the model, so
    spherically too, and inverts the flow exactly.
    """
    check_int(steps, "--steps", 2, MAX_SAMPLES)
    out = out or os.path.join(run_dir, f"interpolation_{i}_{j}.png")
    check_run_output(out, run_dir, own=(f"interpolation_{i}_{j}.png",))
    model, guide, config, _ = load_run(run_dir, device=device)
    data = load_data(run_dir, config.data)
    n = data.num_examples("test")
    for index in (i, j):
        if not 0 <= index < n:
            raise ConfigError(f"--interpolate {index}: the test split has {n} images (indices 0 to {n - 1})")
    x = data.eval_data("test", dequantize=model.dequantize)[[i, j]].to(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if model.has_latent:
            z = posterior_means(model, guide, x, seed=seed)
            path = interpolate(z[0], z[1], steps, spherical=isinstance(model.prior, StandardNormalPrior))
            images = model.decode(path)
        else:
            z = model.encode(x)
            path = interpolate(z[0].flatten(), z[1].flatten(), steps, spherical=True)
            images = model.decode(path.reshape(steps, *z.shape[1:])).clamp(0.0, 1.0)
    save_grid(torch.cat([x[:1], images, x[1:]]), out, nrow=steps + 2)
    return out
