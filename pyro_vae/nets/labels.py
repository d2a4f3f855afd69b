"""A network that takes a label as a second input: its first dense layer widened to read the
one-hot label appended to its input.

Every decoder network of pyro-vae starts with a dense layer on z (the dense, conv, ResNet,
pixel and linear VAEs'); :func:`widen_input` gives that layer ``extra`` input columns, so that
the network reads ``[z, one_hot(y)]``: W z + V one_hot(y) + b — the label concatenated at the
input, the conditional decoder of Sohn et al. 2015 (and of Kingma et al. 2014's M2). The label
enters through its own weights V, outside the span of W, so a guide cannot cancel it by a
shift of z. The old weights are kept; the new columns are initialised as ``nn.Linear``
initialises its weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError


def widen_input(net: nn.Module, in_features: int, extra: int) -> None:
    """Give the first ``nn.Linear`` of ``net`` (in the order its modules are registered, the
    order they run in) ``extra`` more input columns; it must read ``in_features``."""
    for module in net.modules():
        for name, child in module.named_children():
            if not isinstance(child, nn.Linear):
                continue
            if child.in_features != in_features:
                raise ConfigError(f"the decoder's first dense layer reads {child.in_features} features, not the "
                                  f"latent's {in_features}: it cannot take a label")
            wide = nn.Linear(in_features + extra, child.out_features, bias=child.bias is not None)
            with torch.no_grad():
                wide.weight[:, :in_features] = child.weight
                bound = 1 / math.sqrt(in_features + extra)
                wide.weight[:, in_features:].uniform_(-bound, bound)
                if child.bias is not None:
                    wide.bias.copy_(child.bias)
            setattr(module, name, wide.to(child.weight))
            return
    raise ConfigError("the decoder has no dense layer to read a label")


def with_label(h: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``[h, one_hot(y)]`` along the last dim, the leading dims of ``h`` (..., B) and of ``y``
    (..., B) — an enumerated label's (C, 1) — broadcast."""
    onehot = F.one_hot(y, num_classes).to(h.dtype)
    shape = torch.broadcast_shapes(h.shape[:-1], onehot.shape[:-1])
    return torch.cat([h.expand(*shape, h.shape[-1]), onehot.expand(*shape, num_classes)], dim=-1)
