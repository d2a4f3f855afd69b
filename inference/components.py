"""``pyro-vae list``: the registered components, one line per registry."""

from __future__ import annotations

from typing import Any

from pyro_vae import DATASETS, FLOW_MODELS, GUIDES, LIKELIHOODS, MODELS, PRIORS


def main(opts: Any = None, _: Any = None) -> int:
    """Print every registry's names (models, flow models, guides, priors, likelihoods, datasets)."""
    for registry in (MODELS, FLOW_MODELS, GUIDES, PRIORS, LIKELIHOODS, DATASETS):
        print(f"{registry.kind}s: {', '.join(registry.names())}")
    return 0
