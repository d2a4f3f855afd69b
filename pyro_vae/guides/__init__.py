"""Guides q_φ(z | x): each registers itself in :data:`GUIDES` when its module is imported."""

from .base import GUIDES, Guide, build_guide, register_guide
from .gaussian import GaussianGuide  # noqa: I001 (first: the registry lists the default first)
from .flows import FlowGuide

__all__ = ["GUIDES", "FlowGuide", "Guide", "GaussianGuide", "build_guide", "register_guide"]
