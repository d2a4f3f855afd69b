"""Context managers the algorithms share: frozen networks, a private param store and RNG,
a number of threads; and per-item seeds."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import numpy as np
import pyro
import torch
from torch import Tensor, nn


def seed_from(*parts: int) -> int:
    """A 32-bit seed that differs for every tuple ``parts`` (numpy's SeedSequence hash), so
    that, e.g., image n's draws do not depend on which other images were asked for."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@contextlib.contextmanager
def frozen(*modules: Any) -> Iterator[None]:
    """Put modules in eval mode with ``requires_grad=False``; restore both on exit.

    ``pyro.module`` registers only parameters that require gradients, so inside this
    context ``vae.model(x)`` adds nothing to Pyro's param store and MCMC or SVI on it can
    move the latent variables only; evaluation runs in it too. ``None`` and non-modules are
    ignored.
    """
    saved = []
    for m in modules:
        if not isinstance(m, nn.Module):
            continue
        saved.append((m, m.training, [(p, p.requires_grad) for p in m.parameters()]))
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    try:
        yield
    finally:
        # reverse order: a parameter shared by two modules ends with its first-seen flag
        for m, training, flags in reversed(saved):
            m.train(training)
            for p, flag in flags:
                p.requires_grad_(flag)


@contextlib.contextmanager
def num_threads(n: Optional[int]) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (``None``: unchanged); restore afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def isolated(x: Tensor, seed: Optional[int]) -> Iterator[None]:
    """A private param store and a forked torch RNG (on ``x``'s device too), seeded with
    ``seed`` unless it is ``None``: nothing done inside changes the caller's state."""
    devices = [x.device] if x.device.type == "cuda" else []
    with pyro.get_param_store().scope(), torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
