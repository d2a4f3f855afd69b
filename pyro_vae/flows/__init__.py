"""Density flows over images (NICE, RealNVP, Glow) and the transforms they are built from.

Each flow registers itself in :data:`FLOW_MODELS` when its module is imported. Flows are
Pyro programs with one observed site ``"x"`` and an empty guide, trained by the same SVI
loop as the VAEs (see :mod:`pyro_vae.flows.base`).
"""

from .base import (
    FLOW_MODELS,
    DequantizedDensity,
    EmptyGuide,
    FlowModel,
    build_flow_guide,
    build_flow_model,
    model_kind,
    register_flow_model,
)
# imported in the order they are listed (registration order)
from .nice import NICE  # noqa: I001
from .realnvp import RealNVP
from .glow import Glow
from .transforms import ActNorm, CheckerboardAffineCoupling, FactorOut, Squeeze, preprocessing

__all__ = [
    "FLOW_MODELS",
    "ActNorm",
    "CheckerboardAffineCoupling",
    "DequantizedDensity",
    "EmptyGuide",
    "FactorOut",
    "FlowModel",
    "Glow",
    "NICE",
    "RealNVP",
    "Squeeze",
    "build_flow_guide",
    "build_flow_model",
    "model_kind",
    "preprocessing",
    "register_flow_model",
]
