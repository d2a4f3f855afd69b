"""``pyro-vae sample``: a grid of images drawn from a trained model."""

from __future__ import annotations

import os
from typing import Optional

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.options import check_int, check_positive

from .config import MAX_SAMPLES
from .plots import save_grid
from .rundir import check_run_output, load_run


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
