"""Network building blocks (no probabilistic code lives here)."""

from .mlp import MLP

__all__ = ["MLP"]
