"""Conditional normalizing-flow transforms that Pyro lacks, written in Pyro's own pattern.

Each family follows the four parts of ``pyro/distributions/transforms/``: a conditioned
``Transform`` holding the math, a ``TransformModule`` holding free parameters, a
``ConditionalTransformModule`` whose ``condition(context)`` returns a *fresh* conditioned
transform (nothing stale is ever stored), and small factory functions.

* :mod:`.planar` — Pyro's planar flow with the invertibility reparametrisation shifted so
  that ``u = 0`` is the identity (Pyro's cannot start at the identity);
* :mod:`.additive_coupling` — NICE's additive, volume-preserving coupling (arXiv:1410.8516);
* :mod:`.sylvester` — amortized Sylvester flows, orthogonal / Householder / triangular
  (arXiv:1803.05649).
"""

from .additive_coupling import (
    AdditiveCoupling,
    ConditionalAdditiveCoupling,
    additive_coupling,
    conditional_additive_coupling,
)
from .planar import ConditionalPlanar, ConditionedPlanar, conditional_planar
from .sylvester import (
    ConditionalSylvester,
    ConditionedSylvester,
    Sylvester,
    conditional_sylvester,
    sylvester,
)

__all__ = [
    "AdditiveCoupling",
    "ConditionalAdditiveCoupling",
    "ConditionalPlanar",
    "ConditionalSylvester",
    "ConditionedPlanar",
    "ConditionedSylvester",
    "Sylvester",
    "additive_coupling",
    "conditional_additive_coupling",
    "conditional_planar",
    "conditional_sylvester",
    "sylvester",
]
