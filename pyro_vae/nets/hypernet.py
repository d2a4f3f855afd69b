"""Start a hypernet at fixed outputs, so that the flow step it parameterises starts at the identity.

A conditional flow step (Pyro's ``ConditionalAffineAutoregressive``, ``ConditionalRadial``,
…) gets its parameters from a network of the context h (and, if autoregressive, of z).
:func:`start_at` zeroes the weights of that network's output layer and sets its bias so
that every output equals a chosen constant whatever the input — the constants that make
the step the identity. Which bias entry feeds which output is *measured* (the bias is set
to 0, 1, 2, … and one forward pass shows where each entry lands), so nothing here depends
on how a network lays out its outputs, and the network's parameters and ``state_dict``
stay exactly those of the network. Pyro has no such helper; its flows start at a random map.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

Offset = Optional[Union[float, Tensor]]


@torch.no_grad()
def start_at(net: nn.Module, offsets: Sequence[Offset], *inputs: Tensor, **kwargs: Tensor) -> nn.Module:
    """Make ``net``'s outputs start at ``offsets``, whatever its input; return ``net``.

    Args:
        net: a network whose last ``nn.Linear`` (in module order) is its output layer and
            which returns a tensor or a tuple of tensors, each an affine function of that
            layer's output (Pyro's ``DenseNN``, ``ConditionalAutoRegressiveNN``).
        offsets: one per output: a number or a tensor broadcast against the output of one
            example, or ``None`` to leave that output's weights and bias as they were.
        *inputs: an example input (one example is enough).
        **kwargs: its keyword inputs, if the network takes some.

    Example:
        >>> from pyro.nn import DenseNN
        >>> net = start_at(DenseNN(5, [8], param_dims=[3, 1]), [0.0, 2.0], torch.randn(1, 5))
        >>> loc, raw = net(torch.randn(4, 5))
        >>> bool((loc == 0).all()), bool((raw == 2).all())
        (True, True)
    """
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("start_at needs a network with a linear output layer")
    last = linears[-1]
    weight, bias = last.weight.clone(), last.bias.clone()
    last.weight.zero_()
    last.bias.copy_(torch.arange(len(bias), dtype=bias.dtype))  # exact up to 2^24 entries
    outputs = net(*inputs, **kwargs)
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    if len(outputs) != len(offsets):
        raise ValueError(f"the network has {len(outputs)} outputs, got {len(offsets)} offsets")
    new_bias = bias.clone()
    for out, offset in zip(outputs, offsets):
        index = out[0].round().long()  # the bias entry behind each output of one example
        if offset is None:  # keep this output as it was
            last.weight[index.reshape(-1)] = weight[index.reshape(-1)]
            continue
        value = torch.as_tensor(offset, dtype=bias.dtype).expand(index.shape)
        new_bias[index.reshape(-1)] = value.reshape(-1)
    last.bias.copy_(new_bias)
    return net
