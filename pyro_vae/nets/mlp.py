"""Multi-layer perceptrons."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from ..options import check_choice

ACTIVATIONS: dict = {"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "tanh": nn.Tanh}


def activation(name: str) -> Callable[[], nn.Module]:
    """The module class of the activation ``name``; an unknown name is a ConfigError
    listing the valid ones."""
    return ACTIVATIONS[check_choice(name, ACTIVATIONS, "activation", "activation")]


class MLP(nn.Sequential):
    """``Linear → act → … → Linear`` with an optional activation after the last layer.

    Args:
        in_features: input width.
        hidden: widths of the hidden layers (copied, never mutated).
        out_features: output width.
        act: activation name (``relu``, ``elu``, ``softplus``, ``tanh``).
        final_act: apply the activation after the last layer too (for feature trunks).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        act: str = "relu",
        final_act: bool = False,
    ) -> None:
        widths = [in_features, *hidden, out_features]
        make_act = activation(act)
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2 or final_act:
                layers.append(make_act())
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 (nn.Sequential semantics)
        return super().forward(x)
