"""Guides q_φ(z | x): every module of this package registers its guides in :data:`GUIDES`
when imported, and the package imports all of them (a new guide is one new file)."""

from ..registry import import_submodules
from .base import GUIDES, GaussianGuide, Guide, JointGuide, build_guide

import_submodules(__name__)

__all__ = ["GUIDES", "GaussianGuide", "Guide", "JointGuide", "build_guide"]
