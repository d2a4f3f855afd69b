"""``pyro-vae sample``: a grid of images drawn from a trained model."""

from __future__ import annotations

import os
from typing import Optional

import torch

from pyro_vae.errors import ConfigError

from .plots import save_grid
from .rundir import load_run


def sample_run(
    run_dir: str,
    n: int = 64,
    out: Optional[str] = None,
    seed: int = 0,
    device: str = "cpu",
    temperature: Optional[float] = None,
) -> str:
    """Write a grid of ``n`` images decoded from z ~ p(z) (for a flow model: samples at
    ``temperature``, z ~ N(0, T² I)); return the file's path."""
    if n < 1:
        raise ConfigError(f"--n must be positive, got {n}")
    if temperature is not None and not temperature > 0:
        raise ConfigError(f"--temperature must be positive, got {temperature}")
    model, _, _, _ = load_run(run_dir, device=device)
    if temperature is not None and model.has_latent:
        raise ConfigError("--temperature applies to flow models (nice, realnvp, glow) only")
    out = out or os.path.join(run_dir, "samples.png")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write {out}: directory {parent} does not exist")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images = model.generate(n, temperature)
    save_grid(images, out, nrow=max(1, int(round(n**0.5))))
    return out
