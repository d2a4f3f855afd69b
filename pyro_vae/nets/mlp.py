"""Multi-layer perceptrons."""

from __future__ import annotations

from typing import Callable, List, Sequence

from torch import Tensor, nn

from ..errors import ConfigError
from ..options import check_choice

ACTIVATIONS: dict = {"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "tanh": nn.Tanh}


def activation(name: str) -> Callable[[], nn.Module]:
    """The module class of the activation ``name``; an unknown name is a ConfigError
    listing the valid ones."""
    return ACTIVATIONS[check_choice(name, ACTIVATIONS, "activation", "activation")]


def check_dropout(p: float, name: str = "dropout") -> float:
    """``p`` if it is a dropout probability in [0, 1); else a ConfigError about the option
    ``name`` (every VAE takes ``dropout``; :func:`~pyro_vae.build.check_specs` checks it before
    any data are loaded, the networks again when they are built)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ConfigError(f"{name} must be a probability from 0 to below 1, got {p!r}", params=(name,))
    return float(p)


def act_dropout(act: str, p: float = 0.0) -> List[nn.Module]:
    """An activation, followed by ``nn.Dropout(p)`` when ``p`` > 0 (dropout is active in
    training mode only: ``model.eval()`` — every evaluation — turns it off). No dropout
    module at all for ``p`` = 0, so that the networks of runs without dropout keep their
    parameter names."""
    return [activation(act)()] + ([nn.Dropout(check_dropout(p))] if p else [])


class MLP(nn.Sequential):
    """``Linear → act → … → Linear`` with an optional activation after the last layer.

    Args:
        in_features: input width.
        hidden: widths of the hidden layers (copied, never mutated).
        out_features: output width.
        act: activation name (``relu``, ``elu``, ``softplus``, ``tanh``).
        final_act: apply the activation after the last layer too (for feature trunks).
        dropout: probability of dropout after every activation (0: none).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        act: str = "relu",
        final_act: bool = False,
        dropout: float = 0.0,
    ) -> None:
        widths = [in_features, *hidden, out_features]
        activation(act)  # an unknown name is refused even for a single linear layer
        layers: List[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2 or final_act:
                layers += act_dropout(act, dropout)
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 (nn.Sequential semantics)
        return super().forward(x)
