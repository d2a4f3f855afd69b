"""Guides q_φ(z | x): each registers itself in :data:`GUIDES` when its module is imported."""

from .base import GUIDES, Guide, build_guide, register_guide
from .gaussian import GaussianGuide

__all__ = ["GUIDES", "Guide", "GaussianGuide", "build_guide", "register_guide"]
