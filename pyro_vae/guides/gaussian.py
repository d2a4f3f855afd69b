"""The amortized diagonal Gaussian guide (the VAE's own ``guide``)."""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..models.base import VAE
from .base import Guide, register_guide


@register_guide("gaussian")
class GaussianGuide(Guide):
    """q_φ(z | x) = N(μ_φ(x), diag σ_φ(x)²): exactly ``vae.guide`` behind the guide interface."""

    def __init__(self, vae: VAE) -> None:
        super().__init__(vae)

    def distribution(self, x: Tensor):
        return self.vae.encoder(self.vae.check_x(x))

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        return self.vae.guide(x, num_data=num_data, kl_scale=kl_scale)
