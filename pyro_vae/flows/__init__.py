"""Density flows over images (NICE, RealNVP, Glow) and the transforms they are built from.

Each flow registers itself in :data:`FLOW_MODELS` when its module is imported, and the
package imports all of its modules (a new flow is one new file). Flows are
Pyro programs with one observed site ``"x"`` and an empty guide, trained by the same SVI
loop as the VAEs (see :mod:`pyro_vae.flows.base`).
"""

from ..registry import import_submodules
from .base import FLOW_MODELS, EmptyGuide, FlowModel, build_flow_model

import_submodules(__name__)

from .glow import Glow  # noqa: E402  (registered above; re-exported here)
from .nice import NICE  # noqa: E402
from .realnvp import RealNVP  # noqa: E402
from .transforms import ActNorm, CheckerboardAffineCoupling, FactorOut, Squeeze, preprocessing  # noqa: E402

__all__ = [
    "FLOW_MODELS",
    "ActNorm",
    "CheckerboardAffineCoupling",
    "EmptyGuide",
    "FactorOut",
    "FlowModel",
    "Glow",
    "NICE",
    "RealNVP",
    "Squeeze",
    "build_flow_model",
    "preprocessing",
]
