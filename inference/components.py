"""``pyro-vae list``: the registered components, one line per registry, and those that
installed packages register through entry points (:mod:`pyro_vae.plugins`)."""

from __future__ import annotations

from typing import Any

from pyro_vae import DATASETS, FLOW_MODELS, GUIDES, LIKELIHOODS, MODELS, PRIORS, plugins


def main(opts: Any = None, _: Any = None) -> int:
    """Print every registry's names (models, flow models, guides, priors, likelihoods,
    datasets), then the models, guides and datasets of installed packages."""
    for registry in (MODELS, FLOW_MODELS, GUIDES, PRIORS, LIKELIHOODS, DATASETS):
        print(f"{registry.kind}s: {', '.join(registry.names())}")
    for kind, group in plugins.GROUPS.items():
        found = plugins.entry_points(group)
        if found:
            names = ", ".join(f"{name} ({plugins.distribution_of(ep) or ep.value})" for name, ep in found.items())
            print(f"{kind}s of installed packages ({group}): {names}")
    print("a model, guide or dataset can also be named by import path: package.module:Name or file.py:Name")
    return 0
